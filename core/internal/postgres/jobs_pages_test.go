package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// movingJob creates a tenant job for f, claims it under a lease and plans f's context to move to
// version to.
func movingJob(tb testing.TB, s *postgres.Store, f vaultFixture, to uuid.UUID) (postgres.Job, postgres.Lease) {
	tb.Helper()
	ctx := context.Background()
	job := mustJob(tb, s, tenantJob(f), postgres.Lease{})
	lease := postgres.Lease{Owner: "replica-a/" + job.ID.String(), For: time.Minute}
	if _, ok, err := s.ClaimJob(ctx, lease); !ok || err != nil {
		tb.Fatalf("ClaimJob() = %v, %v", ok, err)
	}
	if _, err := s.PlanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, to, postgres.JobContextMoving); err != nil {
		tb.Fatalf("PlanJobContext() = %v", err)
	}
	return job, lease
}

// movePage is the page moving items to version to.
func movePage(items []postgres.Item, to uuid.UUID, last bool) postgres.Page {
	p := postgres.Page{Checkpoint: items[len(items)-1].ID, Last: last}
	for _, it := range items {
		moved := it
		moved.CipherText, moved.VersionID, moved.Metadata = "rewrapped-"+it.ID.String(), to, json.RawMessage(`{"v":1,"iv":"bmV3"}`)
		p.Moves = append(p.Moves, postgres.Move{ID: it.ID, Revision: it.Revision, FromVersionID: it.VersionID, To: moved})
	}
	return p
}

