package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/client"
)

// refreshCount returns how many refreshes the fake has answered.
func (f *fakeCore) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// expireAccess makes the fake refuse every access token issued so far.
func (f *fakeCore) expireAccess() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.access = map[string]bool{}
}

// mustLogin logs alice in on c.
func mustLogin(tb testing.TB, f *fakeCore, c *client.Client) {
	tb.Helper()
	if _, err := c.Login(context.Background(), "alice", f.password, nil); err != nil {
		tb.Fatalf("Login = %v", err)
	}
}

// wrap puts h in front of the fake's handler; h gets the fake's own to pass requests on.
func (f *fakeCore) wrap(h func(inner http.Handler, w http.ResponseWriter, r *http.Request)) {
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(inner, w, r) })
}

// The client never follows a redirect, whatever its code: the credentials (Authorization,
// X-Master-Key, X-Api-Secret) and a login's body would go along, even to plain http. The caller
// gets ErrRedirect naming the Location instead, also with a client given through WithHTTPClient,
// which is not changed.
func TestNeverFollowsRedirects(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+r.Header.Get("X-Master-Key")+r.Header.Get("X-Api-Secret"))
		mu.Unlock()
		answer(w, 200, map[string]any{"items": []any{}})
	}))
	defer elsewhere.Close()
	callerHTTP := &http.Client{Timeout: time.Minute}
	ctx := context.Background()
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, viaCaller := range []bool{false, true} {
			name := http.StatusText(status)
			if viaCaller {
				name += " WithHTTPClient"
			}
			t.Run(name, func(t *testing.T) {
				f := newFakeCore(t)
				var opts []client.Option
				if viaCaller {
					opts = append(opts, client.WithHTTPClient(callerHTTP))
				}
				c := f.newClient(t, opts...)
				mustLogin(t, f, c)
				target := elsewhere.URL + "/steal"
				f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/v1/items" || r.URL.Path == "/v1/auth/login" {
						http.Redirect(w, r, target, status)
						return
					}
					inner.ServeHTTP(w, r)
				})
				_, err := client.Collect(c.ListItems(ctx))
				if !errors.Is(err, client.ErrRedirect) || !strings.Contains(err.Error(), target) {
					t.Errorf("ListItems answered %d = %v, want ErrRedirect naming %s", status, err, target)
				}
				if _, err := c.Login(ctx, "alice", f.password, nil); !errors.Is(err, client.ErrRedirect) {
					t.Errorf("Login answered %d = %v, want ErrRedirect", status, err)
				}
			})
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reached) != 0 {
		t.Errorf("the redirect target was reached: %q", reached)
	}
	if callerHTTP.CheckRedirect != nil || callerHTTP.Transport != nil {
		t.Error("WithHTTPClient changed the caller's http.Client")
	}
}

// A refresh cut short by the caller (Ctrl-C, a deadline) after core rotated the refresh token
// still stores the new one: the caller gets its cancellation, and the next Client sharing the
// store carries on with the session instead of presenting the spent token (which would revoke it).
func TestRefreshSurvivesCancellation(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	store := &client.MemoryTokenStore{}
	c := f.newClient(t, client.WithTokenStore(store))
	mustLogin(t, f, c)
	f.expireAccess()
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/refresh" {
			inner.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r) // rotated on core
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Me(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Me cut short during its refresh = %v, want the context's error", err)
	}
	if s, _ := store.Load(context.Background()); s.RefreshToken != "refresh-2" {
		t.Errorf("after the interrupted refresh the store holds refresh token %q, want the rotated refresh-2", s.RefreshToken)
	}
	next := f.newClient(t, client.WithTokenStore(store))
	if _, err := next.Me(context.Background()); err != nil {
		t.Errorf("the next Client after an interrupted refresh: Me = %v, want the session alive", err)
	}
	if n := f.refreshCount(); n != 1 {
		t.Errorf("refreshes = %d, want 1", n)
	}
}

