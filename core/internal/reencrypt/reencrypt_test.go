package reencrypt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/testdb"
	"github.com/custos-platform/custos/core/internal/vault"
)

var sysAudit = postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "test", Outcome: postgres.OutcomeOK}

// env is a tenant on a fake encryption service, over a real database.
type env struct {
	store  *postgres.Store
	es     *fakeES
	tenant postgres.Tenant
	admin  principal.Principal
}

func newEnv(tb testing.TB, keyMode string) *env {
	tb.Helper()
	pool, err := postgres.Open(context.Background(), testdb.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return newTenant(tb, postgres.NewStore(pool), keyMode)
}

// sibling is another tenant in e's database, on an encryption service of its own.
func (e *env) sibling(tb testing.TB, keyMode string) *env {
	tb.Helper()
	return newTenant(tb, e.store, keyMode)
}

// newTenant creates a tenant with an admin in store, on a new fake encryption service.
func newTenant(tb testing.TB, store *postgres.Store, keyMode string) *env {
	tb.Helper()
	ctx := context.Background()
	e := &env{store: store, es: newFakeES()}
	e.tenant = postgres.Tenant{ID: uuid.New(), Name: "t-" + uuid.NewString()[:8], KeyMode: keyMode, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: make([]byte, 60)}}
	if err := e.store.CreateTenant(ctx, e.tenant, sysAudit); err != nil {
		tb.Fatal(err)
	}
	e.admin, _ = e.user(tb, principal.RoleAdmin, nil)
	return e
}

// user creates a person of the tenant with their key context (a CLIENT one under key).
func (e *env) user(tb testing.TB, role string, key []byte) (principal.Principal, postgres.KeyContext) {
	tb.Helper()
	ctx := context.Background()
	u := postgres.User{ID: uuid.New(), TenantID: e.tenant.ID, Username: role + "-" + uuid.NewString()[:8], Role: role,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", SecurityStamp: "s",
		KDF: postgres.KDF{Salt: []byte("salt"), MemoryKiB: 65536, Iterations: 3, Parallelism: 4}}
	if err := e.store.CreateUser(ctx, u, sysAudit); err != nil {
		tb.Fatal(err)
	}
	mode := postgres.KeyModePlatform
	if key != nil {
		mode = postgres.KeyModeClient
	}
	id, _ := e.es.CreateContext(ctx, mode, key)
	kc, err := e.store.PutKeyContext(ctx, postgres.KeyContext{UserID: u.ID, TenantID: e.tenant.ID, EncryptionID: uuid.MustParse(id), KeyMode: mode})
	if err != nil {
		tb.Fatal(err)
	}
	return principal.Principal{Kind: principal.User, ID: u.ID, TenantID: e.tenant.ID, Role: role}, kc
}

// items stores n items of p, encrypted under kc's active version; item i holds "<prefix> i".
func (e *env) items(tb testing.TB, p principal.Principal, kc postgres.KeyContext, key []byte, prefix string, n int) []uuid.UUID {
	tb.Helper()
	ctx := context.Background()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ct, err := e.es.Encrypt(ctx, kc.EncryptionID.String(), fmt.Sprintf("%s %d", prefix, i), key)
		if err != nil {
			tb.Fatal(err)
		}
		it, err := e.store.CreateItem(ctx, postgres.Item{ID: uuid.New(), TenantID: e.tenant.ID, OwnerID: p.ID, CipherText: ct.CipherText,
			EncryptionID: kc.EncryptionID, VersionID: uuid.MustParse(ct.VersionID), Algorithm: ct.Algorithm, Metadata: ct.Metadata}, sysAudit)
		if err != nil {
			tb.Fatal(err)
		}
		ids[i] = it.ID
	}
	return ids
}

// read decrypts one item of owner p and reports its version.
func (e *env) read(tb testing.TB, p principal.Principal, id uuid.UUID, key []byte) (string, uuid.UUID) {
	tb.Helper()
	it, err := e.store.GetItem(context.Background(), p.ID, id)
	if err != nil {
		tb.Fatalf("GetItem(%s) = %v", id, err)
	}
	data, err := e.es.Decrypt(context.Background(), vault.Ciphertext(it), key)
	if err != nil {
		tb.Fatalf("Decrypt(item %s) = %v", id, err)
	}
	return data, it.VersionID
}

