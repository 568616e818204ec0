package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/sourcecontextpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

func TestNewRejectsBadConfig(t *testing.T) {
	certs := testcerts.New(t)
	good := func() server.Config {
		return server.Config{GRPCAddr: ":0", HTTPAddr: ":0", TLS: mustServerTLS(t, mtls.ServerOptions{
			CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile,
		})}
	}
	tls12 := good()
	tls12.TLS = certs.ServerConfig()
	tls12.TLS.MinVersion = tls.VersionTLS12
	tests := []struct {
		name string
		edit func(*server.Config)
		want string
	}{
		{"no TLS", func(c *server.Config) { c.TLS = nil }, "TLS is required"},
		{"TLS 1.2 allowed", func(c *server.Config) { *c = tls12 }, "TLS 1.3"},
		{"no address", func(c *server.Config) { c.HTTPAddr = "" }, "HTTPAddr"},
		{"negative limit", func(c *server.Config) { c.MaxRequestBytes = -1 }, "negative"},
		{"reserved identity header", func(c *server.Config) { c.ForwardHeaders = []string{"X-Custos-Gw-Client-Cn"} }, "must not be forwarded"},
		{"grpc header", func(c *server.Config) { c.ForwardHeaders = []string{"grpc-timeout"} }, "must not be forwarded"},
		{"forwarded-for", func(c *server.Config) { c.ForwardHeaders = []string{"X-Forwarded-For"} }, "must not be forwarded"},
		{"connection header", func(c *server.Config) { c.ForwardHeaders = []string{"Content-Type"} }, "must not be forwarded"},
		{"invalid key", func(c *server.Config) { c.ForwardHeaders = []string{"x tenant"} }, "not a valid metadata key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.edit(&cfg)
			srv, err := server.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, %v; want error containing %q", srv, err, tt.want)
			}
		})
	}
	if _, err := server.New(good()); err != nil {
		t.Fatalf("New(good config) = %v", err)
	}
}

func TestHealthOverTLS13(t *testing.T) {
	e := mustStart(t, nil)

	resp, body := mustDo(t, e.httpClient(t, e.certs.ClientConfig()), http.MethodGet, e.url("/healthz"), "", nil)
	if resp.StatusCode != http.StatusOK || mustJSON(t, body)["status"] != "ok" {
		t.Errorf("GET /healthz = %d %s, want 200 {\"status\":\"ok\"}", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("GET /healthz TLS = %+v, want TLS 1.3", resp.TLS)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("GET /healthz protocol = %s, want HTTP/2", resp.Proto)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}

	health := healthpb.NewHealthClient(e.mustGRPC(t, e.certs.ClientConfig()))
	eventually(t, "gRPC health SERVING", func() error {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.GetStatus())
		}
		return nil
	})
}

func TestTLS12Refused(t *testing.T) {
	e := mustStart(t, nil)
	cfg := e.certs.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	for name, addr := range map[string]string{"gRPC": e.srv.GRPCAddr(), "HTTP": e.srv.HTTPAddr()} {
		t.Run(name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err == nil {
				conn.Close()
				t.Fatalf("TLS 1.2 handshake with %s listener succeeded", name)
			}
		})
	}
}

