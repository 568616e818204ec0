package postgres_test

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func newAPIKey(tb testing.TB, tenantID uuid.UUID) postgres.APIKey {
	tb.Helper()
	return postgres.APIKey{
		ID: uuid.New(), TenantID: tenantID, KeyID: "ck_" + strings.ReplaceAll(uuid.NewString(), "-", ""),
		Name: "backup job", Scopes: []string{"export", "keys:rotate"}, SecretHash: hash(tb),
	}
}

func mustAPIKey(tb testing.TB, s *postgres.Store, tenantID uuid.UUID) postgres.APIKey {
	tb.Helper()
	k := newAPIKey(tb, tenantID)
	if err := s.CreateAPIKey(tb.Context(), k, auditEvent("apikey.create")); err != nil {
		tb.Fatalf("CreateAPIKey() = %v", err)
	}
	got, err := s.GetAPIKeyByKeyID(tb.Context(), k.KeyID)
	if err != nil {
		tb.Fatalf("GetAPIKeyByKeyID() = %v", err)
	}
	return got
}

func TestCreateAPIKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	creator := mustUser(t, s, tn.ID, postgres.RoleOwner)

	want := newAPIKey(t, tn.ID)
	want.CreatedBy = creator.ID
	want.ExpiresAt = ptr(time.Date(2031, 1, 2, 3, 4, 5, 6000, time.UTC))
	if err := s.CreateAPIKey(ctx, want, auditEvent("apikey.create")); err != nil {
		t.Fatalf("CreateAPIKey() = %v", err)
	}
	got, err := s.GetAPIKeyByKeyID(ctx, want.KeyID)
	if err != nil {
		t.Fatalf("GetAPIKeyByKeyID() = %v", err)
	}
	if got.CreatedAt.IsZero() || !got.ExpiresAt.Equal(*want.ExpiresAt) {
		t.Errorf("GetAPIKeyByKeyID() times = created %v, expires %v; want set, %v", got.CreatedAt, got.ExpiresAt, want.ExpiresAt)
	}
	want.CreatedAt, want.ExpiresAt = got.CreatedAt, got.ExpiresAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetAPIKeyByKeyID() = %+v\nwant %+v", got, want)
	}
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tn.ID, Action: "apikey.create"})
	if err != nil || len(events) != 1 || events[0].Target != "apikey:"+want.ID.String() {
		t.Errorf("apikey.create audit = %+v, %v, want one with target apikey:%s", events, err, want.ID)
	}
	_, err = s.GetAPIKeyByKeyID(ctx, "ck_unknown")
	wantKind(t, "GetAPIKeyByKeyID(unknown)", err, errs.NotFound, `API key "ck_unknown" not found`)
}

func TestCreateAPIKeyRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	taken := mustAPIKey(t, s, tn.ID)
	unknown := uuid.New()

	tests := []struct {
		name    string
		change  func(*postgres.APIKey)
		kind    errs.Kind
		message string
	}{
		{"key id taken", func(k *postgres.APIKey) { k.KeyID = taken.KeyID }, errs.Conflict, fmt.Sprintf("API key id %q is taken", taken.KeyID)},
		{"key id taken by another tenant", func(k *postgres.APIKey) { k.TenantID = mustTenant(t, s, "").ID; k.KeyID = taken.KeyID },
			errs.Conflict, "is taken"},
		{"id taken", func(k *postgres.APIKey) { k.ID = taken.ID }, errs.Conflict, "already exists"},
		{"unknown tenant", func(k *postgres.APIKey) { k.TenantID = unknown }, errs.NotFound, fmt.Sprintf("tenant %s not found", unknown)},
		{"nil id", func(k *postgres.APIKey) { k.ID = uuid.Nil }, errs.Invalid, "API key id is required"},
		{"nil tenant", func(k *postgres.APIKey) { k.TenantID = uuid.Nil }, errs.Invalid, "tenant is required"},
		{"no key id", func(k *postgres.APIKey) { k.KeyID = "" }, errs.Invalid, "API key id must be"},
		{"no name", func(k *postgres.APIKey) { k.Name = "" }, errs.Invalid, "name"},
		{"long name", func(k *postgres.APIKey) { k.Name = strings.Repeat("n", 201) }, errs.Invalid, "name"},
		{"no scopes", func(k *postgres.APIKey) { k.Scopes = nil }, errs.Invalid, "scopes"},
		{"empty scope", func(k *postgres.APIKey) { k.Scopes = []string{"export", ""} }, errs.Invalid, "scopes"},
		{"short hash", func(k *postgres.APIKey) { k.SecretHash = k.SecretHash[:16] }, errs.Invalid, "32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newAPIKey(t, tn.ID)
			tt.change(&k)
			wantKind(t, "CreateAPIKey("+tt.name+")", s.CreateAPIKey(ctx, k, auditEvent("apikey.create")), tt.kind, tt.message)
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM core.api_keys"); n != 1 {
		t.Errorf("API keys after refused creations = %d, want 1", n)
	}
}

func TestListAPIKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn, other := mustTenant(t, s, ""), mustTenant(t, s, "")
	var want []uuid.UUID
	for range 5 {
		want = append(want, mustAPIKey(t, s, tn.ID).ID)
		mustAPIKey(t, s, other.ID)
	}
	if err := s.RevokeAPIKey(ctx, tn.ID, want[0], auditEvent("apikey.revoke")); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	var all []uuid.UUID
	after := uuid.Nil
	for {
		page, err := s.ListAPIKeys(ctx, tn.ID, 2, after)
		if err != nil {
			t.Fatalf("ListAPIKeys() = %v", err)
		}
		for _, k := range page {
			all = append(all, k.ID)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(all, want) {
		t.Errorf("ListAPIKeys pages = %v, want %v (revoked included)", all, want)
	}
}

func TestRevokeAPIKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn, other := mustTenant(t, s, ""), mustTenant(t, s, "")
	k := mustAPIKey(t, s, tn.ID)

	wantKind(t, "RevokeAPIKey(another tenant's)", s.RevokeAPIKey(ctx, other.ID, k.ID, auditEvent("apikey.revoke")),
		errs.NotFound, fmt.Sprintf("API key %s not found", k.ID))
	wantKind(t, "RevokeAPIKey(unknown)", s.RevokeAPIKey(ctx, tn.ID, uuid.New(), auditEvent("apikey.revoke")),
		errs.NotFound, "not found")
	if got, _ := s.GetAPIKeyByKeyID(ctx, k.KeyID); got.RevokedAt != nil {
		t.Fatalf("key revoked by a refused call")
	}

	if err := s.RevokeAPIKey(ctx, tn.ID, k.ID, auditEvent("apikey.revoke")); err != nil {
		t.Fatalf("RevokeAPIKey() = %v", err)
	}
	first, _ := s.GetAPIKeyByKeyID(ctx, k.KeyID)
	if first.RevokedAt == nil {
		t.Fatalf("RevokeAPIKey() left the key unrevoked")
	}
	if err := s.RevokeAPIKey(ctx, tn.ID, k.ID, auditEvent("apikey.revoke")); err != nil {
		t.Errorf("RevokeAPIKey() again = %v, want nil", err)
	}
	if again, _ := s.GetAPIKeyByKeyID(ctx, k.KeyID); !again.RevokedAt.Equal(*first.RevokedAt) {
		t.Errorf("RevokedAt after a second revocation = %v, want %v kept", again.RevokedAt, first.RevokedAt)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'apikey.revoke' AND tenant_id = $1", tn.ID); n != 2 {
		t.Errorf("apikey.revoke audit events = %d, want 2", n)
	}
}

func TestRotateAPIKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn, other := mustTenant(t, s, ""), mustTenant(t, s, "")
	k := mustAPIKey(t, s, tn.ID)

	overlap := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	second := hash(t)
	got, err := s.RotateAPIKey(ctx, tn.ID, k.ID, second, overlap, auditEvent("apikey.rotate"))
	if err != nil {
		t.Fatalf("RotateAPIKey() = %v", err)
	}
	if !bytes.Equal(got.SecretHash, second) || !bytes.Equal(got.PreviousSecretHash, k.SecretHash) || !got.PreviousExpiresAt.Equal(overlap) {
		t.Errorf("RotateAPIKey() = %+v, want the new hash current and the old one previous until %v", got, overlap)
	}
	third := hash(t)
	got, err = s.RotateAPIKey(ctx, tn.ID, k.ID, third, overlap.Add(time.Hour), auditEvent("apikey.rotate"))
	if err != nil || !bytes.Equal(got.SecretHash, third) || !bytes.Equal(got.PreviousSecretHash, second) {
		t.Errorf("RotateAPIKey() again = %+v, %v, want the first secret dropped", got, err)
	}
	if stored, _ := s.GetAPIKeyByKeyID(ctx, k.KeyID); !reflect.DeepEqual(stored, got) {
		t.Errorf("stored key = %+v, want %+v as returned", stored, got)
	}

	_, err = s.RotateAPIKey(ctx, other.ID, k.ID, hash(t), overlap, auditEvent("apikey.rotate"))
	wantKind(t, "RotateAPIKey(another tenant's)", err, errs.NotFound, "not found")
	_, err = s.RotateAPIKey(ctx, tn.ID, k.ID, hash(t)[:31], overlap, auditEvent("apikey.rotate"))
	wantKind(t, "RotateAPIKey(short hash)", err, errs.Invalid, "32 bytes")
	_, err = s.RotateAPIKey(ctx, tn.ID, k.ID, hash(t), time.Time{}, auditEvent("apikey.rotate"))
	wantKind(t, "RotateAPIKey(no overlap end)", err, errs.Invalid, "expiry")
	if err := s.RevokeAPIKey(ctx, tn.ID, k.ID, auditEvent("apikey.revoke")); err != nil {
		t.Fatal(err)
	}
	_, err = s.RotateAPIKey(ctx, tn.ID, k.ID, hash(t), overlap, auditEvent("apikey.rotate"))
	wantKind(t, "RotateAPIKey(revoked)", err, errs.FailedPrecondition, "is revoked")
}

func TestTouchAPIKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	k := mustAPIKey(t, s, mustTenant(t, s, "").ID)
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

	steps := []struct {
		at   time.Time
		want time.Time
	}{
		{t0, t0},                                 // first use: recorded
		{t0.Add(30 * time.Second), t0},           // within the minute: no write
		{t0.Add(time.Minute), t0},                // exactly a minute: still none
		{t0.Add(61 * time.Second), t0.Add(61e9)}, // over a minute: recorded
		{t0, t0.Add(61e9)},                       // an earlier time never goes back
	}
	for i, st := range steps {
		if err := s.TouchAPIKey(ctx, k.ID, st.at); err != nil {
			t.Fatalf("TouchAPIKey(%v) = %v", st.at, err)
		}
		got, _ := s.GetAPIKeyByKeyID(ctx, k.KeyID)
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(st.want) {
			t.Errorf("step %d: LastUsedAt after TouchAPIKey(%v) = %v, want %v", i, st.at, got.LastUsedAt, st.want)
		}
	}
	if err := s.TouchAPIKey(ctx, uuid.New(), t0); err != nil {
		t.Errorf("TouchAPIKey(unknown) = %v, want nil", err)
	}
}