// wantAllRead checks that every item of ids reads back as "<prefix> i" from kc's active version.
func (e *env) wantAllRead(tb testing.TB, p principal.Principal, kc postgres.KeyContext, key []byte, prefix string, ids []uuid.UUID) {
	tb.Helper()
	info, _ := e.es.GetContext(context.Background(), kc.EncryptionID.String())
	for i, id := range ids {
		data, ver := e.read(tb, p, id, key)
		if want := fmt.Sprintf("%s %d", prefix, i); data != want || ver.String() != info.ActiveVersionID {
			tb.Errorf("item %d reads %q on version %s, want %q on the active %s", i, data, ver, want, info.ActiveVersionID)
		}
	}
}

func testOptions(id string) Options {
	return Options{PageSize: 50, Lease: 600 * time.Millisecond, PollInterval: 50 * time.Millisecond,
		RetryMin: 5 * time.Millisecond, RetryMax: 40 * time.Millisecond, WorkerID: id}
}

// run starts s's worker until the test ends (or stop is called) and checks it returns nil.
func run(tb testing.TB, s *Service) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run() = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				tb.Error("Run() did not return within 15s of cancel")
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

func as(p principal.Principal) context.Context {
	return principal.NewContext(context.Background(), p)
}

func waitJob(tb testing.TB, s *Service, p principal.Principal, id uuid.UUID) postgres.Job {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := s.GetJob(as(p), id)
		if err != nil {
			tb.Fatalf("GetJob() = %v", err)
		}
		if j.Final() {
			return j
		}
		if time.Now().After(deadline) {
			tb.Fatalf("job %s still %s after 30s: %+v", id, j.State, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRotateKeysOneAtATime: the job is created before any context rotates and held until every
// one has, so a second rotation at the same moment is refused before it rotates anything (each
// context gets exactly one new version) and no worker moves items to versions about to be
// replaced; a rotation that fails part-way ends its job at once, so that rotating again works.
func TestRotateKeysOneAtATime(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	s := New(e.store, router{e.es}, testOptions("a"))
	run(t, s)
	for range 3 {
		p, kc := e.user(t, principal.RoleMember, nil)
		e.items(t, p, kc, nil, "x", 2)
	}
	kcs, err := e.store.KeyContexts(context.Background(), e.admin.TenantID)
	if err != nil {
		t.Fatal(err)
	}

	inside, leave := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.es.mu.Lock()
	e.es.beforeRotate = func(string) error {
		once.Do(func() { close(inside) })
		<-leave
		return nil
	}
	e.es.mu.Unlock()
	type result struct {
		n   int
		job postgres.Job
		err error
	}
	first := make(chan result, 1)
	go func() {
		n, job, err := s.RotateKeys(as(e.admin), Call{})
		first <- result{n, job, err}
	}()
	<-inside
	if n, _, err := s.RotateKeys(as(e.admin), Call{}); !errs.Is(err, errs.FailedPrecondition) || n != 0 {
		t.Errorf("a second RotateKeys() during the first = %d, %v; want FailedPrecondition before rotating anything", n, err)
	}
	if j, found, err := e.store.UnfinishedJob(context.Background(), e.admin.TenantID, uuid.Nil); err != nil || !found || j.State != postgres.JobRunning || j.Done != 0 {
		t.Errorf("the job while its contexts rotate = %+v, %v, %v; want it held (RUNNING), nothing moved", j, found, err)
	}
	close(leave)
	r := <-first
	if r.err != nil || r.n != len(kcs) || r.job.State != postgres.JobPending {
		t.Fatalf("RotateKeys() = %d, %+v, %v; want all %d contexts rotated and a PENDING job", r.n, r.job, r.err, len(kcs))
	}
	if end := waitJob(t, s, e.admin, r.job.ID); end.State != postgres.JobSucceeded || end.Done != 6 {
		t.Errorf("job = %+v, want SUCCEEDED with 6 items moved", end)
	}
	for _, kc := range kcs {
		if c, _ := e.es.GetContext(context.Background(), kc.EncryptionID.String()); len(c.Versions) != 2 {
			t.Errorf("context %s has %d versions, want 2: rotated exactly once", kc.EncryptionID, len(c.Versions))
		}
	}

	// The second context refuses: the job ends FAILED at once, and a retry is not refused.
	var calls atomic.Int64
	e.es.mu.Lock()
	e.es.beforeRotate = func(string) error {
		if calls.Add(1) == 2 {
			return errs.E(errs.Unavailable, "the encryption service is unavailable; try again")
		}
		return nil
	}
	e.es.mu.Unlock()
	if _, _, err := s.RotateKeys(as(e.admin), Call{}); !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "rotate again") {
		t.Fatalf("RotateKeys() with a refusing service = %v, want Unavailable saying to rotate again", err)
	}
	if _, found, err := e.store.UnfinishedJob(context.Background(), e.admin.TenantID, uuid.Nil); err != nil || found {
		t.Errorf("an unfinished job after the failed rotation (%v, %v): want it ended", found, err)
	}
	e.es.mu.Lock()
	e.es.beforeRotate = nil
	e.es.mu.Unlock()
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatalf("RotateKeys() after a failed one = %v", err)
	}
	waitJob(t, s, e.admin, job.ID)
}

// TestTenantJob rotates a tenant whose people have platform-managed and zero-knowledge contexts:
// the job moves the platform ones page by page and reports the others as waiting.
func TestTenantJob(t *testing.T) {
	e := newEnv(t, postgres.KeyModeClient)
	var retries, moved atomic.Int64
	opts := testOptions("a")
	opts.Metrics = Metrics{Retry: func() { retries.Add(1) }, ItemsMoved: func(n int64) { moved.Add(n) }}
	s := New(e.store, router{e.es}, opts)
	run(t, s)

	p1, kc1 := e.user(t, principal.RoleMember, nil)
	p2, kc2 := e.user(t, principal.RoleMember, nil)
	key := []byte(strings.Repeat("k", 32))
	zk, zkc := e.user(t, principal.RoleMember, key)
	ids1 := e.items(t, p1, kc1, nil, "one", 120)
	ids2 := e.items(t, p2, kc2, nil, "two", 7)
	zids := e.items(t, zk, zkc, key, "zk", 5)

	// The service is unavailable for a while in the middle.
	e.es.hook(func(_ context.Context, call int, _ []esclient.Ciphertext) error {
		if call >= 2 && call <= 4 {
			return errs.E(errs.Unavailable, "the encryption service is unavailable; try again")
		}
		return nil
	})
	n, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil || n != 4 {
		t.Fatalf("RotateKeys() = %d, %v; want all 4 contexts rotated", n, err)
	}
	if _, _, err := s.RotateKeys(as(e.admin), Call{}); !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), job.ID.String()) {
		t.Errorf("RotateKeys() again while the job runs = %v, want FailedPrecondition naming the job", err)
	}
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobWaitingForKey || end.Total != 127 || end.Done != 127 || end.Failed != 0 || end.WaitingItems != 5 ||
		!strings.Contains(end.Message, "5 items in 1 zero-knowledge") {
		t.Errorf("job = %+v; want WAITING_FOR_KEY with 127 moved and 5 waiting", end)
	}
	e.wantAllRead(t, p1, kc1, nil, "one", ids1)
	e.wantAllRead(t, p2, kc2, nil, "two", ids2)
	zinfo, _ := e.es.GetContext(context.Background(), zkc.EncryptionID.String())
	for _, id := range zids {
		if _, ver := e.read(t, zk, id, key); ver.String() == zinfo.ActiveVersionID {
			t.Errorf("zero-knowledge item %s moved without its owner's key", id)
		}
	}
	if retries.Load() < 3 || moved.Load() != 127 {
		t.Errorf("metrics: %d retries, %d moved; want at least 3 retries and 127 moved", retries.Load(), moved.Load())
	}

	// The owner moves their own items with their key; a wrong key is refused before any job.
	if _, err := s.StartReencryption(as(zk), Call{MasterKey: []byte(strings.Repeat("w", 32))}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("StartReencryption(wrong key) = %v, want PermissionDenied", err)
	}
	if _, err := s.StartReencryption(as(zk), Call{}); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("StartReencryption(member without key) = %v, want PermissionDenied", err)
	}
	oj, err := s.StartReencryption(as(zk), Call{MasterKey: key})
	if err != nil || oj.State != postgres.JobRunning {
		t.Fatalf("StartReencryption(owner's key) = %+v, %v; want a RUNNING job", oj, err)
	}
	if _, err := s.GetJob(as(p1), oj.ID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetJob(another member's job) = %v, want NotFound", err)
	}
	end = waitJob(t, s, zk, oj.ID)
	if end.State != postgres.JobSucceeded || end.Done != 5 {
		t.Errorf("owner's job = %+v; want SUCCEEDED with 5 moved", end)
	}
	e.wantAllRead(t, zk, zkc, key, "zk", zids)
}

