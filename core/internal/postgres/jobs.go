package postgres

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Re-encryption job scopes.
const (
	JobScopeTenant = "TENANT" // the tenant's platform-managed contexts; zero-knowledge ones are only counted
	JobScopeOwner  = "OWNER"  // one person's own zero-knowledge context, moved with their master key
)

// Re-encryption job states. SUCCEEDED, FAILED and WAITING_FOR_KEY are final.
const (
	JobPending       = "PENDING"
	JobRunning       = "RUNNING"
	JobSucceeded     = "SUCCEEDED"
	JobFailed        = "FAILED"
	JobWaitingForKey = "WAITING_FOR_KEY"
)

// States of one key context within a job.
const (
	JobContextPending       = "PENDING"         // not planned yet
	JobContextMoving        = "MOVING"          // planned; pages being moved
	JobContextDone          = "DONE"            // every item up to the end has been dealt with
	JobContextWaitingForKey = "WAITING_FOR_KEY" // zero-knowledge context a TENANT job cannot move
)

// maxJobMessage bounds a job's message, in characters.
const maxJobMessage = 1000

// Job is a re-encryption job: it moves items of some key contexts to each context's active
// version. It holds no key material and no item data.
type Job struct {
	ID, TenantID uuid.UUID
	Scope        string    // JobScopeTenant or JobScopeOwner
	OwnerID      uuid.UUID // the owner, for JobScopeOwner; uuid.Nil otherwise
	State        string
	// Total counts the items to move, found as contexts are planned (and again when a context is
	// swept: ReplanJobContext); Done those moved, Skipped those edited or deleted meanwhile (also
	// with their owner), Failed those the encryption service refused.
	Total, Done, Skipped, Failed int64
	// WaitingItems are items of WaitingContexts zero-knowledge contexts a TENANT job cannot move.
	WaitingItems    int64
	WaitingContexts int
	Message         string    // what went wrong or what is awaited; never data
	FirstFailure    string    // the first item the encryption service refused, and why; never data
	CreatedByType   string    // ActorUser, ActorAPIKey or ActorSystem
	CreatedBy       uuid.UUID // the user or API key; uuid.Nil for the system
	LeaseOwner      string    // the replica working the job, until LeaseUntil
	// LeaseUntil is when LeaseOwner's lease ends; for a parked job (no LeaseOwner, see ParkJob)
	// the time before which no replica claims it.
	LeaseUntil time.Time
	// UnavailableSince is when the job began waiting for an unavailable encryption service, as
	// recorded when it was last parked; zero once it has made progress since.
	UnavailableSince time.Time
	CreatedAt        time.Time
	UpdatedAt        time.Time
	FinishedAt       time.Time // zero until final
}

// Final reports whether the job has ended.
func (j Job) Final() bool {
	return j.State == JobSucceeded || j.State == JobFailed || j.State == JobWaitingForKey
}

// JobContext is one key context of a job and how far the job got with it.
type JobContext struct {
	EncryptionID    uuid.UUID
	KeyMode         string
	State           string    // JobContextPending, …
	ActiveVersionID uuid.UUID // the version items move to; uuid.Nil until planned
	ToMove          int64     // items not on ActiveVersionID when planned, and when swept again
	Checkpoint      uuid.UUID // every item of the context with an id up to this one has been dealt with
}

// Lease is a replica's claim on a job. Owner names the replica; the claim ends after For unless
// renewed.
type Lease struct {
	Owner string
	For   time.Duration
}

// errLeaseLost is returned when a replica acts on a job whose lease another replica now holds.
var errLeaseLost = errs.E(errs.Aborted, "another core replica has taken over this job")

// IsLeaseLost reports whether err means that the job's lease was taken over by another replica:
// the replica must stop working the job.
func IsLeaseLost(err error) bool {
	return errors.Is(err, errLeaseLost)
}

const jobColumns = `id, tenant_id, scope, owner_id, state, total, done, skipped, failed, waiting_items,
	waiting_contexts, message, first_failure, created_by_type, created_by, lease_owner, lease_until, created_at, updated_at,
	finished_at, unavailable_since`

func scanJob(row pgx.Row) (Job, error) {
	var (
		j                                        Job
		owner, createdBy                         *uuid.UUID
		leaseOwner                               *string
		leaseUntil, finishedAt, unavailableSince *time.Time
	)
	err := row.Scan(&j.ID, &j.TenantID, &j.Scope, &owner, &j.State, &j.Total, &j.Done, &j.Skipped, &j.Failed,
		&j.WaitingItems, &j.WaitingContexts, &j.Message, &j.FirstFailure, &j.CreatedByType, &createdBy, &leaseOwner, &leaseUntil,
		&j.CreatedAt, &j.UpdatedAt, &finishedAt, &unavailableSince)
	j.OwnerID, j.CreatedBy, j.LeaseOwner = deref(owner), deref(createdBy), deref(leaseOwner)
	j.LeaseUntil, j.FinishedAt, j.UnavailableSince = deref(leaseUntil), deref(finishedAt), deref(unavailableSince)
	return j, err
}

// CreateJob records a new job with the key contexts of its scope: every key context of the tenant
// for JobScopeTenant, the owner's own CLIENT context for JobScopeOwner. A zero j.ID gets a
// time-ordered one. With a lease (Owner set) the job starts RUNNING, held by that replica (a job
// whose master key only that replica has); without one it waits PENDING for any replica's worker.
// audit is recorded in the same transaction.
//
// Errors: Invalid for an unknown scope or an OWNER job without OwnerID; FailedPrecondition when an
// unfinished job of the same tenant (TENANT) or owner (OWNER) exists (the message names it), or
// the owner has no zero-knowledge key context; NotFound for an unknown tenant or owner.
func (s *Store) CreateJob(ctx context.Context, j Job, lease Lease, audit AuditEvent) (Job, error) {
	return s.createJob(ctx, j, lease, audit, false)
}

