-- When a re-encryption job's wait for an unavailable encryption service began. A worker that has
-- waited a short while parks the job — it frees its slot and sets lease_until to the time before
-- which no replica claims the job again — and records here when the wait began, so that whichever
-- replica claims the job next still gives up after the same total wait. Progress clears it.
-- Additive: older builds ignore the column (and already skip a job whose lease_until lies ahead),
-- so OldestCompatibleVersion stays 4.
ALTER TABLE core.reencryption_jobs ADD COLUMN unavailable_since timestamptz;
COMMENT ON COLUMN core.reencryption_jobs.unavailable_since IS
    'when the job began waiting for an unavailable encryption service, recorded when it was parked; NULL once it makes progress';