func TestClientCertificateRequired(t *testing.T) {
	e := mustStart(t, nil)
	other := e.certs.Unrelated(t)
	tests := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"no client certificate", e.certs.ClientConfigNoCert(), false},
		{"certificate from another CA", e.certs.ClientConfigWith(other.ClientCert), false},
		{"good certificate", e.certs.ClientConfig(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/gRPC", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := healthpb.NewHealthClient(e.mustGRPC(t, tt.cfg)).Check(ctx, &healthpb.HealthCheckRequest{})
			if (err == nil) != tt.ok {
				t.Fatalf("Health.Check error = %v, want ok %v", err, tt.ok)
			}
		})
		t.Run(tt.name+"/HTTP", func(t *testing.T) {
			_, _, err := do(t, e.httpClient(t, tt.cfg), http.MethodGet, e.url("/healthz"), "", nil)
			if (err == nil) != tt.ok {
				t.Fatalf("GET /healthz error = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.Ready = func(context.Context) error {
			if failing.Load() {
				return errors.New("dial postgres://admin:hunter2@db: refused")
			}
			return nil
		}
	})
	client := e.httpClient(t, e.certs.ClientConfig())
	health := healthpb.NewHealthClient(e.mustGRPC(t, e.certs.ClientConfig()))
	healthIs := func(want healthpb.HealthCheckResponse_ServingStatus) func() error {
		return func() error {
			resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if resp.GetStatus() != want {
				return fmt.Errorf("status %v, want %v", resp.GetStatus(), want)
			}
			return nil
		}
	}

	resp, body := mustDo(t, client, http.MethodGet, e.url("/readyz"), "", nil)
	if got := mustJSON(t, body); resp.StatusCode != http.StatusServiceUnavailable || got["status"] != "unavailable" || got["reason"] == "" {
		t.Errorf("GET /readyz while failing = %d %s, want 503 unavailable with a reason", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "hunter2") {
		t.Errorf("GET /readyz leaks the readiness error: %s", body)
	}
	eventually(t, "gRPC health NOT_SERVING", healthIs(healthpb.HealthCheckResponse_NOT_SERVING))

	failing.Store(false)
	// /readyz answers from the last check, like gRPC health: it follows within ReadyInterval.
	eventually(t, "GET /readyz 200 ready", func() error {
		resp, body := mustDo(t, client, http.MethodGet, e.url("/readyz"), "", nil)
		if resp.StatusCode != http.StatusOK || mustJSON(t, body)["status"] != "ready" {
			return fmt.Errorf("GET /readyz while passing = %d %s, want 200 ready", resp.StatusCode, body)
		}
		return nil
	})
	eventually(t, "gRPC health SERVING", healthIs(healthpb.HealthCheckResponse_SERVING))
}

// TestReadyzAnswersFromTheLastCheck checks that GET /readyz, unauthenticated on a public port,
// does not run Ready: a flood of probes cannot make the service query its dependencies, nor fill
// the log with a line per failed probe.
func TestReadyzAnswersFromTheLastCheck(t *testing.T) {
	var calls atomic.Int64
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.ReadyInterval = time.Hour // one check, at start
		c.Ready = func(context.Context) error {
			calls.Add(1)
			return errors.New("database unreachable")
		}
	})
	client := e.httpClient(t, e.certs.ClientConfig())
	eventually(t, "the first readiness check", func() error {
		resp, body := mustDo(t, client, http.MethodGet, e.url("/readyz"), "", nil)
		if got := mustJSON(t, body)["reason"]; resp.StatusCode != http.StatusServiceUnavailable || got != "dependencies not ready" {
			return fmt.Errorf("GET /readyz = %d %s, want 503 dependencies not ready", resp.StatusCode, body)
		}
		return nil
	})
	before := calls.Load()
	for range 50 {
		mustDo(t, client, http.MethodGet, e.url("/readyz"), "", nil)
	}
	if got := calls.Load() - before; got != 0 {
		t.Errorf("50 GET /readyz ran Ready %d times, want 0 (the answer comes from the last check)", got)
	}
	if n := strings.Count(e.logs.String(), "database unreachable"); n != 1 {
		t.Errorf("the readiness error is logged %d times, want once (when it started)", n)
	}
}

func TestReadinessTimeout(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.ReadyTimeout = 20 * time.Millisecond
		c.Ready = func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}
	})
	client := e.httpClient(t, e.certs.ClientConfig())
	eventually(t, "GET /readyz 503 timed out", func() error {
		resp, body := mustDo(t, client, http.MethodGet, e.url("/readyz"), "", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || mustJSON(t, body)["reason"] != "readiness check timed out" {
			return fmt.Errorf("GET /readyz = %d %s, want 503 timed out", resp.StatusCode, body)
		}
		return nil
	})
}