// Clients sharing one MemoryTokenStore refresh one at a time: only one spends the refresh token,
// the others adopt its answer.
func TestSharedMemoryTokenStore(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	store := &client.MemoryTokenStore{}
	clients := []*client.Client{f.newClient(t, client.WithTokenStore(store))}
	mustLogin(t, f, clients[0])
	for range 3 {
		clients = append(clients, f.newClient(t, client.WithTokenStore(store)))
	}
	f.expireAccess()
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth/refresh" {
			time.Sleep(50 * time.Millisecond) // let the others arrive meanwhile
		}
		inner.ServeHTTP(w, r)
	})
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Go(func() { _, errs[i] = c.Me(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d sharing the store: Me = %v", i, err)
		}
	}
	if n := f.refreshCount(); n != 1 {
		t.Errorf("refreshes = %d, want 1 for %d clients", n, len(clients))
	}
}

// MemoryTokenStore's lock: one holder at a time, waiting ends with the context, unlock twice is
// harmless.
func TestMemoryTokenStoreLock(t *testing.T) {
	var m client.MemoryTokenStore
	ctx := context.Background()
	unlock, err := m.LockTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := m.LockTokens(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LockTokens while held = %v, want to wait until the context ends", err)
	}
	unlock()
	unlock()
	again, err := m.LockTokens(ctx)
	if err != nil {
		t.Fatalf("LockTokens after unlock = %v", err)
	}
	again()
}

// Calls that re-authenticate (the password, a code) are sent once: their 401 means a wrong
// secret, so the client neither refreshes nor sends it again, which core would count twice
// against the login throttle.
func TestReauthenticationSentOnce(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, path string
		call       func(c *client.Client) error
	}{
		{"ChangePassword", "/v1/auth/password", func(c *client.Client) error {
			return c.ChangePassword(ctx, "wrong password!!", "a new long passphrase", "")
		}},
		{"EnrollTOTP", "/v1/auth/totp/enroll", func(c *client.Client) error { _, err := c.EnrollTOTP(ctx, "wrong password!!"); return err }},
		{"ConfirmTOTP", "/v1/auth/totp/confirm", func(c *client.Client) error { _, err := c.ConfirmTOTP(ctx, "000000"); return err }},
		{"DisableTOTP", "/v1/auth/totp/disable", func(c *client.Client) error { return c.DisableTOTP(ctx, "wrong password!!", "000000") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCore(t)
			f.keyMode = "PLATFORM"
			c := f.newClient(t)
			mustLogin(t, f, c)
			var mu sync.Mutex
			attempts := 0
			f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == tc.path {
					mu.Lock()
					attempts++
					mu.Unlock()
					unauthenticated(w, "password rejected")
					return
				}
				inner.ServeHTTP(w, r)
			})
			err := tc.call(c)
			mu.Lock()
			defer mu.Unlock()
			if !errors.Is(err, client.ErrUnauthenticated) || attempts != 1 || f.refreshCount() != 0 {
				t.Errorf("%s with a wrong secret = %v after %d attempts and %d refreshes; want UNAUTHENTICATED after 1 and 0",
					tc.name, err, attempts, f.refreshCount())
			}
		})
	}
}

