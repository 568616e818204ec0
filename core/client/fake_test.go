package client_test

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/custos-platform/custos/core/client"
)

// fakeCore is an in-memory stand-in for core's REST API, enough to exercise the client's logic:
// prelogin, login with MFA, token refresh (single-use refresh tokens), the vault with
// X-Master-Key, export and jobs. Its behaviour is set through its fields before use.
type fakeCore struct {
	srv *httptest.Server

	mu           sync.Mutex
	importBodies []string         // the bodies of POST /v1/import, in order
	params       client.KDFParams // prelogin's answer
	password     string           // the user's password; the fake accepts only its derived value
	mfa          bool             // TOTP on: login answers a challenge, verify wants code "123456"
	keyMode      string           // PLATFORM or CLIENT
	access       map[string]bool  // valid access tokens
	refresh      map[string]bool  // unused refresh tokens
	next         int
	logins       int
	refreshes    int
	masterKeys   []string // X-Master-Key of each vault call ("" when absent)
	items        []map[string]any
	expireNext   bool // the next access token issued is refused (as if expired)
	polls        int
}

func newFakeCore(tb testing.TB) *fakeCore {
	tb.Helper()
	f := startFake()
	tb.Cleanup(f.srv.Close)
	return f
}

// startFake starts a fakeCore; close its srv when done.
func startFake() *fakeCore {
	f := &fakeCore{
		params:   client.KDFTestVectors()[0].Params,
		password: "alice's long passphrase",
		keyMode:  "CLIENT",
		access:   map[string]bool{}, refresh: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/auth/prelogin", f.prelogin)
	mux.HandleFunc("POST /v1/auth/login", f.login)
	mux.HandleFunc("POST /v1/auth/mfa/verify", f.verify)
	mux.HandleFunc("POST /v1/auth/refresh", f.doRefresh)
	mux.HandleFunc("POST /v1/auth/logout", func(w http.ResponseWriter, r *http.Request) { answer(w, 200, map[string]any{}) })
	mux.HandleFunc("GET /v1/me", f.authed(func(w http.ResponseWriter, r *http.Request) {
		answer(w, 200, map[string]any{"principalType": "user", "principalId": "u-1", "username": "alice", "tenantId": "7e1a0c5d-0000-4000-8000-000000000001", "role": "owner", "mfaEnabled": f.mfa})
	}))
	mux.HandleFunc("GET /v1/tenants/{id}", f.authed(func(w http.ResponseWriter, r *http.Request) {
		answer(w, 200, map[string]any{"tenantId": r.PathValue("id"), "name": "acme", "keyMode": f.keyMode})
	}))
	mux.HandleFunc("POST /v1/items", f.authed(f.vault(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]any
		_ = json.NewDecoder(r.Body).Decode(&in) // a bad body fails the checks below
		it := map[string]any{"id": fmt.Sprintf("00000000-0000-0000-0000-%012d", len(f.items)+1), "name": in["name"], "data": in["data"],
			"revision": 1, "createdAt": "2026-01-02T03:04:05Z", "updatedAt": "2026-01-02T03:04:05Z"}
		f.items = append(f.items, it)
		answer(w, 200, it)
	})))
	mux.HandleFunc("GET /v1/items", f.authed(f.vault(func(w http.ResponseWriter, r *http.Request) {
		// One item per page, to exercise paging.
		i := 0
		if tok := r.URL.Query().Get("pageToken"); tok != "" {
			_, _ = fmt.Sscanf(tok, "p%d", &i)
		}
		out := map[string]any{"items": []any{}, "nextPageToken": ""}
		if i < len(f.items) {
			out["items"] = []any{f.items[len(f.items)-1-i]}
			if i+1 < len(f.items) {
				out["nextPageToken"] = fmt.Sprintf("p%d", i+1)
			}
		}
		answer(w, 200, out)
	})))
	mux.HandleFunc("GET /v1/items/{id}", f.authed(f.vault(func(w http.ResponseWriter, r *http.Request) {
		for _, it := range f.items {
			if it["id"] == r.PathValue("id") {
				answer(w, 200, it)
				return
			}
		}
		answer(w, 404, map[string]any{"code": 5, "message": "item " + r.PathValue("id") + " not found", "details": []any{}})
	})))
	mux.HandleFunc("GET /v1/export", f.authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i := range f.items {
			fmt.Fprintf(w, `{"result":{"record":{"id":"%s","cipherText":"Y2lwaGVy","cursor":"c%d"}}}`+"\n", f.items[i]["id"], i+1)
		}
	}))
	mux.HandleFunc("POST /v1/import", f.authed(func(w http.ResponseWriter, r *http.Request) {
		// Counts the records (lines) received; stores nothing.
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			answer(w, 400, map[string]any{"code": 3, "message": "unreadable body"})
			return
		}
		f.mu.Lock()
		f.importBodies = append(f.importBodies, string(raw))
		f.mu.Unlock()
		if strings.Contains(string(raw), `"bad"`) {
			answer(w, 400, map[string]any{"code": 3, "message": "record 1 (item bad): integrity: the tag does not match; nothing was imported", "details": []any{}})
			return
		}
		answer(w, 200, map[string]any{"imported": strings.Count(string(raw), "\n")})
	}))
	mux.HandleFunc("GET /v1/keys/jobs/{id}", f.authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.polls++
		state := "RUNNING"
		if f.polls >= 3 {
			state = "SUCCEEDED"
		}
		answer(w, 200, map[string]any{"jobId": r.PathValue("id"), "state": state, "total": "4", "done": fmt.Sprint(min(f.polls*2, 4))})
	}))
	// Two sessions: the first is the caller's; revoking one drops it.
	sessions := []map[string]any{
		{"sessionId": "0193a1b2-0000-7000-8000-000000000002", "createdAt": "2026-11-20T09:00:00Z", "lastRefreshedAt": "2026-11-26T18:30:00Z", "remoteAddr": "198.51.100.23"},
		{"sessionId": "0193a1b2-0000-7000-8000-000000000001", "createdAt": "2026-11-02T08:00:00Z", "lastRefreshedAt": "2026-11-02T08:00:00Z", "remoteAddr": "203.0.113.7"},
	}
	mux.HandleFunc("GET /v1/auth/sessions", f.authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []any{}
		for i, s := range sessions {
			s["current"] = i == 0
			out = append(out, s)
		}
		answer(w, 200, map[string]any{"sessions": out})
	}))
	mux.HandleFunc("POST /v1/auth/sessions/{action}", f.authed(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		id, _ := strings.CutSuffix(r.PathValue("action"), ":revoke")
		for i, s := range sessions {
			if s["sessionId"] == id {
				sessions = append(sessions[:i], sessions[i+1:]...)
				answer(w, 200, map[string]any{})
				return
			}
		}
		answer(w, 404, map[string]any{"code": 5, "message": "session " + id + " not found", "details": []any{}})
	}))
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	f.srv.StartTLS()
	return f
}

