-- The MFA token a session was opened with: each opens one session at most, so a token seen or kept
-- after its first use cannot open more (also after "log out everywhere").
ALTER TABLE core.sessions ADD COLUMN mfa_token_id text CHECK (char_length(mfa_token_id) BETWEEN 1 AND 100);
CREATE UNIQUE INDEX sessions_mfa_token_id_key ON core.sessions (mfa_token_id) WHERE mfa_token_id IS NOT NULL;