// A session remembers the core it was opened at, and a Client of another core refuses it
// (ErrOtherServer) before sending anything; sessions saved by older clients, without a URL, are
// taken as they are. Over gRPC, a session opened over REST goes to a gRPC address on the same host.
func TestSessionBelongsToItsServer(t *testing.T) {
	ctx := context.Background()
	session := func(url, grpc string) client.Session {
		return client.Session{AccessToken: "a", RefreshToken: "r", Username: "alice", URL: url, GRPC: grpc}
	}
	tests := []struct {
		name      string
		stored    client.Session
		url, grpc string // the Client's
		wantOther bool
	}{
		{"same URL", session("https://core.example:8443", ""), "https://core.example:8443", "", false},
		{"case, default port, trailing slash", session("https://Core.Example/", ""), "https://core.example:443", "", false},
		{"with a path", session("https://core.example/custos", ""), "https://core.example/custos/", "", false},
		{"older client", session("", ""), "https://elsewhere.example", "", false},
		{"other host", session("https://core.example:8443", ""), "https://staging.example:8443", "", true},
		{"other port", session("https://core.example:8443", ""), "https://core.example:9443", "", true},
		{"other path", session("https://core.example/a", ""), "https://core.example/b", "", true},
		{"same gRPC address", session("https://core.example:8443", "core.example:8444"), "https://core.example:8443", "core.example:8444", false},
		{"other gRPC address", session("https://core.example:8443", "core.example:8444"), "https://core.example:8443", "other.example:8444", true},
		{"REST session over gRPC, same host", session("https://core.example:8443", ""), "https://core.example:8443", "core.example:8444", false},
		{"REST session over gRPC, other host", session("https://core.example:8443", ""), "https://core.example:8443", "other.example:8444", true},
		{"gRPC session over REST", session("https://core.example:8443", "core.example:8444"), "https://core.example:8443", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &client.MemoryTokenStore{}
			if err := store.Save(ctx, tc.stored); err != nil {
				t.Fatal(err)
			}
			opts := []client.Option{client.WithTokenStore(store)}
			if tc.grpc != "" {
				opts = append(opts, client.WithGRPC(tc.grpc))
			}
			c, err := client.New(tc.url, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Session(ctx)
			if got := errors.Is(err, client.ErrOtherServer); got != tc.wantOther {
				t.Errorf("Session of %s for a client of %s (gRPC %q) = %v, want ErrOtherServer %v", tc.stored, tc.url, tc.grpc, err, tc.wantOther)
			}
		})
	}

	// End to end: a session of one core is never sent to another.
	f, other := newFakeCore(t), newFakeCore(t)
	f.keyMode, other.keyMode = "PLATFORM", "PLATFORM"
	store := &client.MemoryTokenStore{}
	mustLogin(t, f, f.newClient(t, client.WithTokenStore(store)))
	var mu sync.Mutex
	var seen []string
	other.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		inner.ServeHTTP(w, r)
	})
	c := other.newClient(t, client.WithTokenStore(store))
	if _, err := c.Me(ctx); !errors.Is(err, client.ErrOtherServer) || !strings.Contains(err.Error(), f.srv.URL) {
		t.Errorf("Me with another core's session = %v, want ErrOtherServer naming %s", err, f.srv.URL)
	}
	if err := c.Logout(ctx, false); !errors.Is(err, client.ErrOtherServer) {
		t.Errorf("Logout of another core's session = %v, want ErrOtherServer", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("the other core received %q", seen)
	}
	if s, _ := store.Load(ctx); !s.LoggedIn() || s.URL != f.srv.URL {
		t.Errorf("the stored session after the refusals = %v, want it kept, naming %s", s, f.srv.URL)
	}
}

