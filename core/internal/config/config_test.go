package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/password"
)

func mustFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func getenvFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func validEnv(tb testing.TB) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	return map[string]string{
		"CORE_DATABASE_URL":        "postgres://postgres:hunter2@127.0.0.1:5432/custos",
		"CORE_TLS_CERT_FILE":       mustFile(tb, dir, "server.crt", "pem"),
		"CORE_TLS_KEY_FILE":        mustFile(tb, dir, "server.key", "pem"),
		"CORE_ES_CA_FILE":          mustFile(tb, dir, "ca.crt", "pem"),
		"CORE_ES_CLIENT_CERT_FILE": mustFile(tb, dir, "client.crt", "pem"),
		"CORE_ES_CLIENT_KEY_FILE":  mustFile(tb, dir, "client.key", "pem"),
		"CORE_SECRET_KEYS":         "s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(getenvFrom(validEnv(t)))
	if err != nil {
		t.Fatalf("Load(valid) = %v, want nil", err)
	}
	if c.GRPCAddr != ":8444" || c.HTTPAddr != ":8443" || c.DBMaxConns != 20 || !c.MigrateOnStart ||
		c.LogLevel != slog.LevelInfo || c.ES.Addr != "localhost:9444" || c.ES.Timeout != 5*time.Second || c.ShutdownTimeout != 20*time.Second || c.MaxRequestBytes != 4<<20 {
		t.Errorf("Load(valid) defaults = %+v", c)
	}
}

func TestLoadDatabaseURLFromFile(t *testing.T) {
	m := validEnv(t)
	delete(m, "CORE_DATABASE_URL")
	m["CORE_DATABASE_URL_FILE"] = mustFile(t, t.TempDir(), "url", "postgres://from-file\n")
	c, err := Load(getenvFrom(m))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if c.DatabaseURL != "postgres://from-file" {
		t.Errorf("DatabaseURL = %q, want the file's trimmed contents", c.DatabaseURL)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		change map[string]string
		want   []string
	}{
		{"missing database", map[string]string{"CORE_DATABASE_URL": ""}, []string{"CORE_DATABASE_URL: required"}},
		{"both url and file", map[string]string{"CORE_DATABASE_URL_FILE": "/x"}, []string{"set either CORE_DATABASE_URL or CORE_DATABASE_URL_FILE"}},
		{"missing cert", map[string]string{"CORE_TLS_CERT_FILE": ""}, []string{"CORE_TLS_CERT_FILE: required"}},
		{"unreadable CA", map[string]string{"CORE_ES_CA_FILE": "/nonexistent/ca.crt"}, []string{"CORE_ES_CA_FILE: cannot read /nonexistent/ca.crt"}},
		{"optional client CA unreadable", map[string]string{"CORE_TLS_CLIENT_CA_FILE": "/nonexistent/ca.crt"}, []string{"CORE_TLS_CLIENT_CA_FILE: cannot read"}},
		{"bad ES timeout", map[string]string{"CORE_ES_TIMEOUT": "1ms"}, []string{"CORE_ES_TIMEOUT"}},
		{"bad port", map[string]string{"CORE_GRPC_ADDR": "localhost"}, []string{"CORE_GRPC_ADDR: want host:port"}},
		{"bad level", map[string]string{"CORE_LOG_LEVEL": "loud"}, []string{"CORE_LOG_LEVEL: want one of"}},
		{"bad duration", map[string]string{"CORE_SHUTDOWN_TIMEOUT": "forever"}, []string{"CORE_SHUTDOWN_TIMEOUT"}},
		{"bad bool", map[string]string{"CORE_MIGRATE_ON_START": "perhaps"}, []string{"CORE_MIGRATE_ON_START: want true or false"}},
		{"access tokens beyond an hour", map[string]string{"CORE_ACCESS_TOKEN_TTL": "2h"}, []string{"CORE_ACCESS_TOKEN_TTL"}},
		{"sessions beyond a year", map[string]string{"CORE_SESSION_TTL": "9000h"}, []string{"CORE_SESSION_TTL"}},
		{"signing keys rotated hourly", map[string]string{"CORE_SIGNING_KEY_ROTATION": "1h"}, []string{"CORE_SIGNING_KEY_ROTATION"}},
		{"same addresses", map[string]string{"CORE_GRPC_ADDR": ":7000", "CORE_HTTP_ADDR": ":7000"}, []string{"CORE_HTTP_ADDR: must differ"}},
		{"no secret keys", map[string]string{"CORE_SECRET_KEYS": ""}, []string{"CORE_SECRET_KEYS: required"}},
		{"metrics without a client CA", map[string]string{"CORE_METRICS_ADDR": ":8445"}, []string{"CORE_METRICS_CLIENT_CA_FILE: required"}},
		{"admin without password", map[string]string{"CORE_ADMIN_USERNAME": "root"}, []string{"CORE_ADMIN_USERNAME"}},
		{"several at once", map[string]string{"CORE_DATABASE_URL": "", "CORE_DB_MAX_CONNS": "0"}, []string{"CORE_DATABASE_URL", "CORE_DB_MAX_CONNS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validEnv(t)
			for k, v := range tt.change {
				m[k] = v
			}
			_, err := Load(getenvFrom(m))
			if err == nil {
				t.Fatalf("Load(%v) = nil error, want one mentioning %q", tt.change, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(%v) = %q, want it to mention %q", tt.change, err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Load error %q leaks the database password", err)
			}
		})
	}
}

