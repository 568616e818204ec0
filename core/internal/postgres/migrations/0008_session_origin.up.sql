-- Where each session's login came from — the client address and the client software as it named
-- itself — so that people can tell their sessions apart (GET /v1/auth/sessions) and end one they
-- do not recognise. Additive: older builds ignore the columns, so OldestCompatibleVersion stays 4.
ALTER TABLE core.sessions
    ADD COLUMN remote_addr text NOT NULL DEFAULT '',
    ADD COLUMN user_agent  text NOT NULL DEFAULT '';
COMMENT ON COLUMN core.sessions.remote_addr IS 'the client address of the login, as core saw it';
COMMENT ON COLUMN core.sessions.user_agent IS 'the client software of the login as it named itself (User-Agent); shown, never trusted';
