package postgres_test

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestInsertAudit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenantID, actorID := uuid.New(), uuid.New()
	want := postgres.AuditEvent{
		ID: uuid.New(), OccurredAt: time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC), TenantID: &tenantID,
		ActorType: postgres.ActorUser, ActorID: &actorID, Action: "auth.login.failed", Target: "user:" + actorID.String(),
		Outcome: "UNAUTHENTICATED", RemoteAddr: "[2001:db8::1]:443", RequestID: "r-1",
	}
	if err := s.InsertAudit(ctx, want); err != nil {
		t.Fatalf("InsertAudit() = %v", err)
	}
	got, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListAuditEvents() = %v, %v, want one event", got, err)
	}
	if g := got[0]; g.ID != want.ID || !g.OccurredAt.Equal(want.OccurredAt) || *g.TenantID != tenantID || *g.ActorID != actorID ||
		g.ActorType != want.ActorType || g.Action != want.Action || g.Target != want.Target || g.Outcome != want.Outcome ||
		g.RemoteAddr != want.RemoteAddr || g.RequestID != want.RequestID {
		t.Errorf("ListAuditEvents()[0] = %+v, want %+v", g, want)
	}

	minimal := postgres.AuditEvent{ActorType: postgres.ActorAnonymous, Action: "auth.hint", Outcome: "ok"}
	if err := s.InsertAudit(ctx, minimal); err != nil {
		t.Fatalf("InsertAudit(minimal) = %v", err)
	}
	got, _, _ = s.ListAuditEvents(ctx, postgres.AuditFilter{Action: "auth.hint"})
	if len(got) != 1 || got[0].ID.Version() != 7 || time.Since(got[0].OccurredAt) > time.Minute || got[0].TenantID != nil || got[0].ActorID != nil {
		t.Errorf("minimal event = %+v, want a v7 id, the current time, no tenant or actor", got)
	}

	tests := []struct {
		name    string
		change  func(*postgres.AuditEvent)
		kind    errs.Kind
		message string
	}{
		{"id taken", func(a *postgres.AuditEvent) { a.ID = want.ID }, errs.Conflict, "already exists"},
		{"no actor type", func(a *postgres.AuditEvent) { a.ActorType = "" }, errs.Invalid, "actor type"},
		{"unknown actor type", func(a *postgres.AuditEvent) { a.ActorType = "admin" }, errs.Invalid, "actor type"},
		{"no action", func(a *postgres.AuditEvent) { a.Action = "" }, errs.Invalid, "action"},
		{"no outcome", func(a *postgres.AuditEvent) { a.Outcome = "" }, errs.Invalid, "outcome"},
		{"newline in target", func(a *postgres.AuditEvent) { a.Target = "user:1\nforged" }, errs.Invalid, "target"},
		{"long request id", func(a *postgres.AuditEvent) { a.RequestID = strings.Repeat("r", 501) }, errs.Invalid, "request id"},
	}
	for _, tt := range tests {
		a := minimal
		tt.change(&a)
		wantKind(t, "InsertAudit("+tt.name+")", s.InsertAudit(ctx, a), tt.kind, tt.message)
	}
}

func TestListAuditEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenantA, tenantB := uuid.New(), uuid.New()
	alice, bob := uuid.New(), uuid.New()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	// 30 events, three to a timestamp so that pages cut through ties.
	type ev struct {
		id            uuid.UUID
		tenant, actor *uuid.UUID
		action        string
		occurredAt    time.Time
	}
	var all []ev
	for i := range 30 {
		e := ev{id: uuid.New(), occurredAt: t0.Add(time.Duration(i/3) * time.Second), action: "auth.login"}
		switch i % 3 {
		case 0:
			e.tenant, e.actor = &tenantA, &alice
		case 1:
			e.tenant, e.actor, e.action = &tenantB, &bob, "user.create"
		case 2:
			e.action = "tenant.create" // platform-level
		}
		if i%5 == 0 {
			e.actor = nil
		}
		all = append(all, e)
		err := s.InsertAudit(ctx, postgres.AuditEvent{ID: e.id, OccurredAt: e.occurredAt, TenantID: e.tenant,
			ActorType: postgres.ActorUser, ActorID: e.actor, Action: e.action, Outcome: "ok"})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Newest first: by time, then id, both descending.
	slices.SortFunc(all, func(a, b ev) int {
		if c := b.occurredAt.Compare(a.occurredAt); c != 0 {
			return c
		}
		return strings.Compare(b.id.String(), a.id.String())
	})

	tests := []struct {
		name   string
		filter postgres.AuditFilter
		keep   func(ev) bool
	}{
		{"platform-wide", postgres.AuditFilter{}, func(ev) bool { return true }},
		{"tenant A", postgres.AuditFilter{TenantID: &tenantA}, func(e ev) bool { return e.tenant == &tenantA }},
		{"actor bob", postgres.AuditFilter{ActorID: &bob}, func(e ev) bool { return e.actor == &bob }},
		{"action", postgres.AuditFilter{Action: "tenant.create"}, func(e ev) bool { return e.action == "tenant.create" }},
		{"tenant and actor", postgres.AuditFilter{TenantID: &tenantA, ActorID: &alice}, func(e ev) bool { return e.tenant == &tenantA && e.actor == &alice }},
		{"tenant and other tenant's action", postgres.AuditFilter{TenantID: &tenantA, Action: "user.create"}, func(ev) bool { return false }},
	}
	for _, tt := range tests {
		for _, pageSize := range []int{4, 7, 1000} {
			t.Run(fmt.Sprintf("%s/page %d", tt.name, pageSize), func(t *testing.T) {
				var want, got []uuid.UUID
				for _, e := range all {
					if tt.keep(e) {
						want = append(want, e.id)
					}
				}
				f := tt.filter
				f.PageSize = pageSize
				for pages := 0; ; pages++ {
					if pages > 30 {
						t.Fatal("too many pages")
					}
					events, next, err := s.ListAuditEvents(ctx, f)
					if err != nil {
						t.Fatalf("ListAuditEvents(%+v) = %v", f, err)
					}
					if len(events) > pageSize || (next != "" && len(events) != pageSize) {
						t.Errorf("page of %d events with next %q, page size %d", len(events), next, pageSize)
					}
					for _, e := range events {
						got = append(got, e.ID)
					}
					if next == "" {
						break
					}
					f.Cursor = next
				}
				if !slices.Equal(got, want) {
					t.Errorf("ListAuditEvents pages = %d events %v\nwant %d events %v", len(got), got, len(want), want)
				}
			})
		}
	}

	for _, cursor := range []string{"x", base64.RawURLEncoding.EncodeToString([]byte("12.not-a-uuid")),
		base64.RawURLEncoding.EncodeToString([]byte("nodot")), base64.RawURLEncoding.EncodeToString([]byte("x." + uuid.NewString())),
		// Times no event has, which PostgreSQL's encoding would wrap into "after every event".
		base64.RawURLEncoding.EncodeToString([]byte("-9223372036854775807." + uuid.NewString())),
		base64.RawURLEncoding.EncodeToString([]byte("253402300800000000." + uuid.NewString()))} {
		_, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{Cursor: cursor})
		wantKind(t, fmt.Sprintf("ListAuditEvents(cursor %q)", cursor), err, errs.Invalid, "invalid audit cursor")
	}
}

func TestListAuditEventsPageSize(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	if _, err := pool.Exec(ctx, `INSERT INTO core.audit_events (id, actor_type, action, outcome)
		SELECT gen_random_uuid(), 'system', 'bulk', 'ok' FROM generate_series(1, 1001)`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ pageSize, want int }{{0, 100}, {-1, 100}, {5000, 1000}, {1001, 1000}} {
		events, next, err := s.ListAuditEvents(ctx, postgres.AuditFilter{PageSize: tt.pageSize})
		if err != nil || len(events) != tt.want || next == "" {
			t.Errorf("ListAuditEvents(page size %d) = %d events, next %q, %v; want %d and a next page", tt.pageSize, len(events), next, err, tt.want)
		}
	}
}

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Nothing listens on port 1: every call fails to connect.
	cfg, err := pgxpool.ParseConfig("postgres://custos@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	down, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	s := postgres.NewStore(down)
	_, err = s.GetUser(ctx, uuid.New())
	wantKind(t, "GetUser(unreachable database)", err, errs.Unavailable, "database unavailable")
	_, err = s.RotateRefreshToken(ctx, make([]byte, 32), make([]byte, 32), time.Now(), 0)
	wantKind(t, "RotateRefreshToken(unreachable database)", err, errs.Unavailable, "database unavailable")
	_, err = s.ThrottleTake(ctx, "login", "k", time.Now(), 3, time.Minute, time.Minute)
	wantKind(t, "ThrottleTake(unreachable database)", err, errs.Unavailable, "database unavailable")

	_, pool, _ := mustStore(t)
	closed := postgres.NewStore(pool)
	pool.Close()
	_, err = closed.ListTenants(ctx, 10, uuid.Nil)
	wantKind(t, "ListTenants(closed pool)", err, errs.Unavailable, "database unavailable")
	_, err = closed.AccessState(ctx, uuid.New(), uuid.New())
	wantKind(t, "AccessState(closed pool)", err, errs.Unavailable, "database unavailable")
}
