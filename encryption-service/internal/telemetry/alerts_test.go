package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
)

// TestAlertsReadSeriesThatExist: every custos_* series the Helm chart's alerts for this service
// read is one the service exports, so that no alert silently watches nothing.
func TestAlertsReadSeriesThatExist(t *testing.T) {
	rules, err := os.ReadFile("../../../deploy/helm/custos/templates/encryption-service/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), "v")
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveRPC("/svc/M", codes.OK, "grpc", time.Millisecond) // vectors export once they have a series
	m.ObserveHTTP("api", http.StatusOK, time.Millisecond)
	observeService(m)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	scrape := rec.Body.String()

	names := regexp.MustCompile(`custos_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) < 2 {
		t.Fatalf("the alerts read %d custos series, want several", len(names))
	}
	for _, name := range names {
		family := regexp.MustCompile(`_(bucket|count|sum)$`).ReplaceAllString(name, "")
		if !strings.Contains(scrape, "# TYPE "+family+" ") {
			t.Errorf("an alert reads %s, which the service does not export", name)
		}
	}
}
