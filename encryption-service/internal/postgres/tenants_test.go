package postgres_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

func TestCreateTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)

	name := strings.Repeat("é", 200) // 200 characters, 400 bytes
	tenant := postgres.Tenant{ID: uuid.New(), Name: name}
	sec := newSecret(t, uuid.Nil) // TenantID filled in
	if err := s.CreateTenant(ctx, tenant, sec, auditEvent("tenant.create")); err != nil {
		t.Fatalf("CreateTenant() = %v", err)
	}
	got, err := s.GetTenant(ctx, tenant.ID)
	if err != nil {
		t.Fatalf("GetTenant() = %v", err)
	}
	if got.ID != tenant.ID || got.Name != name || got.CreatedAt.IsZero() || len(got.Secrets) != 1 {
		t.Fatalf("GetTenant() = %+v, want tenant %s named %q with one secret", got, tenant.ID, name)
	}
	gs := got.Secrets[0]
	if gs.ID != sec.ID || gs.TenantID != tenant.ID || !bytes.Equal(gs.Hash, sec.Hash) || gs.RevokedAt != nil || gs.CreatedAt.IsZero() {
		t.Errorf("GetTenant().Secrets[0] = %+v, want secret %s of tenant %s, active", gs, sec.ID, tenant.ID)
	}
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tenant.ID})
	if err != nil || len(events) != 1 || events[0].Action != "tenant.create" || *events[0].TenantID != tenant.ID {
		t.Errorf("ListAuditEvents(tenant) = %+v, %v, want the tenant.create event", events, err)
	}
}

func TestCreateTenantRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	taken, takenSecret := mustTenant(t, s, "taken")

	tests := []struct {
		name    string
		tenant  postgres.Tenant
		secret  func(tenantID uuid.UUID) postgres.TenantSecret
		kind    errs.Kind
		message string
	}{
		{"name taken", postgres.Tenant{ID: uuid.New(), Name: "taken"}, nil, errs.Conflict, `tenant name "taken" is taken`},
		{"id taken", postgres.Tenant{ID: taken.ID, Name: "other"}, nil, errs.Conflict, "already exists"},
		{"secret id taken", postgres.Tenant{ID: uuid.New(), Name: "other"},
			func(id uuid.UUID) postgres.TenantSecret { s := newSecret(t, id); s.ID = takenSecret.ID; return s },
			errs.Conflict, "already exists"},
		{"empty name", postgres.Tenant{ID: uuid.New(), Name: ""}, nil, errs.Invalid, "tenant name"},
		{"long name", postgres.Tenant{ID: uuid.New(), Name: strings.Repeat("x", 201)}, nil, errs.Invalid, "tenant name"},
		{"invalid UTF-8", postgres.Tenant{ID: uuid.New(), Name: "a\xffb"}, nil, errs.Invalid, "tenant name"},
		{"NUL", postgres.Tenant{ID: uuid.New(), Name: "a\x00b"}, nil, errs.Invalid, "control characters"},
		{"newline", postgres.Tenant{ID: uuid.New(), Name: "a\nb"}, nil, errs.Invalid, "control characters"},
		{"nil id", postgres.Tenant{Name: "nil-id"}, nil, errs.Invalid, "tenant id is required"},
		{"short hash", postgres.Tenant{ID: uuid.New(), Name: "short-hash"},
			func(id uuid.UUID) postgres.TenantSecret { s := newSecret(t, id); s.Hash = s.Hash[:31]; return s },
			errs.Invalid, "32 bytes"},
		{"nil secret id", postgres.Tenant{ID: uuid.New(), Name: "nil-secret"},
			func(id uuid.UUID) postgres.TenantSecret { s := newSecret(t, id); s.ID = uuid.Nil; return s },
			errs.Invalid, "secret id is required"},
		{"secret of another tenant", postgres.Tenant{ID: uuid.New(), Name: "mismatch"},
			func(uuid.UUID) postgres.TenantSecret { return newSecret(t, uuid.New()) },
			errs.Invalid, "belongs to tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec := newSecret(t, tt.tenant.ID)
			if tt.secret != nil {
				sec = tt.secret(tt.tenant.ID)
			}
			err := s.CreateTenant(ctx, tt.tenant, sec, auditEvent("tenant.create"))
			wantKind(t, fmt.Sprintf("CreateTenant(%q)", tt.tenant.Name), err, tt.kind, tt.message)
		})
	}
	// Nothing of the refused calls stayed.
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenants"); n != 1 {
		t.Errorf("tenants after refused creations = %d, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenant_secrets"); n != 1 {
		t.Errorf("tenant secrets after refused creations = %d, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events"); n != 1 {
		t.Errorf("audit events after refused creations = %d, want 1", n)
	}
}

