package postgres_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
)

// TestThrottle walks one key through engagement and release with explicit
// times: limit 3 failures in a 10-minute window, 15 minutes of lockout.
func TestThrottle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	const (
		limit   = 3
		window  = 10 * time.Minute
		lockout = 15 * time.Minute
	)
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var zero time.Time

	steps := []struct {
		name   string
		fail   bool // ThrottleFail, else ThrottleState
		at     time.Duration
		locked time.Time
	}{
		{"no failure yet", false, 0, zero},
		{"failure 1", true, 0, zero},
		{"failure 2", true, time.Minute, zero},
		{"state below the limit", false, 2 * time.Minute, zero},
		{"failure 3 engages", true, 2 * time.Minute, at(2*time.Minute + lockout)},
		{"state locked", false, 3 * time.Minute, at(2*time.Minute + lockout)},
		{"failure while locked changes nothing", true, 10 * time.Minute, at(2*time.Minute + lockout)},
		{"state at release", false, 2*time.Minute + lockout, zero},
		{"first failure after release starts afresh", true, 2*time.Minute + lockout, zero},
		{"second", true, 18 * time.Minute, zero},
		{"window over: count restarts", true, 2*time.Minute + lockout + window, zero},
		{"second of new window", true, 28 * time.Minute, zero},
		{"third of new window engages", true, 29 * time.Minute, at(29*time.Minute + lockout)},
	}
	for _, st := range steps {
		var (
			got time.Time
			err error
		)
		if st.fail {
			got, err = s.ThrottleFail(ctx, "login", "alice", at(st.at), limit, window, lockout)
		} else {
			got, err = s.ThrottleState(ctx, "login", "alice", at(st.at))
		}
		if err != nil || !got.Equal(st.locked) {
			t.Errorf("%s (at +%v): locked until %v, %v; want %v", st.name, st.at, got, err, st.locked)
		}
	}

	// Scopes and keys count apart.
	for _, other := range [][2]string{{"totp", "alice"}, {"login", "bob"}, {"login", "Alice"}} {
		if got, err := s.ThrottleState(ctx, other[0], other[1], at(30*time.Minute)); err != nil || !got.IsZero() {
			t.Errorf("ThrottleState(%s, %s) = %v, %v, want not locked", other[0], other[1], got, err)
		}
	}

	if err := s.ThrottleReset(ctx, "login", "alice"); err != nil {
		t.Fatalf("ThrottleReset() = %v", err)
	}
	if got, err := s.ThrottleState(ctx, "login", "alice", at(30*time.Minute)); err != nil || !got.IsZero() {
		t.Errorf("ThrottleState() after reset = %v, %v, want not locked", got, err)
	}
	if got, _ := s.ThrottleFail(ctx, "login", "alice", at(31*time.Minute), limit, window, lockout); !got.IsZero() {
		t.Errorf("first failure after reset locked until %v, want not locked", got)
	}
	if err := s.ThrottleReset(ctx, "login", "nobody"); err != nil {
		t.Errorf("ThrottleReset(unknown) = %v, want nil", err)
	}

	// Limit 1: the first failure locks.
	if got, err := s.ThrottleFail(ctx, "hint", "alice", t0, 1, window, lockout); err != nil || !got.Equal(at(lockout)) {
		t.Errorf("ThrottleFail(limit 1) = %v, %v, want locked until %v", got, err, at(lockout))
	}
}

// TestThrottleConcurrent: failures counted at once on one key all count,
// and the lock engages at the limit.
func TestThrottleConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for range 9 {
		wg.Go(func() {
			if _, err := s.ThrottleFail(ctx, "login", "203.0.113.9", now, 10, time.Hour, time.Hour); err != nil {
				t.Errorf("ThrottleFail() = %v", err)
			}
		})
	}
	wg.Wait()
	if n := count(t, pool, "SELECT failures FROM core.throttle WHERE key = '203.0.113.9'"); n != 9 {
		t.Errorf("failures after 9 concurrent ThrottleFail = %d, want 9", n)
	}
	if got, _ := s.ThrottleState(ctx, "login", "203.0.113.9", now); !got.IsZero() {
		t.Errorf("locked after 9 of 10 failures, until %v", got)
	}
	if got, _ := s.ThrottleFail(ctx, "login", "203.0.113.9", now, 10, time.Hour, time.Hour); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("10th failure: locked until %v, want %v", got, now.Add(time.Hour))
	}
}

func TestThrottleRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	now := time.Now()
	tests := []struct {
		name            string
		scope, key      string
		limit           int
		window, lockout time.Duration
		message         string
	}{
		{"no scope", "", "k", 3, time.Minute, time.Minute, "scope and key"},
		{"no key", "login", "", 3, time.Minute, time.Minute, "scope and key"},
		{"long key", "login", strings.Repeat("k", 301), 3, time.Minute, time.Minute, "scope and key"},
		{"zero limit", "login", "k", 0, time.Minute, time.Minute, "limit"},
		{"zero window", "login", "k", 3, 0, time.Minute, "window"},
		{"negative lockout", "login", "k", 3, time.Minute, -time.Minute, "lockout"},
	}
	for _, tt := range tests {
		_, err := s.ThrottleFail(ctx, tt.scope, tt.key, now, tt.limit, tt.window, tt.lockout)
		wantKind(t, "ThrottleFail("+tt.name+")", err, errs.Invalid, tt.message)
	}
	_, err := s.ThrottleState(ctx, "", "k", now)
	wantKind(t, "ThrottleState(no scope)", err, errs.Invalid, "scope and key")
	wantKind(t, "ThrottleReset(no key)", s.ThrottleReset(ctx, "login", ""), errs.Invalid, "scope and key")
}
