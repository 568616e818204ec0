package reencrypt

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/vault"
)

// aroundFirstPage runs before, then after, the first ApplyPage that moves items, once armed.
type aroundFirstPage struct {
	*postgres.Store
	armed         atomic.Bool
	once          sync.Once
	before, after func()
}

func (a *aroundFirstPage) ApplyPage(ctx context.Context, id uuid.UUID, lease postgres.Lease, enc uuid.UUID, p postgres.Page) (postgres.Applied, error) {
	first := false
	if a.armed.Load() && len(p.Moves) > 0 {
		a.once.Do(func() { first = true })
	}
	if first && a.before != nil {
		a.before()
	}
	applied, err := a.Store.ApplyPage(ctx, id, lease, enc, p)
	if first && a.after != nil {
		a.after()
	}
	return applied, err
}

// TestOwnerJobNeverWritesUnderADisabledVersion: while an owner's job has rewrapped a page into
// the version active until then, the encryption service rotates the context by itself and an
// admin disables that version, which no item uses yet. The page is not written under it but
// rewrapped again, into the version active now; a rotation through core is refused meanwhile.
func TestOwnerJobNeverWritesUnderADisabledVersion(t *testing.T) {
	e := newEnv(t, postgres.KeyModeClient)
	st := &aroundFirstPage{Store: e.store}
	s := New(st, router{e.es}, testOptions("a"))
	run(t, s)
	key := []byte(strings.Repeat("k", 32))
	zk, zkc := e.user(t, principal.RoleMember, key)
	ids := e.items(t, zk, zkc, key, "zk", 5)

	_, rotation, err := s.RotateKeys(as(e.admin), Call{}) // v1 → v2; the owner's items wait for their key
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, e.admin, rotation.ID)
	info, _ := e.es.GetContext(context.Background(), zkc.EncryptionID.String())
	v2 := uuid.MustParse(info.ActiveVersionID)

	st.before = func() { // the page is rewrapped into v2, not yet written
		if _, _, err := s.RotateKeys(as(e.admin), Call{}); !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "still running") {
			t.Errorf("RotateKeys() during an owner's job = %v, want FailedPrecondition naming the job", err)
		}
		if _, err := e.es.Rotate(context.Background(), zkc.EncryptionID.String()); err != nil { // as the service does by itself
			t.Error(err)
		}
		if _, err := s.DisableVersion(as(e.admin), Call{}, zkc.EncryptionID, v2); err != nil {
			t.Errorf("DisableVersion(v2, which no item uses yet) = %v", err)
		}
	}
	st.armed.Store(true)
	job, err := s.StartReencryption(as(zk), Call{MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if end := waitJob(t, s, zk, job.ID); end.State != postgres.JobSucceeded || end.Done != 5 || end.Total != 5 {
		t.Errorf("owner's job = %+v; want SUCCEEDED with 5 moved once", end)
	}
	e.wantAllRead(t, zk, zkc, key, "zk", ids)
}

// lostAnswer commits the first ApplyPage that moves items, then reports the database
// unavailable, as when the connection breaks after COMMIT was sent.
type lostAnswer struct {
	*postgres.Store
	lost atomic.Bool
}

func (l *lostAnswer) ApplyPage(ctx context.Context, id uuid.UUID, lease postgres.Lease, enc uuid.UUID, p postgres.Page) (postgres.Applied, error) {
	applied, err := l.Store.ApplyPage(ctx, id, lease, enc, p)
	if err == nil && len(p.Moves) > 0 && l.lost.CompareAndSwap(false, true) {
		return postgres.Applied{}, errs.E(errs.Unavailable, "the database is unavailable; try again")
	}
	return applied, err
}

// TestLostCommitAnswerCountsOnce: a page whose commit went through but whose answer was lost is
// written again by the retry, which finds it written and counts nothing more.
func TestLostCommitAnswerCountsOnce(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	s := New(&lostAnswer{Store: e.store}, router{e.es}, testOptions("a"))
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 70)
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	if end := waitJob(t, s, e.admin, job.ID); end.State != postgres.JobSucceeded || end.Total != 70 || end.Done != 70 || end.Skipped != 0 {
		t.Errorf("job = %+v; want SUCCEEDED, 70 items moved and counted once", end)
	}
	e.wantAllRead(t, p, kc, nil, "item", ids)
}

// sealThenWait is an encryption service whose Encrypt seals, then waits for release.
type sealThenWait struct {
	*fakeES
	sealed, release chan struct{}
}

func (s *sealThenWait) Encrypt(ctx context.Context, enc, data string, key []byte) (esclient.Ciphertext, error) {
	ct, err := s.fakeES.Encrypt(ctx, enc, data, key)
	close(s.sealed)
	<-s.release
	return ct, err
}