// TestEditsDuringAJobSurvive edits items after the job read them and before it writes them.
func TestEditsDuringAJobSurvive(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	s := New(e.store, router{e.es}, testOptions("a"))
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 120)
	edited := map[uuid.UUID]string{}
	e.es.hook(func(ctx context.Context, call int, items []esclient.Ciphertext) error {
		if call > 2 {
			return nil
		}
		// The owner edits the first item of this page (now under the active version).
		it, err := e.store.GetItem(ctx, p.ID, itemWith(t, e, p, items[0]))
		if err != nil {
			return err
		}
		data := "edited during the job " + it.ID.String()
		ct, err := e.es.Encrypt(ctx, kc.EncryptionID.String(), data, nil)
		if err != nil {
			return err
		}
		upd := postgres.Item{CipherText: ct.CipherText, EncryptionID: kc.EncryptionID, VersionID: uuid.MustParse(ct.VersionID),
			Algorithm: ct.Algorithm, Metadata: ct.Metadata}
		if _, err := e.store.UpdateItem(ctx, p.ID, it.ID, it.Revision, upd, sysAudit); err != nil {
			return err
		}
		edited[it.ID] = data
		return nil
	})
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobSucceeded || end.Total != 120 || end.Done+end.Skipped != end.Total || end.Skipped < 2 {
		t.Errorf("job = %+v; want SUCCEEDED, the 2 edited items skipped", end)
	}
	if len(edited) != 2 {
		t.Fatalf("edited %d items, want 2", len(edited))
	}
	for id, want := range edited {
		if got, _ := e.read(t, p, id, nil); got != want {
			t.Errorf("edited item %s reads %q, want the edit %q", id, got, want)
		}
	}
	for i, id := range ids {
		if _, ok := edited[id]; ok {
			continue
		}
		if got, _ := e.read(t, p, id, nil); got != fmt.Sprintf("item %d", i) {
			t.Errorf("item %d reads %q", i, got)
		}
	}
}