// TestPasswordCostBounds pins CORE_PASSWORD_*'s bounds to the password package's: a cost the
// configuration accepts is one password.Hash accepts, and one over the per-variable caps or over
// the memory × iterations budget is refused by name before anything starts.
func TestPasswordCostBounds(t *testing.T) {
	tests := []struct {
		name, memory, iterations string
		wantErr                  string // "" for accepted
	}{
		{"defaults", "", "", ""},
		{"floor", "8192", "1", ""},
		{"memory cap", "262144", "4", ""},
		{"iterations cap", "104857", "10", ""},
		{"memory over cap", "262145", "1", "CORE_PASSWORD_MEMORY_KIB"},
		{"memory 1 GiB", "1048576", "1", "CORE_PASSWORD_MEMORY_KIB"},
		{"iterations over cap", "65536", "11", "CORE_PASSWORD_ITERATIONS"},
		{"iterations 100", "65536", "100", "CORE_PASSWORD_ITERATIONS"},
		{"over budget", "262144", "5", "CORE_PASSWORD_ITERATIONS"},
		{"both caps", "262144", "10", "CORE_PASSWORD_ITERATIONS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := validEnv(t)
			m["CORE_PASSWORD_MEMORY_KIB"], m["CORE_PASSWORD_ITERATIONS"] = tc.memory, tc.iterations
			c, err := Load(getenvFrom(m))
			d, derr := LoadDatabase(getenvFrom(m))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || derr == nil || !strings.Contains(derr.Error(), tc.wantErr) {
					t.Fatalf("Load, LoadDatabase(m=%q, t=%q) = %v, %v; want errors naming %s", tc.memory, tc.iterations, err, derr, tc.wantErr)
				}
				return
			}
			if err != nil || derr != nil {
				t.Fatalf("Load, LoadDatabase(m=%q, t=%q) = %v, %v; want nil", tc.memory, tc.iterations, err, derr)
			}
			if c.PasswordMemoryKiB != d.PasswordMemoryKiB || c.PasswordIterations != d.PasswordIterations {
				t.Errorf("Load and LoadDatabase disagree: %d×%d vs %d×%d", c.PasswordMemoryKiB, c.PasswordIterations, d.PasswordMemoryKiB, d.PasswordIterations)
			}
			p := password.DefaultParams()
			p.MemoryKiB, p.Iterations = uint32(c.PasswordMemoryKiB), uint32(c.PasswordIterations) //nolint:gosec // bounded by Load
			if err := p.Validate(); err != nil {
				t.Errorf("configuration accepted %d×%d, which password refuses: %v", c.PasswordMemoryKiB, c.PasswordIterations, err)
			}
		})
	}
	// The hard-coded bounds above are the password package's.
	if password.MaxMemoryKiB != 262144 || password.MaxIterations != 10 || password.MaxCostKiB != 1<<20 {
		t.Errorf("password bounds are %d KiB, %d passes, %d KiB·passes; update CORE_PASSWORD_* bounds in config.go and this test",
			password.MaxMemoryKiB, password.MaxIterations, password.MaxCostKiB)
	}
}

func TestLoadMetricsClientCA(t *testing.T) {
	m := validEnv(t)
	m["CORE_METRICS_ADDR"] = ":8445"
	m["CORE_METRICS_CLIENT_CA_FILE"] = m["CORE_ES_CA_FILE"]
	c, err := Load(getenvFrom(m))
	if err != nil || c.MetricsAddr != ":8445" || c.MetricsClientCAFile != m["CORE_ES_CA_FILE"] {
		t.Fatalf("Load(metrics with a client CA) = %+v, %v; want both set", c, err)
	}
}

func TestLoadProxyProtocolFrom(t *testing.T) {
	m := validEnv(t)
	if c, err := Load(getenvFrom(m)); err != nil || c.ProxyProtocolFrom != nil {
		t.Fatalf("Load without CORE_PROXY_PROTOCOL_FROM = %v, %v; want no PROXY protocol", c.ProxyProtocolFrom, err)
	}
	m["CORE_PROXY_PROTOCOL_FROM"] = "10.0.0.0/8, 192.0.2.7"
	c, err := Load(getenvFrom(m))
	if err != nil || len(c.ProxyProtocolFrom) != 2 || c.ProxyProtocolFrom[1].String() != "192.0.2.7/32" {
		t.Fatalf("Load(CORE_PROXY_PROTOCOL_FROM=10.0.0.0/8, 192.0.2.7) = %v, %v", c.ProxyProtocolFrom, err)
	}
	m["CORE_PROXY_PROTOCOL_FROM"] = "0.0.0.0/0"
	if _, err := Load(getenvFrom(m)); err == nil || !strings.Contains(err.Error(), "CORE_PROXY_PROTOCOL_FROM") {
		t.Errorf("Load(CORE_PROXY_PROTOCOL_FROM=0.0.0.0/0) = %v, want an error naming the variable", err)
	}
}
