package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// vaultFixture is a tenant with one user holding a personal key context.
type vaultFixture struct {
	tenant postgres.Tenant
	user   postgres.User
	kc     postgres.KeyContext
}

func mustVaultUser(tb testing.TB, s *postgres.Store, t postgres.Tenant, keyMode string) vaultFixture {
	tb.Helper()
	u := mustUser(tb, s, t.ID, "member")
	kc, err := s.PutKeyContext(context.Background(), postgres.KeyContext{UserID: u.ID, TenantID: t.ID, EncryptionID: uuid.New(), KeyMode: keyMode})
	if err != nil {
		tb.Fatalf("PutKeyContext() = %v", err)
	}
	return vaultFixture{tenant: t, user: u, kc: kc}
}

// mustItems stores n items of f's user encrypted (so to speak) under version.
func mustItems(tb testing.TB, s *postgres.Store, f vaultFixture, version uuid.UUID, n int) []postgres.Item {
	tb.Helper()
	out := make([]postgres.Item, n)
	for i := range out {
		it, err := s.CreateItem(context.Background(), postgres.Item{
			ID: uuid.New(), TenantID: f.tenant.ID, OwnerID: f.user.ID, CipherText: "Y3Q=" + uuid.NewString(),
			EncryptionID: f.kc.EncryptionID, VersionID: version, Algorithm: "AES-256-GCM",
			Metadata: json.RawMessage(`{"v":1,"iv":"aXY="}`),
		}, auditEvent("item.create"))
		if err != nil {
			tb.Fatalf("CreateItem() = %v", err)
		}
		out[i] = it
	}
	return out
}

func tenantJob(f vaultFixture) postgres.Job {
	return postgres.Job{TenantID: f.tenant.ID, Scope: postgres.JobScopeTenant, CreatedByType: postgres.ActorUser, CreatedBy: f.user.ID}
}

func mustJob(tb testing.TB, s *postgres.Store, j postgres.Job, lease postgres.Lease) postgres.Job {
	tb.Helper()
	out, err := s.CreateJob(context.Background(), j, lease, auditEvent("keys.rotate"))
	if err != nil {
		tb.Fatalf("CreateJob() = %v", err)
	}
	return out
}

func TestCreateJob(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	a := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	b := mustVaultUser(t, s, tenant, postgres.KeyModeClient)

	job := mustJob(t, s, tenantJob(a), postgres.Lease{})
	if job.State != postgres.JobPending || job.LeaseOwner != "" || job.Final() {
		t.Errorf("CreateJob() = state %s, lease %q; want PENDING, unleased", job.State, job.LeaseOwner)
	}
	contexts, err := s.JobContexts(ctx, job.ID)
	if err != nil || len(contexts) != 2 {
		t.Fatalf("JobContexts() = %v, %v; want both contexts of the tenant", contexts, err)
	}
	modes := map[uuid.UUID]string{}
	for _, c := range contexts {
		modes[c.EncryptionID] = c.KeyMode
		if c.State != postgres.JobContextPending || c.Checkpoint != uuid.Nil {
			t.Errorf("new job context = %+v, want PENDING at the start", c)
		}
	}
	if modes[a.kc.EncryptionID] != postgres.KeyModePlatform || modes[b.kc.EncryptionID] != postgres.KeyModeClient {
		t.Errorf("job contexts = %v, want a PLATFORM and b CLIENT", modes)
	}

	_, err = s.CreateJob(ctx, tenantJob(a), postgres.Lease{}, auditEvent("keys.rotate"))
	wantKind(t, "CreateJob(second tenant job)", err, errs.FailedPrecondition, job.ID.String())

	// An owner job is leased to the replica that holds the key, and covers only their CLIENT context.
	owner := tenantJob(b)
	owner.Scope, owner.OwnerID = postgres.JobScopeOwner, b.user.ID
	oj := mustJob(t, s, owner, postgres.Lease{Owner: "replica-1/x", For: time.Minute})
	if oj.State != postgres.JobRunning || oj.LeaseOwner != "replica-1/x" || time.Until(oj.LeaseUntil) < 30*time.Second {
		t.Errorf("CreateJob(owner, leased) = %s held by %q until %v; want RUNNING, held a minute", oj.State, oj.LeaseOwner, oj.LeaseUntil)
	}
	if cs, _ := s.JobContexts(ctx, oj.ID); len(cs) != 1 || cs[0].EncryptionID != b.kc.EncryptionID {
		t.Errorf("owner job contexts = %+v, want b's only", cs)
	}
	_, err = s.CreateJob(ctx, owner, postgres.Lease{}, auditEvent("keys.reencrypt.start"))
	wantKind(t, "CreateJob(second owner job)", err, errs.FailedPrecondition, oj.ID.String())

	platformOwner := tenantJob(a)
	platformOwner.Scope, platformOwner.OwnerID = postgres.JobScopeOwner, a.user.ID
	_, err = s.CreateJob(ctx, platformOwner, postgres.Lease{}, auditEvent("keys.reencrypt.start"))
	wantKind(t, "CreateJob(owner without a CLIENT context)", err, errs.FailedPrecondition, "no zero-knowledge key context")

	bad := tenantJob(a)
	bad.OwnerID = a.user.ID
	_, err = s.CreateJob(ctx, bad, postgres.Lease{}, auditEvent("keys.rotate"))
	wantKind(t, "CreateJob(tenant job with an owner)", err, errs.Invalid, "owner")

	other := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	_, err = s.GetJob(ctx, other.tenant.ID, job.ID)
	wantKind(t, "GetJob(another tenant's job)", err, errs.NotFound, "not found")
	if got := auditActions(t, s, &tenant.ID); !slices.Contains(got, "keys.rotate") {
		t.Errorf("audit = %v, want the jobs' creation recorded", got)
	}
}

