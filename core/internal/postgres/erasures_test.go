package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// A context created for a user but not recorded — it lost the race with another creation, or the
// user was deleted meanwhile — is queued for erasure, due at once.
func TestPutKeyContextQueuesUnrecordedContexts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u := mustUser(t, s, tn.ID, postgres.RoleMember)

	winner := postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "PLATFORM"}
	if _, err := s.PutKeyContext(ctx, winner); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutKeyContext(ctx, winner); err != nil {
		t.Fatalf("PutKeyContext(the same again) = %v", err)
	}
	if _, err := s.GetErasure(ctx, winner.EncryptionID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(recorded context) = %v, want NotFound: recording it twice does not make it unused", err)
	}
	loser := winner
	loser.EncryptionID = uuid.New()
	got, err := s.PutKeyContext(ctx, loser)
	if err != nil || got.EncryptionID != winner.EncryptionID {
		t.Fatalf("PutKeyContext(loser) = %+v, %v; want the winner's context", got, err)
	}
	e, err := s.GetErasure(ctx, loser.EncryptionID)
	if err != nil || e.Reason != postgres.ErasureUnused || e.TenantID != tn.ID || e.UserID != u.ID || e.Attempts != 0 {
		t.Errorf("GetErasure(loser) = %+v, %v; want it queued as unused", e, err)
	}

	gone := postgres.KeyContext{UserID: uuid.New(), TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "PLATFORM"}
	_, err = s.PutKeyContext(ctx, gone)
	wantKind(t, "PutKeyContext(unknown user)", err, errs.NotFound, "not found")
	if e, err := s.GetErasure(ctx, gone.EncryptionID); err != nil || e.Reason != postgres.ErasureUnused {
		t.Errorf("GetErasure(context of a user that is gone) = %+v, %v; want it queued as unused", e, err)
	}
}

func TestClaimDeferFinishErasures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	queue := func() uuid.UUID { // a context queued as unused, due at once
		id := uuid.New()
		if _, err := s.PutKeyContext(ctx, postgres.KeyContext{UserID: uuid.New(), TenantID: tn.ID, EncryptionID: id, KeyMode: "PLATFORM"}); !errs.Is(err, errs.NotFound) {
			t.Fatalf("PutKeyContext(unknown user) = %v", err)
		}
		return id
	}
	a, b, c := queue(), queue(), queue()
	// One deleted user's, left to the deleting request for a grace period: not due yet.
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	kc, err := s.PutKeyContext(ctx, postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "PLATFORM"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteUser(ctx, u.ID, auditEvent("user.delete")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ErasureBacklog(ctx); err != nil || b.Pending != 4 || b.Oldest.IsZero() {
		t.Errorf("ErasureBacklog() = %+v, %v; want 4 pending", b, err)
	}

	for _, bad := range []int{0, -1, 1001} {
		_, err := s.ClaimErasures(ctx, bad, time.Minute)
		wantKind(t, "ClaimErasures(bad limit)", err, errs.Invalid, "limit")
	}
	first, err := s.ClaimErasures(ctx, 2, time.Minute)
	if err != nil || len(first) != 2 {
		t.Fatalf("ClaimErasures(2) = %+v, %v; want 2", first, err)
	}
	rest, err := s.ClaimErasures(ctx, 10, time.Minute)
	if err != nil || len(rest) != 1 {
		t.Fatalf("ClaimErasures(10) after claiming 2 = %+v, %v; want the third only (leased ones and the deleted user's wait)", rest, err)
	}
	claimed := map[uuid.UUID]postgres.Erasure{}
	for _, e := range append(first, rest...) {
		claimed[e.EncryptionID] = e
		if e.Attempts != 1 || !e.NextAttemptAt.After(time.Now().Add(30*time.Second)) {
			t.Errorf("claimed %+v: want attempts 1 and the next attempt a lease away", e)
		}
	}
	if len(claimed) != 3 || claimed[a].EncryptionID != a || claimed[b].EncryptionID != b || claimed[c].EncryptionID != c {
		t.Errorf("claimed %v, want a, b and c once each", claimed)
	}
	if again, err := s.ClaimErasures(ctx, 10, time.Minute); err != nil || len(again) != 0 {
		t.Errorf("ClaimErasures while all are leased = %+v, %v; want none", again, err)
	}

	// A failed attempt records its reason and when to retry; a retry due now is claimed again.
	if err := s.DeferErasure(ctx, a, 1, 0, "Unavailable: the encryption service is unavailable; try again"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeferErasure(ctx, kc.EncryptionID, 1, time.Hour, "FailedPrecondition: "+strings.Repeat("é", 600)); err != nil {
		t.Fatal(err)
	}
	if e, err := s.GetErasure(ctx, kc.EncryptionID); err != nil || e.Attempts != 1 || len([]rune(e.LastError)) != 500 {
		t.Errorf("after DeferErasure with a long reason: %+v, %v; want attempts 1 and the reason cut to 500 characters", e, err)
	}
	retry, err := s.ClaimErasures(ctx, 10, time.Minute)
	if err != nil || len(retry) != 1 || retry[0].EncryptionID != a || retry[0].Attempts != 2 || retry[0].LastError == "" {
		t.Fatalf("ClaimErasures after deferring a for 0 = %+v, %v; want a, attempt 2, with its last error", retry, err)
	}

	// Done: the row goes with an audit event; finishing twice records one.
	audit := postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "keys.erase", Outcome: "ok"}
	for range 2 {
		if err := s.FinishErasure(ctx, a, audit); err != nil {
			t.Fatalf("FinishErasure() = %v", err)
		}
	}
	if _, err := s.GetErasure(ctx, a); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(finished) = %v, want NotFound", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'keys.erase' AND target = $1 AND tenant_id = $2",
		"encryption:"+a.String(), tn.ID); n != 1 {
		t.Errorf("keys.erase audit events = %d, want 1", n)
	}
	if err := s.DeferErasure(ctx, a, 1, time.Minute, "late"); err != nil {
		t.Errorf("DeferErasure(finished) = %v, want nil (nothing to change)", err)
	}
	if b, err := s.ErasureBacklog(ctx); err != nil || b.Pending != 3 {
		t.Errorf("ErasureBacklog() after one finished = %+v, %v; want 3", b, err)
	}
}

