package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/sourcecontextpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

// withMetrics adds a metrics registry and listener to a test server.
func withMetrics(tb testing.TB, c *server.Config) {
	tb.Helper()
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), "test")
	if err != nil {
		tb.Fatalf("NewMetrics: %v", err)
	}
	c.Metrics, c.MetricsAddr, c.MetricsHandler = m, "127.0.0.1:0", m.Handler()
}

// TestMetricsEndpoint sends gRPC and REST traffic, then scrapes the metrics
// listener over TLS 1.3 with a client certificate and finds the series.
func TestMetricsEndpoint(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { withMetrics(t, c) })
	if _, err := whoami(context.Background(), e.mustGRPC(t, e.certs.ClientConfig())); err != nil {
		t.Fatalf("Whoami: %v", err)
	}
	client := e.httpClient(t, e.certs.ClientConfig())
	if resp, body := mustDo(t, client, http.MethodPost, e.url("/v1/whoami"), "{}", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
	}
	mustDo(t, client, http.MethodGet, e.url("/healthz"), "", nil)
	mustDo(t, client, http.MethodPost, e.url("/v1/nowhere"), "{}", nil)

	metricsURL := "https://" + e.srv.MetricsAddr() + "/metrics"
	resp, body := mustDo(t, client, http.MethodGet, metricsURL, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("GET /metrics TLS = %+v, want TLS 1.3", resp.TLS)
	}
	got := parseExposition(t, string(body))
	whoamiMethod := "/" + probeService + "/Whoami"
	for _, tt := range []struct {
		series string
		want   float64 // at least
	}{
		{`custos_rpc_requests_total{code="OK",method="` + whoamiMethod + `",via="grpc"}`, 1},
		{`custos_rpc_requests_total{code="OK",method="` + whoamiMethod + `",via="gateway"}`, 1},
		{`custos_rpc_duration_seconds_count{method="` + whoamiMethod + `",via="grpc"}`, 1},
		{`custos_rpc_duration_seconds_bucket{method="` + whoamiMethod + `",via="gateway",le="+Inf"}`, 1},
		{`custos_http_requests_total{code="200",handler="api"}`, 1},
		{`custos_http_requests_total{code="404",handler="api"}`, 1},
		{`custos_http_requests_total{code="200",handler="healthz"}`, 1},
		{`custos_http_request_duration_seconds_count{handler="api"}`, 2},
		{`custos_build_info{version="test"}`, 1},
		{`go_goroutines`, 1},
	} {
		if v, ok := got[tt.series]; !ok || v < tt.want {
			t.Errorf("scrape: %s = %v (present %v), want at least %v", tt.series, v, ok, tt.want)
		}
	}

	// Only GET /metrics; the listener has the service's client-certificate policy.
	if resp, _ := mustDo(t, client, http.MethodPost, metricsURL, "", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", resp.StatusCode)
	}
	if resp, _ := mustDo(t, client, http.MethodGet, "https://"+e.srv.MetricsAddr()+"/v1/whoami", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /v1/whoami on the metrics listener = %d, want 404", resp.StatusCode)
	}
	if _, _, err := do(t, e.httpClient(t, e.certs.ClientConfigNoCert()), http.MethodGet, metricsURL, "", nil); err == nil {
		t.Error("GET /metrics without a client certificate succeeded on a listener that requires one")
	}
	tls12 := e.certs.ClientConfig()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.srv.MetricsAddr(), tls12); err == nil {
		conn.Close()
		t.Error("TLS 1.2 handshake with the metrics listener succeeded")
	}
}

func TestMetricsAddrNeedsHandler(t *testing.T) {
	certs := testcerts.New(t)
	_, err := server.New(server.Config{
		GRPCAddr: ":0", HTTPAddr: ":0", MetricsAddr: ":0",
		TLS: mustServerTLS(t, mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}),
	})
	if err == nil || !strings.Contains(err.Error(), "MetricsHandler") {
		t.Fatalf("New(MetricsAddr without MetricsHandler) = %v, want an error naming MetricsHandler", err)
	}
}

// parseExposition reads the Prometheus text format into series -> value,
// the series written exactly as exposed: name{label="value",...}, labels
// sorted by name except a histogram's le, which comes last.
func parseExposition(tb testing.TB, text string) map[string]float64 {
	tb.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			tb.Fatalf("exposition line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// relayService is a gRPC service whose Forward calls Whoami on another
// server inside a span of its own, the way core calls the encryption service.
const relayService = "custos.test.v1.Relay"

func registerRelay(s grpc.ServiceRegistrar, tracer trace.Tracer, downstream *grpc.ClientConn) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: relayService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Forward",
			Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := &sourcecontextpb.SourceContext{}
				if err := dec(in); err != nil {
					return nil, err
				}
				forward := func(ctx context.Context, _ any) (any, error) {
					ctx, span := tracer.Start(ctx, "relay.forward")
					defer span.End()
					got, err := whoami(ctx, downstream)
					if err != nil {
						return nil, err
					}
					return structpb.NewStruct(got)
				}
				if interceptor == nil {
					return forward(ctx, in)
				}
				return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/" + relayService + "/Forward"}, forward)
			},
		}},
	}, struct{}{})
}