func TestClaimJobLeases(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	job := mustJob(t, s, tenantJob(f), postgres.Lease{})

	a := postgres.Lease{Owner: "replica-a/1", For: 300 * time.Millisecond}
	got, ok, err := s.ClaimJob(ctx, a)
	if err != nil || !ok || got.ID != job.ID || got.State != postgres.JobRunning || got.LeaseOwner != a.Owner {
		t.Fatalf("ClaimJob(a) = %+v, %v, %v; want the job, RUNNING, held by a", got, ok, err)
	}
	b := postgres.Lease{Owner: "replica-b/1", For: time.Minute}
	if _, ok, err := s.ClaimJob(ctx, b); ok || err != nil {
		t.Fatalf("ClaimJob(b) while a holds the lease = %v, %v; want nothing", ok, err)
	}
	if err := s.RenewLease(ctx, job.ID, a, nil); err != nil {
		t.Fatalf("RenewLease(a) = %v", err)
	}
	time.Sleep(400 * time.Millisecond) // a dies: its lease expires
	got, ok, err = s.ClaimJob(ctx, b)
	if err != nil || !ok || got.ID != job.ID || got.LeaseOwner != b.Owner {
		t.Fatalf("ClaimJob(b) after a's lease expired = %+v, %v, %v; want the job", got, ok, err)
	}
	if err := s.RenewLease(ctx, job.ID, a, nil); !postgres.IsLeaseLost(err) {
		t.Errorf("RenewLease(a) after b took over = %v, want lease lost", err)
	}
	cs, _ := s.JobContexts(ctx, job.ID)
	_, err = s.ApplyPage(ctx, job.ID, a, cs[0].EncryptionID, postgres.Page{Checkpoint: uuid.Max, Last: true})
	if !postgres.IsLeaseLost(err) {
		t.Errorf("ApplyPage(a) after b took over = %v, want lease lost", err)
	}
	if cs, _ := s.JobContexts(ctx, job.ID); cs[0].Checkpoint != uuid.Nil || cs[0].State != postgres.JobContextPending {
		t.Errorf("after a's refused ApplyPage the context is %+v, want it untouched", cs[0])
	}
	if _, err := s.FinishJob(ctx, job.ID, a, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish")); !postgres.IsLeaseLost(err) {
		t.Errorf("FinishJob(a) after b took over = %v, want lease lost", err)
	}

	// A replica shutting down releases its lease: the job is claimable at once.
	if err := s.ReleaseJob(ctx, job.ID, b.Owner); err != nil {
		t.Fatalf("ReleaseJob(b) = %v", err)
	}
	c := postgres.Lease{Owner: "replica-c/1", For: time.Minute}
	if got, ok, err := s.ClaimJob(ctx, c); !ok || err != nil || got.ID != job.ID {
		t.Errorf("ClaimJob(c) after b released = %v, %v; want the job", ok, err)
	}
}

