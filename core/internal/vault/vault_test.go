package vault

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// fakeES creates and destroys contexts; only those two methods are used.
type fakeES struct {
	esclient.Client

	mu              sync.Mutex
	created, killed []string
}

func (f *fakeES) CreateContext(context.Context, string, []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := uuid.NewString()
	f.created = append(f.created, id)
	return id, nil
}

func (f *fakeES) DestroyContext(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, id)
	return nil
}

type router struct{ es esclient.Client }

func (r router) For(context.Context, uuid.UUID) (esclient.Client, error) { return r.es, nil }

// failingPut is the real store whose PutKeyContext fails as an unreachable database does.
type failingPut struct{ *postgres.Store }

func (failingPut) PutKeyContext(context.Context, postgres.KeyContext) (postgres.KeyContext, error) {
	return postgres.KeyContext{}, errs.E(errs.Unavailable, "the database is unavailable; try again")
}

// A key context created on the encryption service that the database then fails to record is
// destroyed at once, not left unused and unknown.
func TestEnsureContextDiscardsWhatItCannotRecord(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := postgres.Open(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	secret := make([]byte, 60)
	_, _ = rand.Read(secret)
	tenant := postgres.Tenant{ID: uuid.New(), Name: "vault-" + rand.Text(), KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: secret}}
	if err := store.CreateTenant(ctx, tenant, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "tenant.create", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	es := &fakeES{}

	_, err = New(failingPut{store}, router{es}, Limits{}).EnsureContext(ctx, uuid.New(), tenant.ID, nil)
	if !errs.Is(err, errs.Unavailable) {
		t.Fatalf("EnsureContext() with the database failing = %v, want Unavailable", err)
	}
	if len(es.created) != 1 || len(es.killed) != 1 || es.killed[0] != es.created[0] {
		t.Errorf("created %v, destroyed %v; want the created context destroyed", es.created, es.killed)
	}

	// A context the store turns down because the user is gone is queued for erasure by the store
	// instead, not destroyed here.
	es.created, es.killed = nil, nil
	_, err = New(store, router{es}, Limits{}).EnsureContext(ctx, uuid.New(), tenant.ID, nil)
	if !errs.Is(err, errs.NotFound) || len(es.killed) != 0 {
		t.Fatalf("EnsureContext(unknown user) = %v, destroyed %v; want NotFound and nothing destroyed here", err, es.killed)
	}
	if _, err := store.GetErasure(ctx, uuid.MustParse(es.created[0])); err != nil {
		t.Errorf("the unknown user's context is not queued for erasure: %v", err)
	}
}