func TestGetTenantNotFound(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	destroyed, _ := mustTenant(t, s, "")
	if _, err := pool.Exec(ctx, "UPDATE encryption.tenants SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{uuid.New(), destroyed.ID} {
		_, err := s.GetTenant(ctx, id)
		wantKind(t, "GetTenant()", err, errs.NotFound, fmt.Sprintf("tenant %s not found", id))
	}
}

func TestListTenants(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, url := mustStore(t)
	want := map[uuid.UUID][]uuid.UUID{} // tenant → its secrets, oldest first
	for range 5 {
		tenant, first := mustTenant(t, s, "")
		want[tenant.ID] = []uuid.UUID{first.ID, mustAddSecret(t, s, tenant.ID).ID}
	}
	destroyed, _ := mustTenant(t, s, "")
	if _, err := pool.Exec(ctx, "UPDATE encryption.tenants SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}

	var all []uuid.UUID
	after := uuid.Nil
	for page := 0; ; page++ {
		got, next, err := s.ListTenants(ctx, 2, after)
		if err != nil {
			t.Fatalf("ListTenants(2, %s) = %v", after, err)
		}
		for _, tenant := range got {
			all = append(all, tenant.ID)
			var secrets []uuid.UUID
			for _, sec := range tenant.Secrets {
				if sec.TenantID != tenant.ID {
					t.Errorf("tenant %s lists secret %s of tenant %s", tenant.ID, sec.ID, sec.TenantID)
				}
				secrets = append(secrets, sec.ID)
			}
			if !slices.Equal(secrets, want[tenant.ID]) {
				t.Errorf("tenant %s secrets = %v, want %v", tenant.ID, secrets, want[tenant.ID])
			}
		}
		if next == uuid.Nil {
			break
		}
		if next != got[len(got)-1].ID {
			t.Errorf("ListTenants(2, %s) next = %s, want the last id of the page, %s", after, next, got[len(got)-1].ID)
		}
		after = next
		if page > 5 {
			t.Fatal("ListTenants does not stop")
		}
	}
	if !slices.IsSortedFunc(all, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) }) {
		t.Errorf("ListTenants ids = %v, want them in ascending order", all)
	}
	if len(all) != len(want) {
		t.Errorf("ListTenants listed %d tenants, want %d (the destroyed one left out)", len(all), len(want))
	}

	empty, next, err := s.ListTenants(ctx, 10, all[len(all)-1])
	if err != nil || empty == nil || len(empty) != 0 || next != uuid.Nil {
		t.Errorf("ListTenants(after last) = %#v, %s, %v; want an empty slice and no next page", empty, next, err)
	}
	// A full page tells whether another follows: the page size alone cannot.
	for _, tt := range []struct {
		pageSize int
		next     uuid.UUID
	}{
		{len(all) - 1, all[len(all)-2]},
		{len(all), uuid.Nil},
	} {
		got, next, err := s.ListTenants(ctx, tt.pageSize, uuid.Nil)
		if err != nil || len(got) != tt.pageSize || next != tt.next {
			t.Errorf("ListTenants(%d of %d) = %d tenants, next %s, %v; want %d, next %s",
				tt.pageSize, len(all), len(got), next, err, tt.pageSize, tt.next)
		}
	}

	// The number of statements does not grow with the page: no query per tenant.
	counter := &queryCounter{}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = postgres.Schema
	cfg.ConnConfig.Tracer = counter
	traced, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(traced.Close)
	ts := postgres.NewStore(traced)
	statements := func(pageSize int) int64 {
		before := counter.n.Load()
		if got, _, err := ts.ListTenants(ctx, pageSize, uuid.Nil); err != nil || len(got) != pageSize {
			t.Fatalf("ListTenants(%d) = %d tenants, %v", pageSize, len(got), err)
		}
		return counter.n.Load() - before
	}
	if one, five := statements(1), statements(5); one != five {
		t.Errorf("ListTenants ran %d statements for 1 tenant and %d for 5, want the same number", one, five)
	}
}

