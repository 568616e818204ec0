package app

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/testcerts"
)

// TestMetricsRequireAClientCertificate checks that core's metrics listener, unlike its public
// ones, refuses a scraper without a client certificate that CORE_METRICS_CLIENT_CA_FILE verifies:
// the metrics show every tenant's activity.
func TestMetricsRequireAClientCertificate(t *testing.T) {
	// A free port for the metrics listener: core reports it only in its log.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Scrapers' certificates come from another CA than the service's own.
	scrapers := testcerts.New(t)
	p := startPlatform(t, map[string]string{"CORE_METRICS_ADDR": addr, "CORE_METRICS_CLIENT_CA_FILE": scrapers.CAFile})
	certs := p.core.certs
	get := func(cfg *tls.Config) (int, string, error) {
		resp, err := p.core.httpClient(cfg).Get("https://" + addr + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	code, body, err := get(certs.ClientConfigWith(scrapers.ClientCert))
	if err != nil || code != 200 || !strings.Contains(body, "custos_build_info") {
		t.Fatalf("GET /metrics with a scraper's certificate = %d, %v, want 200 with the series", code, err)
	}
	if _, _, err := get(certs.ClientConfigNoCert()); err == nil {
		t.Error("GET /metrics without a client certificate succeeded, want a refused handshake")
	}
	if _, _, err := get(certs.ClientConfig()); err == nil {
		t.Error("GET /metrics with a certificate CORE_METRICS_CLIENT_CA_FILE does not verify succeeded, want a refused handshake")
	}
	// The public listener still takes callers without a certificate.
	if code, body := p.raw("GET", "/readyz", nil, ""); code != 200 {
		t.Errorf("GET /readyz without a client certificate = %d %s, want 200", code, body)
	}
}
