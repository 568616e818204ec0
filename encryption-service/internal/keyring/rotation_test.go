package keyring

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

func TestAutoRotationByEncryptions(t *testing.T) {
	ctx := context.Background()
	svc, _, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 3})

	tests := []struct {
		name   string
		policy RotationPolicy
		per    int // encryptions per version
	}{
		{"service bound", RotationPolicy{}, 3},
		{"context policy below the bound", RotationPolicy{MaxEncryptions: 2}, 2},
		{"context policy at the bound", RotationPolicy{MaxEncryptions: 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustCreate(t, svc, c, "", "", tt.policy)
			var versions []uuid.UUID
			for range 3*tt.per + 1 {
				versions = append(versions, mustEncrypt(t, svc, c, id, "x").VersionID)
			}
			for i := range versions {
				if want := versions[i/tt.per*tt.per]; versions[i] != want {
					t.Fatalf("encryption %d used version %s, want %s: a version encrypts exactly %d times (%v)", i, versions[i], want, tt.per, versions)
				}
				if i%tt.per == 0 && i > 0 && versions[i] == versions[i-1] {
					t.Fatalf("encryption %d did not rotate (%v)", i, versions)
				}
			}
			e, err := svc.GetEncryption(ctx, c, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Versions) != 4 {
				t.Fatalf("versions after %d encryptions = %d, want 4", 3*tt.per+1, len(e.Versions))
			}
			for i, v := range e.Versions[:3] {
				if v.Encryptions != int64(tt.per) || v.State != StateDecryptOnly {
					t.Errorf("version %d: %d encryptions, %s; want %d, DECRYPT_ONLY", i+1, v.Encryptions, v.State, tt.per)
				}
			}
		})
	}

	t.Run("batch crossing the limit", func(t *testing.T) {
		id := mustCreate(t, svc, c, "", "", RotationPolicy{})
		items := make([]EncryptItem, 7)
		for i := range items {
			items[i] = EncryptItem{EncryptionID: id, Data: []byte("x")}
		}
		res, failures := svc.EncryptBatch(ctx, c, items)
		for i, err := range failures {
			if err != nil {
				t.Fatalf("EncryptBatch item %d = %v", i, err)
			}
		}
		for i := range res {
			if res[i].VersionID != res[i/3*3].VersionID || (i%3 == 0 && i > 0 && res[i].VersionID == res[i-1].VersionID) {
				t.Fatalf("batch item %d used version %s: want 3 items per version", i, res[i].VersionID)
			}
		}
	})

	t.Run("named version that is due", func(t *testing.T) {
		id := mustCreate(t, svc, c, "", "", RotationPolicy{})
		v1 := mustEncrypt(t, svc, c, id, "x").VersionID
		for range 2 {
			if _, err := svc.Encrypt(ctx, c, id, uuid.NullUUID{UUID: v1, Valid: true}, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := svc.Encrypt(ctx, c, id, uuid.NullUUID{UUID: v1, Valid: true}, []byte("x"))
		wantKind(t, "Encrypt(named version at its limit)", err, errs.FailedPrecondition, "no longer encrypts")
	})

	t.Run("policy out of bounds", func(t *testing.T) {
		for _, p := range []RotationPolicy{{MaxEncryptions: 4}, {MaxEncryptions: -1}, {MaxAge: 30 * time.Minute}, {MaxAge: -time.Hour},
			{MaxAge: MaxRotationMaxAge + time.Hour}} {
			_, err := svc.CreateEncryption(ctx, c, "", "", p)
			wantKind(t, "CreateEncryption(policy out of bounds)", err, errs.Invalid, "rotationPolicy.")
		}
	})
}

func TestAutoRotationByAge(t *testing.T) {
	ctx := context.Background()
	svc, _, url, c := mustServiceWith(t, Options{})
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	id := mustCreate(t, svc, c, "", "", RotationPolicy{})
	if _, err := svc.SetRotationPolicy(ctx, c, id, RotationPolicy{MaxAge: time.Hour}); err != nil {
		t.Fatalf("SetRotationPolicy() = %v", err)
	}
	v1 := mustEncrypt(t, svc, c, id, "x").VersionID
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; v != v1 {
		t.Fatalf("a fresh version was rotated")
	}
	// The version grows old; the change reaches the cache as a notification would.
	if _, err := pool.Exec(ctx, "UPDATE encryption.encryption_key_versions SET created_at = now() - interval '61 minutes' WHERE id = $1", v1); err != nil {
		t.Fatal(err)
	}
	svc.Invalidate(id)
	v2 := mustEncrypt(t, svc, c, id, "x").VersionID
	if v2 == v1 {
		t.Fatalf("a version older than maxAge still encrypts")
	}
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; v != v2 {
		t.Errorf("the new version was rotated again at once")
	}
	e, _ := svc.GetEncryption(ctx, c, id)
	if len(e.Versions) != 2 || e.RotationMaxAge != time.Hour {
		t.Errorf("context after rotation by age = %d versions, policy %v; want 2, 1h", len(e.Versions), e.RotationMaxAge)
	}
	if _, err := svc.SetRotationPolicy(ctx, c, uuid.New(), RotationPolicy{}); !errs.Is(err, errs.NotFound) {
		t.Errorf("SetRotationPolicy(unknown) = %v, want NotFound", err)
	}
}

// TestAutoRotationOnceAcrossReplicas has two services over one database encrypt with one version:
// neither alone reaches the bound, together they do; the flush that shows it rotates it, once.
func TestAutoRotationOnceAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	a, store, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 5})
	b := New(store, mustKeyring(t, "k1", "k1"), Options{MaxEncryptionsPerVersion: 5})
	id := mustCreate(t, a, c, "", "", RotationPolicy{})
	v1 := mustEncrypt(t, a, c, id, "x").VersionID
	for range 2 {
		mustEncrypt(t, a, c, id, "x")
	}
	for range 3 {
		if v := mustEncrypt(t, b, c, id, "x").VersionID; v != v1 {
			t.Fatalf("replica b rotated on its own count")
		}
	}
	for _, svc := range []*Service{a, b, a} {
		if err := svc.FlushCounts(ctx); err != nil {
			t.Fatalf("FlushCounts() = %v", err)
		}
	}
	e, err := store.GetEncryption(ctx, c.TenantID, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Versions) != 2 || e.Versions[0].Encryptions != 6 || e.Versions[1].State != StateActive {
		t.Fatalf("after both replicas flushed: %+v, want version 1 with 6 encryptions and a new active version", e.Versions)
	}
	// a still has version 1 cached (no change listener here); what it encrypts with it later
	// does not rotate the context again.
	mustEncrypt(t, a, c, id, "x")
	if err := a.FlushCounts(ctx); err != nil {
		t.Fatal(err)
	}
	if e, _ := store.GetEncryption(ctx, c.TenantID, id); len(e.Versions) != 2 {
		t.Errorf("versions after a stale replica's flush = %d, want 2", len(e.Versions))
	}
	events, _, err := store.ListAuditEvents(ctx, postgres.AuditFilter{EncryptionID: &id})
	if err != nil || events[0].Action != "encryption.rotate.auto" || events[0].Actor != autoRotationActor {
		t.Errorf("audit = %+v, %v; want the automatic rotation, by %q", events, err, autoRotationActor)
	}
}

