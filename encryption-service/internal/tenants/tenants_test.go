package tenants

import (
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// Two replicas share a database. One revokes a secret the other has cached, and no change
// notification reaches the other. While the other is not hearing (its listener is down, or not
// yet connected) it trusts its cache for postgres.UnheardMaxAge only; while it is, until the
// notification (not delivered here) or maxAge.
func TestCachedSecretsWhileUnheard(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := postgres.Open(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	a, b := New(store, nil), New(store, nil)
	clock := time.Now()
	b.now = func() time.Time { return clock }
	actor := Actor{Name: "test"}

	tenant, err := a.Create(ctx, actor, "replicas") // its first secret stays active throughout
	if err != nil {
		t.Fatal(err)
	}
	for _, hearing := range []bool{false, true} {
		victim, err := a.RotateSecret(ctx, actor, tenant.TenantID)
		if err != nil {
			t.Fatal(err)
		}
		accepted := func() bool {
			_, err := b.Authenticate(ctx, tenant.TenantID, victim.Secret)
			if err != nil && !errs.Is(err, errs.Unauthenticated) {
				t.Fatalf("Authenticate() = %v", err)
			}
			return err == nil
		}
		b.Hearing(hearing)
		b.ResetCache()
		if !accepted() {
			t.Fatalf("hearing %v: the new secret is refused", hearing)
		}
		if _, err := a.RevokeSecret(ctx, actor, tenant.TenantID, victim.SecretID); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(postgres.UnheardMaxAge / 2)
		if !accepted() {
			t.Errorf("hearing %v: the revoked secret is refused within UnheardMaxAge of caching, want the cached answer", hearing)
		}
		clock = clock.Add(postgres.UnheardMaxAge)
		if got := accepted(); got != hearing {
			t.Errorf("hearing %v: after UnheardMaxAge the revoked secret is accepted: %v, want %v", hearing, got, hearing)
		}
		clock = clock.Add(b.maxAge)
		if accepted() {
			t.Errorf("hearing %v: the revoked secret is accepted after maxAge", hearing)
		}
	}
}
