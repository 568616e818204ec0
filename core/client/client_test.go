package client_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/custos-platform/custos/core/client"
)

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// TestKDFTestVectors: DeriveSecrets gives the published known answers, and so does the
// derivation spelled out from the primitives (Argon2id, then RFC 5869 HKDF with an empty salt and
// one output block), which is what a client in another language implements.
func TestKDFTestVectors(t *testing.T) {
	for _, v := range client.KDFTestVectors() {
		t.Run(v.Name, func(t *testing.T) {
			got, err := client.DeriveSecrets(v.Params, v.Password)
			if err != nil {
				t.Fatal(err)
			}
			if got.AuthPassword != v.AuthPassword || got.MasterKey != v.MasterKey {
				t.Errorf("DeriveSecrets = auth %s, master %s; want %s, %s", got.AuthPassword, got.MasterKey, v.AuthPassword, v.MasterKey)
			}
			secret := argon2.IDKey([]byte(v.Password), v.Params.Salt, v.Params.Iterations, v.Params.MemoryKiB, uint8(v.Params.Parallelism), 32)
			prk := hmacSHA256(make([]byte, sha256.Size), secret)
			for _, c := range []struct{ info, want string }{{"custos/auth", v.AuthPassword}, {"custos/master-key", v.MasterKey}} {
				if got := base64.StdEncoding.EncodeToString(hmacSHA256(prk, append([]byte(c.info), 1))); got != c.want {
					t.Errorf("%s from the primitives = %s, want %s", c.info, got, c.want)
				}
			}
		})
	}
}

func TestDeriveSecretsRefusesDowngrades(t *testing.T) {
	salt := bytes.Repeat([]byte{7}, 16)
	ok := client.KDFParams{KDF: "argon2id", Salt: salt, MemoryKiB: 16 * 1024, Iterations: 2, Parallelism: 1}
	tests := []struct {
		name   string
		change func(*client.KDFParams)
		want   error
	}{
		{"memory below 16 MiB", func(p *client.KDFParams) { p.MemoryKiB = 16*1024 - 1 }, client.ErrKDFDowngrade},
		{"one pass", func(p *client.KDFParams) { p.Iterations = 1 }, client.ErrKDFDowngrade},
		{"no lane", func(p *client.KDFParams) { p.Parallelism = 0 }, client.ErrKDFDowngrade},
		{"15-byte salt", func(p *client.KDFParams) { p.Salt = salt[:15] }, client.ErrKDFDowngrade},
		{"no salt", func(p *client.KDFParams) { p.Salt = nil }, client.ErrKDFDowngrade},
		{"another KDF", func(p *client.KDFParams) { p.KDF = "pbkdf2" }, client.ErrKDFParams},
		{"absurd memory", func(p *client.KDFParams) { p.MemoryKiB = 1<<20 + 1 }, client.ErrKDFParams},
		{"absurd passes", func(p *client.KDFParams) { p.Iterations = 101 }, client.ErrKDFParams},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.change(&p)
			if _, err := client.DeriveSecrets(p, "x"); !errors.Is(err, tc.want) {
				t.Errorf("DeriveSecrets(%s) error = %v, want %v", tc.name, err, tc.want)
			}
		})
	}
	if _, err := client.DeriveSecrets(ok, "x"); err != nil {
		t.Errorf("DeriveSecrets(floor) = %v, want it accepted", err)
	}
	s, _ := client.DeriveSecrets(ok, "x")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, s.MasterKey) || strings.Contains(out, s.AuthPassword) {
			t.Errorf("Sprintf(%s, Secrets) = %s: it prints a secret", verb, out)
		}
	}
}

func TestLoginRefusesDowngradeBeforeSendingAnything(t *testing.T) {
	f := newFakeCore(t)
	f.params.MemoryKiB = 8 * 1024 // a server (or someone in between) asks for cheap hashing
	c := f.newClient(t)
	if _, err := c.Login(context.Background(), "alice", f.password, nil); !errors.Is(err, client.ErrKDFDowngrade) {
		t.Fatalf("Login with 8 MiB parameters = %v, want ErrKDFDowngrade", err)
	}
	if f.logins != 0 {
		t.Errorf("Login sent %d login requests after a refused derivation, want none", f.logins)
	}
}