// itemWith finds the id of p's item holding ciphertext ct.
func itemWith(tb testing.TB, e *env, p principal.Principal, ct esclient.Ciphertext) uuid.UUID {
	tb.Helper()
	items, _, err := e.store.ItemsToMove(context.Background(), e.tenant.ID, uuid.MustParse(ct.EncryptionID), uuid.New(), uuid.Nil, 1000, 1<<30)
	if err != nil {
		tb.Fatal(err)
	}
	for _, it := range items {
		if it.CipherText == ct.CipherText && it.OwnerID == p.ID {
			return it.ID
		}
	}
	tb.Fatal("no item holds the ciphertext")
	return uuid.Nil
}

// frozenStore is a replica that stopped dead: once frozen, every call fails as if the database
// were unreachable from it, so it neither renews its lease nor writes.
type frozenStore struct {
	*postgres.Store
	frozen atomic.Bool
}

var errFrozen = errs.E(errs.Unavailable, "database unavailable")

func (f *frozenStore) RenewLease(ctx context.Context, id uuid.UUID, lease postgres.Lease, message *string) error {
	if f.frozen.Load() {
		return errFrozen
	}
	return f.Store.RenewLease(ctx, id, lease, message)
}

func (f *frozenStore) ApplyPage(ctx context.Context, id uuid.UUID, lease postgres.Lease, encryptionID uuid.UUID, p postgres.Page) (postgres.Applied, error) {
	if f.frozen.Load() {
		return postgres.Applied{}, errFrozen
	}
	return f.Store.ApplyPage(ctx, id, lease, encryptionID, p)
}

func (f *frozenStore) ItemsToMove(ctx context.Context, tenantID, encryptionID, activeVersionID, after uuid.UUID, limit int, maxBytes int64) ([]postgres.Item, bool, error) {
	if f.frozen.Load() {
		return nil, false, errFrozen
	}
	return f.Store.ItemsToMove(ctx, tenantID, encryptionID, activeVersionID, after, limit, maxBytes)
}

