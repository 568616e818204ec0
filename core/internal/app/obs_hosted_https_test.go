package app

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/telemetry/otlptest"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// hostedHTTPS registers, on p, a tenant whose encryption service is es reached over HTTPS (its
// REST listener, with certs' CA and client certificate), with a member, and returns the member.
func hostedHTTPS(p *platform, name string, es *estest.Service, certs *testcerts.Set) cred {
	p.tb.Helper()
	remoteID, remoteSecret := es.CreateTenant(p.tb, name)
	root, _ := p.login(rootName, rootPass)
	ep := map[string]any{
		"kind": "hosted", "url": "https://" + es.HTTPAddr, "protocol": "https",
		"caBundlePem": readFile(p.tb, certs.CAFile), "clientCertificatePem": readFile(p.tb, certs.ClientCertFile),
		"clientKeyPem": readFile(p.tb, certs.ClientKeyFile), "remoteTenantId": remoteID, "remoteTenantSecret": remoteSecret,
	}
	id := p.must(200, "POST", "/v1/tenants", bearer(root), map[string]any{"name": name, "encryptionEndpoint": ep})["tenantId"].(string)
	p.must(200, "POST", "/v1/tenants/"+id+"/users", bearer(root), map[string]any{"username": name + "-member", "password": "password-of-" + name})
	tok, _ := p.login(name+"-member", "password-of-"+name)
	return bearer(tok)
}

// freeAddr returns a loopback address nothing listens on, for a listener a service reports only
// in its log.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestHostedHTTPSCallsAreCounted: core's calls to a tenant's encryption service over HTTPS are
// in custos_es_client_requests_total{transport="https"}, which CustosCoreEncryptionServiceUnavailable
// reads: a hosted HTTPS service that goes away is seen like the platform's.
func TestHostedHTTPSCallsAreCounted(t *testing.T) {
	metricsAddr := freeAddr(t)
	scrapers := testcerts.New(t)
	p := startPlatform(t, map[string]string{"CORE_METRICS_ADDR": metricsAddr, "CORE_METRICS_CLIENT_CA_FILE": scrapers.CAFile})
	certs := testcerts.New(t)
	hosted := estest.Start(t, testdb.NewEmpty(t), certs)
	member := hostedHTTPS(p, "sovereign", hosted, certs)
	for range 3 {
		p.must(200, "POST", "/v1/items", member, map[string]string{"name": "n", "data": "over https"})
	}
	hosted.Stop()
	if code, got := p.call("POST", "/v1/items", member, map[string]string{"name": "n", "data": "d"}); code != 503 {
		t.Fatalf("POST /v1/items with the hosted service down = %d %v, want 503", code, got)
	}

	resp, err := p.core.httpClient(p.core.certs.ClientConfigWith(scrapers.ClientCert)).Get("https://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`custos_es_client_requests_total{code="OK",method="Encrypt",transport="https"} 3`,
		`custos_es_client_requests_total{code="OK",method="CreateEncryption",transport="https"} 1`,
		`custos_es_client_requests_total{code="Unavailable",method="Encrypt",transport="https"}`,
		`custos_es_client_request_duration_seconds_count{method="Encrypt",transport="https"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the scrape lacks %s", want)
		}
	}
}

// TestTraceCrossesIntoAHostedHTTPSService: a vault call of a tenant whose encryption service is
// reached over HTTPS is one trace: core's client span ("HTTPS Encrypt") sends traceparent, and
// the hosted service's server span is its child, as over gRPC.
func TestTraceCrossesIntoAHostedHTTPSService(t *testing.T) {
	collector := otlptest.Start(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export within a tenth of a second
	tracing := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY": "100"}
	p := startPlatformWith(t, tracing, nil)
	certs := testcerts.New(t)
	hosted := estest.StartWith(t, testdb.NewEmpty(t), certs, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "hosted-es",
	})
	member := hostedHTTPS(p, "sovereign", hosted, certs)
	p.must(200, "POST", "/v1/items", member, map[string]string{"name": "n", "data": "traced over https"})

	esSpan, ok := collector.WaitFor(20*time.Second, func(s otlptest.Span) bool {
		return s.Service == "hosted-es" && s.Kind == "server" && s.Name == "custos.encryption.v1.EncryptionService/Encrypt"
	})
	if !ok {
		t.Fatalf("no Encrypt server span from the hosted service; spans: %+v", collector.Spans())
	}
	parent, ok := collector.WaitFor(20*time.Second, func(s otlptest.Span) bool { return s.SpanID == esSpan.ParentID })
	if !ok || parent.Service != "core" || parent.Kind != "client" || parent.Name != "HTTPS Encrypt" || parent.TraceID != esSpan.TraceID {
		t.Errorf("the hosted service's Encrypt span has parent %+v, want core's client span \"HTTPS Encrypt\" in the same trace", parent)
	}
	if _, ok := collector.WaitFor(5*time.Second, func(s otlptest.Span) bool {
		return s.Service == "core" && s.Kind == "server" && s.TraceID == esSpan.TraceID
	}); !ok {
		t.Errorf("no core server span in the trace of the hosted service's span")
	}
}
