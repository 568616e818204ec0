package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Actor types of an AuditEvent.
const (
	ActorUser      = "user"      // a human, by user id
	ActorAPIKey    = "apikey"    // a machine credential, by API key id
	ActorAnonymous = "anonymous" // not (yet) authenticated, such as a failed login
	ActorSystem    = "system"    // core itself: bootstrap, pruning, refresh-token reuse
)

// Audit actions the store records by itself.
const (
	ActionRefreshReuse = "auth.refresh.reuse" // an already used refresh token came back: its session is revoked
)

// Audit outcomes: "ok", or the gRPC code name of the failure (see
// custos.core.v1.AuditEvent).
const (
	OutcomeOK              = "ok"
	OutcomeUnauthenticated = "UNAUTHENTICATED"
)

// AuditEvent records who did what to which object and how it ended. It never
// holds plaintext, keys or secrets.
type AuditEvent struct {
	ID         uuid.UUID  // zero: the store assigns a time-ordered one
	OccurredAt time.Time  // zero: the database's transaction time
	TenantID   *uuid.UUID // nil (or a pointer to uuid.Nil) for platform-level events
	ActorType  string     // ActorUser, ActorAPIKey, ActorAnonymous or ActorSystem
	ActorID    *uuid.UUID // the user or API key, when known (nil or a pointer to uuid.Nil otherwise)
	Action     string     // e.g. "auth.login", "user.disable"; required
	Target     string     // the object acted on, e.g. "user:<uuid>"
	Outcome    string     // "ok" or a gRPC code name; required
	RemoteAddr string     // the client's address
	RequestID  string     // the request id of the call
}

// Audit field bounds, in characters, against garbage growing the table.
const (
	maxAuditAction = 100
	maxAuditText   = 500
)

// InsertAudit appends a to the audit trail on its own, for events that
// change nothing else, such as a failed login or a refused request. A zero
// ID gets a time-ordered one; a zero OccurredAt, the database's time.
//
// Errors: Invalid if ActorType is not one of the Actor constants, Action or
// Outcome is empty, or a field is over its size or holds control
// characters; Conflict if a.ID exists.
func (s *Store) InsertAudit(ctx context.Context, a AuditEvent) error {
	return fail("insert audit event", insertAudit(ctx, s.pool, a))
}

