-- Re-encryption jobs: moving a tenant's vault items to their key contexts' active versions after a
-- rotation, page by page, resumable from a checkpoint by any core replica. Nothing here is key
-- material: a zero-knowledge owner's master key lives only in the memory of the replica running
-- their job.

CREATE TABLE core.reencryption_jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES core.tenants (id) ON DELETE CASCADE,
    -- TENANT: the tenant's platform-managed contexts (zero-knowledge ones are only counted);
    -- OWNER: one person's own zero-knowledge context, moved with the key they sent.
    scope            text NOT NULL CHECK (scope IN ('TENANT', 'OWNER')),
    owner_id         uuid REFERENCES core.users (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'PENDING'
                     CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'WAITING_FOR_KEY')),
    total            bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    done             bigint NOT NULL DEFAULT 0 CHECK (done >= 0),
    skipped          bigint NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    failed           bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    waiting_items    bigint NOT NULL DEFAULT 0 CHECK (waiting_items >= 0),
    waiting_contexts integer NOT NULL DEFAULT 0 CHECK (waiting_contexts >= 0),
    message          text NOT NULL DEFAULT '' CHECK (char_length(message) <= 1000),
    first_failure    text NOT NULL DEFAULT '' CHECK (char_length(first_failure) <= 1000),
    created_by_type  text NOT NULL CHECK (created_by_type IN ('user', 'apikey', 'system')),
    created_by       uuid,
    lease_owner      text,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT reencryption_jobs_owner CHECK ((scope = 'OWNER') = (owner_id IS NOT NULL)),
    CONSTRAINT reencryption_jobs_finished CHECK (
        (state IN ('SUCCEEDED', 'FAILED', 'WAITING_FOR_KEY')) = (finished_at IS NOT NULL))
);
CREATE INDEX reencryption_jobs_tenant ON core.reencryption_jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX reencryption_jobs_runnable ON core.reencryption_jobs (created_at)
    WHERE state IN ('PENDING', 'RUNNING');
-- One unfinished job per tenant (TENANT scope) and per owner (OWNER scope): two jobs moving the
-- same items would only skip each other's work.
CREATE UNIQUE INDEX reencryption_jobs_one_per_tenant ON core.reencryption_jobs (tenant_id)
    WHERE scope = 'TENANT' AND state IN ('PENDING', 'RUNNING');
CREATE UNIQUE INDEX reencryption_jobs_one_per_owner ON core.reencryption_jobs (owner_id)
    WHERE scope = 'OWNER' AND state IN ('PENDING', 'RUNNING');
COMMENT ON COLUMN core.reencryption_jobs.lease_owner IS
    'the core replica working the job until lease_until; another takes it over once the lease expires';

CREATE TABLE core.reencryption_job_contexts (
    job_id            uuid NOT NULL REFERENCES core.reencryption_jobs (id) ON DELETE CASCADE,
    encryption_id     uuid NOT NULL,
    key_mode          text NOT NULL CHECK (key_mode IN ('PLATFORM', 'CLIENT')),
    -- PENDING until planned (active version read from the encryption service, items counted);
    -- MOVING while pages are rewrapped; DONE; WAITING_FOR_KEY for a zero-knowledge context
    -- that a TENANT job cannot move.
    state             text NOT NULL DEFAULT 'PENDING'
                      CHECK (state IN ('PENDING', 'MOVING', 'DONE', 'WAITING_FOR_KEY')),
    active_version_id uuid,
    to_move           bigint NOT NULL DEFAULT 0 CHECK (to_move >= 0),
    -- Items are moved in id order: every item up to the checkpoint has been dealt with.
    checkpoint        uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    PRIMARY KEY (job_id, encryption_id),
    CONSTRAINT reencryption_job_contexts_planned CHECK ((state = 'PENDING') OR (active_version_id IS NOT NULL))
);

-- A job pages through one context's items in id order; an export through a tenant's items in
-- (created_at, id) order.
CREATE INDEX items_context ON core.items (encryption_id, id);
CREATE INDEX items_tenant_created ON core.items (tenant_id, created_at, id);
