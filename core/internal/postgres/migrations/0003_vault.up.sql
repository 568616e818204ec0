-- The vault: items stored only as ciphertext with their key references, and each user's personal
-- key context on the tenant's encryption service.

CREATE TABLE core.key_contexts (
    user_id       uuid PRIMARY KEY REFERENCES core.users (id) ON DELETE CASCADE,
    tenant_id     uuid NOT NULL REFERENCES core.tenants (id) ON DELETE CASCADE,
    encryption_id uuid NOT NULL UNIQUE,
    key_mode      text NOT NULL CHECK (key_mode IN ('PLATFORM', 'CLIENT')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.key_contexts IS 'each user''s personal key context (encryptionId) on the tenant''s encryption service';

CREATE TABLE core.items (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES core.tenants (id) ON DELETE CASCADE,
    owner_id              uuid NOT NULL REFERENCES core.users (id) ON DELETE CASCADE,
    revision              integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
    cipher_text           text NOT NULL,
    encryption_id         uuid NOT NULL,
    encryption_version_id uuid NOT NULL,
    algorithm             text NOT NULL,
    metadata              jsonb NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX items_owner ON core.items (owner_id, created_at DESC, id DESC);
CREATE INDEX items_tenant ON core.items (tenant_id, id);
CREATE INDEX items_version ON core.items (encryption_id, encryption_version_id);
COMMENT ON COLUMN core.items.cipher_text IS
    'base64 ciphertext of the item''s name and data, from the encryption service; core never stores plaintext';
