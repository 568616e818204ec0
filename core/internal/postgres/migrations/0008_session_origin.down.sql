ALTER TABLE core.sessions DROP COLUMN remote_addr, DROP COLUMN user_agent;