func TestLoginWithMFAKeepsTheMasterKeyInMemoryOnly(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.mfa = true
	store := &client.MemoryTokenStore{}
	c := f.newClient(t, client.WithTokenStore(store))
	if _, err := c.Login(ctx, "alice", f.password, nil); !errors.Is(err, client.ErrMFARequired) {
		t.Fatalf("Login of an MFA account without a TOTPFunc = %v, want ErrMFARequired", err)
	}
	if _, err := c.Login(ctx, "alice", f.password, func(context.Context) (string, error) { return "654321", nil }); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("Login with a wrong code = %v, want UNAUTHENTICATED", err)
	}
	me, err := c.Login(ctx, "alice", f.password, func(context.Context) (string, error) { return "123456", nil })
	if err != nil {
		t.Fatal(err)
	}
	if me.KeyMode != "CLIENT" {
		t.Errorf("Login = %+v, want KeyMode CLIENT", me)
	}
	if _, err := c.PutItem(ctx, "n", "d"); err != nil {
		t.Fatal(err)
	}
	want, _ := client.DeriveSecrets(f.params, f.password)
	if f.masterKeys[0] != want.MasterKey {
		t.Errorf("PutItem sent X-Master-Key %q, want the derived master key", f.masterKeys[0])
	}
	s, _ := store.Load(ctx)
	raw, _ := json.Marshal(s)
	if !s.ZeroKnowledge || strings.Contains(string(raw)+s.String(), want.MasterKey) || strings.Contains(string(raw), want.AuthPassword) {
		t.Errorf("stored session %s: want ZeroKnowledge and no master key or password in it", raw)
	}

	// Another client resuming the session has no master key until it unlocks.
	d := f.newClient(t, client.WithTokenStore(store))
	if _, err := d.GetItem(ctx, "00000000-0000-0000-0000-000000000001"); !errors.Is(err, client.ErrLocked) {
		t.Errorf("GetItem before Unlock = %v, want ErrLocked", err)
	}
	if err := d.Unlock(ctx, "a wrong passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetItem(ctx, "00000000-0000-0000-0000-000000000001"); !errors.Is(err, client.ErrPermissionDenied) {
		t.Errorf("GetItem with the wrong password's key = %v, want PERMISSION_DENIED", err)
	}
	if err := d.Unlock(ctx, f.password); err != nil {
		t.Fatal(err)
	}
	if it, err := d.GetItem(ctx, "00000000-0000-0000-0000-000000000001"); err != nil || it.Data != "d" {
		t.Errorf("GetItem after Unlock = %+v, %v", it, err)
	}
}