// TestEditStoredAfterTheJobPassedItIsMovedToo: an owner's edit encrypted before the rotation
// reaches the database after the job moved the item. It carries the item's revision, which the
// job left alone, so it is stored — back on the old version. Before the job ends it sweeps the
// context and moves the edit too: SUCCEEDED means every item is on the active version, the
// edit kept.
func TestEditStoredAfterTheJobPassedItIsMovedToo(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	st := &aroundFirstPage{Store: e.store}
	s := New(st, router{e.es}, testOptions("a"))
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 3)
	slow := &sealThenWait{fakeES: e.es, sealed: make(chan struct{}), release: make(chan struct{})}
	v := vault.New(e.store, router{slow}, vault.Limits{})
	edited := make(chan error, 1)
	go func() {
		_, err := v.Update(principal.NewContext(context.Background(), p), vault.Call{}, ids[1], 1, "n", "edited")
		edited <- err
	}()
	<-slow.sealed // encrypted under the version active before the rotation

	st.after = func() { // the job has moved every item
		close(slow.release)
		if err := <-edited; err != nil {
			t.Errorf("Update() = %v, want the edit stored", err)
		}
	}
	st.armed.Store(true)
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobSucceeded || end.Total != 4 || end.Done != 4 {
		t.Errorf("job = %+v; want SUCCEEDED: 3 moved, then the edit moved too", end)
	}
	info, _ := e.es.GetContext(context.Background(), kc.EncryptionID.String())
	if data, ver := e.read(t, p, ids[1], nil); data != `{"name":"n","data":"edited"}` || ver.String() != info.ActiveVersionID {
		t.Errorf("edited item reads %q on version %s, want the edit on the active %s", data, ver, info.ActiveVersionID)
	}
}

// TestDeletedUsersItemsAreSkipped deletes a user, erasing their key context on the encryption
// service at once, while a tenant job moves their items, and before it plans their context: the
// job succeeds, their items counted skipped. A context the service lost while the database still
// has it fails the job.
func TestDeletedUsersItemsAreSkipped(t *testing.T) {
	deleteUser := func(ctx context.Context, e *env, p principal.Principal, kc postgres.KeyContext) error {
		if _, err := e.store.DeleteUser(ctx, p.ID, sysAudit); err != nil {
			return err
		}
		return e.es.DestroyContext(ctx, kc.EncryptionID.String())
	}

	t.Run("while its items are moved", func(t *testing.T) {
		e := newEnv(t, postgres.KeyModePlatform)
		s := New(e.store, router{e.es}, testOptions("a"))
		run(t, s)
		p, kc := e.user(t, principal.RoleMember, nil)
		e.items(t, p, kc, nil, "gone", 3)
		e.es.hook(func(ctx context.Context, call int, _ []esclient.Ciphertext) error {
			if call == 1 {
				return deleteUser(ctx, e, p, kc)
			}
			return nil
		})
		_, job, err := s.RotateKeys(as(e.admin), Call{})
		if err != nil {
			t.Fatal(err)
		}
		if end := waitJob(t, s, e.admin, job.ID); end.State != postgres.JobSucceeded || end.Skipped != 3 || end.Failed != 0 {
			t.Errorf("job = %+v; want SUCCEEDED, the deleted user's 3 items skipped", end)
		}
	})

	// The job is created, then the user deleted, then the worker starts.
	for _, tc := range []struct {
		name      string
		deleted   bool // the user is deleted; otherwise only the service loses the context
		wantState string
	}{
		{"before its context is planned", true, postgres.JobSucceeded},
		{"lost by the service alone", false, postgres.JobFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, postgres.KeyModePlatform)
			s := New(e.store, router{e.es}, testOptions("a"))
			p, kc := e.user(t, principal.RoleMember, nil)
			e.items(t, p, kc, nil, "gone", 3)
			q, qkc := e.user(t, principal.RoleMember, nil)
			ids := e.items(t, q, qkc, nil, "kept", 3)
			if _, err := e.es.Rotate(context.Background(), qkc.EncryptionID.String()); err != nil {
				t.Fatal(err)
			}
			job, err := s.StartReencryption(as(e.admin), Call{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.deleted {
				err = deleteUser(context.Background(), e, p, kc)
			} else {
				err = e.es.DestroyContext(context.Background(), kc.EncryptionID.String())
			}
			if err != nil {
				t.Fatal(err)
			}
			run(t, s)
			end := waitJob(t, s, e.admin, job.ID)
			if end.State != tc.wantState {
				t.Fatalf("job = %+v, want %s", end, tc.wantState)
			}
			if tc.deleted {
				if end.Done != 3 || end.Total != 3 {
					t.Errorf("job = %+v; want the other user's 3 items moved, nothing of the deleted one's", end)
				}
				e.wantAllRead(t, q, qkc, nil, "kept", ids)
			} else if !strings.Contains(end.Message, kc.EncryptionID.String()) {
				t.Errorf("job message = %q, want it naming the lost context %s", end.Message, kc.EncryptionID)
			}
		})
	}
}