// TestParkJob parks a job whose encryption service is unavailable: its replica lets go of it,
// no replica claims it before its not-before time, whoever claims it then learns since when it
// waits, and progress (a context planned, a page written) clears that.
func TestParkJob(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, f, v1, 3)
	job := mustJob(t, s, tenantJob(f), postgres.Lease{})
	a := postgres.Lease{Owner: "replica-a/1", For: time.Minute}
	if _, ok, err := s.ClaimJob(ctx, a); !ok || err != nil {
		t.Fatalf("ClaimJob(a) = %v, %v; want the job", ok, err)
	}

	since := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	const msg = "waiting for the encryption service since then"
	if err := s.ParkJob(ctx, job.ID, a, since, 300*time.Millisecond, msg); err != nil {
		t.Fatalf("ParkJob(a) = %v", err)
	}
	got, err := s.GetJob(ctx, f.tenant.ID, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != postgres.JobRunning || got.LeaseOwner != "" || !got.LeaseUntil.After(time.Now()) ||
		!got.UnavailableSince.Equal(since) || got.Message != msg {
		t.Errorf("parked job = %s held by %q until %v, unavailable since %v, %q; want RUNNING, unheld until later, since %v, %q",
			got.State, got.LeaseOwner, got.LeaseUntil, got.UnavailableSince, got.Message, since, msg)
	}
	b := postgres.Lease{Owner: "replica-b/1", For: time.Minute}
	if _, ok, err := s.ClaimJob(ctx, b); ok || err != nil {
		t.Errorf("ClaimJob(b) before the parked job's time = %v, %v; want nothing", ok, err)
	}
	if err := s.RenewLease(ctx, job.ID, a, nil); !postgres.IsLeaseLost(err) {
		t.Errorf("RenewLease(a) after a parked the job = %v, want lease lost", err)
	}
	if err := s.ParkJob(ctx, job.ID, a, since, time.Minute, msg); !postgres.IsLeaseLost(err) {
		t.Errorf("ParkJob(a) again = %v, want lease lost", err)
	}

	time.Sleep(400 * time.Millisecond)
	got, ok, err := s.ClaimJob(ctx, b)
	if err != nil || !ok || got.ID != job.ID || got.LeaseOwner != b.Owner || !got.UnavailableSince.Equal(since) {
		t.Fatalf("ClaimJob(b) after the parked job's time = %+v, %v, %v; want the job, unavailable since %v", got, ok, err, since)
	}
	if _, err := s.PlanJobContext(ctx, job.ID, b, f.kc.EncryptionID, v2, postgres.JobContextMoving); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetJob(ctx, f.tenant.ID, job.ID); !got.UnavailableSince.IsZero() {
		t.Errorf("after PlanJobContext the job is unavailable since %v, want zero", got.UnavailableSince)
	}

	if err := s.ParkJob(ctx, job.ID, b, since, time.Millisecond, msg); err != nil {
		t.Fatalf("ParkJob(b) = %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	c := postgres.Lease{Owner: "replica-c/1", For: time.Minute}
	if got, ok, err := s.ClaimJob(ctx, c); !ok || err != nil || !got.UnavailableSince.Equal(since) {
		t.Fatalf("ClaimJob(c) = %+v, %v, %v; want the job, unavailable since %v", got, ok, err, since)
	}
	if _, err := s.ApplyPage(ctx, job.ID, c, f.kc.EncryptionID, postgres.Page{Checkpoint: uuid.Max, Last: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetJob(ctx, f.tenant.ID, job.ID); !got.UnavailableSince.IsZero() {
		t.Errorf("after ApplyPage the job is unavailable since %v, want zero", got.UnavailableSince)
	}

	if _, err := s.FinishJob(ctx, job.ID, c, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish")); err != nil {
		t.Fatal(err)
	}
	if err := s.ParkJob(ctx, job.ID, c, since, time.Minute, msg); !postgres.IsLeaseLost(err) {
		t.Errorf("ParkJob(finished job) = %v, want lease lost", err)
	}
}

// TestClaimJobOnce has many replicas claim at once: each job goes to exactly one.
func TestClaimJobOnce(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	want := map[uuid.UUID]bool{}
	for range 6 {
		f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
		want[mustJob(t, s, tenantJob(f), postgres.Lease{}).ID] = true
	}
	var (
		mu  sync.Mutex
		got = map[uuid.UUID]int{}
		wg  sync.WaitGroup
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j, ok, err := s.ClaimJob(ctx, postgres.Lease{Owner: "replica-" + string(rune('a'+i)), For: time.Minute})
				if err != nil {
					t.Errorf("ClaimJob() = %v", err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				got[j.ID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for id := range want {
		if got[id] != 1 {
			t.Errorf("job %s claimed %d times, want once", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("claimed %d jobs, want %d", len(got), len(want))
	}
}

// TestApplyPageNeverOverwritesEdits moves a page in which one item was edited and one deleted
// since it was read: both are skipped, the edit survives.
func TestApplyPageNeverOverwritesEdits(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, f, v1, 5)
	job := mustJob(t, s, tenantJob(f), postgres.Lease{})
	lease := postgres.Lease{Owner: "replica-a/1", For: time.Minute}
	if _, ok, err := s.ClaimJob(ctx, lease); !ok || err != nil {
		t.Fatalf("ClaimJob() = %v, %v", ok, err)
	}
	planned, err := s.PlanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2, postgres.JobContextMoving)
	if err != nil || planned.ToMove != 5 || planned.ActiveVersionID != v2 || planned.State != postgres.JobContextMoving {
		t.Fatalf("PlanJobContext() = %+v, %v; want 5 to move to v2", planned, err)
	}
	// Planning again changes nothing.
	if again, err := s.PlanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2, postgres.JobContextMoving); err != nil || again.ToMove != 5 {
		t.Errorf("PlanJobContext() again = %+v, %v", again, err)
	}
	if j, _ := s.GetJob(ctx, f.tenant.ID, job.ID); j.Total != 5 {
		t.Errorf("job total = %d, want 5", j.Total)
	}

	page, more, err := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, uuid.Nil, 100, 1<<20)
	if err != nil || len(page) != 5 || more {
		t.Fatalf("ItemsToMove() = %d items, more %v, %v; want 5, none more", len(page), more, err)
	}
	for i := 1; i < len(page); i++ {
		if page[i-1].ID.String() >= page[i].ID.String() {
			t.Fatalf("ItemsToMove() not in id order")
		}
	}
	edited, deleted := page[1], page[3]
	newer := edited
	newer.CipherText, newer.VersionID = "edited", v2
	if _, err := s.UpdateItem(ctx, f.user.ID, edited.ID, edited.Revision, newer, auditEvent("item.update")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteItem(ctx, f.user.ID, deleted.ID, auditEvent("item.delete")); err != nil {
		t.Fatal(err)
	}

	p := postgres.Page{Checkpoint: page[len(page)-1].ID, Last: true, Failed: 0}
	for _, it := range page {
		to := it
		to.CipherText, to.VersionID, to.Metadata = "rewrapped-"+it.ID.String(), v2, json.RawMessage(`{"v":1,"iv":"bmV3"}`)
		p.Moves = append(p.Moves, postgres.Move{ID: it.ID, Revision: it.Revision, FromVersionID: it.VersionID, To: to})
	}
	applied, err := s.ApplyPage(ctx, job.ID, lease, f.kc.EncryptionID, p)
	if err != nil || applied != (postgres.Applied{Done: 3, Skipped: 2}) {
		t.Fatalf("ApplyPage() = %+v, %v; want 3 done and 2 skipped", applied, err)
	}
	got, err := s.GetItem(ctx, f.user.ID, edited.ID)
	if err != nil || got.CipherText != "edited" || got.Revision != 2 {
		t.Errorf("edited item after ApplyPage = %q revision %d, %v; want the edit kept", got.CipherText, got.Revision, err)
	}
	moved, err := s.GetItem(ctx, f.user.ID, page[0].ID)
	if err != nil || moved.VersionID != v2 || moved.CipherText != "rewrapped-"+page[0].ID.String() || moved.Revision != 1 || !moved.UpdatedAt.Equal(page[0].UpdatedAt) {
		t.Errorf("moved item = %+v, %v; want v2 with the new ciphertext, revision and update time unchanged", moved, err)
	}
	if left, _, _ := s.ItemsToMove(ctx, f.tenant.ID, f.kc.EncryptionID, v2, uuid.Nil, 100, 1<<20); len(left) != 0 {
		t.Errorf("ItemsToMove() after the page = %d items, want none", len(left))
	}
	cs, _ := s.JobContexts(ctx, job.ID)
	if cs[0].Checkpoint != p.Checkpoint || cs[0].State != postgres.JobContextDone {
		t.Errorf("context after the last page = %+v, want DONE at the checkpoint", cs[0])
	}

	end, err := s.FinishJob(ctx, job.ID, lease, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish"))
	if err != nil {
		t.Fatal(err)
	}
	if end.State != postgres.JobSucceeded || end.Total != 5 || end.Done != 3 || end.Skipped != 2 || end.FinishedAt.IsZero() || end.LeaseOwner != "" {
		t.Errorf("FinishJob() = %+v; want SUCCEEDED 5 = 3 done + 2 skipped, lease freed", end)
	}
}

func TestPlanJobContextWaitingForKey(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	f := mustVaultUser(t, s, tenant, postgres.KeyModeClient)
	g := mustVaultUser(t, s, tenant, postgres.KeyModeClient)
	v1, v2 := uuid.New(), uuid.New()
	mustItems(t, s, f, v1, 3)
	mustItems(t, s, f, v2, 1)
	job := mustJob(t, s, tenantJob(f), postgres.Lease{})
	lease := postgres.Lease{Owner: "r/1", For: time.Minute}
	if _, _, err := s.ClaimJob(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PlanJobContext(ctx, job.ID, lease, f.kc.EncryptionID, v2, postgres.JobContextWaitingForKey); err != nil {
		t.Fatal(err)
	}
	// g has nothing on an old version: not counted as waiting.
	if _, err := s.PlanJobContext(ctx, job.ID, lease, g.kc.EncryptionID, v2, postgres.JobContextWaitingForKey); err != nil {
		t.Fatal(err)
	}
	_, err := s.PlanJobContext(ctx, job.ID, lease, uuid.New(), v2, postgres.JobContextMoving)
	wantKind(t, "PlanJobContext(a context not in the job)", err, errs.NotFound, "not part of job")
	end, err := s.FinishJob(ctx, job.ID, lease, postgres.JobWaitingForKey, "waiting", auditEvent("keys.reencrypt.finish"))
	if err != nil || end.WaitingItems != 3 || end.WaitingContexts != 1 || end.Total != 0 || end.State != postgres.JobWaitingForKey {
		t.Errorf("FinishJob() = %+v, %v; want 3 items in 1 context waiting, nothing to move", end, err)
	}
	// Unfinished jobs block new ones; finished ones do not.
	if _, found, err := s.UnfinishedJob(ctx, tenant.ID, uuid.Nil); found || err != nil {
		t.Errorf("UnfinishedJob() after the end = %v, %v; want none", found, err)
	}
	mustJob(t, s, tenantJob(f), postgres.Lease{})
}

func TestListJobs(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	var ids []uuid.UUID
	for range 5 {
		j := mustJob(t, s, tenantJob(f), postgres.Lease{})
		lease := postgres.Lease{Owner: "r/" + j.ID.String(), For: time.Minute}
		if _, ok, err := s.ClaimJob(ctx, lease); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if _, err := s.FinishJob(ctx, j.ID, lease, postgres.JobSucceeded, "", auditEvent("keys.reencrypt.finish")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	var got []uuid.UUID
	cursor := ""
	for range 10 {
		page, next, err := s.ListJobs(ctx, f.tenant.ID, 2, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page {
			got = append(got, j.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != 5 {
		t.Fatalf("ListJobs() pages = %d jobs, want 5", len(got))
	}
	for i := range got {
		if got[i] != ids[len(ids)-1-i] {
			t.Errorf("ListJobs() = %v, want newest first %v", got, ids)
			break
		}
	}
	_, _, err := s.ListJobs(ctx, f.tenant.ID, 2, "garbage")
	wantKind(t, "ListJobs(bad cursor)", err, errs.Invalid, "pageToken")
}

func TestDisableUnusedVersion(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2 := uuid.New(), uuid.New()
	items := mustItems(t, s, f, v1, 2)
	called := 0
	disable := func(context.Context) error { called++; return nil }

	err := s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v1, disable, auditEvent("keys.version.disable"))
	wantKind(t, "DisableUnusedVersion(used version)", err, errs.FailedPrecondition, "2 items still use")
	other := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	err = s.DisableUnusedVersion(ctx, other.tenant.ID, f.kc.EncryptionID, v2, disable, auditEvent("keys.version.disable"))
	wantKind(t, "DisableUnusedVersion(another tenant's context)", err, errs.NotFound, "not found")
	if called != 0 {
		t.Fatalf("disable called %d times before the version was unused", called)
	}

	for _, it := range items {
		if err := s.DeleteItem(ctx, f.user.ID, it.ID, auditEvent("item.delete")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v1, disable, auditEvent("keys.version.disable")); err != nil || called != 1 {
		t.Fatalf("DisableUnusedVersion(unused) = %v, disable called %d times; want once", err, called)
	}
	refused := errs.E(errs.FailedPrecondition, "the active version cannot be disabled")
	err = s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v2, func(context.Context) error { return refused }, auditEvent("keys.version.disable"))
	if err != refused { //nolint:errorlint // identity is the point: the error must come back unchanged
		t.Errorf("DisableUnusedVersion() with a refusing service = %v, want its error unchanged", err)
	}
	counts, err := s.CountItemsByVersion(ctx, f.tenant.ID)
	if err != nil || len(counts) != 0 {
		t.Errorf("CountItemsByVersion() = %v, %v; want nothing", counts, err)
	}
}

// TestWritesUnderADisabledVersionAreRefused covers the write that encrypted under a version while it
// was active and reaches the database after core disabled it: refused, nothing stored, whether it
// arrives after the disable or while the disable is in progress.
func TestWritesUnderADisabledVersionAreRefused(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	v1, v2, v3 := uuid.New(), uuid.New(), uuid.New()
	kept := mustItems(t, s, f, v2, 1)[0]
	none := func(context.Context) error { return nil }
	if err := s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v1, none, auditEvent("keys.version.disable")); err != nil {
		t.Fatal(err)
	}
	item := func(v uuid.UUID) postgres.Item {
		return postgres.Item{ID: uuid.New(), TenantID: f.tenant.ID, OwnerID: f.user.ID, CipherText: "Y3Q=",
			EncryptionID: f.kc.EncryptionID, VersionID: v, Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{"v":1}`)}
	}

	_, err := s.CreateItem(ctx, item(v1), auditEvent("item.create"))
	wantKind(t, "CreateItem(disabled version)", err, errs.Aborted, "was disabled while this request was in flight")
	_, err = s.UpdateItem(ctx, f.user.ID, kept.ID, kept.Revision, item(v1), auditEvent("item.update"))
	wantKind(t, "UpdateItem(disabled version)", err, errs.Aborted, "was disabled while this request was in flight")
	if got, err := s.GetItem(ctx, f.user.ID, kept.ID); err != nil || got.Revision != kept.Revision || got.VersionID != v2 {
		t.Fatalf("item after the refused update = %+v, %v; want it unchanged", got, err)
	}
	if _, err := s.CreateItem(ctx, item(v2), auditEvent("item.create")); err != nil {
		t.Fatalf("CreateItem(enabled version) = %v", err)
	}

	// A write arriving while the disable is in progress waits for it, then is refused.
	inDisable, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseDisable := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseDisable) // a failure below must not leave the disable's transaction open
	disabled := make(chan error, 1)
	go func() {
		disabled <- s.DisableUnusedVersion(ctx, f.tenant.ID, f.kc.EncryptionID, v3, func(context.Context) error {
			close(inDisable)
			<-release
			return nil
		}, auditEvent("keys.version.disable"))
	}()
	<-inDisable
	written := make(chan error, 1)
	go func() {
		_, err := s.CreateItem(ctx, item(v3), auditEvent("item.create"))
		written <- err
	}()
	select {
	case err := <-written:
		releaseDisable()
		derr := <-disabled
		t.Fatalf("CreateItem during a disable of its version returned before the disable: %v (disable: %v)", err, derr)
	case <-time.After(300 * time.Millisecond):
	}
	releaseDisable()
	if err := <-disabled; err != nil {
		t.Fatalf("DisableUnusedVersion() = %v", err)
	}
	wantKind(t, "CreateItem(version disabled meanwhile)", <-written, errs.Aborted, "was disabled")
	counts, err := s.CountItemsByVersion(ctx, f.tenant.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range counts {
		if c.VersionID == v1 || c.VersionID == v3 {
			t.Errorf("CountItemsByVersion() = %+v: an item was stored under a disabled version", counts)
		}
	}
}
