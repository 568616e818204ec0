-- Where each session's login came from, so that people can tell their sessions apart
-- (GET /v1/auth/sessions) and end one they do not recognise. Additive: older builds ignore the
-- column, so OldestCompatibleVersion stays 4.
ALTER TABLE core.sessions ADD COLUMN remote_addr text NOT NULL DEFAULT '';
COMMENT ON COLUMN core.sessions.remote_addr IS 'the client address of the login, as core saw it';
