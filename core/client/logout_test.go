package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/custos-platform/custos/core/client"
)

// endedLogout makes the fake answer every logout as core does for a refresh token whose session
// has ended, and records whether each asked for every session.
func endedLogout(f *fakeCore) *[]bool {
	var mu sync.Mutex
	var all []bool
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/auth/logout" {
			inner.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		raw, _ := io.ReadAll(r.Body)
		all = append(all, strings.Contains(string(raw), `"allSessions":true`))
		unauthenticated(w, "refresh token rejected: its session has ended, so nothing was ended; log in, then log out everywhere again")
	})
	return &all
}

// A logout whose session has already ended is done: the session is forgotten and Logout
// succeeds. A logout of every session from an ended session ends nothing (core refuses it, and
// the other sessions stay open): the session is forgotten too, but Logout says that nothing was
// ended, with UNAUTHENTICATED. Logging out of every session without any session is
// ErrNotLoggedIn: nothing could be ended.
func TestLogoutFromEndedSession(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	sent := endedLogout(f)

	c := f.newClient(t)
	mustLogin(t, f, c)
	if err := c.Logout(ctx, false); err != nil {
		t.Errorf("Logout(one session, already ended) = %v, want nil", err)
	}
	if s, _ := c.Session(ctx); s.LoggedIn() {
		t.Errorf("Logout(one session) kept the session")
	}

	mustLogin(t, f, c)
	err := c.Logout(ctx, true)
	if !errors.Is(err, client.ErrUnauthenticated) || !strings.Contains(err.Error(), "no session was ended") ||
		!strings.Contains(err.Error(), "log in") {
		t.Errorf("Logout(every session, from an ended one) = %v, want UNAUTHENTICATED saying no session was ended and to log in again", err)
	}
	if s, _ := c.Session(ctx); s.LoggedIn() {
		t.Errorf("Logout(every session) refused kept the ended session")
	}
	if got := *sent; len(got) != 2 || got[0] || !got[1] {
		t.Errorf("logouts sent with allSessions = %v, want [false true]", got)
	}

	if err := c.Logout(ctx, true); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("Logout(every session) without a session = %v, want ErrNotLoggedIn", err)
	}
	if err := c.Logout(ctx, false); err != nil {
		t.Errorf("Logout(one session) without a session = %v, want nil (nothing to do)", err)
	}
}
