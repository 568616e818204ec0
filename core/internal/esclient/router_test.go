package esclient

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// TestRouterRoutes: a platform tenant goes to the platform's service, hosted tenants to theirs —
// here two separately keyed instances of the real service, each with its own database — and
// neither reaches the other's key contexts.
func TestRouterRoutes(t *testing.T) {
	platformCerts, hostedCerts := testcerts.New(t), testcerts.New(t)
	platformES := estest.Start(t, testdb.NewEmpty(t), platformCerts)
	hostedES := estest.Start(t, testdb.NewEmpty(t), hostedCerts)
	conn, err := Dial(Options{Addr: platformES.GRPCAddr, CAFile: platformCerts.CAFile,
		ClientCertFile: platformCerts.ClientCertFile, ClientKeyFile: platformCerts.ClientKeyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	store := newStore(t)
	box := mustBox(t)
	var lookups atomic.Int32
	counting := lookupFunc(func(ctx context.Context, id uuid.UUID) (postgres.Tenant, error) {
		lookups.Add(1)
		return store.GetTenant(ctx, id)
	})
	r := NewRouter(conn, counting, box, RouterOptions{CacheTTL: 500 * time.Millisecond})
	defer r.Close()

	pID, pSecret := platformES.CreateTenant(t, "platform-tenant")
	onPlatform := platformTenant(t, box, pID, pSecret)
	hID, hSecret := hostedES.CreateTenant(t, "sovereign")
	viaGRPC := hostedTenant(t, box, "grpc", hostedES.GRPCAddr, hostedCerts, hID, hSecret)
	viaHTTPS := hostedTenant(t, box, "https", "https://"+hostedES.HTTPAddr, hostedCerts, hID, hSecret)
	h2ID, h2Secret := hostedES.CreateTenant(t, "sovereign-2")
	alsoViaGRPC := hostedTenant(t, box, "grpc", hostedES.GRPCAddr, hostedCerts, h2ID, h2Secret)
	for _, tenant := range []postgres.Tenant{onPlatform, viaGRPC, viaHTTPS, alsoViaGRPC} {
		mustCreateTenant(t, store, tenant)
	}

	ctx := ctxTimeout(t, time.Minute)
	// Each tenant's credential exists on one service only: a call that succeeds went there.
	contexts := map[string]string{}
	for name, tenant := range map[string]postgres.Tenant{"platform": onPlatform, "grpc": viaGRPC, "https": viaHTTPS} {
		c := mustFor(t, r, tenant.ID)
		id, err := c.CreateContext(ctx, "PLATFORM", nil)
		if err != nil {
			t.Fatalf("%s tenant: CreateContext = %v", name, err)
		}
		contexts[name] = id
	}
	hostedClient := mustFor(t, r, viaGRPC.ID)
	if _, err := hostedClient.GetContext(ctx, contexts["https"]); err != nil {
		t.Errorf("the hosted tenant over gRPC reading its context made over HTTPS = %v", err)
	}
	_, err = hostedClient.GetContext(ctx, contexts["platform"])
	wantKind(t, "hosted tenant reading the platform tenant's context", err, errs.NotFound)
	_, err = mustFor(t, r, onPlatform.ID).GetContext(ctx, contexts["grpc"])
	wantKind(t, "platform tenant reading the hosted tenant's context", err, errs.NotFound)
	_, err = mustFor(t, r, alsoViaGRPC.ID).GetContext(ctx, contexts["grpc"])
	wantKind(t, "another tenant of the hosted service reading its context", err, errs.NotFound)

	// One pooled connection per endpoint: both gRPC tenants of the hosted service share one.
	g1, g2 := mustFor(t, r, viaGRPC.ID).(*grpcClient), mustFor(t, r, alsoViaGRPC.ID).(*grpcClient)
	if g1.call != g2.call || g1.cred == g2.cred {
		t.Errorf("two tenants on one endpoint: shared caller %v, shared credential %v; want the endpoint shared, not the credential",
			g1.call == g2.call, g1.cred == g2.cred)
	}
	if p := mustFor(t, r, onPlatform.ID).(*grpcClient); p.call != r.platform.caller {
		t.Errorf("the platform tenant does not use the platform connection")
	}
	r.mu.Lock()
	n := len(r.endpoints)
	r.mu.Unlock()
	if n != 2 {
		t.Errorf("pooled hosted endpoints = %d, want 2 (the service over gRPC and over HTTPS)", n)
	}

	// Clients are cached for CacheTTL, then the tenant is read again.
	before := lookups.Load()
	if a, b := mustFor(t, r, viaHTTPS.ID), mustFor(t, r, viaHTTPS.ID); a != b {
		t.Errorf("For twice within the TTL gave two clients")
	}
	if got := lookups.Load() - before; got != 0 {
		t.Errorf("For within the TTL read the tenant %d times, want 0", got)
	}
	time.Sleep(600 * time.Millisecond)
	mustFor(t, r, viaHTTPS.ID)
	if got := lookups.Load() - before; got != 1 {
		t.Errorf("For after the TTL read the tenant %d times, want 1", got)
	}
}

func TestRouterErrors(t *testing.T) {
	box := mustBox(t)
	certs := testcerts.New(t)
	const secret = "cts_never-shown"
	remote := uuid.NewString()

	sealedElsewhere := hostedTenant(t, box, "grpc", "127.0.0.1:1", certs, remote, secret)
	// Sealed for another tenant: the associated data binds a sealed secret to its tenant.
	sealedElsewhere.ES.TenantSecretSealed = mustSeal(t, box, []byte(secret), directoryAD(uuid.New(), "tenant-secret"))
	badCA := hostedTenant(t, box, "https", "https://127.0.0.1:1", certs, remote, secret)
	badCA.ES.CABundlePEM = "not a certificate"
	badKey := hostedTenant(t, box, "https", "https://127.0.0.1:1", certs, remote, secret)
	badKey.ES.ClientKeySealed = mustSeal(t, box, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		directoryAD(badKey.ID, "client-key"))
	badURL := hostedTenant(t, box, "https", "http://127.0.0.1:1", certs, remote, secret)
	onPlatform := platformTenant(t, box, remote, secret)

	r := NewRouter(nil, tenants(sealedElsewhere, badCA, badKey, badURL, onPlatform), box, RouterOptions{})
	for _, tc := range []struct {
		name string
		id   uuid.UUID
		kind errs.Kind
		msg  string
	}{
		{"unknown tenant", uuid.New(), errs.NotFound, "not found"},
		{"secret sealed for another tenant", sealedElsewhere.ID, errs.Internal, "cannot open"},
		{"malformed CA bundle", badCA.ID, errs.Internal, "TLS material"},
		{"client key not matching the certificate", badKey.ID, errs.Internal, "TLS material"},
		{"URL not https", badURL.ID, errs.Internal, "https://host"},
		{"platform tenant, no platform service", onPlatform.ID, errs.Internal, "has none configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := r.For(context.Background(), tc.id)
			if c != nil {
				t.Errorf("For = %v, want no client", c)
			}
			wantKind(t, "For", err, tc.kind, tc.msg)
			wantNoLeak(t, "For", err, []byte(secret), []byte("AAAA"))
		})
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	_, err := r.For(context.Background(), badCA.ID)
	wantKind(t, "For after Close", err, errs.Internal, "closed")
}
