package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// testKey is base64 of 32 bytes.
const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func getenvFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func validEnv(tb testing.TB) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	return map[string]string{
		"ES_DATABASE_URL":       "postgres://postgres:hunter2@127.0.0.1:5432/custos",
		"ES_TLS_CERT_FILE":      mustFile(tb, dir, "server.crt", "pem"),
		"ES_TLS_KEY_FILE":       mustFile(tb, dir, "server.key", "pem"),
		"ES_TLS_CLIENT_CA_FILE": mustFile(tb, dir, "ca.crt", "pem"),
		"ES_MASTER_KEYS":        "k1:" + testKey,
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(getenvFrom(validEnv(t)))
	if err != nil {
		t.Fatalf("Load(valid) = %v, want nil", err)
	}
	if c.GRPCAddr != ":9444" || c.HTTPAddr != ":9443" || c.DBMaxConns != 20 || !c.MigrateOnStart ||
		c.LogLevel != slog.LevelInfo || c.ShutdownTimeout != 20*time.Second || c.MaxRequestBytes != 4<<20 ||
		c.MaxBatchItems != 1000 || c.MaxEncryptionsPerVersion != 1<<31 || c.GRPCMaxConnectionAge != 5*time.Minute {
		t.Errorf("Load(valid) defaults = %+v", c)
	}
}

func TestLoadDatabaseURLFromFile(t *testing.T) {
	m := validEnv(t)
	delete(m, "ES_DATABASE_URL")
	m["ES_DATABASE_URL_FILE"] = mustFile(t, t.TempDir(), "url", "postgres://from-file\n")
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
		{"missing database", map[string]string{"ES_DATABASE_URL": ""}, []string{"ES_DATABASE_URL: required"}},
		{"both url and file", map[string]string{"ES_DATABASE_URL_FILE": "/x"}, []string{"set either ES_DATABASE_URL or ES_DATABASE_URL_FILE"}},
		{"missing cert", map[string]string{"ES_TLS_CERT_FILE": ""}, []string{"ES_TLS_CERT_FILE: required"}},
		{"unreadable CA", map[string]string{"ES_TLS_CLIENT_CA_FILE": "/nonexistent/ca.crt"}, []string{"ES_TLS_CLIENT_CA_FILE: cannot read /nonexistent/ca.crt"}},
		{"bad port", map[string]string{"ES_GRPC_ADDR": "localhost"}, []string{"ES_GRPC_ADDR: want host:port"}},
		{"bad level", map[string]string{"ES_LOG_LEVEL": "loud"}, []string{"ES_LOG_LEVEL: want one of"}},
		{"bad duration", map[string]string{"ES_SHUTDOWN_TIMEOUT": "forever"}, []string{"ES_SHUTDOWN_TIMEOUT"}},
		{"negative connection age", map[string]string{"ES_GRPC_MAX_CONNECTION_AGE": "-1s"}, []string{"ES_GRPC_MAX_CONNECTION_AGE"}},
		{"bad bool", map[string]string{"ES_MIGRATE_ON_START": "perhaps"}, []string{"ES_MIGRATE_ON_START: want true or false"}},
		{"same addresses", map[string]string{"ES_GRPC_ADDR": ":7000", "ES_HTTP_ADDR": ":7000"}, []string{"ES_HTTP_ADDR: must differ"}},
		{"zero batch", map[string]string{"ES_MAX_BATCH_ITEMS": "0"}, []string{"ES_MAX_BATCH_ITEMS: want an integer from 1 to 100000"}},
		{"huge batch", map[string]string{"ES_MAX_BATCH_ITEMS": "100001"}, []string{"ES_MAX_BATCH_ITEMS"}},
		{"encryption bound over 2^31", map[string]string{"ES_MAX_ENCRYPTIONS_PER_VERSION": "2147483649"},
			[]string{"ES_MAX_ENCRYPTIONS_PER_VERSION: want an integer from 1 to 2147483648"}},
		{"zero encryption bound", map[string]string{"ES_MAX_ENCRYPTIONS_PER_VERSION": "0"}, []string{"ES_MAX_ENCRYPTIONS_PER_VERSION"}},
		{"no master keys", map[string]string{"ES_MASTER_KEYS": ""}, []string{"ES_MASTER_KEYS: required"}},
		{"both key sources", map[string]string{"ES_MASTER_KEY_DIR": "/keys"}, []string{"set either ES_MASTER_KEYS or ES_MASTER_KEY_DIR"}},
		{"short master key", map[string]string{"ES_MASTER_KEYS": "k1:c2hvcnQ="}, []string{"ES_MASTER_KEYS"}},
		{"two keys, none active", map[string]string{"ES_MASTER_KEYS": "k1:" + testKey + ",k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="}, []string{"ES_ACTIVE_MASTER_KEY_ID"}},
		{"unknown active key", map[string]string{"ES_ACTIVE_MASTER_KEY_ID": "k9"}, []string{"ES_ACTIVE_MASTER_KEY_ID"}},
		{"bad admin hash", map[string]string{"ES_ADMIN_TOKEN_HASH": "abc"}, []string{"ES_ADMIN_TOKEN_HASH: want the SHA-256"}},
		{"data limit over request limit", map[string]string{"ES_MAX_DATA_BYTES": "99999999"}, []string{"ES_MAX_DATA_BYTES"}},
		{"several at once", map[string]string{"ES_DATABASE_URL": "", "ES_DB_MAX_CONNS": "0"}, []string{"ES_DATABASE_URL", "ES_DB_MAX_CONNS"}},
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
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), testKey) {
				t.Errorf("Load error %q leaks a secret", err)
			}
		})
	}
}