// DeleteTenant leaves nothing of the tenant but its audit trail, in any table that names it (so a
// table added later without ON DELETE CASCADE fails here), and queues the tenant's destruction on
// the platform's encryption service; a hosted tenant's keys are not core's to destroy.
func TestDeleteTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	keep := mustTenant(t, s, "")
	for _, x := range []postgres.Tenant{tn, keep} {
		mustUser(t, s, x.ID, postgres.RoleOwner)
		f := mustVaultUser(t, s, x, postgres.KeyModePlatform)
		mustSession(t, s, f.user.ID)
		mustEnableTOTP(t, s, f.user.ID, 2)
		mustItems(t, s, f, uuid.New(), 3)
		mustAPIKey(t, s, x.ID)
		mustJob(t, s, tenantJob(f), postgres.Lease{})
		if _, err := s.PutKeyContext(ctx, postgres.KeyContext{UserID: f.user.ID, TenantID: x.ID, EncryptionID: uuid.New(), KeyMode: "PLATFORM"}); err != nil {
			t.Fatal(err) // a lost race: queues a key erasure
		}
	}
	// Every table of the schema with a tenant_id column, and the rows of tn in it.
	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.columns
		WHERE table_schema = 'core' AND column_name = 'tenant_id' AND table_name NOT IN ('audit_events', 'tenant_erasures')`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 6 {
		t.Fatalf("tables with a tenant_id column: %v, %v; want at least 6", tables, err)
	}
	left := func(id uuid.UUID) map[string]int {
		out := map[string]int{}
		for _, table := range tables {
			if n := count(t, pool, "SELECT count(*) FROM core."+table+" WHERE tenant_id = $1", id); n > 0 {
				out[table] = n
			}
		}
		return out
	}
	before := left(tn.ID)
	for _, table := range []string{"users", "items", "key_contexts", "api_keys", "reencryption_jobs", "key_erasures"} {
		if before[table] == 0 {
			t.Fatalf("before deletion the tenant has no rows in %s: the test would prove nothing (%v)", table, before)
		}
	}

	_, err = s.DeleteTenant(ctx, tn.ID, strings.ToUpper(tn.Name), auditEvent("tenant.delete"))
	wantKind(t, "DeleteTenant(wrong confirmName)", err, errs.Invalid, "confirmName")
	if got := left(tn.ID); len(got) != len(before) {
		t.Fatalf("after a refused DeleteTenant, the tenant's rows are %v, want all of them (%v)", got, before)
	}
	te, err := s.DeleteTenant(ctx, tn.ID, tn.Name, auditEvent("tenant.delete"))
	if err != nil || te == nil || te.ESTenantID != tn.ES.TenantID || te.TenantID != tn.ID {
		t.Fatalf("DeleteTenant() = %+v, %v; want the erasure of %s", te, err, tn.ES.TenantID)
	}
	if got := left(tn.ID); len(got) != 0 {
		t.Errorf("after DeleteTenant, rows of the tenant remain: %v", got)
	}
	for _, table := range []string{"sessions", "refresh_tokens", "recovery_codes"} {
		if n := count(t, pool, "SELECT count(*) FROM core."+table); n == 0 {
			t.Errorf("%s is empty: the other tenant's rows went too", table)
		}
	}
	if got := left(keep.ID); len(got) != len(before) {
		t.Errorf("the other tenant's rows: %v, want rows in as many tables as the deleted one had (%v)", got, before)
	}
	if pending, err := s.GetTenantErasure(ctx, tn.ES.TenantID); err != nil || pending.TenantID != tn.ID || !pending.NextAttemptAt.After(pending.RequestedAt) {
		t.Errorf("GetTenantErasure() = %+v, %v; want it queued after a grace", pending, err)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE tenant_id = $1 AND action = 'tenant.delete'", tn.ID); n != 1 {
		t.Errorf("tenant.delete audit events = %d, want 1 (the audit trail outlives the tenant)", n)
	}
	_, err = s.DeleteTenant(ctx, tn.ID, tn.Name, auditEvent("tenant.delete"))
	wantKind(t, "DeleteTenant(deleted)", err, errs.NotFound, "not found")

	hosted := newTenant(t, "")
	hosted.ES = postgres.ESEndpoint{Kind: postgres.ESKindHosted, URL: "https://es.example.com:8443", Protocol: postgres.ESProtocolHTTPS,
		CABundlePEM: "PEM", TenantID: uuid.New(), TenantSecretSealed: mustRandom(t, 60)}
	if err := s.CreateTenant(ctx, hosted, auditEvent("tenant.create")); err != nil {
		t.Fatal(err)
	}
	if te, err := s.DeleteTenant(ctx, hosted.ID, hosted.Name, auditEvent("tenant.delete")); err != nil || te != nil {
		t.Errorf("DeleteTenant(hosted) = %+v, %v; want no erasure", te, err)
	}
	if b, err := s.ErasureBacklog(ctx); err != nil || b.Pending != 2 {
		t.Errorf("ErasureBacklog() = %+v, %v; want 2: the deleted tenant and the other tenant's unused context", b, err)
	}
}

// TestPutKeyContextUnderAChangedPassword: a zero-knowledge context made with the master key of a
// password that changed since (the user's stamp moved on) is not recorded but queued for erasure,
// and the caller is told to log in again; one recorded before the change (an earlier attempt of
// the same call) stays the user's; the password change itself refuses to commit over a context it
// did not move.
func TestPutKeyContextUnderAChangedPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	stale := u.SecurityStamp
	none := uuid.Nil
	if err := s.ChangePassword(ctx, u.ID, "hash-2", nil, "stamp-2", uuid.Nil, &none, auditEvent("user.password")); err != nil {
		t.Fatal(err)
	}
	late := postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "CLIENT"}
	_, err := s.PutKeyContextUnder(ctx, late, stale)
	wantKind(t, "PutKeyContextUnder(stale stamp)", err, errs.Unauthenticated, "password changed")
	if _, err := s.GetKeyContext(ctx, u.ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetKeyContext after a refused context = %v, want none recorded", err)
	}
	if e, err := s.GetErasure(ctx, late.EncryptionID); err != nil || e.Reason != postgres.ErasureUnused {
		t.Errorf("GetErasure(refused context) = %+v, %v; want it queued as unused", e, err)
	}

	current := postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "CLIENT"}
	if _, err := s.PutKeyContextUnder(ctx, current, "stamp-2"); err != nil {
		t.Fatalf("PutKeyContextUnder(current stamp) = %v", err)
	}
	// The change after it: a context the change did not move refuses it; the recorded one stays
	// the user's for a retry of the same recording made under the old stamp.
	err = s.ChangePassword(ctx, u.ID, "hash-3", nil, "stamp-3", uuid.Nil, &none, auditEvent("user.password"))
	wantKind(t, "ChangePassword(over a context it did not move)", err, errs.Aborted, "change the password again")
	if got := mustGetUser(t, s, u.ID); got.SecurityStamp != "stamp-2" || got.PasswordHash != "hash-2" {
		t.Errorf("user after a refused change = stamp %q hash %q, want stamp-2 hash-2", got.SecurityStamp, got.PasswordHash)
	}
	if err := s.ChangePassword(ctx, u.ID, "hash-3", nil, "stamp-3", uuid.Nil, &current.EncryptionID, auditEvent("user.password")); err != nil {
		t.Fatalf("ChangePassword(having moved the context) = %v", err)
	}
	if got, err := s.PutKeyContextUnder(ctx, current, "stamp-2"); err != nil || got.EncryptionID != current.EncryptionID {
		t.Errorf("PutKeyContextUnder(recorded context, old stamp) = %+v, %v; want the recorded context", got, err)
	}
	if _, err := s.GetErasure(ctx, current.EncryptionID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(recorded context) = %v, want none: it is the user's", err)
	}
}