// mustTracing starts tracing into an in-memory exporter, as one process would.
func mustTracing(tb testing.TB, service string) (*telemetry.Tracing, *tracetest.InMemoryExporter) {
	tb.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{ServiceName: service, Exporter: exp})
	if err != nil {
		tb.Fatalf("NewTracing: %v", err)
	}
	tb.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

func mustFlush(tb testing.TB, tr *telemetry.Tracing, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	tb.Helper()
	if err := tr.ForceFlush(context.Background()); err != nil {
		tb.Fatalf("ForceFlush: %v", err)
	}
	return exp.GetSpans()
}

func findSpan(tb testing.TB, spans tracetest.SpanStubs, name string, kind trace.SpanKind) tracetest.SpanStub {
	tb.Helper()
	for _, s := range spans {
		if s.Name == name && s.SpanKind == kind {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, fmt.Sprintf("%s (%v)", s.Name, s.SpanKind))
	}
	tb.Fatalf("no %v span %q among %v", kind, name, names)
	return tracetest.SpanStub{}
}

// TestTraceCrossesServices runs two servers as two processes would, each
// with its own tracer provider: "core" (public: traces start there) whose
// handler calls "es" through a client connection with the tracing dial
// options. The trace started in core has its child span in es.
func TestTraceCrossesServices(t *testing.T) {
	esTracing, esSpans := mustTracing(t, "encryption-service")
	es := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.StatsHandler = esTracing.ServerHandler() })

	coreTracing, coreSpans := mustTracing(t, "core")
	downstream, err := grpc.NewClient(es.srv.GRPCAddr(), append(coreTracing.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(es.certs.ClientConfig())))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { downstream.Close() })
	core := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.StatsHandler = coreTracing.PublicServerHandler()
		c.Register = func(s grpc.ServiceRegistrar) { registerRelay(s, coreTracing.Tracer("relay"), downstream) }
	})

	// An outside caller's trace context is linked, not joined: core is public.
	outside := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"traceparent", fmt.Sprintf("00-%s-%s-01", outside.TraceID(), outside.SpanID()))
	out := &structpb.Struct{}
	if err := core.mustGRPC(t, core.certs.ClientConfig()).Invoke(ctx, "/"+relayService+"/Forward", &sourcecontextpb.SourceContext{}, out); err != nil {
		t.Fatalf("Forward: %v", err)
	}
	// The health service is not traced.
	if _, err := healthpb.NewHealthClient(es.mustGRPC(t, es.certs.ClientConfig())).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Health.Check: %v", err)
	}

	cs := mustFlush(t, coreTracing, coreSpans)
	coreServer := findSpan(t, cs, relayService+"/Forward", trace.SpanKindServer)
	relay := findSpan(t, cs, "relay.forward", trace.SpanKindInternal)
	coreClient := findSpan(t, cs, probeService+"/Whoami", trace.SpanKindClient)
	esServer := findSpan(t, mustFlush(t, esTracing, esSpans), probeService+"/Whoami", trace.SpanKindServer)

	traceID := coreServer.SpanContext.TraceID()
	if traceID == outside.TraceID() || coreServer.Parent.IsValid() {
		t.Errorf("core's server span joined the outside trace (trace %s, parent %v); want a new root", traceID, coreServer.Parent)
	}
	if len(coreServer.Links) != 1 || coreServer.Links[0].SpanContext.TraceID() != outside.TraceID() {
		t.Errorf("core's server span links = %v, want a link to the outside trace", coreServer.Links)
	}
	for _, tt := range []struct {
		name          string
		child, parent tracetest.SpanStub
	}{
		{"relay in core's server span", relay, coreServer},
		{"core's client span in relay", coreClient, relay},
		{"encryption service's server span in core's client span", esServer, coreClient},
	} {
		if tt.child.SpanContext.TraceID() != traceID || tt.child.Parent.SpanID() != tt.parent.SpanContext.SpanID() {
			t.Errorf("%s: trace %s parent %s, want trace %s parent %s", tt.name,
				tt.child.SpanContext.TraceID(), tt.child.Parent.SpanID(), traceID, tt.parent.SpanContext.SpanID())
		}
	}
	if !esServer.Parent.IsRemote() {
		t.Error("encryption service's span parent is not remote: it did not come over the wire")
	}
	for _, s := range mustFlush(t, esTracing, esSpans) {
		if strings.Contains(s.Name, "grpc.health") {
			t.Errorf("health check traced: %s", s.Name)
		}
	}
}