func TestLoadMasterKeysAndAdmin(t *testing.T) {
	m := validEnv(t)
	m["ES_MASTER_KEYS"] = "old:" + testKey + ",new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
	m["ES_ACTIVE_MASTER_KEY_ID"] = "new"
	m["ES_ADMIN_TOKEN_HASH"] = "sha256:" + strings.Repeat("ab", 32)
	m["ES_ADMIN_CLIENT_CNS"] = "custos-operator, custos-core,"
	c, err := Load(getenvFrom(m))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if len(c.MasterKeys) != 2 || c.ActiveMasterKeyID != "new" || len(c.AdminTokenHash) != 32 ||
		strings.Join(c.AdminCNs, "|") != "custos-operator|custos-core" {
		t.Errorf("Load = keys %d, active %q, hash %d bytes, CNs %q", len(c.MasterKeys), c.ActiveMasterKeyID, len(c.AdminTokenHash), c.AdminCNs)
	}
}

func TestLoadDatabaseNeedsOnlyTheURL(t *testing.T) {
	d, err := LoadDatabase(getenvFrom(map[string]string{"ES_DATABASE_URL": "postgres://x"}))
	if err != nil || d.DatabaseURL != "postgres://x" {
		t.Errorf("LoadDatabase = %+v, %v", d, err)
	}
	if _, err := LoadDatabase(getenvFrom(nil)); err == nil || !strings.Contains(err.Error(), "ES_DATABASE_URL") {
		t.Errorf("LoadDatabase(empty) = %v, want it to name ES_DATABASE_URL", err)
	}
}

func TestLoadKeys(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		active string
		want   []string // error mentions; none: success
	}{
		{"one key", map[string]string{"ES_DATABASE_URL": "postgres://x", "ES_MASTER_KEYS": "k1:" + testKey}, "", nil},
		{"two keys, one active", map[string]string{"ES_DATABASE_URL": "postgres://x",
			"ES_MASTER_KEYS": "k1:" + testKey + ",k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=", "ES_ACTIVE_MASTER_KEY_ID": "k2"}, "k2", nil},
		{"nothing", map[string]string{}, "", []string{"ES_DATABASE_URL", "ES_MASTER_KEYS"}},
		{"unknown active key", map[string]string{"ES_DATABASE_URL": "postgres://x", "ES_MASTER_KEYS": "k1:" + testKey,
			"ES_ACTIVE_MASTER_KEY_ID": "k9"}, "", []string{"ES_ACTIVE_MASTER_KEY_ID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := LoadKeys(getenvFrom(tt.env))
			if len(tt.want) == 0 {
				if err != nil || k.DatabaseURL != "postgres://x" || len(k.MasterKeys) == 0 || k.ActiveMasterKeyID != tt.active {
					t.Errorf("LoadKeys() = %+v, %v; want the URL, the keys and active %q", k, err, tt.active)
				}
				return
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("LoadKeys() = %v, want an error mentioning %s", err, w)
				}
			}
			if err != nil && strings.Contains(err.Error(), testKey) {
				t.Errorf("LoadKeys error %q leaks a key", err)
			}
		})
	}
}

func TestLoadConnectionAgeZeroDisables(t *testing.T) {
	m := validEnv(t)
	m["ES_GRPC_MAX_CONNECTION_AGE"] = "0"
	c, err := Load(getenvFrom(m))
	if err != nil || c.GRPCMaxConnectionAge != 0 {
		t.Errorf("Load(ES_GRPC_MAX_CONNECTION_AGE=0) = %v, %v; want 0", c.GRPCMaxConnectionAge, err)
	}
}

func TestLoadProxyProtocolFrom(t *testing.T) {
	m := validEnv(t)
	if c, err := Load(getenvFrom(m)); err != nil || c.ProxyProtocolFrom != nil {
		t.Fatalf("Load without ES_PROXY_PROTOCOL_FROM = %v, %v; want no PROXY protocol", c.ProxyProtocolFrom, err)
	}
	m["ES_PROXY_PROTOCOL_FROM"] = "10.0.0.0/8, 192.0.2.7"
	c, err := Load(getenvFrom(m))
	if err != nil || len(c.ProxyProtocolFrom) != 2 || c.ProxyProtocolFrom[1].String() != "192.0.2.7/32" {
		t.Fatalf("Load(ES_PROXY_PROTOCOL_FROM=10.0.0.0/8, 192.0.2.7) = %v, %v", c.ProxyProtocolFrom, err)
	}
	m["ES_PROXY_PROTOCOL_FROM"] = "0.0.0.0/0"
	if _, err := Load(getenvFrom(m)); err == nil || !strings.Contains(err.Error(), "ES_PROXY_PROTOCOL_FROM") {
		t.Errorf("Load(ES_PROXY_PROTOCOL_FROM=0.0.0.0/0) = %v, want an error naming the variable", err)
	}
}
