DROP INDEX core.sessions_mfa_token_id_key;
ALTER TABLE core.sessions DROP COLUMN mfa_token_id;