// TestItemsToMoveBoundsPagesBySize pages through items whose ciphertexts have known sizes: each
// page holds as many as fit in maxBytes (but at least one, however large) up to limit, and says
// whether more follow.
func TestItemsToMoveBoundsPagesBySize(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	sizes := []int{300, 300, 300, 1000, 100, 100, 100, 100}
	var ids []uuid.UUID
	size := map[uuid.UUID]int{}
	for _, n := range sizes {
		id := uuid.New()
		if _, err := s.CreateItem(ctx, postgres.Item{ID: id, TenantID: f.tenant.ID, OwnerID: f.user.ID, CipherText: strings.Repeat("c", n),
			EncryptionID: f.kc.EncryptionID, VersionID: v1, Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{}`)}, auditEvent("item.create")); err != nil {
			t.Fatal(err)
		}
		ids, size[id] = append(ids, id), n
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })

	for _, tc := range []struct {
		name     string
		limit    int
		maxBytes int64
	}{
		{"by size", 100, 650},
		{"by count", 3, 1 << 20},
		{"one at a time", 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uuid.UUID
			after := uuid.Nil
			for range len(ids) + 1 {
				page, more, err := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, after, tc.limit, tc.maxBytes)
				if err != nil || len(page) == 0 {
					t.Fatalf("ItemsToMove(after %s) = %d items, %v; want a page", after, len(page), err)
				}
				bytes := 0
				for _, it := range page {
					bytes += size[it.ID]
					got = append(got, it.ID)
				}
				if len(page) > tc.limit || (len(page) > 1 && int64(bytes) > tc.maxBytes) {
					t.Errorf("page of %d items, %d bytes: over %d items or %d bytes", len(page), bytes, tc.limit, tc.maxBytes)
				}
				if more != (len(got) < len(ids)) {
					t.Errorf("after %d of %d items more = %v", len(got), len(ids), more)
				}
				if !more {
					break
				}
				after = page[len(page)-1].ID
			}
			if !slices.Equal(got, ids) {
				t.Errorf("pages went through %d items, want all %d once, in id order", len(got), len(ids))
			}
		})
	}
}

// TestApplyPageTwiceCountsOnce applies a page, then again as a worker whose commit's answer was
// lost: the second changes nothing and counts nothing.
func TestApplyPageTwiceCountsOnce(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, f, v1, 4)
	job, lease := movingJob(t, s, f, v2)
	items, _, err := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, uuid.Nil, 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	page := movePage(items, v2, false)
	if got, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, page); err != nil || got != (postgres.Applied{Done: 2}) {
		t.Fatalf("ApplyPage() = %+v, %v; want 2 done", got, err)
	}
	if got, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, page); err != nil || got != (postgres.Applied{}) {
		t.Errorf("ApplyPage() again = %+v, %v; want nothing counted", got, err)
	}
	if j, _ := s.GetJob(ctx, f.tenant.ID, job.ID); j.Total != 4 || j.Done != 2 || j.Skipped != 0 {
		t.Errorf("job after the page twice = total %d done %d skipped %d; want 4, 2, 0", j.Total, j.Done, j.Skipped)
	}
}

// TestApplyPageRefusesADisabledVersion: a page rewrapped into a version disabled before the page
// is written writes nothing and keeps the checkpoint; the refusal says so.
func TestApplyPageRefusesADisabledVersion(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModeClient)
	v1, v2 := uuid.New(), uuid.New()
	items := mustItems(t, s, f, v1, 3)
	job, lease := movingJob(t, s, f, v2)
	if err := s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v2, func(context.Context) error { return nil },
		auditEvent("keys.version.disable")); err != nil {
		t.Fatalf("DisableUnusedVersion(v2, unused) = %v", err)
	}
	slices.SortFunc(items, func(a, b postgres.Item) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	_, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, movePage(items, v2, true))
	if !postgres.IsVersionDisabled(err) || !errs.Is(err, errs.Aborted) || !strings.Contains(err.Error(), v2.String()) {
		t.Errorf("ApplyPage(into a disabled version) = %v, want Aborted naming it", err)
	}
	for _, it := range items {
		if got, _ := s.GetItem(ctx, f.user.ID, it.ID); got.VersionID != v1 || got.CipherText != it.CipherText {
			t.Errorf("item after the refused page is on %s, want untouched on v1", got.VersionID)
		}
	}
	if cs, _ := s.JobContexts(ctx, job.ID); cs[0].Checkpoint != uuid.Nil || cs[0].State != postgres.JobContextMoving {
		t.Errorf("context after the refused page = %+v, want it still MOVING from the start", cs[0])
	}
	if j, _ := s.GetJob(ctx, f.tenant.ID, job.ID); j.Done != 0 || j.Skipped != 0 {
		t.Errorf("job after the refused page = done %d skipped %d, want nothing counted", j.Done, j.Skipped)
	}
}

// TestApplyPageCountsUnknownItems: items whose key context the encryption service no longer
// knows count as skipped when they are gone from the database with their owner, as failed
// (named) when they are still there.
func TestApplyPageCountsUnknownItems(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	gone := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	kept := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	goneItems := mustItems(t, s, gone, v1, 2)
	keptItems := mustItems(t, s, kept, v1, 1)
	job, lease := movingJob(t, s, kept, v2)
	if _, err := s.PlanJobContext(ctx, job.ID, lease, gone.kc.EncryptionID, v2, postgres.JobContextMoving); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteUser(ctx, gone.user.ID, auditEvent("user.delete")); err != nil {
		t.Fatal(err)
	}
	unknown := func(items ...postgres.Item) postgres.Page {
		p := postgres.Page{Checkpoint: uuid.Max, Last: true}
		for _, it := range items {
			p.Unknown = append(p.Unknown, postgres.Unknown{ID: it.ID, Reason: "key context not found"})
		}
		return p
	}
	if got, err := s.ApplyPage(ctx, job.ID, lease, gone.kc.EncryptionID, unknown(goneItems...)); err != nil || got != (postgres.Applied{Skipped: 2}) {
		t.Errorf("ApplyPage(a deleted user's items) = %+v, %v; want 2 skipped", got, err)
	}
	if got, err := s.ApplyPage(ctx, job.ID, lease, kept.kc.EncryptionID, unknown(keptItems...)); err != nil || got != (postgres.Applied{Failed: 1}) {
		t.Errorf("ApplyPage(an item still there) = %+v, %v; want 1 failed", got, err)
	}
	end, err := s.FinishJob(ctx, job.ID, lease, postgres.JobFailed, "", auditEvent("keys.reencrypt.finish"))
	if err != nil || !strings.Contains(end.FirstFailure, keptItems[0].ID.String()) || end.Failed != 1 || end.Skipped != 2 || end.Total != 3 {
		t.Errorf("job = %+v, %v; want 2 skipped, 1 failed naming the item still there", end, err)
	}
}

// TestPlanJobContextOfADeletedUser: the context of a user deleted after the job was created is
// planned DONE with nothing to move, whatever the worker asked; a context still in the database
// cannot be planned as gone.
func TestPlanJobContextOfADeletedUser(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	gone := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	kept := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, gone, v1, 2)
	mustItems(t, s, kept, v1, 2)
	job := mustJob(t, s, tenantJob(kept), postgres.Lease{})
	lease := postgres.Lease{Owner: "r/1", For: time.Minute}
	if _, _, err := s.ClaimJob(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteUser(ctx, gone.user.ID, auditEvent("user.delete")); err != nil {
		t.Fatal(err)
	}
	_, err := s.PlanJobContext(ctx, job.ID, lease, kept.kc.EncryptionID, uuid.Nil, postgres.JobContextDone)
	wantKind(t, "PlanJobContext(DONE, a context still there)", err, errs.FailedPrecondition, "still in the database")
	for _, state := range []string{postgres.JobContextDone, postgres.JobContextMoving} {
		c, err := s.PlanJobContext(ctx, job.ID, lease, gone.kc.EncryptionID, v2, state)
		if err != nil || c.State != postgres.JobContextDone || c.ToMove != 0 {
			t.Errorf("PlanJobContext(%s, a deleted user's context) = %+v, %v; want DONE, nothing to move", state, c, err)
		}
	}
	if c, err := s.PlanJobContext(ctx, job.ID, lease, kept.kc.EncryptionID, v2, postgres.JobContextMoving); err != nil || c.ToMove != 2 {
		t.Errorf("PlanJobContext(kept) = %+v, %v; want 2 to move", c, err)
	}
	if j, _ := s.GetJob(ctx, tenant.ID, job.ID); j.Total != 2 {
		t.Errorf("job total = %d, want the kept user's 2 only", j.Total)
	}
}

// TestReplanJobContext sweeps a context after its last page: items put back on an old version
// since are counted into the job again and the context moves from the start; without any, or
// once swept, nothing changes.
func TestReplanJobContext(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, f, v1, 3)
	job, lease := movingJob(t, s, f, v2)
	items, _, _ := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, uuid.Nil, 10, 1<<20)
	if _, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, movePage(items[:2], v2, false)); err != nil {
		t.Fatal(err)
	}
	_, err := s.ReplanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2)
	wantKind(t, "ReplanJobContext(a context still moving)", err, errs.FailedPrecondition, "not done")
	if _, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, movePage(items[2:], v2, true)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ContextsToSweep(ctx, job.ID); len(got) != 0 || err != nil {
		t.Fatalf("ContextsToSweep() after the job = %v, %v; want none", got, err)
	}
	if c, err := s.ReplanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2); err != nil || c.State != postgres.JobContextDone {
		t.Errorf("ReplanJobContext(nothing left behind) = %+v, %v; want DONE", c, err)
	}

	// An edit encrypted under v1 lands after the job moved the item.
	back := items[1]
	back.CipherText, back.VersionID = "edited under v1", v1
	if _, err := s.UpdateItem(ctx, f.user.ID, back.ID, 1, back, auditEvent("item.update")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ContextsToSweep(ctx, job.ID); !slices.Equal(got, []uuid.UUID{f.kc.EncryptionID}) || err != nil {
		t.Errorf("ContextsToSweep() after the edit = %v, %v; want the edited item's context", got, err)
	}
	for range 2 { // the second as a retry after a lost answer
		c, err := s.ReplanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2)
		if err != nil || c.State != postgres.JobContextMoving || c.Checkpoint != uuid.Nil {
			t.Errorf("ReplanJobContext(one left behind) = %+v, %v; want MOVING from the start", c, err)
		}
	}
	if j, _ := s.GetJob(ctx, f.tenant.ID, job.ID); j.Total != 4 {
		t.Errorf("job total after the sweep = %d, want 3 + 1", j.Total)
	}
	left, more, _ := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, uuid.Nil, 10, 1<<20)
	if len(left) != 1 || left[0].ID != back.ID || more {
		t.Fatalf("ItemsToMove() after the sweep = %d items; want the edited one", len(left))
	}
	if got, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, movePage(left, v2, true)); err != nil || got.Done != 1 {
		t.Errorf("ApplyPage(the swept item) = %+v, %v; want it moved", got, err)
	}
	end, err := s.FinishJob(ctx, job.ID, lease, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish"))
	if err != nil || end.Total != 4 || end.Done != 4 {
		t.Errorf("FinishJob() = %+v, %v; want 4 moved of 4", end, err)
	}
}

// TestRotationWaitsForOwnerJobs: a rotation's job is refused while a zero-knowledge owner's job
// of the tenant is unfinished, naming it; a tenant job without rotation is not.
func TestRotationWaitsForOwnerJobs(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModeClient)
	owner := tenantJob(f)
	owner.Scope, owner.OwnerID = postgres.JobScopeOwner, f.user.ID
	lease := postgres.Lease{Owner: "r/1", For: time.Minute}
	oj := mustJob(t, s, owner, lease)

	_, err := s.CreateRotationJob(ctx, tenantJob(f), postgres.Lease{Owner: "r/2", For: time.Minute}, auditEvent("keys.rotate"))
	wantKind(t, "CreateRotationJob(during an owner's job)", err, errs.FailedPrecondition, oj.ID.String())
	tj := mustJob(t, s, tenantJob(f), postgres.Lease{})
	claim := postgres.Lease{Owner: "r/3", For: time.Minute}
	if _, _, err := s.ClaimJob(ctx, claim); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct {
		id    uuid.UUID
		lease postgres.Lease
	}{{oj.ID, lease}, {tj.ID, claim}} {
		if _, err := s.FinishJob(ctx, j.id, j.lease, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateRotationJob(ctx, tenantJob(f), postgres.Lease{Owner: "r/2", For: time.Minute}, auditEvent("keys.rotate")); err != nil {
		t.Errorf("CreateRotationJob() once the owner's job ended = %v", err)
	}
}
