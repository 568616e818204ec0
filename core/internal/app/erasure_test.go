package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// TestDeletingAUserErasesTheirKeys deletes people of a PLATFORM tenant: their key context is
// destroyed on the encryption service (crypto-shredding), at once when it answers, and by the
// erasure worker once it is back when it does not. Their ciphertext, exported copies included,
// can then never be decrypted again.
func TestDeletingAUserErasesTheirKeys(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("erase", "PLATFORM")
	coreDB, esDB := p.core.env["CORE_DATABASE_URL"], p.es.DatabaseURL

	// keysOf returns a user's encryption id once they have written an item.
	keysOf := func(c cred, userID string) string {
		t.Helper()
		p.must(200, "POST", "/v1/items", c, map[string]any{"name": "n", "data": marker(t)})
		return p.contextOf(f.admin, userID)["encryptionId"].(string)
	}
	live := func(enc string) int { // versions of enc on the encryption service that still have key material
		return countRows(t, esDB, "SELECT count(*) FROM encryption.encryption_key_versions WHERE encryption_id = $1 AND key_material IS NOT NULL", enc)
	}
	destroyed := func(enc string) bool {
		return live(enc) == 0 &&
			countRows(t, esDB, "SELECT count(*) FROM encryption.encryptions WHERE id = $1 AND destroyed_at IS NOT NULL", enc) == 1
	}

	// With the encryption service up: erased before the answer.
	memberEnc := keysOf(f.member, f.memberID)
	if live(memberEnc) != 1 {
		t.Fatalf("the member's context has %d live versions before deletion, want 1", live(memberEnc))
	}
	got := p.must(200, "DELETE", "/v1/users/"+f.memberID, f.admin, nil)
	if got["keyErasure"] != "done" {
		t.Errorf("DELETE /v1/users/{member} = %v, want keyErasure done", got)
	}
	if !destroyed(memberEnc) {
		t.Errorf("the deleted member's key context %s still has key material on the encryption service", memberEnc)
	}
	if n := countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures"); n != 0 {
		t.Errorf("pending erasures after a deletion the encryption service answered = %d, want 0", n)
	}

	// Another member, to delete while the encryption service is down.
	root, _ := p.login(rootName, rootPass)
	u := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", bearer(root), map[string]any{
		"username": "erase-late", "password": "password-of-late", "role": "member",
	})
	lateID := u["userId"].(string)
	tok, _ := p.login("erase-late", "password-of-late")
	lateEnc := keysOf(bearer(tok), lateID)

	// With the encryption service down, the deletion still succeeds and the erasure is queued.
	p.es.Stop()
	got = p.must(200, "DELETE", "/v1/users/"+lateID, f.admin, nil)
	if got["keyErasure"] != "pending" {
		t.Errorf("DELETE /v1/users/{user} with the encryption service down = %v, want keyErasure pending", got)
	}
	if code, _ := p.call("GET", "/v1/items", bearer(tok), nil); code != 401 {
		t.Errorf("the deleted user's session answers %d, want 401", code)
	}
	if n := countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures WHERE encryption_id = $1 AND attempts >= 1 AND last_error LIKE 'unavailable: %'", lateEnc); n != 1 {
		t.Errorf("queued erasure of %s with its failed attempt = %d rows, want 1", lateEnc, n)
	}
	p.es.Restart(t)
	deadline := time.Now().Add(60 * time.Second)
	for countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the erasure worker did not destroy %s within 60 s of the encryption service's return", lateEnc)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !destroyed(lateEnc) {
		t.Errorf("after the worker: key context %s still has key material", lateEnc)
	}

	// The tenant's admins see both erasures in the audit trail.
	audit := p.must(200, "GET", "/v1/audit?action=keys.erase", f.admin, nil)
	var targets []string
	for _, e := range audit["events"].([]any) {
		targets = append(targets, e.(map[string]any)["target"].(string))
	}
	if len(targets) != 2 || !strings.Contains(strings.Join(targets, " "), memberEnc) || !strings.Contains(strings.Join(targets, " "), lateEnc) {
		t.Errorf("keys.erase audit events name %v, want the two contexts %s and %s", targets, memberEnc, lateEnc)
	}
	if code, _ := p.call("GET", "/v1/users/"+lateID, f.admin, nil); code != 404 {
		t.Errorf("GET the deleted user = %d, want 404", code)
	}
}

