package postgres

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

// InsertAudit appends a to the audit trail on its own, for events that
// change nothing else, such as a refused request. A zero ID gets a
// time-ordered one; a zero OccurredAt, the database's time.
//
// Errors: Invalid if Action or Outcome is empty; Conflict if a.ID exists.
func (s *Store) InsertAudit(ctx context.Context, a AuditEvent) error {
	return fail("insert audit event", insertAudit(ctx, s.pool, a))
}

// AuditFilter selects audit events for [Store.ListAuditEvents].
type AuditFilter struct {
	TenantID     *uuid.UUID // nil: every tenant's
	EncryptionID *uuid.UUID // nil: any context's
	PageSize     int        // <= 0: 100; at most 1000
	// Cursor is the opaque position — the (occurred_at, id) of the last
	// event of the previous page — that ListAuditEvents returned with that
	// page; the page lists events before it. "" for the first (newest) page.
	Cursor string
}

// ListAuditEvents returns the events that filter selects, newest first
// (ordered by occurred_at then id, both descending), one page at a time, and
// the cursor of the next page, or "" if this one is the last.
//
// Errors: Invalid ("invalid audit cursor") if filter.Cursor is not a cursor
// ListAuditEvents returned.
func (s *Store) ListAuditEvents(ctx context.Context, filter AuditFilter) ([]AuditEvent, string, error) {
	limit := clampPageSize(filter.PageSize)
	var (
		beforeTime *time.Time
		beforeID   uuid.UUID
	)
	if filter.Cursor != "" {
		t, id, err := parseAuditCursor(filter.Cursor)
		if err != nil {
			return nil, "", err
		}
		beforeTime, beforeID = &t, id
	}
	// One row more than the page tells whether another page follows.
	rows, err := s.pool.Query(ctx, `
		SELECT id, occurred_at, tenant_id, actor, action, encryption_id, version_id, outcome, request_id
		  FROM audit_events
		 WHERE ($1::uuid IS NULL OR tenant_id = $1)
		   AND ($2::uuid IS NULL OR encryption_id = $2)
		   AND ($3::timestamptz IS NULL OR (occurred_at, id) < ($3, $4::uuid))
		 ORDER BY occurred_at DESC, id DESC
		 LIMIT $5`,
		filter.TenantID, filter.EncryptionID, beforeTime, beforeID, limit+1)
	if err != nil {
		return nil, "", fail("list audit events", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEvent, error) {
		var a AuditEvent
		err := row.Scan(&a.ID, &a.OccurredAt, &a.TenantID, &a.Actor, &a.Action, &a.EncryptionID, &a.VersionID,
			&a.Outcome, &a.RequestID)
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

// maxCursorMicros is the last microsecond of the year 9999, the latest time a cursor may hold.
const maxCursorMicros = 253402300799999999

// auditCursor encodes the position after an event: its time in
// microseconds (PostgreSQL's precision, so it round-trips exactly) and id.
func auditCursor(t time.Time, id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10) + "." + id.String()))
}

func parseAuditCursor(cursor string) (time.Time, uuid.UUID, error) {
	invalid := errs.E(errs.Invalid, "invalid audit cursor")
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return time.Time{}, uuid.Nil, invalid
	}
	micros, idText, ok := strings.Cut(string(b), ".")
	if !ok {
		return time.Time{}, uuid.Nil, invalid
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	// Cursors hold the times of stored events; one outside 1970–9999 was not made here, and
	// would wrap around in PostgreSQL's encoding and match every event.
	if err != nil || us < 0 || us > maxCursorMicros {
		return time.Time{}, uuid.Nil, invalid
	}
	id, err := uuid.Parse(idText)
	if err != nil || len(idText) != 36 {
		return time.Time{}, uuid.Nil, invalid
	}
	return time.UnixMicro(us), id, nil
}