// CreateRotationJob is CreateJob for the TENANT job of a key rotation, which its creator holds
// (lease) while the tenant's contexts rotate. It is also refused while an OWNER job of the tenant
// is unfinished: rotating would leave that job moving items to versions that are no longer active.
// Job creation is serialized per tenant, so an owner's job created at the same moment is either
// seen here or created after the rotation's job (and then moves items to the versions the
// rotation made, or to older ones if it read its context's active version before the rotation
// reached it: the rotation's job then counts those items as waiting, and the owner starts again).
//
// Errors: those of CreateJob; FailedPrecondition naming the unfinished owner's job.
func (s *Store) CreateRotationJob(ctx context.Context, j Job, lease Lease, audit AuditEvent) (Job, error) {
	if j.Scope != JobScopeTenant {
		return Job{}, errs.E(errs.Invalid, "a rotation's job is a %s job", JobScopeTenant)
	}
	return s.createJob(ctx, j, lease, audit, true)
}

// createJob is CreateJob and, with rotation, CreateRotationJob.
func (s *Store) createJob(ctx context.Context, j Job, lease Lease, audit AuditEvent, rotation bool) (Job, error) {
	if j.Scope != JobScopeTenant && j.Scope != JobScopeOwner {
		return Job{}, errs.E(errs.Invalid, "job scope must be %s or %s", JobScopeTenant, JobScopeOwner)
	}
	if (j.Scope == JobScopeOwner) != (j.OwnerID != uuid.Nil) {
		return Job{}, errs.E(errs.Invalid, "an %s job, and only one, names its owner", JobScopeOwner)
	}
	if j.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return Job{}, fail("new job id", err)
		}
		j.ID = id
	}
	state := JobPending
	var leaseOwner *string
	var leaseMillis *int64
	if lease.Owner != "" {
		state, leaseOwner = JobRunning, &lease.Owner
		ms := lease.For.Milliseconds()
		leaseMillis = &ms
	}
	var out Job
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockAdvisory(ctx, tx, advisoryLockKey("reencryption-jobs/"+j.TenantID.String())); err != nil {
			return err
		}
		if rotation {
			owner, err := scanJob(tx.QueryRow(ctx, `SELECT `+jobColumns+` FROM reencryption_jobs
				WHERE tenant_id = $1 AND scope = 'OWNER' AND state IN ('PENDING', 'RUNNING') ORDER BY created_at LIMIT 1`, j.TenantID))
			if err == nil {
				return errs.E(errs.FailedPrecondition, "re-encryption job %s of a zero-knowledge owner is still running, and rotating now "+
					"would leave it moving items to versions that are no longer active; wait for it to finish (GET /v1/keys/jobs/%s)", owner.ID, owner.ID)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		var err error
		out, err = scanJob(tx.QueryRow(ctx, `INSERT INTO reencryption_jobs (id, tenant_id, scope, owner_id, state,
			created_by_type, created_by, lease_owner, lease_until)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond') RETURNING `+jobColumns,
			j.ID, j.TenantID, j.Scope, nullIfNil(j.OwnerID), state, j.CreatedByType, nullIfNil(j.CreatedBy),
			leaseOwner, leaseMillis))
		if err != nil {
			return err
		}
		var tag pgconn.CommandTag
		if j.Scope == JobScopeTenant {
			tag, err = tx.Exec(ctx, `INSERT INTO reencryption_job_contexts (job_id, encryption_id, key_mode)
				SELECT $1, encryption_id, key_mode FROM key_contexts WHERE tenant_id = $2`, j.ID, j.TenantID)
		} else {
			tag, err = tx.Exec(ctx, `INSERT INTO reencryption_job_contexts (job_id, encryption_id, key_mode)
				SELECT $1, encryption_id, key_mode FROM key_contexts
				WHERE user_id = $2 AND tenant_id = $3 AND key_mode = 'CLIENT'`, j.ID, j.OwnerID, j.TenantID)
		}
		if err != nil {
			return err
		}
		if j.Scope == JobScopeOwner && tag.RowsAffected() == 0 {
			return errs.E(errs.FailedPrecondition, "user %s has no zero-knowledge key context to re-encrypt", j.OwnerID)
		}
		return insertAudit(ctx, tx, audit.about(&j.TenantID, "job:"+j.ID.String()))
	})
	if c, ok := uniqueViolation(err); ok && strings.HasPrefix(c, "reencryption_jobs_one_per_") {
		if other, found, err := s.UnfinishedJob(ctx, j.TenantID, j.OwnerID); err == nil && found {
			return Job{}, ErrUnfinished(other)
		}
		return Job{}, errs.E(errs.FailedPrecondition, "a re-encryption job of this scope is still running; wait for it to finish")
	}
	if _, ok := foreignKeyViolation(err); ok {
		return Job{}, errs.E(errs.NotFound, "tenant %s or user %s not found", j.TenantID, j.OwnerID)
	}
	if err != nil {
		return Job{}, fail("create job", err)
	}
	return out, nil
}

