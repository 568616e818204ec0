package postgres_test

import (
	"encoding/base64"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

func TestListAuditEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenantA, tenantB, contextA := uuid.New(), uuid.New(), uuid.New()

	// Events of one instant are ordered by id: pages must neither skip nor
	// repeat them.
	instant := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	var wantA []uuid.UUID // tenant A's events, newest first
	for i := range 7 {
		a := auditEvent("encryption.encrypt")
		a.TenantID = &tenantA
		a.OccurredAt = instant
		if i >= 4 {
			a.OccurredAt = instant.Add(time.Duration(i) * time.Second)
			a.EncryptionID = &contextA
		}
		a.ID = uuid.New()
		if err := s.InsertAudit(ctx, a); err != nil {
			t.Fatalf("InsertAudit() = %v", err)
		}
		wantA = append(wantA, a.ID)
	}
	for range 3 {
		a := auditEvent("tenant.create")
		a.TenantID = &tenantB
		if err := s.InsertAudit(ctx, a); err != nil { // zero ID and time: assigned
			t.Fatalf("InsertAudit() = %v", err)
		}
	}
	// Newest first: events 6, 5, 4 by time, then 0..3 (one instant) by descending id.
	same := slices.Clone(wantA[:4])
	slices.SortFunc(same, func(a, b uuid.UUID) int { return -compareUUID(a, b) })
	wantA = append([]uuid.UUID{wantA[6], wantA[5], wantA[4]}, same...)

	var got []uuid.UUID
	var pages int
	filter := postgres.AuditFilter{TenantID: &tenantA, PageSize: 3}
	for {
		events, next, err := s.ListAuditEvents(ctx, filter)
		if err != nil {
			t.Fatalf("ListAuditEvents(%+v) = %v", filter, err)
		}
		pages++
		for _, e := range events {
			if *e.TenantID != tenantA || e.Actor != "test" || e.Outcome != "ok" || e.RequestID != "req-encryption.encrypt" {
				t.Errorf("event %+v, want tenant A's encrypt event", e)
			}
			got = append(got, e.ID)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("ListAuditEvents does not stop")
		}
		filter.Cursor = next
	}
	if !slices.Equal(got, wantA) || pages != 3 {
		t.Errorf("tenant A's events in %d pages = %v\nwant in 3 pages %v", pages, got, wantA)
	}

	byContext, next, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tenantA, EncryptionID: &contextA})
	if err != nil || len(byContext) != 3 || next != "" {
		t.Errorf("ListAuditEvents(context A) = %d events, %q, %v, want 3 and no next page", len(byContext), next, err)
	}
	all, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{})
	if err != nil || len(all) != 10 || all[0].OccurredAt.Before(all[9].OccurredAt) {
		t.Errorf("ListAuditEvents(all) = %d events, %v, want 10, newest first", len(all), err)
	}
	none, next, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: new(uuid.New())})
	if err != nil || none == nil || len(none) != 0 || next != "" {
		t.Errorf("ListAuditEvents(unknown tenant) = %#v, %q, %v, want an empty slice", none, next, err)
	}
}

func compareUUID(a, b uuid.UUID) int {
	return slices.Compare(a[:], b[:])
}

func TestAuditRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	for _, cursor := range []string{"%%%", "bm90LWEtY3Vyc29y", "MTIzLm5vdC1hLXV1aWQ",
		// Times no event has, which PostgreSQL's encoding would wrap into "after every event".
		base64.RawURLEncoding.EncodeToString([]byte("-9223372036854775807." + uuid.NewString())),
		base64.RawURLEncoding.EncodeToString([]byte("253402300800000000." + uuid.NewString()))} {
		_, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{Cursor: cursor})
		wantKind(t, "ListAuditEvents(Cursor: "+cursor+")", err, errs.Invalid, "invalid audit cursor")
	}
	dup := auditEvent("x")
	dup.ID = uuid.New()
	if err := s.InsertAudit(ctx, dup); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		event   postgres.AuditEvent
		kind    errs.Kind
		message string
	}{
		{"no action", postgres.AuditEvent{Outcome: "ok"}, errs.Invalid, "action is required"},
		{"no outcome", postgres.AuditEvent{Action: "x"}, errs.Invalid, "outcome is required"},
		{"id taken", dup, errs.Conflict, "already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantKind(t, "InsertAudit()", s.InsertAudit(ctx, tt.event), tt.kind, tt.message)
		})
	}
	// A mutation whose audit event is refused changes nothing.
	tenant := postgres.Tenant{ID: uuid.New(), Name: "audited"}
	err := s.CreateTenant(ctx, tenant, newSecret(t, tenant.ID), postgres.AuditEvent{Actor: "test"})
	wantKind(t, "CreateTenant(no audit action)", err, errs.Invalid, "action is required")
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenants"); n != 0 {
		t.Errorf("tenants after a refused audit event = %d, want 0", n)
	}
}
