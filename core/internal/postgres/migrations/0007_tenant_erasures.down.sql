DROP TABLE core.tenant_erasures;