// UnfinishedJob returns the PENDING or RUNNING job of tenantID's TENANT scope (ownerID uuid.Nil) or
// of ownerID's OWNER scope, if there is one.
func (s *Store) UnfinishedJob(ctx context.Context, tenantID, ownerID uuid.UUID) (Job, bool, error) {
	scope := JobScopeTenant
	if ownerID != uuid.Nil {
		scope = JobScopeOwner
	}
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM reencryption_jobs WHERE tenant_id = $1 AND scope = $2
		AND ($3::uuid IS NULL OR owner_id = $3) AND state IN ('PENDING', 'RUNNING') LIMIT 1`,
		tenantID, scope, nullIfNil(ownerID)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, false, nil
	}
	if err != nil {
		return Job{}, false, fail("find unfinished job", err)
	}
	return j, true, nil
}

// ErrUnfinished is the FailedPrecondition error naming the unfinished job j that keeps another of
// its scope from being created.
func ErrUnfinished(j Job) error {
	return errs.E(errs.FailedPrecondition, "re-encryption job %s is still running; wait for it to finish (GET /v1/keys/jobs/%s)", j.ID, j.ID)
}

// GetJob returns a job of tenantID. Errors: NotFound for an unknown job and another tenant's alike.
func (s *Store) GetJob(ctx context.Context, tenantID, id uuid.UUID) (Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM reencryption_jobs WHERE id = $1 AND tenant_id = $2`, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, errs.E(errs.NotFound, "job %s not found", id)
	}
	if err != nil {
		return Job{}, fail("read job", err)
	}
	return j, nil
}

// ListJobs returns a page of tenantID's jobs, newest first, and the cursor of the next page ("" on
// the last). pageSize <= 0 means 100, at most 1000. Errors: Invalid for a cursor ListJobs did not
// return.
func (s *Store) ListJobs(ctx context.Context, tenantID uuid.UUID, pageSize int, cursor string) ([]Job, string, error) {
	limit := clampPageSize(pageSize)
	var rows pgx.Rows
	var err error
	if cursor == "" {
		rows, err = s.pool.Query(ctx, `SELECT `+jobColumns+` FROM reencryption_jobs WHERE tenant_id = $1
			ORDER BY created_at DESC, id DESC LIMIT $2`, tenantID, limit+1)
	} else {
		t, id, ok := decodePosition(cursor)
		if !ok {
			return nil, "", errs.E(errs.Invalid, "pageToken: not a token ListJobs returned")
		}
		rows, err = s.pool.Query(ctx, `SELECT `+jobColumns+` FROM reencryption_jobs WHERE tenant_id = $1
			AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $2`, tenantID, limit+1, t, id)
	}
	if err != nil {
		return nil, "", fail("list jobs", err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) { return scanJob(r) })
	if err != nil {
		return nil, "", fail("list jobs", err)
	}
	if len(jobs) <= limit {
		return jobs, "", nil
	}
	jobs = jobs[:limit]
	last := jobs[limit-1]
	return jobs, encodePosition(last.CreatedAt, last.ID), nil
}

