-- Key contexts core owes a destruction on the tenant's encryption service (crypto-shredding): the
-- personal context of a deleted user, or one created for a user but never recorded (it lost a race
-- with a concurrent creation, or the user was deleted meanwhile). The row is written in the same
-- transaction that makes the context unused, so a crash or an unreachable encryption service
-- cannot lose the obligation; a worker destroys the context and then deletes the row. Additive:
-- older builds ignore the table, so OldestCompatibleVersion stays 4.
CREATE TABLE core.key_erasures (
    encryption_id   uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES core.tenants (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL, -- no foreign key: the user is usually gone
    reason          text NOT NULL CHECK (reason IN ('user_deleted', 'unused')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX key_erasures_due ON core.key_erasures (next_attempt_at);
COMMENT ON TABLE core.key_erasures IS
    'key contexts to destroy on the tenant''s encryption service; a row disappears once it is destroyed';
