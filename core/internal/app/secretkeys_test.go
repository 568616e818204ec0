package app

import (
	"bytes"
	"context"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/custos-platform/custos/core/internal/postgres"
)

// secondSecretKey is a key added to testSecretKeys ("s1") in rotation tests; its id sorts after s1.
const secondSecretKey = "s2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

// runCore runs a core command to completion with env and returns its output.
func runCore(tb testing.TB, env map[string]string, args ...string) (string, error) {
	tb.Helper()
	var out strings.Builder
	err := Run(context.Background(), "test", args, func(k string) string { return env[k] }, &out, io.Discard)
	return out.String(), err
}

// sealedUnder counts the values in the database that name key id.
func sealedUnder(tb testing.TB, databaseURL, id string) int64 {
	tb.Helper()
	pool, err := postgres.Open(context.Background(), databaseURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	counts, err := postgres.NewStore(pool).CountSealed(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, c := range counts {
		if c.KeyID == id {
			n += c.Count
		}
	}
	return n
}

// TestSecretKeyRotation rotates CORE_SECRET_KEYS as docs/identity.md says — add a key, make it
// active, core secret-keys rewrap, retire the old key — and checks that everything sealed still
// opens: a TOTP login, the signing keys (a token issued before still verifies), the tenant's
// secret on the encryption service (the vault works), and that neither prelogin answers nor the
// export integrity key changed.
func TestSecretKeyRotation(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	enrol := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})
	secret := enrol["secret"].(string)
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.must(200, "POST", "/v1/auth/totp/confirm", f.member, map[string]string{"code": code})
	p.must(200, "POST", "/v1/items", f.admin, map[string]string{"name": "before", "data": "sealed before the rotation"})
	lines, _ := p.exportLines(f.export, "")
	if len(lines) != 1 {
		t.Fatalf("export = %d records, want 1", len(lines))
	}
	prelogin := p.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "no-such-user"})
	adminTok, _ := p.login("acme-admin", "password-of-admin")
	p.core.stop()

	db := p.core.env["CORE_DATABASE_URL"]
	with := func(keys, active string) map[string]string {
		env := maps.Clone(p.core.env)
		env["CORE_SECRET_KEYS"], env["CORE_ACTIVE_SECRET_KEY_ID"] = keys, active
		return env
	}
	onlyS2 := with(secondSecretKey, "")

	// Retiring s1 before rewrapping: core refuses to start, naming the key and the command.
	if _, err := runCore(t, onlyS2); err == nil || !strings.Contains(err.Error(), `"s1"`) || !strings.Contains(err.Error(), "core secret-keys rewrap") {
		t.Fatalf("core with s1 missing before rewrap = %v, want an error naming s1 and core secret-keys rewrap", err)
	}

	// Add s2 and make it active: status shows what s1 still seals; rewrap moves it all.
	both := with(testSecretKeys+","+secondSecretKey, "s2")
	before := sealedUnder(t, db, "s1")
	// a TOTP secret, a signing key, the tenant's secret, the two platform secrets
	if before < 5 {
		t.Fatalf("before rewrap s1 seals %d values, want at least 5", before)
	}
	status, err := runCore(t, both, "secret-keys", "status")
	if err != nil {
		t.Fatalf("core secret-keys status = %v", err)
	}
	if !strings.Contains(status, "s1") || !strings.Contains(status, "run core secret-keys rewrap") {
		t.Errorf("status before rewrap:\n%s\nwant s1 sealing secrets", status)
	}
	dry, err := runCore(t, both, "secret-keys", "rewrap", "--dry-run")
	if err != nil || dry != status {
		t.Errorf("rewrap --dry-run = %v\n%s\nwant the status\n%s", err, dry, status)
	}
	if n := sealedUnder(t, db, "s1"); n != before {
		t.Errorf("after --dry-run s1 seals %d values, want %d (unchanged)", n, before)
	}
	out, err := runCore(t, both, "secret-keys", "rewrap")
	if err != nil {
		t.Fatalf("core secret-keys rewrap = %v\n%s", err, out)
	}
	if n := sealedUnder(t, db, "s1"); n != 0 {
		t.Errorf("after rewrap s1 seals %d values, want 0\n%s", n, out)
	}
	if !strings.Contains(out, "\ns1 ") || !strings.Contains(out, "can be retired") {
		t.Errorf("rewrap output:\n%s\nwant s1 retirable", out)
	}
	// Idempotent: a second run finds nothing to do.
	again, err := runCore(t, both, "secret-keys", "rewrap")
	if err != nil || !strings.Contains(again, "re-sealed 0 secrets") {
		t.Errorf("second rewrap = %v\n%s\nwant nothing re-sealed", err, again)
	}

	// Retire s1: everything still works.
	inst := startWithEnv(t, onlyS2, p.core.certs)
	waitReady(t, inst)
	q := &platform{tb: t, core: inst, es: p.es, client: inst.httpClient(p.core.certs.ClientConfigNoCert())}
	q.must(200, "GET", "/v1/me", bearer(adminTok), nil) // the signing key opened, the same one
	got := q.must(200, "POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "password-of-member"})
	next, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	q.must(200, "POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": got["mfaToken"].(string), "code": next})
	q.must(200, "POST", "/v1/items", bearer(adminTok), map[string]string{"name": "after", "data": "sealed after the rotation"})
	if again := q.must(200, "POST", "/v1/auth/prelogin", nil, map[string]string{"username": "no-such-user"}); again["salt"] != prelogin["salt"] {
		t.Errorf("prelogin of an unknown user changed with the rotation: %v, then %v", prelogin["salt"], again["salt"])
	}
	if code, body := q.raw("POST", "/v1/import", bearer(adminTok), lines[0]+"\n"); code != 200 {
		t.Errorf("import of an export made before the rotation = %d %s, want 200", code, body)
	}
}

// TestRootSecretsContinuity checks that the prelogin seed and export key stored at the first start
// are the ones derived from the key with the smallest id before they were stored, and that
// adding or removing keys changes neither afterwards.
func TestRootSecretsContinuity(t *testing.T) {
	ctx := t.Context()
	p := startPlatform(t, nil)
	p.core.stop()
	wantSeed, err := preloginSeed(testSecretKeys)
	if err != nil {
		t.Fatal(err)
	}
	wantExport, err := exportKey(testSecretKeys)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := postgres.Open(ctx, p.core.env["CORE_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool)
	for _, tc := range []struct {
		name, keys, active string
	}{
		{"as first stored", testSecretKeys, ""},
		{"a key sorting first added", testSecretKeys + ",0-new:AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=", "s1"},
		{"a new key active", testSecretKeys + "," + secondSecretKey, "s2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			box, err := secretBox(tc.keys, tc.active)
			if err != nil {
				t.Fatal(err)
			}
			seed, export, err := rootSecrets(ctx, store, box, tc.keys)
			if err != nil {
				t.Fatalf("rootSecrets() = %v", err)
			}
			if !bytes.Equal(seed, wantSeed) || !bytes.Equal(export, wantExport) {
				t.Errorf("rootSecrets() = seed %x, export key %x; want %x, %x (derived from s1)", seed, export, wantSeed, wantExport)
			}
		})
	}
}