// ClaimJob gives worker the oldest unfinished job whose lease is free or has expired (a replica
// that died holding it, or a job parked until then: see ParkJob), leased for lease.For, and marks
// it RUNNING; ok is false when there is none. Replicas claiming at once never get the same job
// (FOR UPDATE SKIP LOCKED).
func (s *Store) ClaimJob(ctx context.Context, lease Lease) (j Job, ok bool, err error) {
	j, err = scanJob(s.pool.QueryRow(ctx, `UPDATE reencryption_jobs
		SET lease_owner = $1, lease_until = now() + $2 * interval '1 millisecond', state = 'RUNNING', updated_at = now()
		WHERE id = (SELECT id FROM reencryption_jobs
			WHERE state IN ('PENDING', 'RUNNING') AND (lease_until IS NULL OR lease_until < now())
			ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+jobColumns, lease.Owner, lease.For.Milliseconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, false, nil
	}
	if err != nil {
		return Job{}, false, fail("claim job", err)
	}
	return j, true, nil
}

// RenewLease extends lease.Owner's lease on job id by lease.For and, if message is not nil, sets
// the job's message. Errors: Aborted (IsLeaseLost) when another replica holds the lease or the
// job has ended.
func (s *Store) RenewLease(ctx context.Context, id uuid.UUID, lease Lease, message *string) error {
	if message != nil {
		m := truncate(*message, maxJobMessage)
		message = &m
	}
	tag, err := s.pool.Exec(ctx, `UPDATE reencryption_jobs SET lease_until = now() + $3 * interval '1 millisecond',
		message = COALESCE($4, message)
		WHERE id = $1 AND lease_owner = $2 AND state = 'RUNNING'`, id, lease.Owner, lease.For.Milliseconds(), message)
	if err != nil {
		return fail("renew job lease", err)
	}
	if tag.RowsAffected() == 0 {
		return errLeaseLost
	}
	return nil
}

// ReleaseJob gives up owner's lease on job id at once, so that another replica's worker can take it
// over without waiting for the lease to expire (a replica shutting down). It is a no-op if owner
// no longer holds the lease.
func (s *Store) ReleaseJob(ctx context.Context, id uuid.UUID, owner string) error {
	_, err := s.pool.Exec(ctx, `UPDATE reencryption_jobs SET lease_owner = NULL, lease_until = NULL
		WHERE id = $1 AND lease_owner = $2 AND state = 'RUNNING'`, id, owner)
	return fail("release job", err)
}

// QueueJob hands job id, created held by owner (see CreateJob) while its creator prepared it, to
// any replica's worker: it is PENDING again, without a lease, and returned. Errors: Aborted
// (IsLeaseLost) when owner no longer holds the job or it has ended (its lease expired and another
// replica took it: nothing to do).
func (s *Store) QueueJob(ctx context.Context, id uuid.UUID, owner string) (Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `UPDATE reencryption_jobs SET state = 'PENDING', lease_owner = NULL, lease_until = NULL,
		updated_at = now() WHERE id = $1 AND lease_owner = $2 AND state = 'RUNNING'
		RETURNING `+jobColumns, id, owner))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, errLeaseLost
	}
	if err != nil {
		return Job{}, fail("queue job", err)
	}
	return j, nil
}

// ParkJob gives up lease.Owner's lease on job id, which waits for an unavailable encryption
// service, so that its replica can work other jobs meanwhile: the job stays RUNNING, with message,
// and no replica claims it before wait has passed (ClaimJob skips it until its lease_until). since
// is recorded as when the wait began (Job.UnavailableSince), so that whoever claims the job next
// counts the wait from there; ApplyPage and PlanJobContext clear it.
//
// Errors: Aborted (IsLeaseLost) when lease.Owner no longer holds the job or it has ended.
func (s *Store) ParkJob(ctx context.Context, id uuid.UUID, lease Lease, since time.Time, wait time.Duration, message string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE reencryption_jobs SET lease_owner = NULL,
		lease_until = now() + $3 * interval '1 millisecond', unavailable_since = $4, message = $5, updated_at = now()
		WHERE id = $1 AND lease_owner = $2 AND state = 'RUNNING'`,
		id, lease.Owner, wait.Milliseconds(), since, truncate(message, maxJobMessage))
	if err != nil {
		return fail("park job", err)
	}
	if tag.RowsAffected() == 0 {
		return errLeaseLost
	}
	return nil
}

// JobContexts returns the key contexts of job id in the order a worker goes through them.
func (s *Store) JobContexts(ctx context.Context, id uuid.UUID) ([]JobContext, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobContextColumns+`
		FROM reencryption_job_contexts WHERE job_id = $1 ORDER BY encryption_id`, id)
	if err != nil {
		return nil, fail("list job contexts", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (JobContext, error) { return scanJobContext(r) })
	if err != nil {
		return nil, fail("list job contexts", err)
	}
	return out, nil
}

// PlanJobContext records the active version of a PENDING context of job id, counts the context's
// items on other versions and adds them to the job: to Total when the context will be moved
// (state JobContextMoving), to the waiting counts for a zero-knowledge context this job cannot
// move (JobContextWaitingForKey). A context whose key context is gone from the database (its owner
// was deleted since the job was created, items and all) is planned JobContextDone with nothing to
// move, whatever state was asked; state JobContextDone itself (with activeVersionID uuid.Nil) says
// that the encryption service no longer knows the context, and is accepted only for such a one.
// Planning a context twice changes nothing. Either way the job has made progress: its
// Job.UnavailableSince is cleared. It returns the context as planned.
//
// Errors: Aborted (IsLeaseLost) when lease.Owner no longer holds the job; Invalid for another
// state; NotFound for a context not in the job; FailedPrecondition for JobContextDone while the
// key context is still in the database.
func (s *Store) PlanJobContext(ctx context.Context, id uuid.UUID, lease Lease, encryptionID, activeVersionID uuid.UUID, state string) (JobContext, error) {
	if state != JobContextMoving && state != JobContextWaitingForKey && state != JobContextDone {
		return JobContext{}, errs.E(errs.Invalid, "a planned context is %s, %s or %s", JobContextMoving, JobContextWaitingForKey, JobContextDone)
	}
	var out JobContext
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := holdLease(ctx, tx, id, lease); err != nil {
			return err
		}
		current, err := lockJobContext(ctx, tx, id, encryptionID)
		if err != nil {
			return err
		}
		if current.State == JobContextPending {
			var gone bool
			if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM key_contexts WHERE encryption_id = $1)`, encryptionID).Scan(&gone); err != nil {
				return err
			}
			switch {
			case gone:
				state = JobContextDone
			case state == JobContextDone:
				return errs.E(errs.FailedPrecondition, "key context %s is still in the database", encryptionID)
			}
			var n int64
			if !gone {
				if err := tx.QueryRow(ctx, `SELECT count(*) FROM items WHERE encryption_id = $1 AND encryption_version_id <> $2`,
					encryptionID, activeVersionID).Scan(&n); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE reencryption_job_contexts SET state = $3, active_version_id = $4, to_move = $5
				WHERE job_id = $1 AND encryption_id = $2`, id, encryptionID, state, activeVersionID, n); err != nil {
				return err
			}
			switch {
			case state == JobContextMoving:
				_, err = tx.Exec(ctx, `UPDATE reencryption_jobs SET total = total + $2, updated_at = now() WHERE id = $1`, id, n)
			case state == JobContextWaitingForKey && n > 0:
				_, err = tx.Exec(ctx, `UPDATE reencryption_jobs SET waiting_items = waiting_items + $2,
					waiting_contexts = waiting_contexts + 1, updated_at = now() WHERE id = $1`, id, n)
			}
			if err != nil {
				return err
			}
		}
		if err := madeProgress(ctx, tx, id); err != nil {
			return err
		}
		out, err = readJobContext(ctx, tx, id, encryptionID)
		return err
	})
	if err != nil {
		return JobContext{}, fail("plan job context", err)
	}
	return out, nil
}

