package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/mtls"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// instance is a core started through Run.
type instance struct {
	grpcAddr, httpAddr string
	certs              *testcerts.Set
	env                map[string]string
	done               chan error
	stop               context.CancelFunc
	logs               *logWatcher
}

// coreEnv is core's configuration for a test: loopback ports, certificates from certs, and the
// encryption service es.
func coreEnv(databaseURL string, certs *testcerts.Set, es *fakeES) map[string]string {
	return map[string]string{
		"CORE_SECRET_KEYS":         testSecretKeys,
		"CORE_DATABASE_URL":        databaseURL,
		"CORE_GRPC_ADDR":           "127.0.0.1:0",
		"CORE_HTTP_ADDR":           "127.0.0.1:0",
		"CORE_TLS_CERT_FILE":       certs.ServerCertFile,
		"CORE_TLS_KEY_FILE":        certs.ServerKeyFile,
		"CORE_ES_ADDR":             es.addr,
		"CORE_ES_SERVER_NAME":      "localhost",
		"CORE_ES_CA_FILE":          certs.CAFile,
		"CORE_ES_CLIENT_CERT_FILE": certs.ClientCertFile,
		"CORE_ES_CLIENT_KEY_FILE":  certs.ClientKeyFile,
		"CORE_LOG_LEVEL":           "debug",
	}
}

// testSecretKeys are core's secret keys in tests.
const testSecretKeys = "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// fakeES stands in for the encryption service as far as core's readiness goes: a gRPC health
// service behind mutual TLS 1.3 that requires a client certificate from certs' CA.
type fakeES struct {
	addr   string
	health *health.Server
}

