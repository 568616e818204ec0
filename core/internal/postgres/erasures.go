package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Why a key context is owed a destruction (Erasure.Reason).
const (
	// ErasureUserDeleted: the personal context of a deleted user, whose items are gone.
	ErasureUserDeleted = "user_deleted"
	// ErasureUnused: a context created for a user but never recorded, because a concurrent
	// request recorded another first or the user was deleted meanwhile; nothing was encrypted
	// under it.
	ErasureUnused = "unused"
)

// Erasure is a key context core must have its tenant's encryption service destroy
// (crypto-shredding). The row is written in the transaction that makes the context unused, and
// deleted only once the service has destroyed it.
type Erasure struct {
	EncryptionID  uuid.UUID
	TenantID      uuid.UUID
	UserID        uuid.UUID // the user it belonged to (usually deleted)
	Reason        string    // ErasureUserDeleted or ErasureUnused
	RequestedAt   time.Time
	Attempts      int       // destruction attempts so far
	NextAttemptAt time.Time // when a worker may try again
	LastError     string    // why the last attempt failed; "" before any
}

const erasureColumns = `encryption_id, tenant_id, user_id, reason, requested_at, attempts, next_attempt_at, coalesce(last_error, '')`

func scanErasure(row pgx.Row) (Erasure, error) {
	var e Erasure
	err := row.Scan(&e.EncryptionID, &e.TenantID, &e.UserID, &e.Reason, &e.RequestedAt, &e.Attempts, &e.NextAttemptAt, &e.LastError)
	return e, err
}

// ErasureGrace is how long an erasure queued by DeleteUser is left to the request that deleted the
// user, which tries at once, before a worker may claim it.
const ErasureGrace = time.Minute

// queueErasure records that context encryptionID of tenantID must be destroyed, by a worker no
// sooner than after delay; recording it twice changes nothing.
func queueErasure(ctx context.Context, q querier, encryptionID, tenantID, userID uuid.UUID, reason string, delay time.Duration) error {
	_, err := q.Exec(ctx, `INSERT INTO key_erasures (encryption_id, tenant_id, user_id, reason, next_attempt_at)
		VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')
		ON CONFLICT (encryption_id) DO NOTHING`, encryptionID, tenantID, userID, reason, delay.Milliseconds())
	if err != nil {
		return fmt.Errorf("queue key context erasure: %w", err)
	}
	return nil
}

