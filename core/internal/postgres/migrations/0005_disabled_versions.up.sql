-- Key versions disabled through core (POST /v1/keys/{encryptionId}/versions/{versionId}:disable).
-- An item write whose data was encrypted while the version was still active can reach the database
-- after the version was disabled; it finds the version here and is refused rather than storing an
-- item that nothing can read. Additive: older builds ignore the table, so OldestCompatibleVersion
-- stays 4.
CREATE TABLE core.disabled_key_versions (
    encryption_version_id uuid PRIMARY KEY,
    encryption_id         uuid NOT NULL REFERENCES core.key_contexts (encryption_id) ON DELETE CASCADE,
    disabled_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.disabled_key_versions IS
    'key versions disabled through core; item writes under them are refused';