// TestCountSurvivesACacheReload: another replica's change drops the cached context between
// encryptions; the encryptions made before, still waiting for the flush, must keep counting.
func TestCountSurvivesACacheReload(t *testing.T) {
	svc, _, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 5})
	id := mustCreate(t, svc, c, "", "", RotationPolicy{})
	var versions []uuid.UUID
	for i := range 6 {
		if i == 3 {
			svc.Invalidate(id) // as a notification of another replica's change would
		}
		versions = append(versions, mustEncrypt(t, svc, c, id, "x").VersionID)
	}
	if versions[0] != versions[4] || versions[5] == versions[4] {
		t.Errorf("versions of 6 encryptions with a bound of 5 and a reload after the 3rd = %v, want a rotation before the 6th", versions)
	}
}

// rotationStore is a Store whose automatic rotations can be made to wait for release or to fail.
type rotationStore struct {
	*postgres.Store
	fail    atomic.Bool
	started chan struct{} // receives once per automatic rotation, when set
	release chan struct{} // an automatic rotation waits for it, when set
}

func (s *rotationStore) RotateIfActive(ctx context.Context, tenantID, encryptionID, expectedActive uuid.UUID,
	newVersion func(e postgres.Encryption, version int) (postgres.KeyVersion, error), audit postgres.AuditEvent) (postgres.KeyVersion, bool, error) {
	if s.started != nil {
		s.started <- struct{}{}
	}
	if s.release != nil {
		<-s.release
	}
	if s.fail.Load() {
		return postgres.KeyVersion{}, false, errs.E(errs.Unavailable, "database unavailable (test)")
	}
	return s.Store.RotateIfActive(ctx, tenantID, encryptionID, expectedActive, newVersion, audit)
}

