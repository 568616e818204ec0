-- Identity: tenants, users, sessions, machine credentials, signing keys, throttling, audit.
-- Secrets are never stored in clear: passwords as Argon2id hashes, refresh tokens, API-key secrets
-- and recovery codes as SHA-256 of high-entropy values, TOTP secrets, signing keys and the tenants'
-- encryption-service secrets sealed (AES-256-GCM) under core's secret keys (CORE_SECRET_KEYS).

CREATE TABLE core.tenants (
    id                      uuid PRIMARY KEY,
    name                    text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    key_mode                text NOT NULL CHECK (key_mode IN ('PLATFORM', 'CLIENT')),
    password_hints_enabled  boolean NOT NULL DEFAULT true,
    es_kind                 text NOT NULL CHECK (es_kind IN ('platform', 'hosted')),
    es_url                  text,
    es_protocol             text CHECK (es_protocol IN ('grpc', 'https')),
    es_ca_bundle_pem        text,
    es_client_cert_pem      text,
    es_client_key_sealed    bytea,
    es_tenant_id            uuid NOT NULL,
    es_tenant_secret_sealed bytea NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_hosted_endpoint CHECK (
        (es_kind = 'platform' AND es_url IS NULL AND es_protocol IS NULL AND es_ca_bundle_pem IS NULL
            AND es_client_cert_pem IS NULL AND es_client_key_sealed IS NULL)
        OR (es_kind = 'hosted' AND es_url IS NOT NULL AND es_protocol IS NOT NULL AND es_ca_bundle_pem IS NOT NULL)),
    CONSTRAINT tenants_es_client_cert CHECK ((es_client_cert_pem IS NULL) = (es_client_key_sealed IS NULL))
);
CREATE UNIQUE INDEX tenants_name_key ON core.tenants (lower(name));
COMMENT ON COLUMN core.tenants.es_tenant_secret_sealed IS
    'the tenant''s secret on its encryption service, sealed under core''s secret keys';

CREATE TABLE core.users (
    id                uuid PRIMARY KEY,
    tenant_id         uuid REFERENCES core.tenants (id) ON DELETE CASCADE,
    username          text NOT NULL CHECK (char_length(username) BETWEEN 3 AND 64),
    platform_admin    boolean NOT NULL DEFAULT false,
    role              text CHECK (role IN ('owner', 'admin', 'member')),
    password_hash     text NOT NULL,
    kdf_salt          bytea NOT NULL CHECK (length(kdf_salt) > 0),
    kdf_memory_kib    integer NOT NULL CHECK (kdf_memory_kib > 0),
    kdf_iterations    integer NOT NULL CHECK (kdf_iterations > 0),
    kdf_parallelism   integer NOT NULL CHECK (kdf_parallelism > 0),
    password_hint     text CHECK (char_length(password_hint) <= 200),
    security_stamp    text NOT NULL CHECK (security_stamp <> ''),
    disabled_at       timestamptz,
    totp_secret_sealed bytea,
    totp_enabled_at   timestamptz,
    totp_last_step    bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_kind CHECK (
        (platform_admin AND tenant_id IS NULL AND role IS NULL)
        OR (NOT platform_admin AND tenant_id IS NOT NULL AND role IS NOT NULL)),
    CONSTRAINT users_totp CHECK (totp_enabled_at IS NULL OR totp_secret_sealed IS NOT NULL)
);
CREATE UNIQUE INDEX users_username_key ON core.users (lower(username));
CREATE INDEX users_tenant ON core.users (tenant_id, id);
-- The "a tenant keeps at least one enabled owner" check reads only these rows.
CREATE INDEX users_tenant_owners ON core.users (tenant_id) WHERE role = 'owner' AND disabled_at IS NULL;
COMMENT ON COLUMN core.users.password_hash IS 'Argon2id (PHC string) of the password the client derived';
COMMENT ON COLUMN core.users.security_stamp IS 'changes on password or MFA change and disable: ends every session';
COMMENT ON COLUMN core.users.totp_last_step IS 'last accepted TOTP time step: codes of this step or older are replays';

CREATE TABLE core.recovery_codes (
    id        uuid PRIMARY KEY,
    user_id   uuid NOT NULL REFERENCES core.users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at   timestamptz
);
CREATE UNIQUE INDEX recovery_codes_user_code ON core.recovery_codes (user_id, code_hash);

-- A session is a refresh-token family: one login and every refresh descending from it.
CREATE TABLE core.sessions (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES core.users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoke_reason text,
    CONSTRAINT sessions_revoked CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE INDEX sessions_user ON core.sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE core.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES core.sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON core.refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires ON core.refresh_tokens (expires_at);

CREATE TABLE core.api_keys (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES core.tenants (id) ON DELETE CASCADE,
    key_id               text NOT NULL UNIQUE,
    name                 text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    scopes               text[] NOT NULL CHECK (cardinality(scopes) >= 1),
    secret_hash          bytea NOT NULL,
    previous_secret_hash bytea,
    previous_expires_at  timestamptz,
    expires_at           timestamptz,
    last_used_at         timestamptz,
    revoked_at           timestamptz,
    created_by           uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_previous CHECK ((previous_secret_hash IS NULL) = (previous_expires_at IS NULL))
);
CREATE INDEX api_keys_tenant ON core.api_keys (tenant_id, id);

CREATE TABLE core.signing_keys (
    id                 text PRIMARY KEY,
    private_key_sealed bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    retired_at         timestamptz
);

-- Failed-attempt counters shared by every replica, per scope (login, totp, hint) and key
-- (account name or client address).
CREATE TABLE core.throttle (
    scope        text NOT NULL,
    key          text NOT NULL,
    failures     integer NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    -- when the row stops mattering (window over, lock released): PruneExpired deletes it after that
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE core.audit_events (
    id          uuid PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid,
    actor_type  text NOT NULL CHECK (actor_type IN ('user', 'apikey', 'anonymous', 'system')),
    actor_id    uuid,
    action      text NOT NULL CHECK (action <> ''),
    target      text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome <> ''),
    remote_addr text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_tenant ON core.audit_events (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_time ON core.audit_events (occurred_at DESC, id DESC);
CREATE INDEX audit_events_actor ON core.audit_events (actor_id, occurred_at DESC, id DESC) WHERE actor_id IS NOT NULL;
