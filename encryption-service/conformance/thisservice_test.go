package conformance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/conformance"
	"github.com/custos-platform/custos/encryption-service/internal/app"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// TestConformanceAgainstThisService runs the whole suite against this encryption service, started
// in-process on loopback with mutual TLS and a fresh PostgreSQL database. This service offers
// every section, so every one is required: none can be skipped unnoticed.
func TestConformanceAgainstThisService(t *testing.T) {
	certs := testcerts.New(t)
	svc := startService(t, testdb.New(t), certs)
	tenantID, secret := svc.createTenant(t, "conformance-owner")

	masterKey := make([]byte, 32)
	rand.Read(masterKey)
	report := conformance.Run(t, conformance.Target{
		BaseURL:        "https://" + svc.httpAddr,
		CAFile:         certs.CAFile,
		ClientCertFile: certs.ClientCertFile,
		ClientKeyFile:  certs.ClientKeyFile,
		TenantID:       tenantID,
		TenantSecret:   secret,
		MasterKey:      base64.StdEncoding.EncodeToString(masterKey),
		AdminToken:     svc.adminToken,
		Require: []conformance.Section{
			conformance.Contexts, conformance.Rewrap, conformance.DataKey, conformance.Batch, conformance.Lifecycle,
			conformance.ClientMode, conformance.Tenants,
		},
	})
	for _, sec := range []conformance.Section{conformance.Transport, conformance.Auth, conformance.Seed} {
		if why, skipped := report.Skipped()[sec]; skipped {
			t.Errorf("section %s skipped (%s), want it run", sec, why)
		}
	}
	if got := len(report.Ran()); got != len(conformance.Sections()) {
		t.Errorf("%d sections ran, want all %d", got, len(conformance.Sections()))
	}
}

// service is an encryption service started through app.Run.
type service struct {
	httpAddr   string
	adminToken string
	client     *http.Client
}

// startService runs the service in-process against databaseURL and waits until it listens; it is
// stopped, and its exit checked, when the test ends.
func startService(t *testing.T, databaseURL string, certs *testcerts.Set) *service {
	t.Helper()
	token := "cat_" + rand.Text()
	hash := sha256.Sum256([]byte(token))
	env := map[string]string{
		"ES_DATABASE_URL":       databaseURL,
		"ES_GRPC_ADDR":          "127.0.0.1:0",
		"ES_HTTP_ADDR":          "127.0.0.1:0",
		"ES_TLS_CERT_FILE":      certs.ServerCertFile,
		"ES_TLS_KEY_FILE":       certs.ServerKeyFile,
		"ES_TLS_CLIENT_CA_FILE": certs.CAFile,
		"ES_MASTER_KEYS":        "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)),
		"ES_ADMIN_TOKEN_HASH":   hex.EncodeToString(hash[:]),
		"ES_LOG_LEVEL":          "info", // the "server: listening" line is at info
	}
	logs := newListenWatcher()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, "conformance-test", nil, func(k string) string { return env[k] }, io.Discard, logs)
	}()
	svc := &service{adminToken: token, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: certs.ClientConfig()},
	}}
	select {
	case svc.httpAddr = <-logs.httpAddr:
	case err := <-done:
		cancel()
		t.Fatalf("app.Run exited before listening: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("app.Run did not listen within 60s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("app.Run after cancel = %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("app.Run did not return within 30s of cancel")
		}
	})
	return svc
}

// createTenant creates a tenant through the admin plane and returns its id and first secret.
func (s *service) createTenant(t *testing.T, name string) (id, secret string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "https://"+s.httpAddr+"/v1/admin/tenants", strings.NewReader(`{"name":"`+name+`"}`))
	req.Header.Set("X-Admin-Token", s.adminToken)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/admin/tenants = %v", err)
	}
	defer resp.Body.Close()
	var got struct{ TenantID, Secret string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK || got.Secret == "" {
		t.Fatalf("POST /v1/admin/tenants = %d (decode: %v), want 200 with tenantId and secret", resp.StatusCode, err)
	}
	return got.TenantID, got.Secret
}

// listenWatcher is the service's log output: it reports the REST address of the "server:
// listening" line and drops everything else.
type listenWatcher struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	found    bool
	httpAddr chan string
}

func newListenWatcher() *listenWatcher { return &listenWatcher{httpAddr: make(chan string, 1)} }

func (w *listenWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			w.buf.Write(line) // incomplete: keep it for the next write
			return len(p), nil
		}
		var l struct {
			Msg      string `json:"msg"`
			HTTPAddr string `json:"http_addr"`
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "server: listening" {
			w.found = true
			w.buf.Reset()
			w.httpAddr <- l.HTTPAddr
			return len(p), nil
		}
	}
}