// madeProgress records that job id made progress: it is no longer waiting for an unavailable
// encryption service (Job.UnavailableSince).
func madeProgress(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	_, err := tx.Exec(ctx, `UPDATE reencryption_jobs SET unavailable_since = NULL
		WHERE id = $1 AND unavailable_since IS NOT NULL`, id)
	return err
}

// ReplanJobContext sweeps a DONE context of job id once more, for the items an owner's write put
// back on an older version after the job had moved them (see ContextsToSweep): it records
// activeVersionID, the context's active version now, and if items of the context are on other
// versions it counts them, adds them to the job's Total and sets the context MOVING again from the
// start, so that the job moves them as it moved the others. With none it stays DONE. The job has
// made progress: its Job.UnavailableSince is cleared. Replanning again, before any page is
// written, changes nothing. It returns the context as replanned.
//
// Errors: Aborted (IsLeaseLost) when lease.Owner no longer holds the job; NotFound for a context
// not in the job; FailedPrecondition for a context that is not DONE, or was done with nothing to
// move because its key context was gone.
func (s *Store) ReplanJobContext(ctx context.Context, id uuid.UUID, lease Lease, encryptionID, activeVersionID uuid.UUID) (JobContext, error) {
	var out JobContext
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := holdLease(ctx, tx, id, lease); err != nil {
			return err
		}
		current, err := lockJobContext(ctx, tx, id, encryptionID)
		if err != nil {
			return err
		}
		replanned := current.State == JobContextMoving && current.Checkpoint == uuid.Nil && current.ActiveVersionID == activeVersionID
		if !replanned {
			if current.State != JobContextDone || current.ActiveVersionID == uuid.Nil {
				return errs.E(errs.FailedPrecondition, "key context %s of job %s is %s, not done moving: nothing to sweep", encryptionID, id, current.State)
			}
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM items WHERE encryption_id = $1 AND encryption_version_id <> $2`,
				encryptionID, activeVersionID).Scan(&n); err != nil {
				return err
			}
			state := JobContextDone
			if n > 0 {
				state = JobContextMoving
			}
			if _, err := tx.Exec(ctx, `UPDATE reencryption_job_contexts SET state = $3, active_version_id = $4, to_move = to_move + $5,
				checkpoint = CASE WHEN $5 > 0 THEN '00000000-0000-0000-0000-000000000000'::uuid ELSE checkpoint END
				WHERE job_id = $1 AND encryption_id = $2`, id, encryptionID, state, activeVersionID, n); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE reencryption_jobs SET total = total + $2, updated_at = now() WHERE id = $1`, id, n); err != nil {
				return err
			}
		}
		if err := madeProgress(ctx, tx, id); err != nil {
			return err
		}
		out, err = readJobContext(ctx, tx, id, encryptionID)
		return err
	})
	if err != nil {
		return JobContext{}, fail("sweep job context", err)
	}
	return out, nil
}

// lockJobContext locks context encryptionID of job id and returns it. Errors: NotFound for a
// context not in the job.
func lockJobContext(ctx context.Context, tx pgx.Tx, id, encryptionID uuid.UUID) (JobContext, error) {
	c, err := scanJobContext(tx.QueryRow(ctx, `SELECT `+jobContextColumns+` FROM reencryption_job_contexts
		WHERE job_id = $1 AND encryption_id = $2 FOR UPDATE`, id, encryptionID))
	if errors.Is(err, pgx.ErrNoRows) {
		return JobContext{}, errs.E(errs.NotFound, "key context %s is not part of job %s", encryptionID, id)
	}
	return c, err
}

// readJobContext returns context encryptionID of job id.
func readJobContext(ctx context.Context, tx pgx.Tx, id, encryptionID uuid.UUID) (JobContext, error) {
	return scanJobContext(tx.QueryRow(ctx, `SELECT `+jobContextColumns+` FROM reencryption_job_contexts
		WHERE job_id = $1 AND encryption_id = $2`, id, encryptionID))
}

const jobContextColumns = `encryption_id, key_mode, state, active_version_id, to_move, checkpoint`

func scanJobContext(row pgx.Row) (JobContext, error) {
	var c JobContext
	var active *uuid.UUID
	err := row.Scan(&c.EncryptionID, &c.KeyMode, &c.State, &active, &c.ToMove, &c.Checkpoint)
	c.ActiveVersionID = deref(active)
	return c, err
}