func TestPeerIdentity(t *testing.T) {
	e := mustStart(t, nil)
	second := e.certs.IssueClient(t, "second-client")
	for _, cert := range []tls.Certificate{e.certs.ClientCert, second.Cert} {
		sum := sha256.Sum256(cert.Leaf.Raw)
		wantSHA := hex.EncodeToString(sum[:])
		wantCN := cert.Leaf.Subject.CommonName
		cfg := e.certs.ClientConfigWith(cert)

		t.Run(wantCN+"/gRPC", func(t *testing.T) {
			got, err := whoami(context.Background(), e.mustGRPC(t, cfg))
			if err != nil {
				t.Fatalf("Whoami: %v", err)
			}
			checkIdentity(t, got, wantCN, wantSHA)
		})
		t.Run(wantCN+"/REST", func(t *testing.T) {
			resp, body := mustDo(t, e.httpClient(t, cfg), http.MethodPost, e.url("/v1/whoami"), "{}", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
			}
			checkIdentity(t, mustJSON(t, body), wantCN, wantSHA)
		})
		t.Run(wantCN+"/gRPC stream", func(t *testing.T) {
			conn := e.mustGRPC(t, cfg)
			stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, "/"+probeService+"/WhoamiStream")
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.SendMsg(&sourcecontextpb.SourceContext{}); err != nil {
				t.Fatal(err)
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			out := &structpb.Struct{}
			if err := stream.RecvMsg(out); err != nil {
				t.Fatalf("WhoamiStream: %v", err)
			}
			checkIdentity(t, out.AsMap(), wantCN, wantSHA)
		})
	}
}

func checkIdentity(tb testing.TB, got map[string]any, cn, sha string) {
	tb.Helper()
	if got["ok"] != true || got["commonName"] != cn || got["sha256"] != sha {
		tb.Errorf("identity = ok %v, CN %q, SHA-256 %q; want ok true, CN %q, SHA-256 %q", got["ok"], got["commonName"], got["sha256"], cn, sha)
	}
	if addr, _ := got["addr"].(string); !strings.HasPrefix(addr, "127.0.0.1:") {
		tb.Errorf("identity addr = %q, want the client's loopback address", addr)
	}
}

func TestIdentityCannotBeSpoofed(t *testing.T) {
	spoofMD := metadata.Pairs(
		"x-custos-gw-client-cn", "admin",
		"x-custos-gw-client-sha256", strings.Repeat("0", 64),
		"x-custos-gw-remote-addr", "10.0.0.1:1",
		"x-custos-gw-request-id", "spoofed",
	)
	spoofHeaders := http.Header{
		"X-Custos-Gw-Client-Cn":                   {"admin"},
		"X-Custos-Gw-Client-Sha256":               {strings.Repeat("0", 64)},
		"Grpc-Metadata-X-Custos-Gw-Client-Cn":     {"admin"},
		"Grpc-Metadata-X-Custos-Gw-Client-Sha256": {strings.Repeat("0", 64)},
		"Grpc-Metadata-X-Tenant-Secret":           {"s3cret"},
		"X-Forwarded-For":                         {"10.0.0.1"},
	}
	// Clients without a certificate are allowed here, so a forged identity
	// would be the only identity there is.
	e := mustStart(t, func(c *server.Config, certs *testcerts.Set) {
		c.TLS = mustServerTLS(t, mtls.ServerOptions{
			CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile,
			ClientCAFile: certs.CAFile, ClientAuth: mtls.VerifyClientCertIfGiven,
		})
	})
	tests := []struct {
		name   string
		cfg    *tls.Config
		wantOK bool
		wantCN string
	}{
		{"without certificate", e.certs.ClientConfigNoCert(), false, ""},
		{"with certificate", e.certs.ClientConfig(), true, testcerts.DefaultClientCN},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/gRPC metadata", func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(context.Background(), spoofMD)
			got, err := whoami(ctx, e.mustGRPC(t, tt.cfg))
			if err != nil {
				t.Fatalf("Whoami: %v", err)
			}
			if got["ok"] != tt.wantOK || got["commonName"] != tt.wantCN {
				t.Errorf("identity = ok %v CN %q, want ok %v CN %q", got["ok"], got["commonName"], tt.wantOK, tt.wantCN)
			}
			if got["requestId"] == "spoofed" {
				t.Error("request id taken from a reserved key sent by a network client")
			}
			for k := range spoofMD {
				if hasKey(got, k) {
					t.Errorf("handler sees reserved metadata key %q from a network client", k)
				}
			}
		})
		t.Run(tt.name+"/HTTP headers", func(t *testing.T) {
			resp, body := mustDo(t, e.httpClient(t, tt.cfg), http.MethodPost, e.url("/v1/whoami"), "{}", spoofHeaders)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
			}
			got := mustJSON(t, body)
			if got["ok"] != tt.wantOK || got["commonName"] != tt.wantCN {
				t.Errorf("identity = ok %v CN %q, want ok %v CN %q", got["ok"], got["commonName"], tt.wantOK, tt.wantCN)
			}
			if hasKey(got, "x-tenant-secret") {
				t.Error("Grpc-Metadata-X-Tenant-Secret was forwarded")
			}
			if addr, _ := got["addr"].(string); tt.wantOK && strings.HasPrefix(addr, "10.") {
				t.Errorf("addr = %q, taken from a header", addr)
			}
		})
	}
}

