COMMENT ON COLUMN encryption.encryptions.sealing_public_key IS
    'CLIENT contexts only: X25519 public key, in clear. New version keys are sealed to it, so a CLIENT context rotates without the client master key.';
COMMENT ON COLUMN encryption.encryptions.sealing_private_key IS
    'CLIENT contexts only: the X25519 private key wrapped under the client master key, that blob wrapped again under the platform master key sealing_master_key_id, so a database copy alone cannot test password guesses. NULL once the context is destroyed.';
COMMENT ON COLUMN encryption.encryption_key_versions.key_material IS
    'The version''s data key (for RSA the private key), wrapped with AES-256-GCM under the platform master key master_key_id; for CLIENT contexts the data key is first sealed to the context''s sealing_public_key. NULL once DESTROYED.';
COMMENT ON COLUMN encryption.encryption_key_versions.public_key IS
    'RSA-OAEP versions only: the public key, in clear so that producers can encrypt without the service; kept after destruction.';
