-- Tenants, their service credentials, key contexts, wrapped key versions and
-- the audit trail. Every object is schema-qualified (see README.md).
--
-- Key hierarchy, outermost first:
--   platform master key (KEK, held outside the database, named by *master_key_id)
--     wraps (AES-256-GCM) every key blob stored here;
--   for CLIENT (zero-knowledge) contexts the client master key (X-Master-Key,
--     never stored) additionally wraps the context's sealing private key, and
--     each version's data key is sealed to the context's sealing public key.
-- A copy of this database alone therefore yields no key, and for CLIENT
-- contexts not even a blob on which to test password guesses offline.

CREATE TABLE encryption.tenants (
    id           uuid        NOT NULL,
    name         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_name_key UNIQUE (name),
    CONSTRAINT tenants_name_length CHECK (char_length(name) BETWEEN 1 AND 200)
);

COMMENT ON TABLE encryption.tenants IS
    'Callers of the encryption service. Each key context belongs to exactly one tenant; a tenant never sees another''s.';
COMMENT ON COLUMN encryption.tenants.name IS
    'Unique display name, 1-200 characters; stays taken after the tenant is destroyed.';
COMMENT ON COLUMN encryption.tenants.destroyed_at IS
    'Set when the tenant is destroyed; a destroyed tenant is treated as unknown everywhere.';

CREATE TABLE encryption.tenant_secrets (
    id          uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT tenant_secrets_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_secrets_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES encryption.tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_secrets_hash_length CHECK (octet_length(secret_hash) = 32)
);

CREATE INDEX tenant_secrets_tenant_id_idx ON encryption.tenant_secrets (tenant_id);

COMMENT ON TABLE encryption.tenant_secrets IS
    'Per-tenant shared secrets (X-Tenant-Secret). Several may be active at once so a secret can be rotated without downtime.';
COMMENT ON COLUMN encryption.tenant_secrets.secret_hash IS
    'SHA-256 of a high-entropy random secret (32 bytes). The secret itself is never stored; compare hashes in constant time.';
COMMENT ON COLUMN encryption.tenant_secrets.revoked_at IS
    'Set when revoked; a revoked secret no longer authenticates. A tenant always keeps at least one active secret.';

CREATE TABLE encryption.encryptions (
    id                       uuid        NOT NULL,
    tenant_id                uuid        NOT NULL,
    algorithm                text        NOT NULL,
    key_mode                 text        NOT NULL,
    sealing_public_key       bytea,
    sealing_private_key      bytea,
    sealing_master_key_id    text,
    rotation_max_age         interval,
    rotation_max_encryptions bigint,
    created_at               timestamptz NOT NULL DEFAULT now(),
    destroyed_at             timestamptz,
    CONSTRAINT encryptions_pkey PRIMARY KEY (id),
    CONSTRAINT encryptions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES encryption.tenants (id),
    CONSTRAINT encryptions_algorithm_check
        CHECK (algorithm IN ('AES-256-GCM', 'XCHACHA20-POLY1305', 'RSA-OAEP-3072-SHA256')),
    CONSTRAINT encryptions_key_mode_check CHECK (key_mode IN ('PLATFORM', 'CLIENT')),
    CONSTRAINT encryptions_sealing_key_check CHECK (
        (key_mode = 'CLIENT'
            AND sealing_public_key IS NOT NULL AND sealing_private_key IS NOT NULL AND sealing_master_key_id IS NOT NULL)
        OR (key_mode = 'PLATFORM'
            AND sealing_public_key IS NULL AND sealing_private_key IS NULL AND sealing_master_key_id IS NULL)),
    CONSTRAINT encryptions_rotation_max_age_check CHECK (rotation_max_age > interval '0'),
    CONSTRAINT encryptions_rotation_max_encryptions_check CHECK (rotation_max_encryptions > 0)
);

CREATE INDEX encryptions_tenant_id_idx ON encryption.encryptions (tenant_id);

COMMENT ON TABLE encryption.encryptions IS
    'Key contexts (the design''s Encryption table, addressed by encryptionId): one tenant, one algorithm, ordered key versions of which exactly one is active.';
COMMENT ON COLUMN encryption.encryptions.key_mode IS
    'PLATFORM: version keys are wrapped under the platform master key only. CLIENT: zero-knowledge, opening a version key also needs the client master key (X-Master-Key).';
COMMENT ON COLUMN encryption.encryptions.sealing_public_key IS
    'CLIENT contexts only: X25519 public key, in clear. New version keys are sealed to it, so a CLIENT context rotates without the client master key.';
COMMENT ON COLUMN encryption.encryptions.sealing_private_key IS
    'CLIENT contexts only: the X25519 private key wrapped under the client master key, that blob wrapped again under the platform master key sealing_master_key_id, so a database copy alone cannot test password guesses.';
