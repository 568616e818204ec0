package app

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/config"
	"github.com/custos-platform/custos/core/internal/testcerts"
)

// TestProbeDefaultAddrIsConfigs: with CORE_HTTP_ADDR unset the probe calls the address the service
// listens on with CORE_HTTP_ADDR unset, so that a health check needs no more than the service does.
func TestProbeDefaultAddrIsConfigs(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("not read by config.Load"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"CORE_DATABASE_URL":        "postgres://localhost/custos",
		"CORE_TLS_CERT_FILE":       file("tls.crt"),
		"CORE_TLS_KEY_FILE":        file("tls.key"),
		"CORE_ES_CA_FILE":          file("es-ca.crt"),
		"CORE_ES_CLIENT_CERT_FILE": file("client.crt"),
		"CORE_ES_CLIENT_KEY_FILE":  file("client.key"),
		"CORE_SECRET_KEYS":         "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("config.Load(minimal environment) = %v", err)
	}
	if cfg.HTTPAddr != defaultHTTPAddr {
		t.Errorf("config.Load HTTPAddr = %q without CORE_HTTP_ADDR, but the probe's default is %q", cfg.HTTPAddr, defaultHTTPAddr)
	}
	got, err := probeURL("", "/readyz")
	if want := "https://127.0.0.1" + cfg.HTTPAddr + "/readyz"; err != nil || got != want {
		t.Errorf("probeURL(\"\", /readyz) = %q, %v; want %q", got, err, want)
	}
}

func TestProbeURL(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"", "https://127.0.0.1:8443/healthz"},
		{":8443", "https://127.0.0.1:8443/healthz"},
		{"0.0.0.0:18443", "https://127.0.0.1:18443/healthz"},
		{"[::]:18443", "https://127.0.0.1:18443/healthz"},
		{"127.0.0.1:7", "https://127.0.0.1:7/healthz"},
		{"[::1]:7", "https://[::1]:7/healthz"},
		{"localhost:7", "https://localhost:7/healthz"},
	}
	for _, tt := range tests {
		t.Run(cmp.Or(tt.addr, "unset"), func(t *testing.T) {
			if got, err := probeURL(tt.addr, "/healthz"); err != nil || got != tt.want {
				t.Errorf("probeURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"8443", "localhost", "localhost:", "[::1"} {
		if got, err := probeURL(bad, "/healthz"); err == nil || !strings.Contains(err.Error(), "want host:port") {
			t.Errorf("probeURL(%q) = %q, %v; want a host:port error", bad, got, err)
		}
	}
}

// TestProbeWithoutAddr: the probe command runs with CORE_HTTP_ADDR unset (compose and Kubernetes may
// leave it at its default) and calls the default address instead of failing on its configuration.
// Whatever answers there (nothing, usually) cannot pass the handshake with this test's fresh CA, so
// the probe fails, naming the address it called.
func TestProbeWithoutAddr(t *testing.T) {
	certs := testcerts.New(t)
	env := map[string]string{"CORE_PROBE_CA_FILE": certs.CAFile}
	err := Run(t.Context(), "test", []string{"probe", "--timeout=2s"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if want := "127.0.0.1" + defaultHTTPAddr; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("probe without CORE_HTTP_ADDR = %v, want a failure calling %s", err, want)
	}
}
