package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// instance is an encryption service started through Run.
type instance struct {
	grpcAddr, httpAddr string
	certs              *testcerts.Set
	done               chan error
	stop               context.CancelFunc
	logs               *logWatcher
}

// startInstance runs the service in-process against databaseURL with certificates from certs and
// waits until it listens. It is stopped, and its exit checked, when the test ends.
func startInstance(tb testing.TB, databaseURL string, certs *testcerts.Set) *instance {
	tb.Helper()
	return startInstanceWith(tb, databaseURL, certs, nil)
}

// startInstanceWith is startInstance with the variables in env set over testEnv's ("" unsets one).
func startInstanceWith(tb testing.TB, databaseURL string, certs *testcerts.Set, overrides map[string]string) *instance {
	tb.Helper()
	env := testEnv(databaseURL, certs)
	for k, v := range overrides {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{certs: certs, done: make(chan error, 1), stop: cancel, logs: newLogWatcher()}
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

// Test master key and admin token. The token's hash is what the service is configured with.
const (
	testMasterKeys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
	testAdminToken = "cat_test-admin-token"
)

// testEnv is the service's configuration for a test: loopback ports, certificates from certs.
func testEnv(databaseURL string, certs *testcerts.Set) map[string]string {
	h := sha256.Sum256([]byte(testAdminToken))
	return map[string]string{
		"ES_DATABASE_URL":         databaseURL,
		"ES_GRPC_ADDR":            "127.0.0.1:0",
		"ES_HTTP_ADDR":            "127.0.0.1:0",
		"ES_TLS_CERT_FILE":        certs.ServerCertFile,
		"ES_TLS_KEY_FILE":         certs.ServerKeyFile,
		"ES_TLS_CLIENT_CA_FILE":   certs.CAFile,
		"ES_MASTER_KEYS":          testMasterKeys,
		"ES_ACTIVE_MASTER_KEY_ID": "k2",
		"ES_ADMIN_TOKEN_HASH":     hex.EncodeToString(h[:]),
		"ES_LOG_LEVEL":            "debug",
	}
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
	inst := startInstance(t, testdb.New(t), certs)
	waitReady(t, inst)

	resp, err := inst.httpClient(certs.ClientConfig()).Get("https://" + inst.httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("GET /healthz = %d over TLS %x (%s), want 200 over TLS 1.3", resp.StatusCode, resp.TLS.Version, body)
	}

	health := healthpb.NewHealthClient(inst.grpcConn(t, certs.ClientConfig()))
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

func TestServeRefusesBadClients(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs)
	other := certs.Unrelated(t)

	tls12 := certs.ClientConfig()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	clients := []struct {
		name string
		cfg  *tls.Config
	}{
		{"TLS 1.2 client", tls12},
		{"no client certificate", certs.ClientConfigNoCert()},
		{"client certificate from another CA", certs.ClientConfigWith(other.ClientCert)},
	}
	for _, c := range clients {
		t.Run(c.name+" over REST", func(t *testing.T) {
			resp, err := inst.httpClient(c.cfg).Get("https://" + inst.httpAddr + "/healthz")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET /healthz = %d, want a failed handshake", resp.StatusCode)
			}
		})
		t.Run(c.name+" over gRPC", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := healthpb.NewHealthClient(inst.grpcConn(t, c.cfg)).Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("Check = %v, want Unavailable (handshake refused)", err)
			}
		})
	}
}

func TestMigrationsIdempotentAndConcurrent(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.NewEmpty(t)

	// Two instances start at once on a database that has never been migrated.
	var wg sync.WaitGroup
	insts := make([]*instance, 2)
	for i := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			insts[i] = startInstance(t, url, certs)
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
	third := startInstance(t, url, certs)
	waitReady(t, third)
	if err := Run(context.Background(), "test", []string{"migrate"}, func(k string) string {
		return map[string]string{"ES_DATABASE_URL": url}[k]
	}, io.Discard, io.Discard); err != nil {
		t.Errorf("migrate on a migrated database = %v, want nil", err)
	}
}

func TestRunCommands(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), "1.2.3", []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil || out.String() != "encryption-service 1.2.3\n" {
		t.Errorf("Run(version) = %q, %v; want the version", out.String(), err)
	}
	if err := Run(context.Background(), "1.2.3", []string{"frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("Run(frobnicate) = %v, want ErrUsage", err)
	}
	err := Run(context.Background(), "1.2.3", nil, func(string) string { return "" }, io.Discard, io.Discard)
	for _, name := range []string{"ES_DATABASE_URL", "ES_TLS_CERT_FILE", "ES_TLS_KEY_FILE", "ES_TLS_CLIENT_CA_FILE", "ES_MASTER_KEYS"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Run(serve) with no configuration = %v, want it to name %s", err, name)
		}
	}
}

func TestProbe(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs)
	waitReady(t, inst)
	env := map[string]string{
		"ES_HTTP_ADDR": inst.httpAddr, "ES_PROBE_CA_FILE": certs.CAFile,
		"ES_PROBE_CERT_FILE": certs.ClientCertFile, "ES_PROBE_KEY_FILE": certs.ClientKeyFile,
	}
	run := func(env map[string]string, args ...string) error {
		return Run(context.Background(), "test", append([]string{"probe"}, args...), func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	for _, args := range [][]string{nil, {"--live"}, {"--ready"}} {
		if err := run(env, args...); err != nil {
			t.Errorf("probe %v = %v, want healthy", args, err)
		}
	}
	noCert := map[string]string{"ES_HTTP_ADDR": inst.httpAddr, "ES_PROBE_CA_FILE": certs.CAFile}
	if err := run(noCert); err == nil || !strings.Contains(err.Error(), "ES_PROBE_CERT_FILE") {
		t.Errorf("probe without a certificate = %v, want it to name ES_PROBE_CERT_FILE", err)
	}
	other := certs.Unrelated(t)
	wrongCA := map[string]string{"ES_HTTP_ADDR": inst.httpAddr, "ES_PROBE_CA_FILE": other.CAFile,
		"ES_PROBE_CERT_FILE": certs.ClientCertFile, "ES_PROBE_KEY_FILE": certs.ClientKeyFile}
	if err := run(wrongCA); err == nil {
		t.Errorf("probe trusting another CA = nil, want a failure")
	}
	if err := run(env, "--live", "--ready"); !errors.Is(err, ErrUsage) {
		t.Errorf("probe --live --ready = %v, want a usage error", err)
	}
}