COMMENT ON COLUMN encryption.encryptions.sealing_master_key_id IS
    'Id of the platform master key that wraps sealing_private_key (the outer layer).';
COMMENT ON COLUMN encryption.encryptions.rotation_max_age IS
    'Rotate automatically once the active version is older than this; NULL for never.';
COMMENT ON COLUMN encryption.encryptions.rotation_max_encryptions IS
    'Rotate automatically once the active version has encrypted this many times; NULL for never.';
COMMENT ON COLUMN encryption.encryptions.destroyed_at IS
    'Set when the context is destroyed (right to erasure); its versions are then DESTROYED and it is treated as unknown.';

CREATE TABLE encryption.encryption_key_versions (
    id            uuid        NOT NULL,
    encryption_id uuid        NOT NULL,
    version       integer     NOT NULL,
    state         text        NOT NULL,
    key_material  bytea,
    master_key_id text,
    public_key    bytea,
    encryptions   bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT encryption_key_versions_pkey PRIMARY KEY (id),
    CONSTRAINT encryption_key_versions_encryption_id_fkey FOREIGN KEY (encryption_id)
        REFERENCES encryption.encryptions (id) ON DELETE CASCADE,
    CONSTRAINT encryption_key_versions_version_key UNIQUE (encryption_id, version),
    CONSTRAINT encryption_key_versions_version_check CHECK (version > 0),
    CONSTRAINT encryption_key_versions_state_check
        CHECK (state IN ('ACTIVE', 'DECRYPT_ONLY', 'DISABLED', 'DESTROYED')),
    CONSTRAINT encryption_key_versions_material_check CHECK ((state = 'DESTROYED') = (key_material IS NULL)),
    CONSTRAINT encryption_key_versions_master_key_id_check CHECK ((state = 'DESTROYED') = (master_key_id IS NULL)),
    CONSTRAINT encryption_key_versions_encryptions_check CHECK (encryptions >= 0)
);

-- At most one ACTIVE version per context: a concurrent rotation that forgot
-- to demote the previous one fails instead of leaving two.
CREATE UNIQUE INDEX encryption_key_versions_one_active_idx
    ON encryption.encryption_key_versions (encryption_id) WHERE state = 'ACTIVE';

COMMENT ON TABLE encryption.encryption_key_versions IS
    'Key versions of a context (the design''s EncryptionKeyVersion table, addressed by encryptionVersionId). ACTIVE encrypts; DECRYPT_ONLY and DISABLED keep their key; DESTROYED has it erased (crypto-shredding).';
COMMENT ON COLUMN encryption.encryption_key_versions.key_material IS
    'The version''s data key (for RSA the private key), wrapped with AES-256-GCM under the platform master key master_key_id; for CLIENT contexts the data key is first sealed to the context''s sealing_public_key. NULL once DESTROYED.';
COMMENT ON COLUMN encryption.encryption_key_versions.master_key_id IS
    'Id of the platform master key that wraps key_material; NULL once DESTROYED.';
COMMENT ON COLUMN encryption.encryption_key_versions.public_key IS
    'RSA-OAEP versions only: the public key, in clear so that producers can encrypt without the service; kept after destruction.';
COMMENT ON COLUMN encryption.encryption_key_versions.encryptions IS
    'Number of encryptions made with this version (flushed in batches, so it may lag); drives rotation_max_encryptions.';
COMMENT ON COLUMN encryption.encryption_key_versions.updated_at IS
    'Last change of state or key material (not of the encryptions counter).';

CREATE TABLE encryption.audit_events (
    id            uuid        NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    tenant_id     uuid,
    actor         text        NOT NULL,
    action        text        NOT NULL,
    encryption_id uuid,
    version_id    uuid,
    outcome       text        NOT NULL,
    request_id    text        NOT NULL DEFAULT '',
    CONSTRAINT audit_events_pkey PRIMARY KEY (id)
);

-- No foreign keys: the trail outlives what it mentions and also records
-- attempts on ids that never existed.
CREATE INDEX audit_events_tenant_occurred_idx
    ON encryption.audit_events (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_encryption_occurred_idx
    ON encryption.audit_events (encryption_id, occurred_at DESC, id DESC) WHERE encryption_id IS NOT NULL;

COMMENT ON TABLE encryption.audit_events IS
    'Append-only trail of who did what to which tenant, context or version, and how it ended. Never holds data, keys or secrets.';
COMMENT ON COLUMN encryption.audit_events.actor IS
    'Who acted: a tenant, the admin plane or the service itself; an identifier, never a credential.';
COMMENT ON COLUMN encryption.audit_events.request_id IS
    'Correlates the event with the request''s logs.';
