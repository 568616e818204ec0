-- Root secrets of the whole installation that are not keys of their own: the seed of unknown
-- users' prelogin parameters and the key of export integrity tags. Each is sealed under core's
-- secret keys (CORE_SECRET_KEYS) with the associated data "custos/core/platform-secret/v1\0<name>",
-- stored once by the first replica to start (under an advisory lock) and never changed, so that
-- rotating CORE_SECRET_KEYS changes neither (`core secret-keys rewrap` re-seals them). Before this
-- table both were derived from the secret key with the smallest id; the first start stores that
-- derivation, so earlier exports and prelogin answers stay valid. Additive: older builds ignore the
-- table and keep deriving (the same values, while that key is kept), so OldestCompatibleVersion
-- stays 4.
CREATE TABLE core.platform_secrets (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z0-9-]{1,64}$'),
    value_sealed bytea NOT NULL CHECK (length(value_sealed) > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.platform_secrets IS
    'root secrets of the installation (prelogin seed, export integrity key), sealed under core''s secret keys; written once';