// encryptConcurrently has workers goroutines encrypt n times each, as single calls or, with batch,
// as batches of n items, and returns the versions used and the failures.
func encryptConcurrently(svc *Service, c Caller, id uuid.UUID, workers, n int, batch bool) (map[uuid.UUID]int64, []error) {
	var mu sync.Mutex
	used := map[uuid.UUID]int64{}
	var failures []error
	record := func(res Encrypted, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, err)
			return
		}
		used[res.VersionID]++
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			if batch {
				items := make([]EncryptItem, n)
				for i := range items {
					items[i] = EncryptItem{EncryptionID: id, Data: []byte("x")}
				}
				res, errs := svc.EncryptBatch(context.Background(), c, items)
				for i := range res {
					record(res[i], errs[i])
				}
				return
			}
			for range n {
				record(svc.Encrypt(context.Background(), c, id, uuid.NullUUID{}, []byte("x")))
			}
		})
	}
	wg.Wait()
	return used, failures
}

// TestConcurrentEncryptionsKeepTheBound has many requests of one replica encrypt at once with a
// context whose versions may make a few encryptions each: none may pass the bound — the requests
// that find a version used up wait for its rotation — and every encryption counts, also while
// other changes drop the cached copy and counts are flushed meanwhile.
func TestConcurrentEncryptionsKeepTheBound(t *testing.T) {
	const workers, n = 32, 6
	ctx := context.Background()
	svc, _, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 5})
	tests := []struct {
		name    string
		policy  RotationPolicy
		per     int64
		batch   bool
		reloads bool // the context is dropped from the cache and the counts flushed all along
	}{
		{"service bound", RotationPolicy{}, 5, false, false},
		{"context policy", RotationPolicy{MaxEncryptions: 3}, 3, false, false},
		{"batches", RotationPolicy{MaxEncryptions: 3}, 3, true, false},
		{"reloads and flushes meanwhile", RotationPolicy{}, 5, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustCreate(t, svc, c, "", "", tt.policy)
			stop := make(chan struct{})
			var churn sync.WaitGroup
			if tt.reloads {
				churn.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						svc.Invalidate(id) // as a notification of another change would
						if err := svc.FlushCounts(ctx); err != nil {
							t.Errorf("FlushCounts() = %v", err)
						}
						time.Sleep(time.Millisecond)
					}
				})
			}
			used, failures := encryptConcurrently(svc, c, id, workers, n, tt.batch)
			close(stop)
			churn.Wait()
			for _, err := range failures {
				t.Errorf("Encrypt() = %v, want success: a request that finds the version used up waits for its rotation", err)
			}
			for v, k := range used {
				if k > tt.per {
					t.Errorf("version %s made %d encryptions, over the bound of %d", v, k, tt.per)
				}
			}
			e, err := svc.GetEncryption(ctx, c, id)
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, v := range e.Versions {
				total += v.Encryptions
				if v.Encryptions > tt.per {
					t.Errorf("stored count of version %d = %d, over the bound of %d", v.Version, v.Encryptions, tt.per)
				}
				if v.Encryptions != used[v.ID] {
					t.Errorf("stored count of version %d = %d, want the %d encryptions it made", v.Version, v.Encryptions, used[v.ID])
				}
			}
			if total != workers*n {
				t.Errorf("stored counts add up to %d, want %d", total, workers*n)
			}
		})
	}
}