func (f *frozenStore) ClaimJob(ctx context.Context, lease postgres.Lease) (postgres.Job, bool, error) {
	if f.frozen.Load() {
		return postgres.Job{}, false, errFrozen
	}
	return f.Store.ClaimJob(ctx, lease)
}

func (f *frozenStore) ReleaseJob(ctx context.Context, id uuid.UUID, owner string) error {
	if f.frozen.Load() {
		return errFrozen
	}
	return f.Store.ReleaseJob(ctx, id, owner)
}

// TestJobResumesWhenItsReplicaDies stops replica a dead in the middle of a job: b takes the job
// over when a's lease expires and finishes it from the checkpoint; when a comes back it finds the
// job taken and stops, writing nothing.
func TestJobResumesWhenItsReplicaDies(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	fa := &frozenStore{Store: e.store}
	a := New(fa, router{e.es}, testOptions("a"))
	b := New(e.store, router{e.es}, testOptions("b"))
	run(t, a)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 230)

	died := make(chan struct{})
	e.es.hook(func(_ context.Context, call int, _ []esclient.Ciphertext) error {
		if call == 3 {
			fa.frozen.Store(true)
			close(died)
		}
		return nil
	})
	_, job, err := a.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	<-died
	mid, _ := e.store.GetJob(context.Background(), e.tenant.ID, job.ID)
	if mid.Done != 100 || !strings.HasPrefix(mid.LeaseOwner, "a/") {
		t.Fatalf("when a died the job was %+v; want 2 pages of 50 done, held by a", mid)
	}
	run(t, b)
	end := waitJob(t, b, e.admin, job.ID)
	if end.State != postgres.JobSucceeded || end.Total != 230 || end.Done != 230 || end.Skipped != 0 {
		t.Errorf("job = %+v; want SUCCEEDED, 230 moved exactly once", end)
	}
	fa.frozen.Store(false) // a comes back: its pending page finds the job taken over
	time.Sleep(200 * time.Millisecond)
	after, _ := e.store.GetJob(context.Background(), e.tenant.ID, job.ID)
	if after.Done != 230 || after.State != postgres.JobSucceeded {
		t.Errorf("after a came back the job is %+v, want it unchanged", after)
	}
	e.wantAllRead(t, p, kc, nil, "item", ids)
}