// TestUserAgent: handlers learn the client software as it named itself, over gRPC and REST alike,
// in printable ASCII; a network client cannot pass one off as the gateway's.
func TestUserAgent(t *testing.T) {
	e := mustStart(t, nil)
	cfg := e.certs.ClientConfig()
	ctx := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("x-custos-gw-user-agent", "forged/1"))
	got, err := whoami(ctx, e.mustGRPC(t, cfg, grpc.WithUserAgent("custos-test/1.2")))
	if err != nil {
		t.Fatal(err)
	}
	if ua, _ := got["userAgent"].(string); !strings.HasPrefix(ua, "custos-test/1.2") {
		t.Errorf("gRPC user agent = %q, want the client's custos-test/1.2 (grpc-go appends its own)", ua)
	}
	resp, body := mustDo(t, e.httpClient(t, cfg), http.MethodPost, e.url("/v1/whoami"), "{}", http.Header{
		"User-Agent":             {"curl/8.11 \u00e9t\u00e9 " + strings.Repeat("x", 300)},
		"X-Custos-Gw-User-Agent": {"forged/1"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
	}
	ua, _ := mustJSON(t, body)["userAgent"].(string)
	if !strings.HasPrefix(ua, "curl/8.11 t ") || len(ua) != 200 || strings.Contains(ua, "forged") {
		t.Errorf("REST user agent = %q (%d bytes), want the HTTP client's, in printable ASCII, cut to 200", ua, len(ua))
	}
}

func TestHeaderForwarding(t *testing.T) {
	e := mustStart(t, nil)
	client := e.httpClient(t, e.certs.ClientConfig())
	resp, body := mustDo(t, client, http.MethodPost, e.url("/v1/whoami"), "{}", http.Header{
		"X-Tenant-Id":                   {"tenant-1"},
		"X-Tenant-Secret":               {"not-allow-listed"},
		"Grpc-Metadata-X-Tenant-Id":     {"tenant-2"},
		"Grpc-Metadata-X-Api-Key":       {"k"},
		"Authorization":                 {"Bearer t"},
		"Cookie":                        {"session=1"},
		"Grpc-Metadata-X-Custos-Gw-Foo": {"bar"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
	}
	got := mustJSON(t, body)
	if got["tenant"] != "tenant-1" {
		t.Errorf("x-tenant-id metadata = %q, want %q (from X-Tenant-Id only)", got["tenant"], "tenant-1")
	}
	if got["authorizationCount"] != 1.0 {
		t.Errorf("authorization metadata values = %v, want 1", got["authorizationCount"])
	}
	for _, k := range []string{"x-tenant-secret", "x-api-key", "cookie", "grpcgateway-cookie", "x-custos-gw-foo"} {
		if hasKey(got, k) {
			t.Errorf("metadata key %q was forwarded", k)
		}
	}

	// Authorization is dropped when it is not allow-listed.
	e2 := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.ForwardHeaders = []string{"x-tenant-id"} })
	_, body = mustDo(t, e2.httpClient(t, e2.certs.ClientConfig()), http.MethodPost, e2.url("/v1/whoami"), "{}", http.Header{"Authorization": {"Bearer t"}})
	if got := mustJSON(t, body); got["authorizationCount"] != 0.0 {
		t.Errorf("authorization metadata values without allow-listing = %v, want 0", got["authorizationCount"])
	}
}

func TestRequestID(t *testing.T) {
	var seen atomic.Value
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.UnaryInterceptors = []grpc.UnaryServerInterceptor{
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				seen.Store(server.RequestID(ctx))
				return h(ctx, req)
			},
		}
	})
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	client := e.httpClient(t, e.certs.ClientConfig())
	tests := []struct {
		name string
		sent string
		want string // "" means a generated id
	}{
		{"valid", "req-1.A_b", "req-1.A_b"},
		{"invalid characters", "req 1;drop", ""},
		{"too long", strings.Repeat("a", 65), ""},
		{"absent", "", ""},
	}
	for _, tt := range tests {
		check := func(t *testing.T, where, got string) {
			t.Helper()
			if tt.want != "" && got != tt.want || tt.want == "" && !generated.MatchString(got) {
				t.Errorf("%s request id = %q, want %q (empty: generated)", where, got, tt.want)
			}
		}
		t.Run(tt.name+"/gRPC", func(t *testing.T) {
			ctx := context.Background()
			if tt.sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", tt.sent)
			}
			var header metadata.MD
			got, err := whoami(ctx, conn, grpc.Header(&header))
			if err != nil {
				t.Fatalf("Whoami: %v", err)
			}
			id := strings.Join(header.Get("x-request-id"), ",")
			check(t, "response header", id)
			if got["requestId"] != id || seen.Load() != id {
				t.Errorf("handler saw %q, interceptor %q, header %q; want all equal", got["requestId"], seen.Load(), id)
			}
		})
		t.Run(tt.name+"/REST", func(t *testing.T) {
			h := http.Header{}
			if tt.sent != "" {
				h.Set("X-Request-Id", tt.sent)
			}
			resp, body := mustDo(t, client, http.MethodPost, e.url("/v1/whoami"), "{}", h)
			id := resp.Header.Get("X-Request-Id")
			check(t, "X-Request-Id", id)
			if got := resp.Header.Get("Grpc-Metadata-X-Request-Id"); got != id {
				t.Errorf("Grpc-Metadata-X-Request-Id = %q, want %q", got, id)
			}
			if got := mustJSON(t, body)["requestId"]; got != id {
				t.Errorf("handler saw request id %q, want %q", got, id)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	e := mustStart(t, nil)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "log-grpc", "x-tenant-id", "tenant-secret-value")
	if _, err := whoami(ctx, e.mustGRPC(t, e.certs.ClientConfig())); err != nil {
		t.Fatal(err)
	}
	mustDo(t, e.httpClient(t, e.certs.ClientConfig()), http.MethodPost, e.url("/v1/whoami"), "{}",
		http.Header{"X-Request-Id": {"log-rest"}, "X-Tenant-Id": {"tenant-secret-value"}})

	want := map[string]string{"log-grpc": "grpc", "log-rest": "gateway"}
	for _, rec := range e.logs.records(t, "rpc") {
		id, _ := rec["request_id"].(string)
		via, ok := want[id]
		if !ok {
			continue
		}
		delete(want, id)
		if rec["via"] != via || rec["method"] != "/"+probeService+"/Whoami" || rec["code"] != "OK" {
			t.Errorf("access log %v, want via %s, method Whoami, code OK", rec, via)
		}
		if _, ok := rec["duration_us"].(float64); !ok {
			t.Errorf("access log %v has no duration_us", rec)
		}
		if peer, _ := rec["peer"].(string); !strings.HasPrefix(peer, "127.0.0.1:") {
			t.Errorf("access log peer = %q, want the client's address", peer)
		}
	}
	if len(want) > 0 {
		t.Errorf("no access log for %v in %s", want, e.logs.String())
	}
	if strings.Contains(e.logs.String(), "tenant-secret-value") {
		t.Error("log contains a metadata value")
	}
}

func TestPanicRecovered(t *testing.T) {
	e := mustStart(t, nil)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	err := conn.Invoke(context.Background(), "/"+probeService+"/Panic", &sourcecontextpb.SourceContext{FileName: "request-secret"}, &sourcecontextpb.SourceContext{})
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Fatalf("Panic = %v, want Internal \"internal error\"", err)
	}
	if _, err := whoami(context.Background(), conn); err != nil {
		t.Fatalf("Whoami after a panic: %v", err)
	}
	if len(e.logs.records(t, "panic in handler")) != 1 {
		t.Errorf("want one panic log record, logs: %s", e.logs.String())
	}
	if strings.Contains(e.logs.String(), "request-secret") {
		t.Error("panic log contains the request")
	}
}

