package esclient

import (
	"errors"
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var changes []string
	b := newBreaker(3, 10*time.Second, func(from, to breakerState) { changes = append(changes, from.String()+"→"+to.String()) })
	b.now = func() time.Time { return now }

	mustAllow := func(wantProbe bool) {
		t.Helper()
		probe, err := b.allow()
		if err != nil || probe != wantProbe {
			t.Fatalf("allow() = %v, %v, want %v, nil", probe, err, wantProbe)
		}
	}
	mustRefuse := func() {
		t.Helper()
		if _, err := b.allow(); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("allow() = %v, want ErrBreakerOpen", err)
		}
	}

	// Closed: failures below the threshold, and a success resets the count.
	for range 2 {
		mustAllow(false)
		b.done(false, unreachable)
	}
	mustAllow(false)
	b.done(false, reachable)
	for range 2 {
		mustAllow(false)
		b.done(false, unreachable)
	}
	// An abandoned attempt says nothing, and errors the service answered are successes.
	mustAllow(false)
	b.done(false, abandoned)
	mustAllow(false)
	b.done(false, unreachable) // the third consecutive failure
	mustRefuse()

	// Open until the cooldown ends; late reports of attempts made before change nothing.
	b.done(false, reachable)
	now = now.Add(9 * time.Second)
	mustRefuse()

	// Half-open: one probe; the others still fail fast.
	now = now.Add(time.Second)
	mustAllow(true)
	mustRefuse()
	b.done(true, unreachable) // the probe failed: open again for a whole cooldown
	now = now.Add(5 * time.Second)
	mustRefuse()
	now = now.Add(5 * time.Second)
	mustAllow(true)
	b.done(true, abandoned) // the caller gave up: the next call probes
	mustAllow(true)
	b.done(true, reachable)
	mustAllow(false)
	mustAllow(false)

	want := []string{"closed→open", "open→half-open", "half-open→open", "open→half-open", "half-open→closed"}
	if len(changes) != len(want) {
		t.Fatalf("state changes = %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Errorf("state changes = %v, want %v", changes, want)
			break
		}
	}
}

func TestRetryDelay(t *testing.T) {
	for i, want := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		400 * time.Millisecond, 400 * time.Millisecond} {
		for range 100 {
			if d := retryDelay(i); d < want/2 || d > want {
				t.Fatalf("retryDelay(%d) = %v, want within [%v, %v]", i, d, want/2, want)
			}
		}
	}
	if d := retryDelay(70); d < backoffMax/2 || d > backoffMax {
		t.Errorf("retryDelay(70) = %v, want at most %v", d, backoffMax)
	}
}