// TestShutdownHandsJobsOver stops a replica mid-job: another takes the job at once (its lease is
// released, not left to expire), and an owner's job, whose key only the stopped replica had,
// ends WAITING_FOR_KEY.
func TestShutdownHandsJobsOver(t *testing.T) {
	e := newEnv(t, postgres.KeyModeClient)
	optsA := testOptions("a")
	optsA.Lease = time.Minute // b could not wait for it to expire
	a := New(e.store, router{e.es}, optsA)
	stopA := run(t, a)
	p, kc := e.user(t, principal.RoleMember, nil)
	key := []byte(strings.Repeat("k", 32))
	zk, zkc := e.user(t, principal.RoleMember, key)
	e.items(t, p, kc, nil, "item", 60)
	e.items(t, zk, zkc, key, "zk", 60)

	// Every rewrap hangs until shutdown, except the probe of the owner's key (their first call).
	stuck := make(chan struct{}, 2)
	var mu sync.Mutex
	probed := false
	e.es.hook(func(ctx context.Context, _ int, items []esclient.Ciphertext) error {
		mu.Lock()
		probe := !probed && items[0].EncryptionID == zkc.EncryptionID.String()
		probed = probed || probe
		mu.Unlock()
		if probe {
			return nil
		}
		stuck <- struct{}{}
		<-ctx.Done()
		return errs.E(errs.Unavailable, "the encryption service is unavailable; try again")
	})
	_, job, err := a.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	oj, err := a.StartReencryption(as(zk), Call{MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	<-stuck
	<-stuck
	if n := a.Running(); n != 2 {
		t.Errorf("Running() with both jobs stuck = %d, want 2", n)
	}
	stopA()
	if n := a.Running(); n != 0 {
		t.Errorf("Running() after shutdown = %d, want 0", n)
	}
	if got, _ := e.store.GetJob(context.Background(), e.tenant.ID, oj.ID); got.State != postgres.JobWaitingForKey || !strings.Contains(got.Message, "X-Master-Key") {
		t.Errorf("owner's job after its replica stopped = %s %q; want WAITING_FOR_KEY asking for X-Master-Key", got.State, got.Message)
	}
	e.es.hook(nil)
	b := New(e.store, router{e.es}, testOptions("b"))
	run(t, b)
	if end := waitJob(t, b, e.admin, job.ID); end.Done != 60 || end.WaitingItems != 60 {
		t.Errorf("tenant job finished by b = %+v; want 60 moved, 60 waiting", end)
	}
}

// TestOwnerJobOfADeadReplica is an owner's job whose replica died: whoever claims it cannot go
// on without the key.
func TestOwnerJobOfADeadReplica(t *testing.T) {
	e := newEnv(t, postgres.KeyModeClient)
	key := []byte(strings.Repeat("k", 32))
	zk, _ := e.user(t, principal.RoleMember, key)
	j, err := e.store.CreateJob(context.Background(), postgres.Job{TenantID: e.tenant.ID, Scope: postgres.JobScopeOwner, OwnerID: zk.ID,
		CreatedByType: postgres.ActorUser, CreatedBy: zk.ID}, postgres.Lease{Owner: "dead/1", For: time.Millisecond}, sysAudit)
	if err != nil {
		t.Fatal(err)
	}
	s := New(e.store, router{e.es}, testOptions("b"))
	run(t, s)
	end := waitJob(t, s, zk, j.ID)
	if end.State != postgres.JobWaitingForKey || !strings.Contains(end.Message, "start the job again with X-Master-Key") {
		t.Errorf("job = %s %q; want WAITING_FOR_KEY asking to start again", end.State, end.Message)
	}
}

func TestKeyStatusAndDisable(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	s := New(e.store, router{e.es}, testOptions("a"))
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 10)
	v1, _ := e.es.GetContext(context.Background(), kc.EncryptionID.String())
	old := v1.ActiveVersionID

	// The job's rewraps wait until release: meanwhile the items are on the old version.
	release := make(chan struct{})
	e.es.hook(func(ctx context.Context, _ int, _ []esclient.Ciphertext) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	status, err := s.KeyStatus(as(e.admin))
	if err != nil {
		t.Fatal(err)
	}
	var mine ContextStatus
	for _, c := range status {
		if c.EncryptionID == kc.EncryptionID {
			mine = c
		}
	}
	if mine.OwnerID != p.ID || len(mine.Versions) != 2 || mine.Versions[0].Items != 10 || mine.Versions[0].State != "DECRYPT_ONLY" ||
		mine.Versions[1].Items != 0 || mine.Versions[1].State != "ACTIVE" {
		t.Errorf("KeyStatus() = %+v; want v1 DECRYPT_ONLY with 10 items, v2 ACTIVE with none", mine)
	}
	_, err = s.DisableVersion(as(e.admin), Call{}, kc.EncryptionID, uuid.MustParse(old))
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "10 items still use") {
		t.Errorf("DisableVersion(used) = %v, want FailedPrecondition counting 10 items", err)
	}
	if _, err := s.KeyStatus(as(p)); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("KeyStatus(member) = %v, want PermissionDenied", err)
	}

	close(release)
	if end := waitJob(t, s, e.admin, job.ID); end.State != postgres.JobSucceeded {
		t.Fatalf("job = %+v, want SUCCEEDED", end)
	}
	v, err := s.DisableVersion(as(e.admin), Call{}, kc.EncryptionID, uuid.MustParse(old))
	if err != nil || v.State != "DISABLED" || v.Version != 1 {
		t.Errorf("DisableVersion(unused) = %+v, %v; want version 1 DISABLED", v, err)
	}
	active := mine.Versions[1].ID
	if _, err := s.DisableVersion(as(e.admin), Call{}, kc.EncryptionID, uuid.MustParse(active)); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("DisableVersion(active) = %v, want FailedPrecondition", err)
	}
	e.wantAllRead(t, p, kc, nil, "item", ids)
	var audit []string
	events, _, _ := e.store.ListAuditEvents(context.Background(), postgres.AuditFilter{TenantID: &e.tenant.ID, PageSize: 100})
	for _, ev := range events {
		audit = append(audit, ev.Action)
	}
	for _, want := range []string{"keys.rotate", "keys.reencrypt.finish", "keys.version.disable"} {
		if !strings.Contains(strings.Join(audit, " "), want) {
			t.Errorf("audit = %v, want %s", audit, want)
		}
	}
}
