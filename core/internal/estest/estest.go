// Package estest runs the real encryption service for core's tests: the encryption-service binary,
// built once per test process from this repository, started as a subprocess on loopback with its
// own database, master key, admin token and mutual-TLS certificates. Stopped when the test ends.
package estest

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/testcerts"
)

// Service is a running encryption service.
type Service struct {
	GRPCAddr, HTTPAddr string
	AdminToken         string
	MasterKeys         string // ES_MASTER_KEYS, to restart it on the same database
	DatabaseURL        string

	certs    *testcerts.Set
	extraEnv map[string]string
	cmd      *exec.Cmd
	done     chan error
	logs     logLines
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

// Logs returns the lines the service has written to its standard error so far (its JSON logs),
// across restarts.
func (s *Service) Logs() []string {
	s.logs.mu.Lock()
	defer s.logs.mu.Unlock()
	return append([]string(nil), s.logs.lines...)
}

var build struct {
	once sync.Once
	path string
	err  error
}

// binary builds the encryption service once per test process.
func binary(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			build.err = err
			return
		}
		dir, err := os.MkdirTemp("", "custos-estest-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "encryption-service")
		cmd := exec.Command("go", "build", "-o", build.path, "./encryption-service/cmd/encryption-service") //nolint:gosec // test helper: builds this repository's own binary
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("build encryption-service: %w\n%s", err, out)
		}
	})
	if build.err != nil {
		tb.Fatal(build.err)
	}
	return build.path
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// Start runs the encryption service on databaseURL (a database of its own: it migrates its own
// schema there) with certs' server certificate, requiring client certificates from certs' CA.
func Start(tb testing.TB, databaseURL string, certs *testcerts.Set) *Service {
	tb.Helper()
	return StartWith(tb, databaseURL, certs, nil)
}

// StartWith is Start with extra environment variables for the service (e.g. tracing settings).
func StartWith(tb testing.TB, databaseURL string, certs *testcerts.Set, env map[string]string) *Service {
	tb.Helper()
	key := make([]byte, 32)
	token := make([]byte, 24)
	rand.Read(key)
	rand.Read(token)
	s := &Service{
		extraEnv:    env,
		AdminToken:  "cat_" + base64.RawURLEncoding.EncodeToString(token),
		MasterKeys:  "test:" + base64.StdEncoding.EncodeToString(key),
		DatabaseURL: databaseURL,
		certs:       certs,
	}
	s.start(tb)
	return s
}

func (s *Service) start(tb testing.TB) {
	tb.Helper()
	h := sha256.Sum256([]byte(s.AdminToken))
	grpcAddr, httpAddr := "127.0.0.1:0", "127.0.0.1:0"
	if s.GRPCAddr != "" { // a restart keeps its addresses, so that clients reconnect
		grpcAddr, httpAddr = s.GRPCAddr, s.HTTPAddr
	}
	cmd := exec.Command(binary(tb)) //nolint:gosec // test helper: starts the binary it just built
	cmd.Env = append(os.Environ(),
		"ES_DATABASE_URL="+s.DatabaseURL,
		"ES_GRPC_ADDR="+grpcAddr, "ES_HTTP_ADDR="+httpAddr,
		"ES_TLS_CERT_FILE="+s.certs.ServerCertFile, "ES_TLS_KEY_FILE="+s.certs.ServerKeyFile,
		"ES_TLS_CLIENT_CA_FILE="+s.certs.CAFile,
		"ES_MASTER_KEYS="+s.MasterKeys,
		"ES_ADMIN_TOKEN_HASH="+hex.EncodeToString(h[:]),
	)
	for k, v := range s.extraEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start encryption-service: %v", err)
	}
	s.cmd, s.done = cmd, make(chan error, 1)
	listening := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.logs.mu.Lock()
			s.logs.lines = append(s.logs.lines, line)
			s.logs.mu.Unlock()
			var l struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "server: listening" {
				select {
				case listening <- [2]string{l.GRPCAddr, l.HTTPAddr}:
				default:
				}
			}
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case addrs := <-listening:
		s.GRPCAddr, s.HTTPAddr = addrs[0], addrs[1]
	case err := <-s.done:
		tb.Fatalf("encryption-service exited before listening: %v\n%v", err, s.Logs())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		tb.Fatal("encryption-service did not listen within 60s")
	}
	tb.Cleanup(func() { s.Stop() })
}

// Stop stops the service (SIGTERM, then SIGKILL after 10 s) and waits for it. Safe to call twice.
func (s *Service) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done: //nolint:errcheck // the exit status after our signal is not news
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done //nolint:errcheck // killed: the exit status is an error by design
	}
	s.cmd = nil
}

// Kill stops the service at once, as a crash would.
func (s *Service) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done //nolint:errcheck // killed: the exit status is an error by design
	s.cmd = nil
}

// Restart starts the service again on the same database with the same keys and addresses.
func (s *Service) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	s.start(tb)
}

// CreateTenant creates a tenant through the admin plane, as an operator with certs' client
// certificate, and returns its id and secret.
func (s *Service) CreateTenant(tb testing.TB, name string) (id, secret string) {
	tb.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: s.certs.ClientConfig()}}
	req, err := http.NewRequest("POST", "https://"+s.HTTPAddr+"/v1/admin/tenants", strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-Admin-Token", s.AdminToken)
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("create tenant on the encryption service: %v", err)
	}
	defer resp.Body.Close()
	var out struct{ TenantID, Secret string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		tb.Fatalf("create tenant on the encryption service: %d %v", resp.StatusCode, err)
	}
	return out.TenantID, out.Secret
}
