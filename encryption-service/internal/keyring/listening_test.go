package keyring

import "testing"

// TestListeningReportsWhatTheCacheGoesBy: Listening is the change listener's state as last told
// through Hearing (a new Service is not listening), the state by which the cache trusts its
// entries for maxAge or for postgres.UnheardMaxAge only; the service exports it as
// custos_change_listener_connected.
func TestListeningReportsWhatTheCacheGoesBy(t *testing.T) {
	s := New(nil, nil, Options{})
	if s.Listening() {
		t.Error("a new Service: Listening() = true, want false until Hearing(true)")
	}
	for _, on := range []bool{true, false, true} {
		s.Hearing(on)
		if got := s.Listening(); got != on || got != s.cache.hearing.Load() {
			t.Errorf("after Hearing(%v): Listening() = %v, the cache's state %v; want both %v", on, got, s.cache.hearing.Load(), on)
		}
	}
}
