ALTER TABLE core.reencryption_jobs DROP COLUMN unavailable_since;