// insertAudit appends a to the audit trail.
func insertAudit(ctx context.Context, q querier, a AuditEvent) error {
	if err := validateAudit(a); err != nil {
		return err
	}
	// A pointer to uuid.Nil (a platform admin's "tenant") means none.
	a.TenantID, a.ActorID = nilIfNilPtr(a.TenantID), nilIfNilPtr(a.ActorID)
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
		INSERT INTO audit_events (id, occurred_at, tenant_id, actor_type, actor_id, action, target, outcome,
			remote_addr, request_id)
		VALUES ($1, COALESCE($2, now()), $3, $4, $5, $6, $7, $8, $9, $10)`,
		id, occurredAt, a.TenantID, a.ActorType, a.ActorID, a.Action, a.Target, a.Outcome, a.RemoteAddr, a.RequestID)
	if _, dup := uniqueViolation(err); dup {
		return errs.E(errs.Conflict, "audit event %s already exists", id)
	}
	if err != nil {
		return fmt.Errorf("insert audit event: %w", err)
	}
	return nil
}

func validateAudit(a AuditEvent) error {
	switch a.ActorType {
	case ActorUser, ActorAPIKey, ActorAnonymous, ActorSystem:
	default:
		return errs.E(errs.Invalid, "audit event: actor type must be %s, %s, %s or %s, got %q",
			ActorUser, ActorAPIKey, ActorAnonymous, ActorSystem, a.ActorType)
	}
	switch {
	case !validText(a.Action, 1, maxAuditAction):
		return errs.E(errs.Invalid, "audit event: action must be 1 to %d characters without control characters", maxAuditAction)
	case !validText(a.Outcome, 1, maxAuditAction):
		return errs.E(errs.Invalid, "audit event: outcome must be 1 to %d characters without control characters", maxAuditAction)
	case !validText(a.Target, 0, maxAuditText), !validText(a.RemoteAddr, 0, maxAuditText), !validText(a.RequestID, 0, maxAuditText):
		return errs.E(errs.Invalid, "audit event: target, remote address and request id must be at most %d characters without control characters", maxAuditText)
	}
	return nil
}

// about returns a with a nil TenantID set to tenantID and an empty Target set
// to target: the defaults of the mutating methods.
func (a AuditEvent) about(tenantID *uuid.UUID, target string) AuditEvent {
	if nilIfNilPtr(a.TenantID) == nil {
		a.TenantID = tenantID
	}
	if a.Target == "" {
		a.Target = target
	}
	return a
}

// AuditFilter selects audit events for [Store.ListAuditEvents].
type AuditFilter struct {
	TenantID *uuid.UUID // nil: platform-wide (every tenant's events and those of no tenant)
	ActorID  *uuid.UUID // nil: any actor's
	Action   string     // "": any action; else exactly this one
	PageSize int        // <= 0: 100; at most 1000
	// Cursor is the opaque position — the (occurred_at, id) of the last
	// event of the previous page — that ListAuditEvents returned with that
	// page; the page lists events before it. "" for the first (newest) page.
	Cursor string
}

// ListAuditEvents returns the events that f selects, newest first (ordered
// by occurred_at then id, both descending), one page at a time, and the
// cursor of the next page, or "" if this one is the last.
//
// Errors: Invalid ("invalid audit cursor") if f.Cursor is not a cursor
// ListAuditEvents returned.
func (s *Store) ListAuditEvents(ctx context.Context, f AuditFilter) ([]AuditEvent, string, error) {
	limit := clampPageSize(f.PageSize)
	// The WHERE clause is built from the filters that are set, so that each
	// combination gets a plan using its index (audit_events_tenant, _actor
	// or _time) rather than a generic plan of "$1 IS NULL OR …" terms.
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.TenantID != nil {
		where = append(where, "tenant_id = "+arg(*f.TenantID))
	}
	if f.ActorID != nil {
		where = append(where, "actor_id = "+arg(*f.ActorID))
	}
	if f.Action != "" {
		where = append(where, "action = "+arg(f.Action))
	}
	if f.Cursor != "" {
		t, id, err := parseAuditCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, fmt.Sprintf("(occurred_at, id) < (%s, %s)", arg(t), arg(id)))
	}
	query := `SELECT id, occurred_at, tenant_id, actor_type, actor_id, action, target, outcome, remote_addr, request_id
		FROM audit_events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether another page follows.
	query += " ORDER BY occurred_at DESC, id DESC LIMIT " + arg(limit+1)

	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, "", fail("list audit events", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEvent, error) {
		var a AuditEvent
		err := row.Scan(&a.ID, &a.OccurredAt, &a.TenantID, &a.ActorType, &a.ActorID, &a.Action, &a.Target,
			&a.Outcome, &a.RemoteAddr, &a.RequestID)
		return a, err
	})
	if err != nil {
		return nil, "", fail("list audit events", err)
	}
	if len(events) <= limit {
		if events == nil {
			events = []AuditEvent{}
		}
		return events, "", nil
	}
	events = events[:limit]
	last := events[limit-1]
	return events, auditCursor(last.OccurredAt, last.ID), nil
}

// nilIfNilPtr maps a pointer to uuid.Nil to nil.
func nilIfNilPtr(id *uuid.UUID) *uuid.UUID {
	if id == nil || *id == uuid.Nil {
		return nil
	}
	return id
}

// maxCursorMicros is the last microsecond of the year 9999, the latest time a cursor may hold.
const maxCursorMicros = 253402300799999999

// auditCursor encodes the position after an event (see encodePosition).
func auditCursor(t time.Time, id uuid.UUID) string { return encodePosition(t, id) }

func parseAuditCursor(cursor string) (time.Time, uuid.UUID, error) {
	t, id, ok := decodePosition(cursor)
	if !ok {
		return time.Time{}, uuid.Nil, errs.E(errs.Invalid, "invalid audit cursor")
	}
	return t, id, nil
}