// TestDeletingATenant deletes a PLATFORM tenant: only the platform admin, only with its name
// repeated; afterwards nothing of it is left in core but its audit trail, its people cannot log in,
// and the platform's encryption service has destroyed the tenant with every key of it.
func TestDeletingATenant(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("doomed", "PLATFORM")
	other := p.newTenant("bystander", "PLATFORM")
	coreDB, esDB := p.core.env["CORE_DATABASE_URL"], p.es.DatabaseURL
	p.must(200, "POST", "/v1/items", f.member, map[string]any{"name": "n", "data": marker(t)})
	p.must(200, "POST", "/v1/items", other.member, map[string]any{"name": "n", "data": marker(t)})
	esTenant := func(coreTenant string) string {
		return readString(t, coreDB, "SELECT es_tenant_id::text FROM core.tenants WHERE id = $1", coreTenant)
	}
	doomedES, otherES := esTenant(f.id), esTenant(other.id)
	liveKeys := func(esTenantID string) int {
		return countRows(t, esDB, `SELECT count(*) FROM encryption.encryption_key_versions v JOIN encryption.encryptions e ON e.id = v.encryption_id
			WHERE e.tenant_id = $1 AND v.key_material IS NOT NULL`, esTenantID)
	}
	if liveKeys(doomedES) < 3 {
		t.Fatalf("the tenant has %d live keys on the encryption service, want one per person", liveKeys(doomedES))
	}

	root, _ := p.login(rootName, rootPass)
	path := "/v1/tenants/" + f.id
	if code, got := p.call("DELETE", path+"?confirmName=Doomed", bearer(root), nil); code != 400 || !strings.Contains(fmt.Sprint(got["message"]), "confirmName") {
		t.Errorf("DELETE with the wrong name = %d %v, want 400 naming confirmName", code, got)
	}
	if code, _ := p.call("DELETE", path+"?confirmName=doomed", f.owner, nil); code != 403 {
		t.Errorf("the tenant's owner deleting it = %d, want 403 (platform admin only)", code)
	}
	p.must(200, "GET", "/v1/items", f.member, nil) // still there

	got := p.must(200, "DELETE", path+"?confirmName=doomed", bearer(root), nil)
	if got["keyErasure"] != "done" {
		t.Errorf("DELETE /v1/tenants/{id} = %v, want keyErasure done", got)
	}
	if n := liveKeys(doomedES); n != 0 {
		t.Errorf("the deleted tenant keeps %d live keys on the encryption service, want 0", n)
	}
	if n := countRows(t, esDB, "SELECT count(*) FROM encryption.tenants WHERE id = $1 AND destroyed_at IS NOT NULL", doomedES); n != 1 {
		t.Errorf("the tenant is not destroyed on the encryption service")
	}
	if liveKeys(otherES) < 3 {
		t.Errorf("the other tenant lost keys: %d live", liveKeys(otherES))
	}
	if code, _ := p.call("GET", "/v1/items", f.member, nil); code != 401 {
		t.Errorf("a deleted tenant's member listing items = %d, want 401", code)
	}
	if code, _ := p.call("GET", path, bearer(root), nil); code != 404 {
		t.Errorf("GET the deleted tenant = %d, want 404", code)
	}
	if code, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "doomed-owner", "password": "password-of-owner"}); code != 401 {
		t.Errorf("login of a deleted tenant's owner = %d, want 401", code)
	}
	p.must(200, "GET", "/v1/items", other.member, nil)
	if n := countRows(t, coreDB, "SELECT count(*) FROM core.audit_events WHERE tenant_id = $1 AND action IN ('tenant.delete', 'tenant.erase')", f.id); n != 2 {
		t.Errorf("tenant.delete and tenant.erase audit events = %d, want 2 (kept after the tenant)", n)
	}
	// The platform admin reads the deleted tenant's audit trail, and every event of the platform;
	// a tenant's admin reads only their own.
	trail := p.must(200, "GET", "/v1/audit?tenantId="+f.id, bearer(root), nil)["events"].([]any)
	if len(trail) < 5 || trail[0].(map[string]any)["action"] != "tenant.erase" || trail[1].(map[string]any)["action"] != "tenant.delete" ||
		trail[0].(map[string]any)["tenantId"] != f.id {
		t.Errorf("the deleted tenant's audit trail = %v, want it, newest first: tenant.erase, tenant.delete, …", trail)
	}
	all := p.must(200, "GET", "/v1/audit?action=tenant.create", bearer(root), nil)["events"].([]any)
	if len(all) != 2 {
		t.Errorf("every tenant.create of the platform = %d events, want 2", len(all))
	}
	if code, _ := p.call("GET", "/v1/audit?tenantId="+f.id, other.admin, nil); code != 403 {
		t.Errorf("another tenant's admin reading the deleted tenant's trail = %d, want 403", code)
	}
	p.must(200, "GET", "/v1/audit?tenantId="+other.id, other.admin, nil)
	if code, _ := p.call("GET", "/v1/audit?tenantId=nope", bearer(root), nil); code != 400 {
		t.Errorf("a malformed tenantId = %d, want 400", code)
	}

	// The name is free again; the new tenant is a new tenant on the encryption service too.
	again := p.must(200, "POST", "/v1/tenants", bearer(root), map[string]any{"name": "doomed", "keyMode": "PLATFORM"})
	if again["tenantId"] == f.id {
		t.Errorf("a tenant created with the deleted one's name got its id")
	}
}

