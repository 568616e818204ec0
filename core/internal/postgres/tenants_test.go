package postgres_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestCreateTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)

	platform := newTenant(t, strings.Repeat("é", 200)) // 200 characters, 400 bytes
	hosted := newTenant(t, "hosted")
	hosted.KeyMode, hosted.PasswordHintsEnabled = postgres.KeyModeClient, false
	hosted.ES = postgres.ESEndpoint{
		Kind: postgres.ESKindHosted, URL: "https://es.example.com:8443", Protocol: postgres.ESProtocolGRPC,
		CABundlePEM: "-----BEGIN CERTIFICATE-----\n…", ClientCertPEM: "-----BEGIN CERTIFICATE-----\n…",
		ClientKeySealed: mustRandom(t, 80), TenantID: uuid.New(), TenantSecretSealed: mustRandom(t, 60),
	}
	for _, want := range []postgres.Tenant{platform, hosted} {
		audit := auditEvent("tenant.create")
		if err := s.CreateTenant(ctx, want, audit); err != nil {
			t.Fatalf("CreateTenant(%q) = %v", want.Name, err)
		}
		got, err := s.GetTenant(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetTenant() = %v", err)
		}
		if got.CreatedAt.IsZero() {
			t.Errorf("GetTenant().CreatedAt is zero")
		}
		want.CreatedAt = got.CreatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetTenant() = %+v, want %+v", got, want)
		}
		events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &want.ID})
		if err != nil || len(events) != 1 {
			t.Fatalf("ListAuditEvents(tenant) = %+v, %v, want one event", events, err)
		}
		e := events[0]
		if e.Action != "tenant.create" || e.Target != "tenant:"+want.ID.String() || e.RemoteAddr != audit.RemoteAddr ||
			e.RequestID != audit.RequestID || e.Outcome != "ok" || e.ActorType != postgres.ActorSystem || e.ID == uuid.Nil {
			t.Errorf("audit event = %+v, want tenant.create of tenant:%s", e, want.ID)
		}
	}
}

func TestCreateTenantRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	taken := mustTenant(t, s, "Acme Corp")

	hosted := func(f func(*postgres.ESEndpoint)) func(*postgres.Tenant) {
		return func(tn *postgres.Tenant) {
			tn.ES.Kind, tn.ES.URL, tn.ES.Protocol, tn.ES.CABundlePEM = postgres.ESKindHosted, "https://es", postgres.ESProtocolHTTPS, "PEM"
			f(&tn.ES)
		}
	}
	tests := []struct {
		name    string
		change  func(*postgres.Tenant)
		kind    errs.Kind
		message string
	}{
		{"name taken, other case", func(tn *postgres.Tenant) { tn.Name = "ACME CORP" }, errs.Conflict, `tenant name "ACME CORP" is taken`},
		{"id taken", func(tn *postgres.Tenant) { tn.ID = taken.ID }, errs.Conflict, "already exists"},
		{"nil id", func(tn *postgres.Tenant) { tn.ID = uuid.Nil }, errs.Invalid, "tenant id is required"},
		{"empty name", func(tn *postgres.Tenant) { tn.Name = "" }, errs.Invalid, "tenant name"},
		{"long name", func(tn *postgres.Tenant) { tn.Name = strings.Repeat("x", 201) }, errs.Invalid, "tenant name"},
		{"invalid UTF-8", func(tn *postgres.Tenant) { tn.Name = "a\xffb" }, errs.Invalid, "tenant name"},
		{"NUL", func(tn *postgres.Tenant) { tn.Name = "a\x00b" }, errs.Invalid, "tenant name"},
		{"key mode", func(tn *postgres.Tenant) { tn.KeyMode = "platform" }, errs.Invalid, "key mode"},
		{"ES kind", func(tn *postgres.Tenant) { tn.ES.Kind = "" }, errs.Invalid, "encryption service kind"},
		{"platform ES with URL", func(tn *postgres.Tenant) { tn.ES.URL = "https://es" }, errs.Invalid, "takes no URL"},
		{"platform ES with certificate", func(tn *postgres.Tenant) { tn.ES.ClientKeySealed = []byte{1} }, errs.Invalid, "takes no URL"},
		{"hosted without URL", hosted(func(es *postgres.ESEndpoint) { es.URL = "" }), errs.Invalid, "needs its URL"},
		{"hosted protocol", hosted(func(es *postgres.ESEndpoint) { es.Protocol = "http" }), errs.Invalid, "protocol"},
		{"hosted without CA", hosted(func(es *postgres.ESEndpoint) { es.CABundlePEM = "" }), errs.Invalid, "CA bundle"},
		{"hosted certificate without key", hosted(func(es *postgres.ESEndpoint) { es.ClientCertPEM = "PEM" }), errs.Invalid, "go together"},
		{"hosted key without certificate", hosted(func(es *postgres.ESEndpoint) { es.ClientKeySealed = []byte{1} }), errs.Invalid, "go together"},
		{"no ES tenant id", func(tn *postgres.Tenant) { tn.ES.TenantID = uuid.Nil }, errs.Invalid, "tenant id on the encryption service"},
		{"no ES secret", func(tn *postgres.Tenant) { tn.ES.TenantSecretSealed = nil }, errs.Invalid, "sealed tenant secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := newTenant(t, "")
			tt.change(&tn)
			err := s.CreateTenant(ctx, tn, auditEvent("tenant.create"))
			wantKind(t, fmt.Sprintf("CreateTenant(%q)", tn.Name), err, tt.kind, tt.message)
		})
	}
	// Nothing of the refused calls stayed, audit events included.
	if n := count(t, pool, "SELECT count(*) FROM core.tenants"); n != 1 {
		t.Errorf("tenants after refused creations = %d, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events"); n != 1 {
		t.Errorf("audit events after refused creations = %d, want 1", n)
	}
}

