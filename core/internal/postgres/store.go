package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/custos-platform/custos/core/internal/errs"
)

// SQLSTATE codes the store acts on, besides those in pool.go.
const (
	sqlstateUniqueViolation     = "23505"
	sqlstateForeignKeyViolation = "23503"
	sqlstateTooManyConnections  = "53300"
	sqlstateAdminShutdown       = "57P01"
	sqlstateCrashShutdown       = "57P02"
	sqlstateCannotConnectNow    = "57P03"
	sqlstateConnectionException = "08" // class prefix
)

// Page sizes of the List methods.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// hashLen is the length of every hash the store keeps of a high-entropy
// secret (refresh tokens, API-key secrets, recovery codes): SHA-256.
const hashLen = 32

// Store keeps core's identity data — tenants, users, sessions, API keys,
// signing keys, throttling counters and the audit trail — in PostgreSQL. It
// is safe for concurrent use, from any number of replicas.
//
// Every error it returns is an *errs.Error (use errs.KindOf): Invalid,
// NotFound, Conflict, FailedPrecondition and Unauthenticated as each method
// documents; Unavailable ("database unavailable", or "database busy" after
// exhausted retries) when the database cannot be reached or ctx ended;
// Internal for anything unexpected. Messages are safe to show callers;
// database detail is only in the wrapped cause.
//
// Each mutating method that takes an AuditEvent commits it in the same
// transaction as its change, so a change is never without its record nor a
// record without its change. A zero AuditEvent.ID gets a time-ordered (v7)
// one, a zero OccurredAt the database's transaction time; a nil TenantID and
// an empty Target are filled in from the object the method changes.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store using pool, which must have been opened with
// [Open] on a database migrated to [LatestVersion].
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// inTx runs fn in a READ COMMITTED transaction: methods that need a stable
// view take row locks (SELECT … FOR UPDATE) rather than rely on snapshot
// isolation, whose serialization failures would make them retry.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return InTx(ctx, s.pool, pgx.ReadCommitted, fn)
}

// advisoryLockKey derives a transaction-level advisory lock key from name,
// scoped to Schema so that core and the encryption service never contend.
func advisoryLockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("custos/" + Schema + "/" + name))
	return int64(h.Sum64()) //nolint:gosec // bit reinterpretation of a hash into an advisory lock key
}

// lockAdvisory takes the transaction-level advisory lock key, waiting for
// another transaction holding it to end.
func lockAdvisory(ctx context.Context, tx pgx.Tx, key int64) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
		return fmt.Errorf("take advisory lock: %w", err)
	}
	return nil
}

// fail returns err as an *errs.Error: unchanged if it already holds one,
// otherwise classified as Unavailable or Internal, with op and the cause kept
// for the logs only.
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	cause := fmt.Errorf("%s: %w", op, err)
	switch {
	case unreachable(err):
		return errs.Wrap(errs.Unavailable, cause, "database unavailable")
	case isSQLState(err, sqlstateSerializationFailure, sqlstateDeadlockDetected):
		// InTx already retried; retrying later may still succeed.
		return errs.Wrap(errs.Unavailable, cause, "database busy")
	default:
		return errs.Wrap(errs.Internal, cause, "internal database error")
	}
}

// unreachable reports whether err means the database could not be reached or
// the connection was lost or timed out, rather than that a statement failed.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlstateTooManyConnections, sqlstateAdminShutdown, sqlstateCrashShutdown, sqlstateCannotConnectNow:
			return true
		}
		return strings.HasPrefix(pgErr.Code, sqlstateConnectionException)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return pgconn.Timeout(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, puddle.ErrClosedPool)
}

// uniqueViolation returns the constraint a unique violation in err's chain
// broke, if it is one.
func uniqueViolation(err error) (constraint string, ok bool) {
	return violation(err, sqlstateUniqueViolation)
}

// foreignKeyViolation returns the constraint a foreign-key violation in
// err's chain broke, if it is one.
func foreignKeyViolation(err error) (constraint string, ok bool) {
	return violation(err, sqlstateForeignKeyViolation)
}

func violation(err error, code string) (string, bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == code {
		return pgErr.ConstraintName, true
	}
	return "", false
}

// clampPageSize applies the List methods' default and cap.
func clampPageSize(n int) int {
	switch {
	case n <= 0:
		return defaultPageSize
	case n > maxPageSize:
		return maxPageSize
	}
	return n
}

// validText reports whether s is valid UTF-8 of min to max characters
// without control characters (NUL included, which PostgreSQL text cannot
// hold; the others would garble logs and listings).
func validText(s string, minLen, maxLen int) bool {
	n := utf8.RuneCountInString(s)
	if !utf8.ValidString(s) || n < minLen || n > maxLen {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

// nullIfEmpty maps "" to SQL NULL.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nullIfNil maps uuid.Nil to SQL NULL.
func nullIfNil(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
