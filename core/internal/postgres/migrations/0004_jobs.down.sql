DROP INDEX core.items_tenant_created;
DROP INDEX core.items_context;
DROP TABLE core.reencryption_job_contexts;
DROP TABLE core.reencryption_jobs;
