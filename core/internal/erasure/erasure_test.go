package erasure

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// fakeES destroys contexts it knows; fail, when set, answers every call instead.
type fakeES struct {
	esclient.Client // only DestroyContext is used

	mu        sync.Mutex
	known     map[string]bool
	destroyed []string
	fail      error
}

func (f *fakeES) DestroyContext(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if !f.known[id] {
		return errs.E(errs.NotFound, "key context not found")
	}
	delete(f.known, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}

func (f *fakeES) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeES) gone() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.destroyed...)
}

// fakeAdmin destroys tenants it knows, as fakeES does contexts.
type fakeAdmin struct {
	mu        sync.Mutex
	known     map[uuid.UUID]bool
	destroyed []uuid.UUID
	fail      error
}

func (a *fakeAdmin) DestroyTenant(_ context.Context, id uuid.UUID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	if !a.known[id] {
		return errs.E(errs.NotFound, "the encryption service does not know the tenant")
	}
	delete(a.known, id)
	a.destroyed = append(a.destroyed, id)
	return nil
}

func (a *fakeAdmin) setFail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = err
}

func (a *fakeAdmin) gone() []uuid.UUID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uuid.UUID(nil), a.destroyed...)
}

type router struct{ es esclient.Client }

func (r router) For(context.Context, uuid.UUID) (esclient.Client, error) { return r.es, nil }

type env struct {
	store          *postgres.Store
	es             *fakeES
	admin          *fakeAdmin
	tenant         uuid.UUID
	erased, failed int
	mu             sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, err := postgres.Open(t.Context(), testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := &env{store: postgres.NewStore(pool), es: &fakeES{known: map[string]bool{}}, admin: &fakeAdmin{known: map[uuid.UUID]bool{}}}
	e.tenant, _ = e.newTenant(t)
	return e
}

// newTenant creates a tenant on the platform's encryption service, known to the fake admin plane,
// and returns its ids in core and on the service.
func (e *env) newTenant(t *testing.T) (id, esID uuid.UUID) {
	t.Helper()
	secret := make([]byte, 60)
	_, _ = rand.Read(secret)
	id, esID = uuid.New(), uuid.New()
	err := e.store.CreateTenant(t.Context(), postgres.Tenant{
		ID: id, Name: "tenant-" + rand.Text(), KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: esID, TenantSecretSealed: secret},
	}, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "tenant.create", Outcome: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	e.admin.mu.Lock()
	e.admin.known[esID] = true
	e.admin.mu.Unlock()
	return id, esID
}

// queue makes a context the fake knows and queues it for erasure (as unused: due at once).
func (e *env) queue(t *testing.T) uuid.UUID {
	t.Helper()
	id := uuid.New()
	e.es.mu.Lock()
	e.es.known[id.String()] = true
	e.es.mu.Unlock()
	_, err := e.store.PutKeyContext(t.Context(), postgres.KeyContext{UserID: uuid.New(), TenantID: e.tenant, EncryptionID: id, KeyMode: "PLATFORM"})
	if !errs.Is(err, errs.NotFound) {
		t.Fatalf("PutKeyContext(unknown user) = %v, want NotFound with the context queued", err)
	}
	return id
}

func (e *env) service(opts Options) *Service {
	opts.Metrics = Metrics{
		KeyErased:        func() { e.mu.Lock(); e.erased++; e.mu.Unlock() },
		KeyErasureFailed: func() { e.mu.Lock(); e.failed++; e.mu.Unlock() },
	}
	return New(e.store, router{e.es}, e.admin, opts)
}

func (e *env) counts() (erased, failed int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.erased, e.failed
}

func TestEraseDestroysOrDefers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	s := e.service(Options{FirstRetry: time.Minute})

	// Destroyed: the row goes.
	id := e.queue(t)
	pending, err := e.store.GetErasure(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Erase(ctx, pending) {
		t.Fatal("Erase() = false, want the context destroyed")
	}
	if got := e.es.gone(); len(got) != 1 || got[0] != id.String() {
		t.Errorf("destroyed %v, want %s", got, id)
	}
	if _, err := e.store.GetErasure(ctx, id); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(destroyed) = %v, want NotFound", err)
	}

	// Unknown to the service (destroyed before, by an attempt whose answer was lost): done too.
	lost := e.queue(t)
	e.es.mu.Lock()
	delete(e.es.known, lost.String())
	e.es.mu.Unlock()
	if !s.Erase(ctx, postgres.Erasure{EncryptionID: lost, TenantID: e.tenant}) {
		t.Error("Erase(context the service no longer knows) = false, want true")
	}
	if _, err := e.store.GetErasure(ctx, lost); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(already gone) = %v, want NotFound", err)
	}

	// Unreachable, or lacking the method: deferred with the reason, never dropped.
	for _, cause := range []error{
		errs.E(errs.Unavailable, "the encryption service is unavailable; try again"),
		errs.E(errs.FailedPrecondition, "the encryption service cannot destroy key contexts (DELETE /v1/encryptions/{encryptionId})"),
	} {
		e.es.setFail(cause)
		id := e.queue(t)
		before := time.Now()
		if s.Erase(ctx, postgres.Erasure{EncryptionID: id, TenantID: e.tenant}) {
			t.Fatalf("Erase() with %v = true, want false", cause)
		}
		got, err := e.store.GetErasure(ctx, id)
		if err != nil || got.Attempts != 1 || got.LastError != safeMessage(cause) || got.NextAttemptAt.Before(before.Add(29*time.Second)) {
			t.Errorf("after a failed attempt (%v): %+v, %v; want attempts 1, the reason, and a retry in 30 s to 1 min", cause, got, err)
		}
	}
	e.es.setFail(nil)
	if erased, failed := e.counts(); erased != 2 || failed != 2 {
		t.Errorf("metrics: erased %d, failed %d; want 2 and 2", erased, failed)
	}
}

