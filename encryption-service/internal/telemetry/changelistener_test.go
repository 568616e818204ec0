package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
)

// TestChangeListenerConnectedGauge: custos_change_listener_connected is what the listener's state
// is at each scrape, 1 or 0, so that an alert sees a replica whose listener is down whatever its
// traffic (a miss ratio cannot: with the listener down a busy key context still hits its cache
// for a second at a time).
func TestChangeListenerConnectedGauge(t *testing.T) {
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), "v")
	if err != nil {
		t.Fatal(err)
	}
	var connected atomic.Bool
	if err := m.WatchChangeListener(connected.Load); err != nil {
		t.Fatalf("WatchChangeListener = %v", err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	for _, state := range []bool{false, true, false} {
		connected.Store(state)
		want := map[bool]string{false: "custos_change_listener_connected 0", true: "custos_change_listener_connected 1"}[state]
		if s := scrape(); !strings.Contains(s, want+"\n") {
			t.Errorf("listener connected %v: the scrape lacks %q", state, want)
		}
	}
	if err := m.WatchChangeListener(connected.Load); err == nil {
		t.Error("WatchChangeListener twice succeeded, want an error")
	}
}