// TestMutationWithBadAuditChangesNothing: the audit row is part of the
// change; a change whose audit event is refused is rolled back.
func TestMutationWithBadAuditChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	bad := auditEvent("tenant.create")
	bad.ActorType = "robot"
	tn := newTenant(t, "")
	wantKind(t, "CreateTenant(bad audit)", s.CreateTenant(ctx, tn, bad), errs.Invalid, "actor type")
	if n := count(t, pool, "SELECT count(*) FROM core.tenants"); n != 0 {
		t.Errorf("tenants after refused audit = %d, want 0", n)
	}

	member := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	sess, _ := mustSession(t, s, member.ID)
	_, err := s.SetUserDisabled(ctx, member.ID, true, "", postgres.AuditEvent{ActorType: postgres.ActorUser, Outcome: "ok"})
	wantKind(t, "SetUserDisabled(audit without action)", err, errs.Invalid, "action")
	if u := mustGetUser(t, s, member.ID); u.DisabledAt != nil {
		t.Errorf("user disabled although its audit event was refused")
	}
	wantRevoked(t, pool, sess.ID, "")
}

func TestGetTenantNotFound(t *testing.T) {
	t.Parallel()
	s, _, _ := mustStore(t)
	id := uuid.New()
	_, err := s.GetTenant(t.Context(), id)
	wantKind(t, "GetTenant(unknown)", err, errs.NotFound, fmt.Sprintf("tenant %s not found", id))
}

func TestListTenants(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	var want []uuid.UUID
	for range 5 {
		want = append(want, mustTenant(t, s, "").ID)
	}
	slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })

	var all []uuid.UUID
	after := uuid.Nil
	for {
		page, err := s.ListTenants(ctx, 2, after)
		if err != nil {
			t.Fatalf("ListTenants(2, %s) = %v", after, err)
		}
		for _, tn := range page {
			all = append(all, tn.ID)
			if tn.Name == "" || tn.ES.Kind != postgres.ESKindPlatform {
				t.Errorf("ListTenants() tenant = %+v, want it complete", tn)
			}
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(all, want) {
		t.Errorf("ListTenants pages = %v, want %v", all, want)
	}
	empty, err := s.ListTenants(ctx, 0, want[len(want)-1])
	if err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("ListTenants(after last) = %v, %v, want an empty slice", empty, err)
	}
}

func TestUpdateTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "Initial")
	other := mustTenant(t, s, "Other")

	got, err := s.UpdateTenant(ctx, tn.ID, nil, ptr(false), auditEvent("tenant.update"))
	if err != nil || got.Name != "Initial" || got.PasswordHintsEnabled {
		t.Fatalf("UpdateTenant(hints off) = %+v, %v, want name kept and hints off", got, err)
	}
	got, err = s.UpdateTenant(ctx, tn.ID, ptr("initial"), nil, auditEvent("tenant.update"))
	if err != nil || got.Name != "initial" || got.PasswordHintsEnabled {
		t.Fatalf("UpdateTenant(rename to own name in other case) = %+v, %v, want renamed, hints kept off", got, err)
	}
	if !reflect.DeepEqual(got.ES, tn.ES) || got.KeyMode != tn.KeyMode {
		t.Errorf("UpdateTenant() changed the endpoint or key mode: %+v", got)
	}

	_, err = s.UpdateTenant(ctx, tn.ID, ptr("OTHER"), nil, auditEvent("tenant.update"))
	wantKind(t, "UpdateTenant(name of another)", err, errs.Conflict, `tenant name "OTHER" is taken`)
	_, err = s.UpdateTenant(ctx, tn.ID, ptr(""), nil, auditEvent("tenant.update"))
	wantKind(t, "UpdateTenant(empty name)", err, errs.Invalid, "tenant name")
	_, err = s.UpdateTenant(ctx, uuid.New(), nil, ptr(true), auditEvent("tenant.update"))
	wantKind(t, "UpdateTenant(unknown)", err, errs.NotFound, "not found")

	if got := auditActions(t, s, &tn.ID); !slices.Equal(got, []string{"tenant.create", "tenant.update", "tenant.update"}) {
		t.Errorf("audit of tenant = %v, want create and two updates", got)
	}
	if got, _ := s.GetTenant(ctx, other.ID); got.Name != "Other" {
		t.Errorf("other tenant renamed to %q", got.Name)
	}
}