// readString runs query, which must answer one text value.
func readString(tb testing.TB, databaseURL, query string, args ...any) string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, query, args...).Scan(&s); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return s
}

// TestErasuresCommand: operators list what core still has to have destroyed, and drop an erasure
// they carried out by other means, audited.
func TestErasuresCommand(t *testing.T) {
	ctx := context.Background()
	url := testdb.New(t)
	pool, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool)
	tenant := postgres.Tenant{ID: uuid.New(), Name: "hosted-elsewhere", KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: make([]byte, 60)}}
	if err := store.CreateTenant(ctx, tenant, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "tenant.create", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	enc := uuid.New()
	if _, err := store.PutKeyContext(ctx, postgres.KeyContext{UserID: uuid.New(), TenantID: tenant.ID, EncryptionID: enc, KeyMode: "PLATFORM"}); err == nil {
		t.Fatal("PutKeyContext(unknown user) = nil, want NotFound with the context queued")
	}
	if err := store.DeferErasure(ctx, enc, 3, time.Hour, "failed precondition: the encryption service cannot destroy key contexts"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CORE_DATABASE_URL": url}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := Run(ctx, "test", append([]string{"erasures"}, args...), func(k string) string { return env[k] }, &out, io.Discard)
		return out.String(), err
	}

	out, err := run("list")
	if err != nil || !strings.Contains(out, enc.String()) || !strings.Contains(out, "cannot destroy key contexts") || !strings.Contains(out, "unused") {
		t.Errorf("erasures list = %q, %v; want the pending erasure with its reason and last error", out, err)
	}
	for _, args := range [][]string{{}, {"frob"}, {"forget", enc.String()}, {"forget", "not-a-uuid", "--yes"}, {"list", "extra"}} {
		if _, err := run(args...); !errors.Is(err, ErrUsage) {
			t.Errorf("erasures %q = %v, want ErrUsage", args, err)
		}
	}
	if out, err := run("forget", enc.String(), "--yes"); err != nil || !strings.Contains(out, enc.String()) {
		t.Errorf("erasures forget --yes = %q, %v", out, err)
	}
	if out, err := run("list"); err != nil || out != "no erasure is pending\n" {
		t.Errorf("erasures list after forget = %q, %v; want none", out, err)
	}
	if _, err := run("forget", enc.String(), "--yes"); err == nil || !strings.Contains(err.Error(), "no erasure of") {
		t.Errorf("erasures forget of nothing pending = %v, want a not-found error", err)
	}
	if n := countRows(t, url, "SELECT count(*) FROM core.audit_events WHERE action = 'keys.erase.forget' AND target = $1 AND tenant_id = $2",
		"encryption:"+enc.String(), tenant.ID); n != 1 {
		t.Errorf("keys.erase.forget audit events = %d, want 1", n)
	}
}
