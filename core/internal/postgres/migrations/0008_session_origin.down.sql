ALTER TABLE core.sessions DROP COLUMN remote_addr;
