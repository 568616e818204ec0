package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadTarget(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("cts_from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := map[string]string{
		EnvURL: "https://es.example:9443/", EnvCAFile: "ca.pem", EnvClientCertFile: "c.pem", EnvClientKeyFile: "k.pem",
		EnvTenantID: "123e4567-e89b-12d3-a456-426614174000", EnvTenantSecret: "cts_secret",
		EnvRequire: "rewrap, batch", EnvTimeout: "5s",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name       string
		env        map[string]string
		configured bool
		wantErr    string // substring; "" for none
		check      func(Target) bool
	}{
		{"nothing set", map[string]string{}, false, "", nil},
		{"everything set", full, true, "", func(g Target) bool {
			return g.BaseURL == "https://es.example:9443" && g.TenantSecret == "cts_secret" &&
				len(g.Require) == 2 && g.Require[0] == Rewrap && g.Require[1] == Batch && g.Timeout == 5*time.Second
		}},
		{"secret from a file", with(EnvTenantSecret, "", EnvTenantSecret+"_FILE", secretFile), true, "", func(g Target) bool {
			return g.TenantSecret == "cts_from-file"
		}},
		{"secret twice", with(EnvTenantSecret+"_FILE", secretFile), true, "not both", nil},
		{"unreadable secret file", with(EnvTenantSecret, "", EnvTenantSecret+"_FILE", filepath.Join(dir, "none")), true, "CONFORMANCE_TENANT_SECRET_FILE", nil},
		{"bad timeout", with(EnvTimeout, "soon"), true, EnvTimeout, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, configured, err := LoadTarget(func(k string) string { return tt.env[k] })
			if configured != tt.configured {
				t.Errorf("LoadTarget configured = %v, want %v", configured, tt.configured)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadTarget error = %v, want one mentioning %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "cts_") {
				t.Errorf("LoadTarget error %q shows a secret", err)
			}
			if tt.check != nil && !tt.check(got) {
				t.Errorf("LoadTarget = %+v, not as configured", got)
			}
		})
	}
}

func TestTargetValidate(t *testing.T) {
	good := Target{BaseURL: "https://127.0.0.1:9443", CAFile: "ca", ClientCertFile: "c", ClientKeyFile: "k",
		TenantID: "123e4567-e89b-12d3-a456-426614174000", TenantSecret: "cts_x"}
	tests := []struct {
		name    string
		change  func(*Target)
		mention []string // every one must be named; none for a valid target
	}{
		{"valid", func(*Target) {}, nil},
		{"empty", func(t *Target) { *t = Target{} }, []string{"CONFORMANCE_URL", "CONFORMANCE_CA_FILE", "CONFORMANCE_CLIENT_CERT_FILE",
			"CONFORMANCE_CLIENT_KEY_FILE", "CONFORMANCE_TENANT_ID", "CONFORMANCE_TENANT_SECRET"}},
		{"plain http", func(t *Target) { t.BaseURL = "http://127.0.0.1:9443" }, []string{"https://"}},
		{"short master key", func(t *Target) { t.MasterKey = "c2hvcnQ=" }, []string{"32 bytes"}},
		{"encryption id not a uuid", func(t *Target) { t.EncryptionID = "ctx-1" }, []string{"not a UUID"}},
		{"unknown section", func(t *Target) { t.Require = []Section{"seeds"} }, []string{`"seeds"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := good
			tt.change(&target)
			err := target.validate()
			if (err == nil) != (len(tt.mention) == 0) {
				t.Fatalf("validate() = %v, want an error: %v", err, len(tt.mention) > 0)
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("validate() = %q, want it to name %q", err, m)
				}
			}
		})
	}
}

func TestShortenKeepsCharactersWhole(t *testing.T) {
	s := strings.Repeat("🔐", maxShown)
	got := shorten(s)
	if !strings.HasPrefix(got, "🔐") || !strings.Contains(got, "bytes in all") || !utf8Valid(got) {
		t.Errorf("shorten(%d bytes of emoji) = %.40q…, want whole characters and the length", len(s), got)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\ufffd") == s }

// TestSameAnswer: two answers are the same when status and body are, ids and per-call fields
// aside; any other field, at any depth, tells them apart.
func TestSameAnswer(t *testing.T) {
	const idA, idB = "0e2a3b4c-1d2e-4f30-8a4b-5c6d7e8f9a0b", "9b8a7f6e-5d4c-4b3a-8f1e-0d2c3b4a5f6e"
	answer := func(status int, body string) *exchange {
		return &exchange{resp: response{status: status, body: []byte(body)}}
	}
	tests := []struct {
		name string
		a, b *exchange
		want bool
	}{
		{"identical", answer(401, `{"code":16,"message":"no"}`), answer(401, `{"code":16,"message":"no"}`), true},
		{"ids aside", answer(404, `{"message":"key context `+idA+` not found"}`), answer(404, `{"message":"key context `+idB+` not found"}`), true},
		{"id in upper case", answer(404, `{"message":"`+strings.ToUpper(idA)+`"}`), answer(404, `{"message":"`+idB+`"}`), true},
		{"request ids aside", answer(401, `{"message":"no","requestId":"r1","error":{"request_id":"r1","trace-id":"t1"}}`),
			answer(401, `{"message":"no","requestId":"r2","error":{"request_id":"r2","trace-id":"t2"}}`), true},
		{"key order", answer(401, `{"a":1,"b":2}`), answer(401, `{"b":2,"a":1}`), true},
		{"other status", answer(401, `{"message":"no"}`), answer(403, `{"message":"no"}`), false},
		{"extra field", answer(401, `{"message":"no","reason":"no such tenant"}`), answer(401, `{"message":"no"}`), false},
		{"nested field differs", answer(401, `{"message":"no","details":[{"why":"x"}]}`), answer(401, `{"message":"no","details":[{"why":"y"}]}`), false},
		{"not JSON, same", answer(401, "no"), answer(401, "no"), true},
		{"not JSON, different", answer(401, "no such tenant"), answer(401, "wrong secret"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameAnswer(tt.a, tt.b, idA, idB); got != tt.want {
				t.Errorf("sameAnswer(%s, %s) = %v, want %v", tt.a.resp.body, tt.b.resp.body, got, tt.want)
			}
		})
	}
}