// GetErasure returns the pending erasure of key context encryptionID. Errors: NotFound when none
// is pending (never queued, or already done).
func (s *Store) GetErasure(ctx context.Context, encryptionID uuid.UUID) (Erasure, error) {
	e, err := scanErasure(s.pool.QueryRow(ctx, `SELECT `+erasureColumns+` FROM key_erasures WHERE encryption_id = $1`, encryptionID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Erasure{}, errs.E(errs.NotFound, "no erasure of key context %s is pending", encryptionID)
	}
	return e, fail("read key erasure", err)
}

// ClaimErasures returns up to limit erasures that are due (next attempt at or before now), oldest
// due first, and pushes each one's next attempt lease into the future and counts the attempt, so
// that replicas claiming at once never get the same one (FOR UPDATE SKIP LOCKED) and a replica
// that dies mid-attempt leaves it to another after lease. limit must be 1 to 1000 (Invalid
// otherwise).
func (s *Store) ClaimErasures(ctx context.Context, limit int, lease time.Duration) ([]Erasure, error) {
	return claim(ctx, s, keyErasures, limit, lease, scanErasure)
}

// FinishErasure records that the encryption service destroyed key context encryptionID (or no
// longer knew it): the pending row goes, and audit is recorded about the tenant, in one
// transaction. Finishing one that is no longer pending (another replica finished it) changes
// nothing and records nothing.
func (s *Store) FinishErasure(ctx context.Context, encryptionID uuid.UUID, audit AuditEvent) error {
	return s.finish(ctx, keyErasures, encryptionID, audit)
}

// DeferErasure records a failed attempt at erasure encryptionID: that at least attempts were
// made, the reason (a message safe to show, cut to 500 characters) and when to try again. Unknown
// ones change nothing.
func (s *Store) DeferErasure(ctx context.Context, encryptionID uuid.UUID, attempts int, retryIn time.Duration, reason string) error {
	return s.deferAttempt(ctx, keyErasures, encryptionID, attempts, retryIn, reason)
}

// erasureTable names one table of pending erasures for the methods both kinds share.
type erasureTable struct {
	name, key, columns string // the table, its key column, the columns its scan function reads
	target             string // the audit target's prefix
}

// The tables of pending erasures. Constants only: their fields are written into SQL.
var (
	keyErasures    = erasureTable{name: "key_erasures", key: "encryption_id", columns: erasureColumns, target: "encryption:"}
	tenantErasures = erasureTable{name: "tenant_erasures", key: "es_tenant_id", columns: tenantErasureColumns, target: "es-tenant:"}
)

// claim is ClaimErasures for table t, reading its rows with scan.
func claim[T any](ctx context.Context, s *Store, t erasureTable, limit int, lease time.Duration, scan func(pgx.Row) (T, error)) ([]T, error) {
	if limit < 1 || limit > 1000 {
		return nil, errs.E(errs.Invalid, "limit: want 1 to 1000, got %d", limit)
	}
	rows, err := s.pool.Query(ctx, `UPDATE `+t.name+`
		SET attempts = attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
		WHERE `+t.key+` IN (SELECT `+t.key+` FROM `+t.name+` WHERE next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING `+t.columns, limit, lease.Milliseconds())
	if err != nil {
		return nil, fail("claim "+t.name, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
	return out, fail("claim "+t.name, err)
}

// finish is FinishErasure for table t.
func (s *Store) finish(ctx context.Context, t erasureTable, id uuid.UUID, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := drop(ctx, tx, t, id, audit)
		return err
	})
	return fail("finish "+t.name, err)
}

// drop deletes the pending erasure id of table t and records audit about its tenant; found is
// false, and nothing is recorded, when there is none.
func drop(ctx context.Context, tx pgx.Tx, t erasureTable, id uuid.UUID, audit AuditEvent) (found bool, err error) {
	var tenantID uuid.UUID
	err = tx.QueryRow(ctx, `DELETE FROM `+t.name+` WHERE `+t.key+` = $1 RETURNING tenant_id`, id).Scan(&tenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete from %s: %w", t.name, err)
	}
	return true, insertAudit(ctx, tx, audit.about(&tenantID, t.target+id.String()))
}

// deferAttempt is DeferErasure for table t.
func (s *Store) deferAttempt(ctx context.Context, t erasureTable, id uuid.UUID, attempts int, retryIn time.Duration, reason string) error {
	if r := []rune(reason); len(r) > 500 {
		reason = string(r[:500])
	}
	_, err := s.pool.Exec(ctx, `UPDATE `+t.name+` SET attempts = greatest(attempts, $2), last_error = $3,
		next_attempt_at = now() + $4 * interval '1 millisecond'
		WHERE `+t.key+` = $1`, id, attempts, reason, retryIn.Milliseconds())
	return fail("defer "+t.name, err)
}

// ErasureBacklog is how many erasures are pending and since when the oldest one is.
type ErasureBacklog struct {
	Pending int
	Oldest  time.Time // zero when none is pending
}

// ErasureBacklog counts the pending erasures, of key contexts and of tenants, for metrics.
func (s *Store) ErasureBacklog(ctx context.Context) (ErasureBacklog, error) {
	var b ErasureBacklog
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(requested_at) FROM
		(SELECT requested_at FROM key_erasures UNION ALL SELECT requested_at FROM tenant_erasures) AS pending`).Scan(&b.Pending, &oldest)
	if oldest != nil {
		b.Oldest = *oldest
	}
	return b, fail("count key erasures", err)
}

// TenantErasure is a tenant deleted from core whose destruction core owes the platform's
// encryption service (every key of the tenant, through its admin plane). The row is written in the
// transaction that deletes the tenant, and deleted only once the service has destroyed it.
type TenantErasure struct {
	ESTenantID    uuid.UUID // the tenant's id on the platform's encryption service
	TenantID      uuid.UUID // the deleted tenant's id in core
	RequestedAt   time.Time
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
}

const tenantErasureColumns = `es_tenant_id, tenant_id, requested_at, attempts, next_attempt_at, coalesce(last_error, '')`

func scanTenantErasure(row pgx.Row) (TenantErasure, error) {
	var e TenantErasure
	err := row.Scan(&e.ESTenantID, &e.TenantID, &e.RequestedAt, &e.Attempts, &e.NextAttemptAt, &e.LastError)
	return e, err
}

// DeleteTenant deletes tenant id with everything of it — users, their sessions, items and key
// context records, API keys, jobs, pending key erasures (the tenant's destruction supersedes
// them) — and records audit, which stays (audit events are not tied to the tenant's row). For a
// tenant on the platform's encryption service it queues, in the same transaction, the tenant's
// destruction there (see ClaimTenantErasures), left to the deleting request for ErasureGrace, and
// returns it; nil for a tenant-hosted service, whose keys core does not touch. confirmName must be
// the tenant's name, checked with the tenant's row locked, so that a rename in between cannot
// slip past it.
//
// Errors: NotFound ("tenant <id> not found"); Invalid when confirmName is not the tenant's name
// (nothing is deleted).
func (s *Store) DeleteTenant(ctx context.Context, id uuid.UUID, confirmName string, audit AuditEvent) (*TenantErasure, error) {
	var erasure *TenantErasure
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		erasure = nil // a retried transaction starts over
		t, err := getTenant(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return err
		}
		if confirmName != t.Name {
			return errs.E(errs.Invalid, "confirmName: must repeat the tenant's name exactly: deleting a tenant cannot be undone")
		}
		if t.ES.Kind == ESKindPlatform {
			if _, err := tx.Exec(ctx, `INSERT INTO tenant_erasures (es_tenant_id, tenant_id, next_attempt_at)
				VALUES ($1, $2, now() + $3 * interval '1 millisecond') ON CONFLICT (es_tenant_id) DO NOTHING`,
				t.ES.TenantID, id, ErasureGrace.Milliseconds()); err != nil {
				return fmt.Errorf("queue tenant erasure: %w", err)
			}
			erasure = &TenantErasure{ESTenantID: t.ES.TenantID, TenantID: id}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete tenant: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&id, "tenant:"+id.String()))
	})
	if err != nil {
		return nil, fail("delete tenant", err)
	}
	return erasure, nil
}

// GetTenantErasure returns the pending erasure of the platform encryption service's tenant
// esTenantID. Errors: NotFound when none is pending.
func (s *Store) GetTenantErasure(ctx context.Context, esTenantID uuid.UUID) (TenantErasure, error) {
	e, err := scanTenantErasure(s.pool.QueryRow(ctx, `SELECT `+tenantErasureColumns+` FROM tenant_erasures WHERE es_tenant_id = $1`, esTenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return TenantErasure{}, errs.E(errs.NotFound, "no erasure of tenant %s is pending", esTenantID)
	}
	return e, fail("read tenant erasure", err)
}

// ClaimTenantErasures is ClaimErasures for tenant erasures.
func (s *Store) ClaimTenantErasures(ctx context.Context, limit int, lease time.Duration) ([]TenantErasure, error) {
	return claim(ctx, s, tenantErasures, limit, lease, scanTenantErasure)
}

// FinishTenantErasure records that the platform's encryption service destroyed tenant esTenantID
// (or no longer knew it), with audit about the deleted tenant; finishing one that is no longer
// pending changes nothing and records nothing.
func (s *Store) FinishTenantErasure(ctx context.Context, esTenantID uuid.UUID, audit AuditEvent) error {
	return s.finish(ctx, tenantErasures, esTenantID, audit)
}

// DeferTenantErasure is DeferErasure for tenant erasures.
func (s *Store) DeferTenantErasure(ctx context.Context, esTenantID uuid.UUID, attempts int, retryIn time.Duration, reason string) error {
	return s.deferAttempt(ctx, tenantErasures, esTenantID, attempts, retryIn, reason)
}

// PendingErasures returns the pending erasures of key contexts and of tenants, oldest first, at
// most 1000 of each, for operators.
func (s *Store) PendingErasures(ctx context.Context) ([]Erasure, []TenantErasure, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+erasureColumns+` FROM key_erasures ORDER BY requested_at, encryption_id LIMIT 1000`)
	if err != nil {
		return nil, nil, fail("list key erasures", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Erasure, error) { return scanErasure(r) })
	if err != nil {
		return nil, nil, fail("list key erasures", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT `+tenantErasureColumns+` FROM tenant_erasures ORDER BY requested_at, es_tenant_id LIMIT 1000`)
	if err != nil {
		return nil, nil, fail("list tenant erasures", err)
	}
	tenants, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TenantErasure, error) { return scanTenantErasure(r) })
	if err != nil {
		return nil, nil, fail("list tenant erasures", err)
	}
	return keys, tenants, nil
}

// ForgetErasure drops the pending erasure of key context or encryption-service tenant id, which an
// operator has destroyed by other means (a tenant-hosted service that lacks the method), and
// records audit. Core then stops trying.
//
// Errors: NotFound when no erasure of id is pending.
func (s *Store) ForgetErasure(ctx context.Context, id uuid.UUID, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for _, t := range []erasureTable{keyErasures, tenantErasures} {
			if found, err := drop(ctx, tx, t, id, audit); found || err != nil {
				return err
			}
		}
		return errs.E(errs.NotFound, "no erasure of %s is pending (see: core erasures list)", id)
	})
	return fail("forget erasure", err)
}