func TestJSONGateway(t *testing.T) {
	e := mustStart(t, nil)
	client := e.httpClient(t, e.certs.ClientConfig())
	tests := []struct {
		name       string
		path, body string
		wantStatus int
		wantBody   string // substring
	}{
		{"camelCase in and out", "/v1/echo", `{"fileName":"a.proto"}`, http.StatusOK, `"fileName":"a.proto"`},
		{"unpopulated fields emitted", "/v1/echo", `{}`, http.StatusOK, `"fileName":""`},
		{"unknown field refused", "/v1/echo", `{"fileName":"a","bogus":1}`, http.StatusBadRequest, `"code":3`},
		{"malformed JSON", "/v1/echo", `{`, http.StatusBadRequest, `"message"`},
		{"unknown route", "/v1/nope", `{}`, http.StatusNotFound, `"code":5`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := mustDo(t, client, http.MethodPost, e.url(tt.path), tt.body, nil)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(strings.ReplaceAll(string(body), " ", ""), tt.wantBody) {
				t.Errorf("POST %s %s = %d %s, want %d containing %s", tt.path, tt.body, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
		})
	}
}

func TestRequestSizeLimit(t *testing.T) {
	const limit = 1024
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.MaxRequestBytes = limit })
	client := e.httpClient(t, e.certs.ClientConfig())
	big := `{"fileName":"` + strings.Repeat("x", 2*limit) + `"}`

	t.Run("REST with length", func(t *testing.T) {
		resp, body := mustDo(t, client, http.MethodPost, e.url("/v1/echo"), big, nil)
		checkTooLarge(t, resp, body)
	})
	t.Run("REST streamed", func(t *testing.T) {
		// No Content-Length: the limit is found while reading.
		req, err := http.NewRequest(http.MethodPost, e.url("/v1/echo"), struct{ *strings.Reader }{strings.NewReader(big)})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		checkTooLarge(t, resp, body)
	})
	t.Run("REST within limit", func(t *testing.T) {
		resp, body := mustDo(t, client, http.MethodPost, e.url("/v1/echo"), `{"fileName":"small"}`, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST /v1/echo = %d %s, want 200", resp.StatusCode, body)
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		conn := e.mustGRPC(t, e.certs.ClientConfig())
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "oversize-grpc")
		err := conn.Invoke(ctx, "/"+probeService+"/Echo",
			&sourcecontextpb.SourceContext{FileName: strings.Repeat("x", 2*limit)}, &sourcecontextpb.SourceContext{})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("Echo(oversize) = %v, want ResourceExhausted", err)
		}
		// Refused while being read, yet logged like any call.
		eventually(t, "the access-log line of the oversized call", func() error {
			for _, rec := range e.logs.records(t, "rpc") {
				if rec["request_id"] == "oversize-grpc" && rec["code"] == "ResourceExhausted" {
					return nil
				}
			}
			return errors.New("none")
		})
	})
}

