-- Key lifecycle and platform master-key rotation.
--
-- A destroyed CLIENT context keeps its sealing public key but loses the
-- wrapped private half with the rest of its key material (crypto-shredding),
-- so the sealing-key check now allows a CLIENT row without the private half
-- once, and only once, the context is destroyed.
ALTER TABLE encryption.encryptions DROP CONSTRAINT encryptions_sealing_key_check;
ALTER TABLE encryption.encryptions ADD CONSTRAINT encryptions_sealing_key_check CHECK (
    (key_mode = 'CLIENT' AND sealing_public_key IS NOT NULL
        AND ((sealing_private_key IS NOT NULL AND sealing_master_key_id IS NOT NULL)
            OR (destroyed_at IS NOT NULL AND sealing_private_key IS NULL AND sealing_master_key_id IS NULL)))
    OR (key_mode = 'PLATFORM'
        AND sealing_public_key IS NULL AND sealing_private_key IS NULL AND sealing_master_key_id IS NULL));

COMMENT ON COLUMN encryption.encryptions.sealing_private_key IS
    'CLIENT contexts only: the X25519 private key wrapped under the client master key, that blob wrapped again under the platform master key sealing_master_key_id, so a database copy alone cannot test password guesses. NULL once the context is destroyed.';

-- Platform master-key rotation finds the blobs still wrapped by a given
-- master key, and the admin plane counts them per key.
CREATE INDEX encryption_key_versions_master_key_id_idx
    ON encryption.encryption_key_versions (master_key_id) WHERE master_key_id IS NOT NULL;
CREATE INDEX encryptions_sealing_master_key_id_idx
    ON encryption.encryptions (sealing_master_key_id) WHERE sealing_master_key_id IS NOT NULL;