// caFile writes the fake's certificate as a PEM CA file.
func (f *fakeCore) caFile(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "ca.pem")
	if err := f.writeCA(path); err != nil {
		tb.Fatal(err)
	}
	return path
}

func (f *fakeCore) writeCA(path string) error {
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	return os.WriteFile(path, block, 0o600)
}

func (f *fakeCore) newClient(tb testing.TB, opts ...client.Option) *client.Client {
	tb.Helper()
	c, err := client.New(f.srv.URL, append([]client.Option{client.WithCAFile(f.caFile(tb))}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func unauthenticated(w http.ResponseWriter, msg string) {
	answer(w, 401, map[string]any{"code": 16, "message": msg, "details": []any{}})
}

func (f *fakeCore) prelogin(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	answer(w, 200, map[string]any{"kdf": f.params.KDF, "salt": base64.StdEncoding.EncodeToString(f.params.Salt),
		"memoryKiB": f.params.MemoryKiB, "iterations": f.params.Iterations, "parallelism": f.params.Parallelism})
}

// tokens issues a new pair; the caller holds f.mu.
func (f *fakeCore) tokens() map[string]any {
	f.next++
	a, rt := fmt.Sprintf("access-%d", f.next), fmt.Sprintf("refresh-%d", f.next)
	if f.expireNext {
		f.expireNext = false
	} else {
		f.access[a] = true
	}
	f.refresh[rt] = true
	return map[string]any{"accessToken": a, "refreshToken": rt, "expiresIn": 900, "tokenType": "Bearer"}
}

func (f *fakeCore) login(w http.ResponseWriter, r *http.Request) {
	var in struct{ Username, Password string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		answer(w, 400, map[string]any{"code": 3, "message": "bad JSON"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins++
	want, err := client.DeriveSecrets(f.params, f.password)
	if err != nil || in.Username != "alice" || in.Password != want.AuthPassword {
		unauthenticated(w, "invalid username or password")
		return
	}
	if f.mfa {
		answer(w, 200, map[string]any{"mfaRequired": true, "mfaToken": "mfa-1"})
		return
	}
	answer(w, 200, f.tokens())
}

func (f *fakeCore) verify(w http.ResponseWriter, r *http.Request) {
	var in struct{ MfaToken, Code string }
	_ = json.NewDecoder(r.Body).Decode(&in) // a bad body fails the checks below
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.MfaToken != "mfa-1" || in.Code != "123456" {
		unauthenticated(w, "invalid code")
		return
	}
	answer(w, 200, f.tokens())
}

func (f *fakeCore) doRefresh(w http.ResponseWriter, r *http.Request) {
	var in struct{ RefreshToken string }
	_ = json.NewDecoder(r.Body).Decode(&in) // a bad body fails the checks below
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	if !f.refresh[in.RefreshToken] {
		f.access, f.refresh = map[string]bool{}, map[string]bool{} // reuse revokes the family
		unauthenticated(w, "invalid refresh token")
		return
	}
	delete(f.refresh, in.RefreshToken)
	answer(w, 200, f.tokens())
}

// authed refuses requests without a valid access token, as core does.
func (f *fakeCore) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		ok := f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		f.mu.Unlock()
		if !ok {
			unauthenticated(w, "invalid or expired access token")
			return
		}
		h(w, r)
	}
}

// vault records X-Master-Key and, in CLIENT tenants, requires the derived one.
func (f *fakeCore) vault(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		mk := r.Header.Get("X-Master-Key")
		f.masterKeys = append(f.masterKeys, mk)
		want, _ := client.DeriveSecrets(f.params, f.password)
		switch {
		case f.keyMode == "CLIENT" && mk == "":
			unauthenticated(w, "this tenant is zero-knowledge: send your master key in X-Master-Key")
		case f.keyMode == "CLIENT" && mk != want.MasterKey:
			answer(w, 403, map[string]any{"code": 7, "message": "wrong master key"})
		case f.keyMode != "CLIENT" && mk != "":
			answer(w, 400, map[string]any{"code": 3, "message": "X-Master-Key must not be sent: this tenant's keys are platform-managed"})
		default:
			h(w, r)
		}
	}
}