func checkTooLarge(tb testing.TB, resp *http.Response, body []byte) {
	tb.Helper()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		tb.Fatalf("status = %d %s, want 413", resp.StatusCode, body)
	}
	got := mustJSON(tb, body)
	if msg, _ := got["message"].(string); !strings.Contains(msg, "1024 bytes") {
		tb.Errorf("message = %q, want it to name the 1024-byte limit", msg)
	}
	if got["code"] != float64(codes.ResourceExhausted) {
		tb.Errorf("code = %v, want %d", got["code"], codes.ResourceExhausted)
	}
}

func TestGracefulShutdown(t *testing.T) {
	e := mustStart(t, nil)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	client := e.httpClient(t, e.certs.ClientConfig())

	type result struct {
		via string
		err error
	}
	results := make(chan result, 2)
	go func() {
		out := &sourcecontextpb.SourceContext{}
		err := conn.Invoke(context.Background(), "/"+probeService+"/Slow", &sourcecontextpb.SourceContext{FileName: "grpc"}, out)
		results <- result{"gRPC", err}
	}()
	go func() {
		resp, body, err := do(t, client, http.MethodPost, e.url("/v1/slow"), `{"fileName":"rest"}`, nil)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d %s", resp.StatusCode, body)
		}
		results <- result{"REST", err}
	}()
	for range 2 {
		select {
		case <-e.probe.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("calls did not reach the handler")
		}
	}

	e.stop()
	eventually(t, "drain started", func() error {
		if !strings.Contains(e.logs.String(), "server: draining") {
			return errors.New("no drain log yet")
		}
		return nil
	})
	select {
	case err := <-e.done:
		t.Fatalf("Run returned %v while calls were in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(e.probe.release)
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Errorf("in-flight %s call: %v", r.via, r.err)
		}
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		e.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the calls finished")
	}
}