// TestBoundHoldsWhenRotationFails: while rotations fail, a version due by its context's policy goes
// on encrypting up to the service's bound and no further, however many requests encrypt at once;
// then they fail with Unavailable until a rotation succeeds.
func TestBoundHoldsWhenRotationFails(t *testing.T) {
	ctx := context.Background()
	_, store, _, c := mustServiceWith(t, Options{})
	rs := &rotationStore{Store: store}
	rs.fail.Store(true)
	svc := New(rs, mustKeyring(t, "k1", "k1"), Options{MaxEncryptionsPerVersion: 8})
	id := mustCreate(t, svc, c, "", "", RotationPolicy{MaxEncryptions: 3})

	used, failures := encryptConcurrently(svc, c, id, 16, 4, false)
	if len(used) != 1 {
		t.Fatalf("versions used while rotations fail = %v, want only the first", used)
	}
	for v, k := range used {
		if k != 8 {
			t.Errorf("version %s made %d encryptions while it could not be rotated, want the service's bound, 8", v, k)
		}
	}
	if len(failures) != 16*4-8 {
		t.Errorf("%d encryptions failed, want %d", len(failures), 16*4-8)
	}
	for _, err := range failures {
		wantKind(t, "Encrypt(version at the bound, rotation failing)", err, errs.Unavailable, "could not be rotated yet")
	}

	rs.fail.Store(false)
	svc.Invalidate(id) // forgets the failed attempt, as the next retry would a second later
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; used[v] != 0 {
		t.Errorf("encryption once rotations work again used version %s, want a new version", v)
	}
	if e, _ := svc.GetEncryption(ctx, c, id); len(e.Versions) != 2 {
		t.Errorf("versions = %d, want 2", len(e.Versions))
	}
}

// TestWaitForRotationEndsWithTheRequest: a request that needs a slot of a used-up version while
// another request rotates the context waits no longer than its context allows, and encrypts
// nothing meanwhile.
func TestWaitForRotationEndsWithTheRequest(t *testing.T) {
	ctx := context.Background()
	_, store, _, c := mustServiceWith(t, Options{})
	rs := &rotationStore{Store: store}
	svc := New(rs, mustKeyring(t, "k1", "k1"), Options{MaxEncryptionsPerVersion: 2})
	id := mustCreate(t, svc, c, "", "", RotationPolicy{})
	v1 := mustEncrypt(t, svc, c, id, "x").VersionID
	mustEncrypt(t, svc, c, id, "x")

	rs.started, rs.release = make(chan struct{}, 1), make(chan struct{})
	rotator := make(chan Encrypted)
	go func() {
		res, err := svc.Encrypt(ctx, c, id, uuid.NullUUID{}, []byte("x"))
		if err != nil {
			t.Errorf("Encrypt() by the rotating request = %v", err)
		}
		rotator <- res
	}()
	<-rs.started
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if res, err := svc.Encrypt(short, c, id, uuid.NullUUID{}, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Encrypt() while another request rotates = %v under %s, %v; want the context's deadline", res.VersionID, res.VersionID, err)
	}
	close(rs.release)
	if v := (<-rotator).VersionID; v == v1 {
		t.Errorf("the rotating request encrypted with the used-up version")
	}
	e, err := svc.GetEncryption(ctx, c, id)
	if err != nil {
		t.Fatal(err)
	}
	if e.Versions[0].Encryptions != 2 || e.Versions[1].Encryptions != 1 {
		t.Errorf("counts = %d, %d; want 2 (the bound) and 1 (the rotating request's)", e.Versions[0].Encryptions, e.Versions[1].Encryptions)
	}
}

