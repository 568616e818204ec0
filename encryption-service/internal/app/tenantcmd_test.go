package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// runCLI runs one command of the binary against databaseURL and returns its standard output.
func runCLI(tb testing.TB, databaseURL string, args ...string) (string, error) {
	tb.Helper()
	var out bytes.Buffer
	env := map[string]string{"ES_DATABASE_URL": databaseURL, "USER": "operator"}
	err := Run(context.Background(), "test", args, func(k string) string { return env[k] }, &out, io.Discard)
	return out.String(), err
}

func TestTenantCommands(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	inst := startInstance(t, url, certs)
	r := newREST(t, inst)

	out, err := runCLI(t, url, "tenant", "create", "on-prem", "--json")
	if err != nil {
		t.Fatalf("tenant create = %v", err)
	}
	var created map[string]string
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("tenant create --json printed %q: %v", out, err)
	}
	ten := tenant{"X-Tenant-Id": created["tenantId"], "X-Tenant-Secret": created["secret"]}
	r.must(200, "POST", "/v1/encryptions", ten, `{}`)

	out, err = runCLI(t, url, "tenant", "rotate-secret", created["tenantId"])
	if err != nil || !strings.Contains(out, "secret:") || !strings.Contains(out, "shown only now") {
		t.Fatalf("tenant rotate-secret = %q, %v", out, err)
	}
	if out, err = runCLI(t, url, "tenant", "list"); err != nil || strings.Count(out, created["tenantId"]) != 2 || strings.Contains(out, created["secret"]) {
		t.Errorf("tenant list = %q, %v; want the tenant with two secrets, never a secret's value", out, err)
	}

	// Revoking through the CLI reaches the running service at once.
	if out, err = runCLI(t, url, "tenant", "revoke-secret", created["tenantId"], created["secretId"]); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("tenant revoke-secret = %q, %v", out, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := r.call("POST", "/v1/encryptions", ten, `{}`)
		if code == http.StatusUnauthorized {
			break
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("revoked secret: POST /v1/encryptions = %d, want 401 within moments", code)
		}
		time.Sleep(10 * time.Millisecond)
	}

	for _, args := range [][]string{
		{"tenant"}, {"tenant", "create"}, {"tenant", "frob"}, {"tenant", "rotate-secret", "not-a-uuid"}, {"admin-token"},
	} {
		if _, err := runCLI(t, url, args...); !errors.Is(err, ErrUsage) {
			t.Errorf("%q = %v, want a usage error", args, err)
		}
	}
	if _, err := runCLI(t, url, "tenant", "create", "on-prem"); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Errorf("tenant create with a taken name = %v, want it to say so", err)
	}
}

func TestAdminTokenGenerate(t *testing.T) {
	out, err := runCLI(t, "", "admin-token", "generate")
	if err != nil || !strings.Contains(out, "X-Admin-Token:") || !strings.Contains(out, "ES_ADMIN_TOKEN_HASH=") {
		t.Fatalf("admin-token generate = %q, %v", out, err)
	}
	again, _ := runCLI(t, "", "admin-token", "generate")
	if again == out {
		t.Errorf("two admin-token generate runs printed the same token")
	}
}