func startFakeES(tb testing.TB, certs *testcerts.Set) *fakeES {
	tb.Helper()
	cfg, err := mtls.NewServerConfig(mtls.ServerOptions{
		CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile,
		ClientCAFile: certs.CAFile, ClientAuth: mtls.RequireClientCert,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	es := &fakeES{addr: ln.Addr().String(), health: health.NewServer()}
	healthpb.RegisterHealthServer(s, es.health)
	go func() { _ = s.Serve(ln) }() // returns when the cleanup stops the server
	tb.Cleanup(s.Stop)
	return es
}

// startInstance runs core in-process against databaseURL with certificates from certs and
// waits until it listens. It is stopped, and its exit checked, when the test ends.
func startInstance(tb testing.TB, databaseURL string, certs *testcerts.Set, es *fakeES) *instance {
	tb.Helper()
	return startWithEnv(tb, coreEnv(databaseURL, certs, es), certs)
}

// startWithEnv runs core in-process with env as its environment and waits until it listens.
func startWithEnv(tb testing.TB, env map[string]string, certs *testcerts.Set) *instance {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{certs: certs, env: env, done: make(chan error, 1), stop: cancel, logs: newLogWatcher()}
	go func() {
		inst.done <- Run(ctx, "test", nil, func(k string) string { return env[k] }, io.Discard, inst.logs)
	}()
	select {
	case line := <-inst.logs.listening:
		inst.grpcAddr, inst.httpAddr = line.GRPCAddr, line.HTTPAddr
	case err := <-inst.done:
		cancel()
		tb.Fatalf("Run exited before listening: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		tb.Fatal("Run did not listen within 60s")
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-inst.done:
			if err != nil {
				tb.Errorf("Run after cancel = %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			tb.Error("Run did not return within 30s of cancel")
		}
	})
	return inst
}

// logWatcher is the service's stderr: it reports the "server: listening" line and checks that no
// line is malformed JSON.
type logWatcher struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	all       bytes.Buffer
	listening chan logLine
}

type logLine struct {
	Msg      string `json:"msg"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
}

func newLogWatcher() *logWatcher { return &logWatcher{listening: make(chan logLine, 1)} }

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			w.buf.Write(line) // incomplete: keep for the next write
			return len(p), nil
		}
		var l logLine
		if json.Unmarshal(line, &l) == nil && l.Msg == "server: listening" {
			select {
			case w.listening <- l:
			default:
			}
		}
	}
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func (inst *instance) httpClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func (inst *instance) grpcConn(tb testing.TB, cfg *tls.Config) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(inst.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		tb.Fatalf("grpc.NewClient(%s) = %v", inst.grpcAddr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func waitReady(tb testing.TB, inst *instance) {
	tb.Helper()
	client := inst.httpClient(inst.certs.ClientConfig())
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("https://" + inst.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("/readyz not 200 within 30s (last: %v, %v)", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestServeHealthOverTLS13(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs, startFakeES(t, certs))
	waitReady(t, inst)

	resp, err := inst.httpClient(certs.ClientConfigNoCert()).Get("https://" + inst.httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("GET /healthz = %d over TLS %x (%s), want 200 over TLS 1.3", resp.StatusCode, resp.TLS.Version, body)
	}

	health := healthpb.NewHealthClient(inst.grpcConn(t, certs.ClientConfigNoCert()))
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && got.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grpc health Check = %v, %v; want SERVING", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestReadinessFollowsTheEncryptionService(t *testing.T) {
	certs := testcerts.New(t)
	es := startFakeES(t, certs)
	inst := startInstance(t, testdb.New(t), certs, es)
	waitReady(t, inst)

	readyz := func() (int, string) {
		resp, err := inst.httpClient(certs.ClientConfigNoCert()).Get("https://" + inst.httpAddr + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz = %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// /readyz answers from the readiness check core runs every 5 seconds.
	es.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	eventually(t, "GET /readyz 503 with the encryption service NOT_SERVING", func() error {
		if code, body := readyz(); code != http.StatusServiceUnavailable {
			return fmt.Errorf("GET /readyz = %d %s, want 503", code, body)
		}
		return nil
	})
	es.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	eventually(t, "GET /readyz 200 with the encryption service back", func() error {
		if code, body := readyz(); code != http.StatusOK {
			return fmt.Errorf("GET /readyz = %d %s, want 200", code, body)
		}
		return nil
	})
}

func TestServeRefusesTLS12(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs, startFakeES(t, certs))
	tls12 := certs.ClientConfigNoCert()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	if resp, err := inst.httpClient(tls12).Get("https://" + inst.httpAddr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /healthz over TLS 1.2 = %d, want a failed handshake", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(inst.grpcConn(t, tls12)).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC Check over TLS 1.2 = %v, want Unavailable (handshake refused)", err)
	}
}

func TestMigrationsIdempotentAndConcurrent(t *testing.T) {
	certs := testcerts.New(t)
	es := startFakeES(t, certs)
	url := testdb.NewEmpty(t)

	// Two instances start at once on a database that has never been migrated.
	var wg sync.WaitGroup
	insts := make([]*instance, 2)
	for i := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			insts[i] = startInstance(t, url, certs, es)
		}()
	}
	wg.Wait()
	for _, inst := range insts {
		waitReady(t, inst)
	}

	// Stopping one and starting a third on the migrated database changes nothing.
	insts[0].stop()
	if err := <-insts[0].done; err != nil {
		t.Fatalf("first instance exit = %v", err)
	}
	insts[0].done <- nil // for its cleanup
	third := startInstance(t, url, certs, es)
	waitReady(t, third)
	env := coreEnv(url, certs, es)
	if err := Run(context.Background(), "test", []string{"migrate"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Errorf("migrate on a migrated database = %v, want nil", err)
	}
}

func TestRunCommands(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), "1.2.3", []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil || out.String() != "core 1.2.3\n" {
		t.Errorf("Run(version) = %q, %v; want the version", out.String(), err)
	}
	if err := Run(context.Background(), "1.2.3", []string{"frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("Run(frobnicate) = %v, want ErrUsage", err)
	}
	err := Run(context.Background(), "1.2.3", nil, func(string) string { return "" }, io.Discard, io.Discard)
	for _, name := range []string{"CORE_DATABASE_URL", "CORE_TLS_CERT_FILE", "CORE_TLS_KEY_FILE", "CORE_ES_CA_FILE", "CORE_ES_CLIENT_CERT_FILE", "CORE_SECRET_KEYS"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Run(serve) with no configuration = %v, want it to name %s", err, name)
		}
	}
}

func TestProbe(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs, startFakeES(t, certs))
	waitReady(t, inst)
	run := func(env map[string]string, args ...string) error {
		return Run(context.Background(), "test", append([]string{"probe"}, args...), func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	env := map[string]string{"CORE_HTTP_ADDR": inst.httpAddr, "CORE_PROBE_CA_FILE": certs.CAFile}
	for _, args := range [][]string{nil, {"--live"}} {
		if err := run(env, args...); err != nil {
			t.Errorf("probe %v = %v, want healthy", args, err)
		}
	}
	if err := run(map[string]string{"CORE_HTTP_ADDR": inst.httpAddr, "CORE_PROBE_CA_FILE": certs.Unrelated(t).CAFile}); err == nil {
		t.Errorf("probe trusting another CA = nil, want a failure")
	}
}