// Run retries what failed until the service answers, and counts the backlog.
func TestRunRetriesUntilErased(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.es.setFail(errs.E(errs.Unavailable, "the encryption service is unavailable; try again"))
	ids := []uuid.UUID{e.queue(t), e.queue(t), e.queue(t)}
	s := e.service(Options{PollInterval: 20 * time.Millisecond, FirstRetry: 20 * time.Millisecond, MaxRetry: 40 * time.Millisecond, Batch: 2})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	waitFor(t, "failed attempts on all three", func() bool { _, failed := e.counts(); return failed >= 3 })
	waitFor(t, "the backlog counted", func() bool { return s.Pending() == 3 })
	e.es.setFail(nil)
	waitFor(t, "all three destroyed", func() bool { return len(e.es.gone()) == 3 })
	waitFor(t, "an empty backlog", func() bool { return s.Pending() == 0 })
	for _, id := range ids {
		if _, err := e.store.GetErasure(t.Context(), id); !errs.Is(err, errs.NotFound) {
			t.Errorf("GetErasure(%s) after Run = %v, want NotFound", id, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil when its context ends", err)
	}
}

// A deleted tenant is destroyed on the platform's encryption service, at once or by Run; without
// an admin plane (no admin token) it waits, saying why.
func TestTenantErasures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	audit := postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "tenant.delete", Outcome: "ok"}
	deleteTenant := func() postgres.TenantErasure {
		t.Helper()
		id, esID := e.newTenant(t)
		tn, err := e.store.GetTenant(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		te, err := e.store.DeleteTenant(ctx, id, tn.Name, audit)
		if err != nil || te == nil || te.ESTenantID != esID || te.TenantID != id {
			t.Fatalf("DeleteTenant() = %+v, %v; want the erasure of %s", te, err, esID)
		}
		return *te
	}

	s := e.service(Options{PollInterval: 20 * time.Millisecond, FirstRetry: 20 * time.Millisecond, MaxRetry: 40 * time.Millisecond})
	now := deleteTenant()
	if !s.EraseTenant(ctx, now) {
		t.Fatal("EraseTenant() = false, want the tenant destroyed")
	}
	if _, err := e.store.GetTenantErasure(ctx, now.ESTenantID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetTenantErasure(destroyed) = %v, want NotFound", err)
	}

	e.admin.setFail(errs.E(errs.Unavailable, "the encryption service cannot be reached; try again"))
	later := deleteTenant()
	if s.EraseTenant(ctx, later) {
		t.Fatal("EraseTenant() with the service down = true, want false")
	}
	if got, err := e.store.GetTenantErasure(ctx, later.ESTenantID); err != nil || got.Attempts != 1 || got.LastError != "unavailable: the encryption service cannot be reached; try again" {
		t.Errorf("after a failed attempt: %+v, %v; want attempts 1 and the reason", got, err)
	}
	ctxRun, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctxRun) }()
	e.admin.setFail(nil)
	waitFor(t, "the second tenant destroyed by Run", func() bool { return len(e.admin.gone()) == 2 })
	waitFor(t, "an empty backlog", func() bool { return s.Pending() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil when its context ends", err)
	}
	if got := e.admin.gone(); got[0] != now.ESTenantID || got[1] != later.ESTenantID {
		t.Errorf("destroyed %v, want %s then %s", got, now.ESTenantID, later.ESTenantID)
	}

	noAdmin := New(e.store, router{e.es}, nil, Options{})
	third := deleteTenant()
	if noAdmin.EraseTenant(ctx, third) {
		t.Fatal("EraseTenant() without an admin plane = true, want false")
	}
	if got, err := e.store.GetTenantErasure(ctx, third.ESTenantID); err != nil || got.LastError != safeMessage(errNoAdmin) {
		t.Errorf("without an admin plane: %+v, %v; want the reason naming CORE_ES_ADMIN_TOKEN", got, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBackoffDoublesWithinBounds(t *testing.T) {
	t.Parallel()
	s := New(nil, nil, nil, Options{FirstRetry: time.Second, MaxRetry: 10 * time.Second})
	for attempts, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 50: 10 * time.Second} {
		for range 20 {
			if got := s.backoff(attempts); got < want/2 || got > want {
				t.Errorf("backoff(%d) = %v, want within [%v, %v]", attempts, got, want/2, want)
			}
		}
	}
}

func TestSafeMessageHidesForeignErrors(t *testing.T) {
	t.Parallel()
	if got := safeMessage(context.DeadlineExceeded); got != "internal error" {
		t.Errorf("safeMessage(a plain error) = %q, want \"internal error\"", got)
	}
	if got := safeMessage(errs.Wrap(errs.Unavailable, context.DeadlineExceeded, "down")); got != "unavailable: down" {
		t.Errorf("safeMessage(errs) = %q, want the kind and the message only", got)
	}
}