// Export and import refresh an access token refused before anything was transferred and start
// again, as unary calls do (an import part is held in memory, so any input can be sent again).
func TestTransferRefreshesOn401(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	if _, err := c.PutItem(ctx, "a", "a"); err != nil {
		t.Fatal(err)
	}

	f.expireAccess()
	var buf bytes.Buffer
	if res, err := c.Export(ctx, &buf); err != nil || res.Records != 1 || f.refreshCount() != 1 {
		t.Errorf("Export with a refused access token = %+v, %v after %d refreshes; want 1 record after 1", res, err, f.refreshCount())
	}

	const file = "{\"id\":\"1\"}\n{\"id\":\"2\"}\n"
	f.expireAccess()
	if res, err := c.Import(ctx, strings.NewReader(file)); err != nil || res.Imported != 2 || f.refreshCount() != 2 {
		t.Errorf("Import of a seekable input with a refused access token = %+v, %v after %d refreshes; want 2 records sent again whole, after 2",
			res, err, f.refreshCount())
	}

	// Parts are held in memory, so a stream that cannot seek is sent again too.
	f.expireAccess()
	pipe := io.MultiReader(strings.NewReader(file)) // cannot seek
	if res, err := c.Import(ctx, pipe); err != nil || res.Imported != 2 || f.refreshCount() != 3 {
		t.Errorf("Import of a stream with a refused access token = %+v, %v after %d refreshes; want 2 records sent again, after 3",
			res, err, f.refreshCount())
	}
	if res, err := c.Import(ctx, strings.NewReader(file)); err != nil || res.Imported != 2 {
		t.Errorf("Import after that = %+v, %v; want the refreshed session to work", res, err)
	}

	// A refused refresh token ends it: log in again.
	f.mu.Lock()
	f.access, f.refresh = map[string]bool{}, map[string]bool{}
	f.mu.Unlock()
	if _, err := c.Export(ctx, &buf); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("Export with every token revoked = %v, want ErrSessionExpired", err)
	}
}

// TestImportInParts: Import sends whole records in parts of at most the part size (core takes at
// most CORE_MAX_REQUEST_BYTES per request), adds up what each stored, and when a part fails says
// which, from which line, and what the parts before it stored.
func TestImportInParts(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)

	// Five records of 11 bytes, the last without its newline, and an empty line; parts of 30
	// bytes hold two records each.
	file := "{\"id\":\"1\"}\n{\"id\":\"2\"}\n\n{\"id\":\"3\"}\n{\"id\":\"4\"}\n{\"id\":\"5\"}"
	res, err := c.Import(ctx, strings.NewReader(file), client.WithImportPartBytes(30))
	if err != nil || res.Imported != 5 {
		t.Fatalf("Import in parts = %+v, %v; want 5 records imported", res, err)
	}
	f.mu.Lock()
	bodies := f.importBodies
	f.importBodies = nil
	f.mu.Unlock()
	want := []string{"{\"id\":\"1\"}\n{\"id\":\"2\"}\n", "{\"id\":\"3\"}\n{\"id\":\"4\"}\n", "{\"id\":\"5\"}\n"}
	if strings.Join(bodies, "|") != strings.Join(want, "|") {
		t.Errorf("parts sent = %q, want %q", bodies, want)
	}

	// A record larger than a part goes alone; the default part size sends a small file whole.
	if _, err := c.Import(ctx, strings.NewReader("{\"id\":\"1\"}\n"+`{"id":"`+strings.Repeat("x", 40)+"\"}\n"), client.WithImportPartBytes(30)); err != nil {
		t.Fatalf("Import with a record over the part size = %v", err)
	}
	if _, err := c.Import(ctx, strings.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	if len(f.importBodies) != 3 {
		t.Errorf("requests for a large record and a small file = %d, want 2 + 1", len(f.importBodies))
	}
	f.importBodies = nil
	f.mu.Unlock()

	// The second part is refused: the first is stored, the error names part 2 from line 3.
	bad := "{\"id\":\"1\"}\n{\"id\":\"2\"}\n{\"id\":\"bad\"}\n{\"id\":\"4\"}\n"
	res, err = c.Import(ctx, strings.NewReader(bad), client.WithImportPartBytes(30))
	if !errors.Is(err, client.ErrInvalidArgument) || res.Imported != 2 ||
		!strings.Contains(err.Error(), "import part 2 (from line 3") || !strings.Contains(err.Error(), "run the import again") {
		t.Errorf("Import with a bad second part = %+v, %v; want 2 stored and INVALID_ARGUMENT naming part 2 from line 3", res, err)
	}
	// An empty file is one (empty) request: core answers for it.
	if res, err := c.Import(ctx, strings.NewReader("")); err != nil || res.Imported != 0 {
		t.Errorf("Import of an empty file = %+v, %v", res, err)
	}
}
