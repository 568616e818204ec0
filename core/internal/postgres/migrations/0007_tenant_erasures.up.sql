-- Tenants deleted from core whose destruction core owes the platform's encryption service
-- (crypto-shredding of every key of the tenant, through its admin plane). The row is written in
-- the transaction that deletes the tenant, so a crash or an unreachable service cannot lose the
-- obligation; a worker destroys the tenant there and then deletes the row. No foreign key: the
-- tenant is gone. Additive: older builds ignore the table, so OldestCompatibleVersion stays 4.
CREATE TABLE core.tenant_erasures (
    es_tenant_id    uuid PRIMARY KEY, -- the tenant's id on the platform's encryption service
    tenant_id       uuid NOT NULL,    -- the deleted tenant's id in core
    requested_at    timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX tenant_erasures_due ON core.tenant_erasures (next_attempt_at);
COMMENT ON TABLE core.tenant_erasures IS
    'deleted tenants to destroy on the platform''s encryption service; a row disappears once it is destroyed';
