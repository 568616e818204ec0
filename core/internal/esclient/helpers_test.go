package esclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/testcerts"
)

// lookupFunc is a TenantLookup made of a function.
type lookupFunc func(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)

func (f lookupFunc) GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error) {
	return f(ctx, id)
}

// tenants is an in-memory TenantLookup.
func tenants(ts ...postgres.Tenant) lookupFunc {
	return func(_ context.Context, id uuid.UUID) (postgres.Tenant, error) {
		for _, t := range ts {
			if t.ID == id {
				return t, nil
			}
		}
		return postgres.Tenant{}, errs.E(errs.NotFound, "tenant %s not found", id)
	}
}

func mustBox(tb testing.TB) *secretbox.Box {
	tb.Helper()
	b, err := secretbox.NewBox([]secretbox.Key{{ID: "k1", Bytes: randomBytes(tb, secretbox.KeySize)}}, "k1")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustSeal(tb testing.TB, box *secretbox.Box, plaintext, ad []byte) []byte {
	tb.Helper()
	blob, err := box.Seal(plaintext, ad)
	if err != nil {
		tb.Fatal(err)
	}
	return blob
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// hostedTenant returns a tenant on a hosted encryption service at url, trusting certs' CA and
// presenting its client certificate, with its remote id and secret sealed as package directory
// seals them.
func hostedTenant(tb testing.TB, box *secretbox.Box, protocol, url string, certs *testcerts.Set, remoteID, secret string) postgres.Tenant {
	tb.Helper()
	id := uuid.New()
	return postgres.Tenant{
		ID: id, Name: "hosted-" + id.String()[:8], KeyMode: postgres.KeyModePlatform,
		ES: postgres.ESEndpoint{
			Kind: postgres.ESKindHosted, URL: url, Protocol: protocol,
			CABundlePEM:        readFile(tb, certs.CAFile),
			ClientCertPEM:      readFile(tb, certs.ClientCertFile),
			ClientKeySealed:    mustSeal(tb, box, []byte(readFile(tb, certs.ClientKeyFile)), directoryAD(id, "client-key")),
			TenantID:           uuid.MustParse(remoteID),
			TenantSecretSealed: mustSeal(tb, box, []byte(secret), directoryAD(id, "tenant-secret")),
		},
	}
}

// platformTenant returns a tenant on the platform's encryption service.
func platformTenant(tb testing.TB, box *secretbox.Box, remoteID, secret string) postgres.Tenant {
	tb.Helper()
	id := uuid.New()
	return postgres.Tenant{
		ID: id, Name: "platform-" + id.String()[:8], KeyMode: postgres.KeyModePlatform,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.MustParse(remoteID),
			TenantSecretSealed: mustSeal(tb, box, []byte(secret), directoryAD(id, "tenant-secret"))},
	}
}

// directoryAD is written out here rather than calling endpointAD, so that the test notices when
// the client stops matching what package directory seals with.
func directoryAD(tenantID uuid.UUID, what string) []byte {
	return []byte("custos/core/tenant-endpoint/v1\x00" + tenantID.String() + "\x00" + what)
}

func mustFor(tb testing.TB, r *Router, id uuid.UUID) Client {
	tb.Helper()
	c, err := r.For(context.Background(), id)
	if err != nil {
		tb.Fatalf("For(%s) = %v", id, err)
	}
	return c
}

// wantKind fails the test unless err is an *errs.Error of kind whose message contains each of
// want.
func wantKind(tb testing.TB, what string, err error, kind errs.Kind, want ...string) {
	tb.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		tb.Fatalf("%s = %v, want an *errs.Error of kind %v", what, err, kind)
	}
	if e.Kind != kind {
		tb.Fatalf("%s = %v (kind %v), want kind %v", what, err, e.Kind, kind)
	}
	for _, w := range want {
		if !strings.Contains(e.Message, w) {
			tb.Errorf("%s message = %q, want it to contain %q", what, e.Message, w)
		}
	}
}

// wantNoLeak fails the test if err's text (message and causes) holds any of secrets.
func wantNoLeak(tb testing.TB, what string, err error, secrets ...[]byte) {
	tb.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if len(s) > 0 && bytes.Contains([]byte(err.Error()), s) {
			tb.Errorf("%s = %v: holds a secret", what, err)
		}
	}
}

func ctxTimeout(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}