func TestShutdownTimeoutCutsOff(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.ShutdownTimeout = 100 * time.Millisecond })
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	errc := make(chan error, 1)
	go func() {
		errc <- conn.Invoke(context.Background(), "/"+probeService+"/Slow", &sourcecontextpb.SourceContext{}, &sourcecontextpb.SourceContext{})
	}()
	<-e.probe.entered
	e.stop()
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		e.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ShutdownTimeout")
	}
	if err := <-errc; err == nil {
		t.Error("call still running at ShutdownTimeout succeeded, want it cut off")
	}
}

// holdService registers /test.Hold/Hold, whose handler counts itself in flight until release is
// closed or its caller leaves.
func holdService(inflight *atomic.Int64, release <-chan struct{}) func(grpc.ServiceRegistrar) {
	return func(s grpc.ServiceRegistrar) {
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: "test.Hold",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "Hold", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := &emptypb.Empty{}
				if err := dec(in); err != nil {
					return nil, err
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Hold/Hold"}, func(ctx context.Context, _ any) (any, error) {
					inflight.Add(1)
					defer inflight.Add(-1)
					select {
					case <-release:
					case <-ctx.Done():
					}
					return &emptypb.Empty{}, nil
				})
			}}},
		}, struct{}{})
	}
}

// TestMaxConcurrentStreams checks that one gRPC connection runs at most MaxConcurrentStreams calls
// at once; the others wait for a slot and then succeed.
func TestMaxConcurrentStreams(t *testing.T) {
	var inflight atomic.Int64
	release := make(chan struct{})
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.Register = holdService(&inflight, release) })
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	const calls = server.MaxConcurrentStreams + 50
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- conn.Invoke(context.Background(), "/test.Hold/Hold", &emptypb.Empty{}, &emptypb.Empty{})
		}()
	}
	eventually(t, "the connection's streams in use", func() error {
		if n := inflight.Load(); n < server.MaxConcurrentStreams {
			return fmt.Errorf("%d calls in flight", n)
		}
		return nil
	})
	// Give the waiting calls every chance to get in.
	for range 20 {
		if n := inflight.Load(); n > server.MaxConcurrentStreams {
			t.Fatalf("%d calls in flight on one connection, want at most %d", n, server.MaxConcurrentStreams)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a call over the limit = %v, want it to wait for a slot and succeed", err)
		}
	}
}

// TestGRPCMetadataLimit checks that gRPC request metadata is bounded like REST headers (64 KiB).
func TestGRPCMetadataLimit(t *testing.T) {
	e := mustStart(t, nil)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	if _, err := whoami(context.Background(), conn); err != nil {
		t.Fatalf("Whoami = %v", err)
	}
	big := metadata.AppendToOutgoingContext(context.Background(), "x-junk", strings.Repeat("a", 100<<10))
	if _, err := whoami(big, conn); err == nil {
		t.Error("Whoami with 100 KiB of metadata succeeded, want it refused")
	}
	small := metadata.AppendToOutgoingContext(context.Background(), "x-junk", strings.Repeat("a", 8<<10))
	if _, err := whoami(small, conn); err != nil {
		t.Errorf("Whoami with 8 KiB of metadata = %v, want it served", err)
	}
}

