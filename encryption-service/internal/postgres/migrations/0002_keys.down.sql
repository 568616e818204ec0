DROP TABLE encryption.audit_events;
DROP TABLE encryption.encryption_key_versions;
DROP TABLE encryption.encryptions;
DROP TABLE encryption.tenant_secrets;
DROP TABLE encryption.tenants;