// ContextsToSweep returns the contexts of job id that are DONE yet have items on another
// version than the one the job moved them to, in the order the job goes through them: items an
// owner's write put back on an older version (data encrypted before a rotation, stored after the
// job passed the item), items imported meanwhile, and items the encryption service put on a newer
// version if it rotated the context by itself during the job. One statement for every context.
func (s *Store) ContextsToSweep(ctx context.Context, id uuid.UUID) ([]uuid.UUID, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.encryption_id FROM reencryption_job_contexts c
		WHERE c.job_id = $1 AND c.state = 'DONE' AND EXISTS (SELECT 1 FROM items i
			WHERE i.encryption_id = c.encryption_id AND i.encryption_version_id <> c.active_version_id)
		ORDER BY c.encryption_id`, id)
	if err != nil {
		return nil, fail("find contexts to sweep", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fail("find contexts to sweep", err)
	}
	return out, nil
}

// ItemsToMove returns the next page of a job: items of tenantID in key context encryptionID that
// are not on activeVersionID and whose id is above after, in id order — at most limit of them,
// and no more than fit in maxBytes of ciphertext (as stored), but always the first whatever its
// size — and whether more such items follow. Bounding a page by size bounds the rewrap call that
// carries it to the encryption service, and what the worker holds in memory.
func (s *Store) ItemsToMove(ctx context.Context, tenantID, encryptionID, activeVersionID, after uuid.UUID, limit int, maxBytes int64) (items []Item, more bool, err error) {
	// The window runs over the candidates in id order, read from the (encryption_id, id) index,
	// and stops after limit + 1 of them: the one past the page only says that more follow.
	rows, err := s.pool.Query(ctx, `WITH candidates AS (
			SELECT id, row_number() OVER w AS n, sum(octet_length(cipher_text)) OVER w AS bytes
			FROM items WHERE encryption_id = $1 AND id > $2 AND encryption_version_id <> $3 AND tenant_id = $4
			WINDOW w AS (ORDER BY id ROWS UNBOUNDED PRECEDING)
			ORDER BY id LIMIT $5 + 1)
		SELECT `+itemColumns+`, (SELECT count(*) FROM candidates)
		FROM candidates JOIN items USING (id)
		WHERE n <= $5 AND (n = 1 OR bytes <= $6) ORDER BY id`,
		encryptionID, after, activeVersionID, tenantID, limit, maxBytes)
	if err != nil {
		return nil, false, fail("list items to move", err)
	}
	var candidates int
	items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) {
		var it Item
		err := r.Scan(append(itemFields(&it), &candidates)...)
		return it, err
	})
	if err != nil {
		return nil, false, fail("list items to move", err)
	}
	return items, candidates > len(items), nil
}

// Move is one item of a page: its new ciphertext under the active version, to be written only if
// the item is still at Revision on FromVersionID.
type Move struct {
	ID            uuid.UUID
	Revision      int
	FromVersionID uuid.UUID
	To            Item // CipherText, EncryptionID, VersionID, Algorithm and Metadata are used
}

// Unknown is an item of a page that the encryption service did not rewrap because it does not
// know the item's key context or version (NotFound): the owner was deleted meanwhile and their
// key context erased — or the context is missing for another reason.
type Unknown struct {
	ID     uuid.UUID
	Reason string // the service's answer, safe to show; never data
}

// Page is what a worker did with one page of a job's context.
type Page struct {
	Moves   []Move
	Failed  int64     // items of the page the encryption service refused
	Unknown []Unknown // items of the page whose key context or version the service does not know
	// Checkpoint is the last item id of the page: everything up to it has been dealt with.
	Checkpoint uuid.UUID
	Last       bool    // no item of the context is left after Checkpoint
	Message    *string // sets the job's message, when not nil
	Failure    string  // the first refused item of the page and why, kept if the job has none yet
}

// Applied is how ApplyPage counted the items of a page.
type Applied struct {
	Done    int64 // written under the active version
	Skipped int64 // edited or deleted meanwhile, or gone with their owner
	Failed  int64 // refused by the encryption service
}

// errVersionDisabled marks ApplyPage's refusal of a page rewrapped into a version disabled since.
var errVersionDisabled = errors.New("key version disabled")

// IsVersionDisabled reports whether err is ApplyPage's refusal of a page rewrapped into a key
// version that was disabled since: nothing was written, and the page is to be rewrapped again.
func IsVersionDisabled(err error) bool {
	return errors.Is(err, errVersionDisabled)
}

// ApplyPage writes a page back in one transaction: each move only if its item is still at the
// revision and version it was read at (an item edited meanwhile is already current and is never
// overwritten: it counts as skipped, as does a deleted one), the context's checkpoint, the job's
// counts, and a renewal of lease. The job has made progress: its Job.UnavailableSince is cleared.
// Item revisions and update times are left alone: re-encryption changes no content, so it must
// not make an owner's next update look stale.
//
// The moves are written under the key context's share lock, as an owner's writes are (see
// lockedDisabledVersion): if a version they were rewrapped into was disabled meanwhile (the
// encryption service rotated the context, and an admin disabled the version while no item used
// it yet), nothing is written, the checkpoint stays, and the error says so (IsVersionDisabled):
// rewrapped again, the page goes to the version active now. An Unknown item counts as skipped if
// the item or its key context is gone from the database (its owner was deleted), as failed
// otherwise. A page whose checkpoint the context has already reached — written by an earlier
// attempt whose answer was lost — changes nothing and counts nothing (zero Applied).
//
// It returns how the page's items were counted. Errors: Aborted (IsLeaseLost) when lease.Owner no
// longer holds the job, Aborted (IsVersionDisabled) as above — nothing is written either way;
// NotFound for a context not in the job.
func (s *Store) ApplyPage(ctx context.Context, id uuid.UUID, lease Lease, encryptionID uuid.UUID, p Page) (Applied, error) {
	if p.Message != nil {
		m := truncate(*p.Message, maxJobMessage)
		p.Message = &m
	}
	if !validText(p.Failure, 0, 10*maxJobMessage) {
		p.Failure = "(unprintable)"
	}
	var out Applied
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = Applied{}
		if err := holdLease(ctx, tx, id, lease); err != nil {
			return err
		}
		current, err := lockJobContext(ctx, tx, id, encryptionID)
		if err != nil {
			return err
		}
		if len(p.Moves) > 0 || p.Failed > 0 || len(p.Unknown) > 0 {
			if bytes.Compare(current.Checkpoint[:], p.Checkpoint[:]) >= 0 {
				return nil // written already
			}
		}
		if len(p.Moves) > 0 {
			var targets []uuid.UUID
			for _, m := range p.Moves {
				if !slices.Contains(targets, m.To.VersionID) {
					targets = append(targets, m.To.VersionID)
				}
			}
			v, disabled, err := lockedDisabledVersion(ctx, tx, encryptionID, targets)
			if err != nil {
				return err
			}
			if disabled {
				return errs.Wrap(errs.Aborted, errVersionDisabled, fmt.Sprintf(
					"key version %s was disabled after this page was rewrapped into it: nothing was written; rewrap the page again", v))
			}
			if out.Done, out.Skipped, err = applyMoves(ctx, tx, encryptionID, p.Moves); err != nil {
				return err
			}
		}
		failure := p.Failure
		if len(p.Unknown) > 0 {
			present, err := presentItems(ctx, tx, p.Unknown)
			if err != nil {
				return err
			}
			for _, u := range p.Unknown {
				if !present[u.ID] {
					out.Skipped++
					continue
				}
				out.Failed++
				if failure == "" {
					failure = fmt.Sprintf("item %s: %s", u.ID, u.Reason)
				}
			}
		}
		out.Failed += p.Failed
		state := JobContextMoving
		if p.Last {
			state = JobContextDone
		}
		if _, err := tx.Exec(ctx, `UPDATE reencryption_job_contexts SET checkpoint = GREATEST(checkpoint, $3), state = $4
			WHERE job_id = $1 AND encryption_id = $2`, id, encryptionID, p.Checkpoint, state); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE reencryption_jobs SET done = done + $2, skipped = skipped + $3, failed = failed + $4,
			message = COALESCE($5, message), updated_at = now(), lease_until = now() + $6 * interval '1 millisecond',
			unavailable_since = NULL, first_failure = CASE WHEN first_failure = '' THEN $7 ELSE first_failure END
			WHERE id = $1`, id, out.Done, out.Skipped, out.Failed, p.Message, lease.For.Milliseconds(), truncate(failure, maxJobMessage))
		return err
	})
	if err != nil {
		return Applied{}, fail("write re-encrypted items", err)
	}
	return out, nil
}

