-- Fails while a destroyed CLIENT context exists: its erased private key
-- cannot be brought back to satisfy the older check.
DROP INDEX encryption.encryptions_sealing_master_key_id_idx;
DROP INDEX encryption.encryption_key_versions_master_key_id_idx;

COMMENT ON COLUMN encryption.encryptions.sealing_private_key IS
    'CLIENT contexts only: the X25519 private key wrapped under the client master key, that blob wrapped again under the platform master key sealing_master_key_id, so a database copy alone cannot test password guesses.';

ALTER TABLE encryption.encryptions DROP CONSTRAINT encryptions_sealing_key_check;
ALTER TABLE encryption.encryptions ADD CONSTRAINT encryptions_sealing_key_check CHECK (
    (key_mode = 'CLIENT'
        AND sealing_public_key IS NOT NULL AND sealing_private_key IS NOT NULL AND sealing_master_key_id IS NOT NULL)
    OR (key_mode = 'PLATFORM'
        AND sealing_public_key IS NULL AND sealing_private_key IS NULL AND sealing_master_key_id IS NULL));
