package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

// Key modes of a key context (Encryption.KeyMode), as on the wire.
const (
	KeyModePlatform = "PLATFORM" // version keys wrapped under the platform master key only
	KeyModeClient   = "CLIENT"   // zero-knowledge: opening a version key also needs the client master key
)

// Algorithms of a key context (Encryption.Algorithm), as on the wire.
const (
	AlgorithmAES256GCM         = "AES-256-GCM"
	AlgorithmXChaCha20Poly1305 = "XCHACHA20-POLY1305"
	AlgorithmRSAOAEP3072SHA256 = "RSA-OAEP-3072-SHA256"
)

// States of a key version (KeyVersion.State), in lifecycle order.
const (
	StateActive      = "ACTIVE"       // encrypts and decrypts; exactly one per context
	StateDecryptOnly = "DECRYPT_ONLY" // decrypts data written before the last rotation
	StateDisabled    = "DISABLED"     // kept, but refuses to decrypt
	StateDestroyed   = "DESTROYED"    // key material erased (crypto-shredding)
)

// Kinds of change announced by the stores' notifications and passed to
// [Listen]'s onChange.
const (
	ChangeTenant     = "tenant"     // a tenant or its secrets changed
	ChangeEncryption = "encryption" // a key context or its versions changed
)

// changesChannel is the LISTEN/NOTIFY channel of [ChangeTenant] and
// [ChangeEncryption] notifications, payload "<kind>:<uuid>".
const changesChannel = "custos_es_changes"

// SQLSTATE codes the store acts on, besides those in pool.go.
const (
	sqlstateUniqueViolation     = "23505"
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

// Tenant is a caller of the encryption service. A destroyed tenant is
// treated as unknown by every Store method.
type Tenant struct {
	ID        uuid.UUID
	Name      string // 1–200 characters, unique
	CreatedAt time.Time
	Secrets   []TenantSecret // ordered by creation; revoked ones included
}

// TenantSecret is one of a tenant's shared secrets, known here only by hash.
type TenantSecret struct {
	ID, TenantID uuid.UUID
	Hash         []byte // SHA-256 of a high-entropy secret: 32 bytes
	CreatedAt    time.Time
	RevokedAt    *time.Time // nil while active
}

// WrappedKey is key material wrapped under a master key.
type WrappedKey struct {
	MasterKeyID string // id of the platform master key of the outer wrapping
	Blob        []byte
}

// Encryption is a key context (the design's Encryption table): a tenant's
// algorithm and key mode with its ordered key versions.
type Encryption struct {
	ID, TenantID uuid.UUID
	Algorithm    string // one of the Algorithm constants
	KeyMode      string // KeyModePlatform or KeyModeClient
	// SealingPublicKey and SealingPrivateKey are set for CLIENT contexts only:
	// the X25519 key pair new version keys are sealed to. The private half is
	// wrapped under the client master key, then under a platform master key
	// whose wrapping authenticates the public half (see package keyring).
	SealingPublicKey  []byte
	SealingPrivateKey *WrappedKey
	// Rotation policy; zero means none.
	RotationMaxAge         time.Duration
	RotationMaxEncryptions int64
	CreatedAt              time.Time
	Versions               []KeyVersion // ordered by Version
}

// KeyVersion is one version of a key context (the design's
// EncryptionKeyVersion table).
type KeyVersion struct {
	ID, EncryptionID uuid.UUID
	Version          int    // 1, 2, … within its context
	State            string // one of the State constants
	Material         *WrappedKey
	PublicKey        []byte // RSA versions: the public key, PEM; authenticated by Material's wrapping; kept after destruction
	Encryptions      int64  // encryptions made with this version (may lag: counted in batches)
	CreatedAt        time.Time
	UpdatedAt        time.Time // last change of state or material
}

// AuditEvent records who did what to which tenant, context or version, and
// how it ended. It never holds data, keys or secrets.
type AuditEvent struct {
	ID                                uuid.UUID // zero: the store assigns a time-ordered one
	OccurredAt                        time.Time // zero: the database's transaction time
	TenantID, EncryptionID, VersionID *uuid.UUID
	Actor, Action, Outcome, RequestID string
}

// Store keeps tenants, key contexts, key versions and the audit trail in
// PostgreSQL. It is safe for concurrent use, from any number of replicas.
//
// Every error it returns is an *errs.Error (use errs.KindOf): NotFound,
// Conflict, FailedPrecondition and Invalid as each method documents;
// Unavailable ("database unavailable") when the database cannot be reached
// or ctx ended; Internal for anything unexpected. Messages are safe to show
// callers; database detail is only in the wrapped cause.
//
// Each mutating method commits, in the same transaction as its change, the
// AuditEvent it is given and a notification that [Listen] delivers to every
// replica.
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

// inSnapshot runs fn, which only reads, in a REPEATABLE READ transaction so
// that its several queries see one snapshot.
func (s *Store) inSnapshot(ctx context.Context, fn func(pgx.Tx) error) error {
	return InTx(ctx, s.pool, pgx.RepeatableRead, fn)
}

// insertAudit appends a to the audit trail.
func insertAudit(ctx context.Context, q querier, a AuditEvent) error {
	if err := validateAudit(a); err != nil {
		return err
	}
	id := a.ID
	if id == uuid.Nil {
		var err error
		if id, err = uuid.NewV7(); err != nil {
			return fmt.Errorf("new audit event id: %w", err)
		}
	}
	var occurredAt *time.Time
	if !a.OccurredAt.IsZero() {
		occurredAt = &a.OccurredAt
	}
	_, err := q.Exec(ctx, `
		INSERT INTO audit_events (id, occurred_at, tenant_id, actor, action, encryption_id, version_id, outcome, request_id)
		VALUES ($1, COALESCE($2, now()), $3, $4, $5, $6, $7, $8, $9)`,
		id, occurredAt, a.TenantID, a.Actor, a.Action, a.EncryptionID, a.VersionID, a.Outcome, a.RequestID)
	if err != nil {
		if isSQLState(err, sqlstateUniqueViolation) {
			return errs.E(errs.Conflict, "audit event %s already exists", id)
		}
		return fmt.Errorf("insert audit event: %w", err)
	}
	return nil
}

func validateAudit(a AuditEvent) error {
	switch {
	case a.Action == "":
		return errs.E(errs.Invalid, "audit event: action is required")
	case a.Outcome == "":
		return errs.E(errs.Invalid, "audit event: outcome is required")
	}
	return nil
}

// withDefaults returns a with its nil ids set to the given ones.
func (a AuditEvent) withDefaults(tenantID, encryptionID, versionID *uuid.UUID) AuditEvent {
	if a.TenantID == nil {
		a.TenantID = tenantID
	}
	if a.EncryptionID == nil {
		a.EncryptionID = encryptionID
	}
	if a.VersionID == nil {
		a.VersionID = versionID
	}
	return a
}

// notify announces, at commit, that the kind object id changed.
func notify(ctx context.Context, tx pgx.Tx, kind string, id uuid.UUID) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", changesChannel, kind+":"+id.String()); err != nil {
		return fmt.Errorf("notify %s change: %w", kind, err)
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
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateUniqueViolation {
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