// TestDrainEndsHealthWatch checks that an open health Watch stream does not hold the drain up to
// ShutdownTimeout: it is told NOT_SERVING or ends with Unavailable, and the drain finishes
// without cutting anything off.
func TestDrainEndsHealthWatch(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.ShutdownTimeout = time.Minute })
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("Watch: first Recv = %v", err)
	}
	e.stop()
	for {
		resp, err := w.Recv()
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("Watch during the drain ended with %v, want Unavailable", err)
			}
			break
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING && resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("Watch sent %v", resp.GetStatus())
		}
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		e.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return with a health Watch open (the drain waits for it)")
	}
	if strings.Contains(e.logs.String(), "drain cut short") {
		t.Errorf("the drain was cut short:\n%s", e.logs.String())
	}
}

// TestGatewayRejections checks what the REST listener answers before a request reaches gRPC: no
// quoting of what was sent, only whitespace after the JSON body, and an access log line for each.
func TestGatewayRejections(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.MaxRequestBytes = 1000 })
	client := e.httpClient(t, e.certs.ClientConfig())
	tests := []struct {
		name, method, path, body string
		header                   http.Header
		wantStatus               int
		wantMessage              string // substring
	}{
		{"second JSON value", http.MethodPost, "/v1/echo", `{"fileName":"a"} {"SECRET-1":1}`, nil, 400, "only whitespace may follow"},
		{"garbage after the value", http.MethodPost, "/v1/echo", `{"fileName":"a"} SECRET-2`, nil, 400, "only whitespace may follow"},
		{"malformed escape", http.MethodPost, "/v1/echo", `{"fileName":"SECRET-3\u00"}`, nil, 400, "request body: not valid JSON"},
		{"bad token", http.MethodPost, "/v1/echo", `SECRET-4`, nil, 400, "request body: not valid JSON"},
		{"bad grpc-timeout", http.MethodPost, "/v1/echo", `{}`, http.Header{"Grpc-Timeout": {"SECRET-5"}}, 400, "Grpc-Timeout header: invalid value"},
		{"too large", http.MethodPost, "/v1/echo", `{"fileName":"` + strings.Repeat("x", 2000) + `"}`, nil, 413, "the limit is 1000 bytes"},
		{"unknown route", http.MethodPost, "/v1/nosuch-SECRET-6", `{}`, nil, 404, ""},
		{"wrong method", http.MethodGet, "/v1/echo", ``, nil, 501, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := strings.ReplaceAll(tt.name, " ", "-")
			h := http.Header{"X-Request-Id": {id}}
			for k, v := range tt.header {
				h[k] = v
			}
			resp, body := mustDo(t, client, tt.method, e.url(tt.path), tt.body, h)
			msg, _ := mustJSON(t, body)["message"].(string)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("%s %s = %d %s, want %d %q", tt.method, tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantMessage)
			}
			if strings.Contains(string(body), "SECRET") {
				t.Errorf("%s %s quotes the request: %s", tt.method, tt.path, body)
			}
			var line map[string]any
			eventually(t, "the access log line", func() error {
				for _, rec := range e.logs.records(t, "rpc") {
					if rec["request_id"] == id {
						line = rec
						return nil
					}
				}
				return fmt.Errorf("no access log line with request_id %s", id)
			})
			if line["via"] != "http" || line["method"] != tt.method || line["status"] != float64(tt.wantStatus) || line["code"] == "OK" {
				t.Errorf("access log line %v, want via http, method %s, status %d and the error's code", line, tt.method, tt.wantStatus)
			}
		})
	}
	if strings.Contains(e.logs.String(), "SECRET") {
		t.Errorf("the log quotes a request:\n%s", e.logs.String())
	}
	// A call that reached gRPC has one access line, the interceptor's.
	mustDo(t, client, http.MethodPost, e.url("/v1/echo"), `{"fileName":"a"}`+"\n", http.Header{"X-Request-Id": {"reached"}})
	n := 0
	for _, rec := range e.logs.records(t, "rpc") {
		if rec["request_id"] == "reached" {
			n++
			if rec["via"] != "gateway" {
				t.Errorf("access log line %v, want via gateway", rec)
			}
		}
	}
	if n != 1 {
		t.Errorf("a REST call that reached gRPC has %d access log lines, want 1", n)
	}
}