// applyMoves writes each move whose item is still at its revision and version, and counts those
// written and those skipped.
func applyMoves(ctx context.Context, tx pgx.Tx, encryptionID uuid.UUID, moves []Move) (done, skipped int64, err error) {
	b := &pgx.Batch{}
	for _, m := range moves {
		b.Queue(`UPDATE items SET cipher_text = $4, encryption_version_id = $5, algorithm = $6, metadata = $7
			WHERE id = $1 AND revision = $2 AND encryption_version_id = $3 AND encryption_id = $8`,
			m.ID, m.Revision, m.FromVersionID, m.To.CipherText, m.To.VersionID, m.To.Algorithm, m.To.Metadata, encryptionID)
	}
	res := tx.SendBatch(ctx, b)
	defer func() {
		if cerr := res.Close(); err == nil {
			err = cerr
		}
	}()
	for range moves {
		tag, err := res.Exec()
		if err != nil {
			return 0, 0, err
		}
		if tag.RowsAffected() == 1 {
			done++
		} else {
			skipped++
		}
	}
	return done, skipped, nil
}

// presentItems reports which of items are still in the database with their key context.
func presentItems(ctx context.Context, tx pgx.Tx, items []Unknown) (map[uuid.UUID]bool, error) {
	ids := make([]uuid.UUID, len(items))
	for i, u := range items {
		ids[i] = u.ID
	}
	rows, err := tx.Query(ctx, `SELECT i.id FROM items i JOIN key_contexts k ON k.encryption_id = i.encryption_id
		WHERE i.id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, err
	}
	present := make(map[uuid.UUID]bool, len(found))
	for _, id := range found {
		present[id] = true
	}
	return present, nil
}

// FinishJob ends job id in state (SUCCEEDED, FAILED or WAITING_FOR_KEY) with message, frees its
// lease, and records audit in the same transaction. Items planned but never met (edited to the
// active version or deleted meanwhile) are counted skipped, so that done + skipped + failed =
// total. Errors: Invalid for another state; Aborted (IsLeaseLost) when lease.Owner no longer
// holds the job.
func (s *Store) FinishJob(ctx context.Context, id uuid.UUID, lease Lease, state, message string, audit AuditEvent) (Job, error) {
	if state != JobSucceeded && state != JobFailed && state != JobWaitingForKey {
		return Job{}, errs.E(errs.Invalid, "a job ends %s, %s or %s", JobSucceeded, JobFailed, JobWaitingForKey)
	}
	var out Job
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := holdLease(ctx, tx, id, lease); err != nil {
			return err
		}
		var err error
		// Reconciled only when every context was gone through: a job that stopped half-way has
		// items left that nobody looked at.
		out, err = scanJob(tx.QueryRow(ctx, `WITH complete AS (
				SELECT NOT EXISTS (SELECT 1 FROM reencryption_job_contexts
					WHERE job_id = $1 AND state IN ('PENDING', 'MOVING')) AS yes)
			UPDATE reencryption_jobs SET state = $2, message = $3,
				skipped = CASE WHEN complete.yes THEN GREATEST(skipped, total - done - failed) ELSE skipped END,
				total = CASE WHEN complete.yes THEN GREATEST(total, done + GREATEST(skipped, total - done - failed) + failed)
					ELSE total END,
				lease_owner = NULL, lease_until = NULL, updated_at = now(), finished_at = now()
			FROM complete WHERE id = $1 RETURNING `+jobColumns, id, state, truncate(message, maxJobMessage)))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&out.TenantID, "job:"+id.String()))
	})
	if err != nil {
		return Job{}, fail("finish job", err)
	}
	return out, nil
}

// holdLease locks job id and checks that lease.Owner holds it while it runs.
func holdLease(ctx context.Context, tx pgx.Tx, id uuid.UUID, lease Lease) error {
	var owner *string
	var state string
	err := tx.QueryRow(ctx, `SELECT lease_owner, state FROM reencryption_jobs WHERE id = $1 FOR UPDATE`, id).Scan(&owner, &state)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (deref(owner) != lease.Owner || state != JobRunning)) {
		return errLeaseLost
	}
	return err
}

// VersionCount is how many items of a tenant one key version encrypts.
type VersionCount struct {
	EncryptionID, VersionID uuid.UUID
	Items                   int64
}

// KeyContexts returns every personal key context of tenantID, oldest first.
func (s *Store) KeyContexts(ctx context.Context, tenantID uuid.UUID) ([]KeyContext, error) {
	rows, err := s.pool.Query(ctx, `SELECT user_id, tenant_id, encryption_id, key_mode, created_at
		FROM key_contexts WHERE tenant_id = $1 ORDER BY created_at, encryption_id`, tenantID)
	if err != nil {
		return nil, fail("list key contexts", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyContext, error) {
		var k KeyContext
		err := r.Scan(&k.UserID, &k.TenantID, &k.EncryptionID, &k.KeyMode, &k.CreatedAt)
		return k, err
	})
	if err != nil {
		return nil, fail("list key contexts", err)
	}
	return out, nil
}

// CountItemsByVersion counts tenantID's items per key context and version.
func (s *Store) CountItemsByVersion(ctx context.Context, tenantID uuid.UUID) ([]VersionCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT encryption_id, encryption_version_id, count(*) FROM items
		WHERE tenant_id = $1 GROUP BY encryption_id, encryption_version_id`, tenantID)
	if err != nil {
		return nil, fail("count items", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (VersionCount, error) {
		var c VersionCount
		err := r.Scan(&c.EncryptionID, &c.VersionID, &c.Items)
		return c, err
	})
	if err != nil {
		return nil, fail("count items", err)
	}
	return out, nil
}

// DisableUnusedVersion calls disable, which disables a key version on the encryption service, only
// if no item uses that version, and records audit. While disable runs, the key context is locked
// against imports into it (ImportItems), so that no item can arrive on the version in between.
//
// Errors: NotFound when encryptionID is not a key context of tenantID; FailedPrecondition when
// items still use the version (the message says how many); disable's error, unchanged.
func (s *Store) DisableUnusedVersion(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, disable func(context.Context) error, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var owner uuid.UUID
		err := tx.QueryRow(ctx, `SELECT user_id FROM key_contexts WHERE encryption_id = $1 AND tenant_id = $2 FOR UPDATE`,
			encryptionID, tenantID).Scan(&owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "key context %s not found", encryptionID)
		}
		if err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM items WHERE encryption_id = $1 AND encryption_version_id = $2`,
			encryptionID, versionID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errs.E(errs.FailedPrecondition,
				"%d items still use version %s: re-encrypt them first (POST /v1/keys/jobs) and wait for the job to finish", n, versionID)
		}
		if err := disable(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO disabled_key_versions (encryption_version_id, encryption_id)
			VALUES ($1, $2) ON CONFLICT (encryption_version_id) DO NOTHING`, versionID, encryptionID); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&tenantID, "key:"+encryptionID.String()+"/"+versionID.String()))
	})
	return fail("disable key version", err)
}