func TestPlatformTenantSendsNoMasterKey(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	if _, err := c.Login(ctx, "alice", f.password, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutItem(ctx, "n", "d"); err != nil {
		t.Fatalf("PutItem in a PLATFORM tenant = %v", err)
	}
	if f.masterKeys[0] != "" {
		t.Error("PutItem sent X-Master-Key in a PLATFORM tenant")
	}
}

// An expired access token is refreshed once, the refresh token rotated in the store, and a second
// client sharing the store adopts the new tokens instead of spending the old refresh token again
// (which would revoke the session).
func TestRefreshOnceAndShare(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	store := &client.MemoryTokenStore{}
	a := f.newClient(t, client.WithTokenStore(store))
	b := f.newClient(t, client.WithTokenStore(store))
	f.expireNext = true // the login's access token will be refused
	if _, err := a.Login(ctx, "alice", f.password, nil); err != nil {
		t.Fatalf("Login = %v (GET /v1/me should have been retried after a refresh)", err)
	}
	before, _ := store.Load(ctx)
	if f.refreshes != 1 || before.RefreshToken == "refresh-1" {
		t.Fatalf("after one refused token: %d refreshes, refresh token %s; want 1, rotated", f.refreshes, before.RefreshToken)
	}
	if _, err := b.Me(ctx); err != nil {
		t.Fatalf("second client Me = %v", err)
	}
	// Expire every token: both clients notice, only one refresh happens.
	f.mu.Lock()
	f.access = map[string]bool{}
	f.mu.Unlock()
	if _, err := a.Me(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Me(ctx); err != nil {
		t.Fatalf("second client after the first refreshed = %v", err)
	}
	if f.refreshes != 2 {
		t.Errorf("refreshes = %d, want 2 (one per expiry, shared)", f.refreshes)
	}
	// A refused refresh token ends the session.
	f.mu.Lock()
	f.access, f.refresh = map[string]bool{}, map[string]bool{}
	f.mu.Unlock()
	if _, err := a.Me(ctx); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("Me with every token revoked = %v, want ErrSessionExpired", err)
	}
	if s, _ := store.Load(ctx); s.LoggedIn() {
		t.Error("the ended session is still in the store")
	}
	if _, err := b.Me(ctx); !errors.Is(err, client.ErrSessionExpired) && !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("second client after the session ended = %v", err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	c := f.newClient(t)
	if _, err := c.Me(ctx); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("Me without a session = %v, want ErrNotLoggedIn", err)
	}
	if _, err := c.Login(ctx, "alice", "wrong passphrase!", nil); !errors.Is(err, client.ErrUnauthenticated) {
		t.Errorf("Login with a wrong password = %v, want UNAUTHENTICATED", err)
	}
	if _, err := c.Login(ctx, "alice", f.password, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetItem(ctx, "00000000-0000-0000-0000-000000000009")
	var e *client.Error
	if !errors.As(err, &e) || e.HTTPStatus != 404 || e.Code != "NOT_FOUND" || !strings.Contains(e.Message, "not found") {
		t.Errorf("GetItem of an unknown item = %#v, want *Error 404 NOT_FOUND", err)
	}
	if !errors.Is(err, client.ErrNotFound) || errors.Is(err, client.ErrAborted) {
		t.Errorf("errors.Is(%v, ErrNotFound) false, or matches ErrAborted", err)
	}
	for _, u := range []string{"http://localhost:8443", "localhost:8443", ""} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) = nil error, want https required", u)
		}
	}
	// Unreachable core: UNAVAILABLE, wrapping the cause.
	d, _ := client.New("https://127.0.0.1:1")
	if _, err := d.Prelogin(ctx, "alice"); !errors.Is(err, client.ErrUnavailable) || errors.Unwrap(err) == nil {
		t.Errorf("Prelogin on a closed port = %v, want UNAVAILABLE wrapping the cause", err)
	}
}

func TestListItemsPagesAndExport(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	c := f.newClient(t)
	if _, err := c.Login(ctx, "alice", f.password, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		if _, err := c.PutItem(ctx, d, d); err != nil {
			t.Fatal(err)
		}
	}
	items, err := client.Collect(c.ListItems(ctx))
	if err != nil || len(items) != 3 || items[0].Data != "c" || items[2].Data != "a" {
		t.Errorf("ListItems over 3 pages = %+v, %v", items, err)
	}
	var buf bytes.Buffer
	var seen []int
	res, err := c.Export(ctx, &buf, client.ExportProgress(func(n int) { seen = append(seen, n) }))
	if err != nil || res.Records != 3 || res.LastCursor != "c3" || len(seen) != 3 {
		t.Fatalf("Export = %+v, %v, progress %v", res, err, seen)
	}
	if lines := strings.Split(strings.TrimSpace(buf.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], `{"id":`) {
		t.Errorf("Export wrote %q, want one bare record per line", buf.String())
	}
	var polls []string
	j, err := c.WaitJob(ctx, "0b7c1f5e-0000-4000-8000-000000000001", 1, func(j client.Job) { polls = append(polls, j.State) })
	if err != nil || j.State != client.JobSucceeded || j.Total != 4 || len(polls) < 2 {
		t.Errorf("WaitJob = %+v, %v after polls %v", j, err, polls)
	}
}
