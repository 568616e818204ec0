-- Public keys authenticated under the platform master key.
--
-- No column changes: the platform-key wrapping of what a public key belongs
-- to now binds the SHA-256 of that public key in its AEAD associated data
-- (a CLIENT context's sealing_private_key binds sealing_public_key; an RSA
-- version's key_material binds public_key), so a public key replaced in the
-- database fails before it is served or sealed to. Blobs written before
-- (bound to their row only) are still read, and bound when the platform
-- master-key rotation or a change of client master key rewrites them.
--
-- Builds before this version cannot unwrap the blobs this one writes, so
-- postgres.OldestCompatibleVersion is raised to this version: older replicas
-- stop serving once it is applied.
COMMENT ON COLUMN encryption.encryptions.sealing_public_key IS
    'CLIENT contexts only: X25519 public key, in clear. New version keys are sealed to it, so a CLIENT context rotates without the client master key. Authenticated by the platform wrapping of sealing_private_key, which binds its SHA-256.';
COMMENT ON COLUMN encryption.encryptions.sealing_private_key IS
    'CLIENT contexts only: the X25519 private key wrapped under the client master key, that blob wrapped again under the platform master key sealing_master_key_id (binding the SHA-256 of sealing_public_key), so a database copy alone cannot test password guesses. Replaced with a new key pair when the client master key changes. NULL once the context is destroyed.';
COMMENT ON COLUMN encryption.encryption_key_versions.key_material IS
    'The version''s data key (for RSA the private key), wrapped with AES-256-GCM under the platform master key master_key_id, for RSA binding the SHA-256 of public_key; for CLIENT contexts the data key is first sealed to the context''s sealing_public_key. NULL once DESTROYED.';
COMMENT ON COLUMN encryption.encryption_key_versions.public_key IS
    'RSA-OAEP versions only: the public key, in clear so that producers can encrypt without the service, authenticated by the platform wrapping of key_material; kept after destruction but no longer served then.';