// TestRefusedEncryptionRotatesNothing: a context whose active version is due by age is rotated by
// the next encryption, but not by one refused for what the caller sent — the client master key or
// the version named — through Encrypt, EncryptBatch or GenerateDataKey.
func TestRefusedEncryptionRotatesNothing(t *testing.T) {
	ctx := context.Background()
	svc, store, url, c := mustServiceWith(t, Options{})
	withKey, wrongKey := c, c
	withKey.MasterKey, wrongKey.MasterKey = bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	platform := mustCreate(t, svc, c, "", ModePlatform, RotationPolicy{MaxAge: time.Hour})
	client := mustCreate(t, svc, withKey, "", ModeClient, RotationPolicy{MaxAge: time.Hour})
	conn := mustConn(t, url)
	for _, id := range []uuid.UUID{platform, client} {
		mustExec(t, conn, "UPDATE encryption.encryption_key_versions SET created_at = now() - interval '2 hours' WHERE encryption_id = $1", id)
		svc.Invalidate(id) // as the change's notification would
	}
	named := func(id uuid.UUID) uuid.NullUUID { return uuid.NullUUID{UUID: id, Valid: true} }

	tests := []struct {
		name    string
		c       Caller
		id      uuid.UUID
		version uuid.NullUUID
		kind    errs.Kind
		mention string
	}{
		{"PLATFORM with a client master key", withKey, platform, uuid.NullUUID{}, errs.Invalid, "X-Master-Key must not be sent"},
		{"unknown version", c, platform, named(uuid.New()), errs.NotFound, "not found"},
		{"nil UUID as the version", c, platform, named(uuid.Nil), errs.NotFound, "version 00000000-0000-0000-0000-000000000000 of key context"},
		{"CLIENT without its client master key", c, client, uuid.NullUUID{}, errs.Unauthenticated, "X-Master-Key"},
		{"CLIENT with a wrong client master key", wrongKey, client, uuid.NullUUID{}, errs.PermissionDenied, "wrong client master key"},
		{"CLIENT, unknown version", withKey, client, named(uuid.New()), errs.NotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := svc.Encrypt(ctx, tt.c, tt.id, tt.version, []byte("x"))
			wantKind(t, "Encrypt()", err, tt.kind, tt.mention)
			_, failures := svc.EncryptBatch(ctx, tt.c, []EncryptItem{{EncryptionID: tt.id, VersionID: tt.version, Data: []byte("x")}})
			wantKind(t, "EncryptBatch()", failures[0], tt.kind, tt.mention)
			if !tt.version.Valid {
				_, _, err := svc.GenerateDataKey(ctx, tt.c, tt.id, 32)
				wantKind(t, "GenerateDataKey()", err, tt.kind, tt.mention)
			}
			if e, _ := store.GetEncryption(ctx, c.TenantID, tt.id); len(e.Versions) != 1 {
				t.Errorf("the refused calls left %d versions, want 1: they rotated the context", len(e.Versions))
			}
		})
	}
	// The same calls done right rotate, once.
	for _, tt := range []struct {
		c  Caller
		id uuid.UUID
	}{{c, platform}, {withKey, client}} {
		first := mustEncrypt(t, svc, tt.c, tt.id, "x").VersionID
		if _, _, err := svc.GenerateDataKey(ctx, tt.c, tt.id, 16); err != nil {
			t.Errorf("GenerateDataKey() = %v", err)
		}
		if e, _ := store.GetEncryption(ctx, c.TenantID, tt.id); len(e.Versions) != 2 || e.Versions[1].ID != first {
			t.Errorf("after an encryption of the due context: %d versions, want 2, the new one encrypting", len(e.Versions))
		}
	}
}

// TestClockAheadOfTheDatabaseRotatesOnce: a replica whose clock runs ahead of the database's by
// more than maxAge finds every version due by age, the new one too; an encryption rotates once and
// encrypts rather than rotating on and on.
func TestClockAheadOfTheDatabaseRotatesOnce(t *testing.T) {
	ctx := context.Background()
	_, store, _, c := mustServiceWith(t, Options{})
	ahead := func() time.Time { return time.Now().Add(2 * time.Hour) }
	svc := New(store, mustKeyring(t, "k1", "k1"), Options{Now: ahead})
	id := mustCreate(t, svc, c, "", "", RotationPolicy{MaxAge: time.Hour})
	first, err := store.GetEncryption(ctx, c.TenantID, id)
	if err != nil {
		t.Fatal(err)
	}
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; v == first.Versions[0].ID {
		t.Errorf("Encrypt() used the version due by age")
	}
	if e, _ := store.GetEncryption(ctx, c.TenantID, id); len(e.Versions) != 2 {
		t.Errorf("versions after one encryption = %d, want 2: one rotation", len(e.Versions))
	}
}
