package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-platform/custos/core/internal/telemetry"
)

// TestCountedSeriesExistBeforeTheFirstEvent: increase() needs a sample before the event it
// counts, so an alert on increase(series[1h]) > 0 never sees the first event of a series born at
// 1. Every series the chart's alerts take increase() of exists at 0 in a fresh registry, and
// custos_reencrypt_jobs_finished_total has each final state a job can end in.
func TestCountedSeriesExistBeforeTheFirstEvent(t *testing.T) {
	rules, err := os.ReadFile("../../../deploy/helm/custos/templates/core/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), "v")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	scrape := rec.Body.String()

	want := []string{
		`custos_reencrypt_jobs_finished_total{state="SUCCEEDED"} 0`,
		`custos_reencrypt_jobs_finished_total{state="FAILED"} 0`,
		`custos_reencrypt_jobs_finished_total{state="WAITING_FOR_KEY"} 0`,
	}
	// increase(custos_x_total{ {{- $sel -}}, label="value"}[1h])
	counted := regexp.MustCompile(`increase\((custos_[a-z_]+)\{[^\[]*?([a-z_]+)="([^"]*)"\}\[`).FindAllStringSubmatch(string(rules), -1)
	if len(counted) == 0 {
		t.Fatal("no alert takes increase() of a labelled series; update this test")
	}
	for _, c := range counted {
		want = append(want, c[1]+`{`+c[2]+`="`+c[3]+`"} 0`)
	}
	for _, w := range want {
		if !strings.Contains(scrape, w) {
			t.Errorf("a fresh scrape lacks %s", w)
		}
	}
}