// EnableVersion calls enable, which makes a disabled key version decrypt again on the encryption
// service, forgets that core disabled it (so that item writes under it are no longer refused), and
// records audit. The key context is locked meanwhile, as by DisableUnusedVersion, so that a
// disable and an enable of one context never interleave.
//
// Errors: NotFound when encryptionID is not a key context of tenantID; enable's error, unchanged.
func (s *Store) EnableVersion(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, enable func(context.Context) error, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var owner uuid.UUID
		err := tx.QueryRow(ctx, `SELECT user_id FROM key_contexts WHERE encryption_id = $1 AND tenant_id = $2 FOR UPDATE`,
			encryptionID, tenantID).Scan(&owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "key context %s not found", encryptionID)
		}
		if err != nil {
			return err
		}
		if err := enable(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM disabled_key_versions WHERE encryption_version_id = $1 AND encryption_id = $2`,
			versionID, encryptionID); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&tenantID, "key:"+encryptionID.String()+"/"+versionID.String()))
	})
	return fail("enable key version", err)
}

// encodePosition encodes a position in a (time, id) order as an opaque cursor: the time in
// microseconds (PostgreSQL's precision, so that it round-trips exactly) and the id.
func encodePosition(t time.Time, id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10) + "." + id.String()))
}

// decodePosition reverses encodePosition.
func decodePosition(cursor string) (time.Time, uuid.UUID, bool) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return time.Time{}, uuid.Nil, false
	}
	micros, idText, ok := strings.Cut(string(b), ".")
	if !ok || len(idText) != 36 {
		return time.Time{}, uuid.Nil, false
	}
	us, err1 := strconv.ParseInt(micros, 10, 64)
	id, err2 := uuid.Parse(idText)
	// Positions hold the times of stored rows; one outside 1970–9999 was not made here, and
	// would wrap around in PostgreSQL's encoding and page from everything.
	if err1 != nil || err2 != nil || us < 0 || us > maxCursorMicros {
		return time.Time{}, uuid.Nil, false
	}
	return time.UnixMicro(us), id, true
}

// truncate cuts s to at most n characters.
func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