func TestAddTenantSecret(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, first := mustTenant(t, s, "")
	second := mustAddSecret(t, s, tenant.ID)
	active, err := s.ActiveSecrets(ctx, tenant.ID)
	if err != nil || len(active) != 2 || active[0].ID != first.ID || active[1].ID != second.ID {
		t.Fatalf("ActiveSecrets() = %+v, %v, want [%s %s]", active, err, first.ID, second.ID)
	}

	destroyed, _ := mustTenant(t, s, "")
	if _, err := pool.Exec(ctx, "UPDATE encryption.tenants SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}
	dupID := newSecret(t, tenant.ID)
	dupID.ID = second.ID
	short := newSecret(t, tenant.ID)
	short.Hash = append(short.Hash, 0)
	tests := []struct {
		name    string
		secret  postgres.TenantSecret
		kind    errs.Kind
		message string
	}{
		{"unknown tenant", newSecret(t, uuid.New()), errs.NotFound, "not found"},
		{"destroyed tenant", newSecret(t, destroyed.ID), errs.NotFound, "not found"},
		{"id taken", dupID, errs.Conflict, "already exists"},
		{"33-byte hash", short, errs.Invalid, "32 bytes"},
		{"no tenant", newSecret(t, uuid.Nil), errs.Invalid, "tenant id is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.AddTenantSecret(ctx, tt.secret, auditEvent("tenant.secret.add"))
			wantKind(t, "AddTenantSecret()", err, tt.kind, tt.message)
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenant_secrets"); n != 3 {
		t.Errorf("secrets after refused additions = %d, want 3", n)
	}
}

func TestRevokeTenantSecret(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, first := mustTenant(t, s, "")
	second := mustAddSecret(t, s, tenant.ID)
	other, otherSecret := mustTenant(t, s, "")

	revoked, err := s.RevokeTenantSecret(ctx, tenant.ID, first.ID, auditEvent("tenant.secret.revoke"))
	if err != nil {
		t.Fatalf("RevokeTenantSecret(first) = %v", err)
	}
	if revoked.ID != first.ID || revoked.RevokedAt == nil || !bytes.Equal(revoked.Hash, first.Hash) {
		t.Fatalf("RevokeTenantSecret(first) = %+v, want secret %s revoked", revoked, first.ID)
	}
	again, err := s.RevokeTenantSecret(ctx, tenant.ID, first.ID, auditEvent("tenant.secret.revoke"))
	if err != nil || again.RevokedAt == nil || !again.RevokedAt.Equal(*revoked.RevokedAt) {
		t.Errorf("RevokeTenantSecret(first) again = %+v, %v, want it unchanged (revoked at %v)", again, err, revoked.RevokedAt)
	}
	active, err := s.ActiveSecrets(ctx, tenant.ID)
	if err != nil || len(active) != 1 || active[0].ID != second.ID {
		t.Errorf("ActiveSecrets() after revoking the first = %+v, %v, want only %s", active, err, second.ID)
	}

	tests := []struct {
		name             string
		tenant, secretID uuid.UUID
		kind             errs.Kind
		message          string
	}{
		{"last active secret", tenant.ID, second.ID, errs.FailedPrecondition,
			"cannot revoke the tenant's last active secret: rotate first"},
		{"unknown secret", tenant.ID, uuid.New(), errs.NotFound, "not found"},
		{"another tenant's secret", tenant.ID, otherSecret.ID, errs.NotFound, "not found"},
		{"unknown tenant", uuid.New(), second.ID, errs.NotFound, "not found"},
		{"secret through another tenant", other.ID, second.ID, errs.NotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.RevokeTenantSecret(ctx, tt.tenant, tt.secretID, auditEvent("tenant.secret.revoke"))
			wantKind(t, "RevokeTenantSecret()", err, tt.kind, tt.message)
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenant_secrets WHERE revoked_at IS NULL"); n != 2 {
		t.Errorf("active secrets after refused revocations = %d, want 2", n)
	}
}

// TestRevokeTenantSecretConcurrently revokes all of a tenant's secrets at
// once: all but one must succeed, and the tenant keeps one.
func TestRevokeTenantSecretConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	const secrets = 6
	for round := range 5 {
		tenant, first := mustTenant(t, s, "")
		ids := []uuid.UUID{first.ID}
		for range secrets - 1 {
			ids = append(ids, mustAddSecret(t, s, tenant.ID).ID)
		}
		var wg sync.WaitGroup
		results := make([]error, secrets)
		for i, id := range ids {
			wg.Go(func() {
				_, results[i] = s.RevokeTenantSecret(ctx, tenant.ID, id, auditEvent("tenant.secret.revoke"))
			})
		}
		wg.Wait()
		var refused int
		for _, err := range results {
			switch {
			case err == nil:
			case errs.Is(err, errs.FailedPrecondition):
				refused++
			default:
				t.Errorf("round %d: RevokeTenantSecret() = %v, want nil or FailedPrecondition", round, err)
			}
		}
		active, err := s.ActiveSecrets(ctx, tenant.ID)
		if refused != 1 || err != nil || len(active) != 1 {
			t.Errorf("round %d: %d revocations refused and %d secrets left active (%v), want 1 and 1", round, refused, len(active), err)
		}
	}
}

func TestActiveSecretsUnknownTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	destroyed, _ := mustTenant(t, s, "")
	if _, err := pool.Exec(ctx, "UPDATE encryption.tenants SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{uuid.New(), destroyed.ID} {
		got, err := s.ActiveSecrets(ctx, id)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("ActiveSecrets(%s) = %#v, %v, want an empty slice and nil", id, got, err)
		}
	}
}
