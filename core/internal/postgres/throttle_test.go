package postgres_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
)

// TestThrottle walks one key through engagement and release with explicit
// times: limit 3 attempts in a 10-minute window, 15 minutes of lockout.
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
		take   bool // ThrottleTake, else ThrottleState
		at     time.Duration
		locked time.Time // what the call answers
	}{
		{"no attempt yet", false, 0, zero},
		{"attempt 1", true, 0, zero},
		{"attempt 2", true, time.Minute, zero},
		{"state below the limit", false, 2 * time.Minute, zero},
		{"attempt 3 goes ahead and engages", true, 2 * time.Minute, zero},
		{"state locked", false, 3 * time.Minute, at(2*time.Minute + lockout)},
		{"attempt while locked is refused", true, 10 * time.Minute, at(2*time.Minute + lockout)},
		{"state at release", false, 2*time.Minute + lockout, zero},
		{"first attempt after release starts afresh", true, 2*time.Minute + lockout, zero},
		{"second", true, 18 * time.Minute, zero},
		{"window over: count restarts", true, 2*time.Minute + lockout + window, zero},
		{"second of new window", true, 28 * time.Minute, zero},
		{"third of new window engages", true, 29 * time.Minute, zero},
		{"and locks", false, 29 * time.Minute, at(29*time.Minute + lockout)},
	}
	for _, st := range steps {
		var (
			got time.Time
			err error
		)
		if st.take {
			got, err = s.ThrottleTake(ctx, "login", "alice", at(st.at), limit, window, lockout)
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
	if got, _ := s.ThrottleTake(ctx, "login", "alice", at(31*time.Minute), limit, window, lockout); !got.IsZero() {
		t.Errorf("first attempt after reset refused until %v", got)
	}
	if err := s.ThrottleReset(ctx, "login", "nobody"); err != nil {
		t.Errorf("ThrottleReset(unknown) = %v, want nil", err)
	}

	// Limit 1: the first attempt goes ahead and locks.
	if got, err := s.ThrottleTake(ctx, "hint", "alice", t0, 1, window, lockout); err != nil || !got.IsZero() {
		t.Errorf("ThrottleTake(limit 1) = %v, %v, want allowed", got, err)
	}
	if got, err := s.ThrottleTake(ctx, "hint", "alice", t0, 1, window, lockout); err != nil || !got.Equal(at(lockout)) {
		t.Errorf("second ThrottleTake(limit 1) = %v, %v, want refused until %v", got, err, at(lockout))
	}
}

// TestThrottleRefund: an attempt given back does not count, and takes the
// lock it engaged with it; a lock engaged by attempts that stay counted
// stays.
func TestThrottleRefund(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	take := func(key string) time.Time {
		t.Helper()
		got, err := s.ThrottleTake(ctx, "login", key, now, 3, time.Hour, time.Hour)
		if err != nil {
			t.Fatalf("ThrottleTake(%s) = %v", key, err)
		}
		return got
	}
	take("a")
	take("a")
	take("a") // the third engages the lock
	if got := take("a"); !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("fourth attempt refused until %v, want %v", got, now.Add(time.Hour))
	}
	if err := s.ThrottleRefund(ctx, "login", "a", 3); err != nil {
		t.Fatalf("ThrottleRefund() = %v", err)
	}
	if n := count(t, pool, "SELECT failures FROM core.throttle WHERE key = 'a'"); n != 2 {
		t.Errorf("count after a refund = %d, want 2 (the refused attempt never counted)", n)
	}
	if got, _ := s.ThrottleState(ctx, "login", "a", now); !got.IsZero() {
		t.Errorf("still locked until %v after the attempt that engaged it was given back", got)
	}
	if got := take("a"); !got.IsZero() {
		t.Errorf("attempt after the refund refused until %v", got)
	}
	if got := take("a"); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("attempt past the limit again: refused until %v, want %v", got, now.Add(time.Hour))
	}

	// Refunds never go below zero, and an unknown key is no error.
	take("b")
	for range 3 {
		if err := s.ThrottleRefund(ctx, "login", "b", 3); err != nil {
			t.Fatalf("ThrottleRefund() = %v", err)
		}
	}
	if n := count(t, pool, "SELECT failures FROM core.throttle WHERE key = 'b'"); n != 0 {
		t.Errorf("count after more refunds than attempts = %d, want 0", n)
	}
	if err := s.ThrottleRefund(ctx, "login", "nobody", 3); err != nil {
		t.Errorf("ThrottleRefund(unknown) = %v, want nil", err)
	}
}

// TestThrottleConcurrent: of attempts taken at once on one key, exactly the
// limit go ahead, on any number of connections.
func TestThrottleConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 30 {
		wg.Go(func() {
			got, err := s.ThrottleTake(ctx, "login", "203.0.113.9", now, 10, time.Hour, time.Hour)
			if err != nil {
				t.Errorf("ThrottleTake() = %v", err)
				return
			}
			if got.IsZero() {
				mu.Lock()
				allowed++
				mu.Unlock()
			} else if !got.Equal(now.Add(time.Hour)) {
				t.Errorf("refused until %v, want %v", got, now.Add(time.Hour))
			}
		})
	}
	wg.Wait()
	if allowed != 10 {
		t.Errorf("%d of 30 concurrent attempts went ahead, want exactly the limit of 10", allowed)
	}
	if n := count(t, pool, "SELECT failures FROM core.throttle WHERE key = '203.0.113.9'"); n != 10 {
		t.Errorf("count after 30 concurrent attempts = %d, want 10", n)
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
		_, err := s.ThrottleTake(ctx, tt.scope, tt.key, now, tt.limit, tt.window, tt.lockout)
		wantKind(t, "ThrottleTake("+tt.name+")", err, errs.Invalid, tt.message)
	}
	_, err := s.ThrottleState(ctx, "", "k", now)
	wantKind(t, "ThrottleState(no scope)", err, errs.Invalid, "scope and key")
	wantKind(t, "ThrottleRefund(no key)", s.ThrottleRefund(ctx, "login", "", 3), errs.Invalid, "scope and key")
	wantKind(t, "ThrottleReset(no key)", s.ThrottleReset(ctx, "login", ""), errs.Invalid, "scope and key")
}