// TestTracingOffAddsNothing: without an endpoint there is no stats handler
// and no dial option, so the server runs exactly as without tracing.
func TestTracingOffAddsNothing(t *testing.T) {
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || tr.ServerHandler() != nil || tr.PublicServerHandler() != nil || tr.DialOptions() != nil {
		t.Fatalf("tracing off: Enabled %v, handlers %v %v, dial options %v; want nothing", tr.Enabled(),
			tr.ServerHandler(), tr.PublicServerHandler(), tr.DialOptions())
	}
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.StatsHandler = tr.ServerHandler() })
	if _, err := whoami(context.Background(), e.mustGRPC(t, e.certs.ClientConfig())); err != nil {
		t.Fatalf("Whoami: %v", err)
	}
}

// TestCertificateRotationWithoutRestart swaps the certificate files under a
// running server the way kubelet updates a mounted secret (cert-manager
// renewing it) and checks that new handshakes on every listener present the
// new certificate, with no restart, and that calls keep working.
func TestCertificateRotationWithoutRestart(t *testing.T) {
	var certs *testcerts.Set
	dir := t.TempDir()
	e := mustStart(t, func(c *server.Config, set *testcerts.Set) {
		certs = set
		swapMount(t, dir, "v1", map[string]string{"tls.crt": set.ServerCertFile, "tls.key": set.ServerKeyFile, "ca.crt": set.CAFile})
		c.TLS = mustServerTLS(t, mtls.ServerOptions{
			CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
			ClientCAFile: filepath.Join(dir, "ca.crt"), ClientAuth: mtls.RequireClientCert,
			ReloadInterval: time.Millisecond,
		})
		withMetrics(t, c)
	})
	listeners := map[string]string{"gRPC": e.srv.GRPCAddr(), "REST": e.srv.HTTPAddr(), "metrics": e.srv.MetricsAddr()}
	conn := e.mustGRPC(t, certs.ClientConfig())
	if _, err := whoami(context.Background(), conn); err != nil {
		t.Fatalf("Whoami before the rotation: %v", err)
	}
	for name, addr := range listeners {
		if got, want := presentedSerial(t, addr, certs.ClientConfig()), certs.ServerCert.Leaf.SerialNumber.String(); got != want {
			t.Fatalf("%s listener before the rotation presents serial %s, want %s", name, got, want)
		}
	}

	rotated := certs.IssueServer(t)
	swapMount(t, dir, "v2", map[string]string{"tls.crt": rotated.CertFile, "tls.key": rotated.KeyFile, "ca.crt": certs.CAFile})
	want := rotated.Cert.Leaf.SerialNumber.String()
	for name, addr := range listeners {
		eventually(t, name+" listener presents the renewed certificate", func() error {
			if got := presentedSerial(t, addr, certs.ClientConfig()); got != want {
				return fmt.Errorf("serial %s, want %s", got, want)
			}
			return nil
		})
	}
	// The connection opened before the rotation still works, and so do new ones.
	if _, err := whoami(context.Background(), conn); err != nil {
		t.Errorf("Whoami on the connection opened before the rotation: %v", err)
	}
	resp, body := mustDo(t, e.httpClient(t, certs.ClientConfig()), http.MethodPost, e.url("/v1/whoami"), "{}", nil)
	if resp.StatusCode != http.StatusOK || resp.TLS.PeerCertificates[0].SerialNumber.String() != want {
		t.Errorf("POST /v1/whoami after the rotation = %d %s", resp.StatusCode, body)
	}
	select {
	case err := <-e.done:
		t.Fatalf("server stopped during the rotation: %v", err)
	default:
	}
}

// presentedSerial makes a new TLS connection to addr and returns the serial
// number of the certificate the server presents.
func presentedSerial(tb testing.TB, addr string, cfg *tls.Config) string {
	tb.Helper()
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		tb.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// swapMount lays out files the way kubelet mounts a secret: dir/NAME is a
// symlink to ..data/NAME and ..data a symlink to a versioned directory,
// replaced by an atomic rename.
func swapMount(tb testing.TB, dir, version string, files map[string]string) {
	tb.Helper()
	vdir := filepath.Join(dir, ".."+version)
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		tb.Fatal(err)
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vdir, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				tb.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(".."+version, tmp); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
}
