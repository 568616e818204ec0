package reencrypt

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
)

// parkOptions are testOptions that park a job after parkAfter of unavailability for parkFor,
// counting parks in parked.
func parkOptions(id string, parkAfter, parkFor time.Duration, parked *atomic.Int64) Options {
	opts := testOptions(id)
	opts.ParkAfter, opts.ParkFor = parkAfter, parkFor
	opts.Metrics.JobParked = func() { parked.Add(1) }
	return opts
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("still waiting after 30s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOfflineTenantDoesNotHoldUpOthers gives a replica one slot and two jobs: the older one's
// tenant has its encryption service offline. That job parks after ParkAfter and frees the slot,
// so the healthy tenant's job runs to the end long before GiveUpAfter (an hour).
func TestOfflineTenantDoesNotHoldUpOthers(t *testing.T) {
	offline := newEnv(t, postgres.KeyModePlatform)
	healthy := offline.sibling(t, postgres.KeyModePlatform)
	po, kco := offline.user(t, principal.RoleMember, nil)
	offline.items(t, po, kco, nil, "offline", 10)
	ph, kch := healthy.user(t, principal.RoleMember, nil)
	ids := healthy.items(t, ph, kch, nil, "healthy", 120)

	var parked atomic.Int64
	opts := parkOptions("a", 100*time.Millisecond, time.Minute, &parked)
	opts.MaxJobs = 1
	s := New(offline.store, tenantRouter{offline.tenant.ID: offline.es, healthy.tenant.ID: healthy.es}, opts)
	// Created first, so claimed first.
	_, stuck, err := s.RotateKeys(as(offline.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	_, job, err := s.RotateKeys(as(healthy.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	offline.es.setDown(true)
	run(t, s)

	end := waitJob(t, s, healthy.admin, job.ID)
	if end.State != postgres.JobSucceeded || end.Done != 120 {
		t.Errorf("healthy tenant's job = %+v; want SUCCEEDED with 120 moved", end)
	}
	healthy.wantAllRead(t, ph, kch, nil, "healthy", ids)

	got, err := s.GetJob(as(offline.admin), stuck.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != postgres.JobRunning || got.LeaseOwner != "" || !got.LeaseUntil.After(time.Now()) || got.UnavailableSince.IsZero() ||
		!strings.HasPrefix(got.Message, "waiting for the encryption service since ") {
		t.Errorf("offline tenant's job = %s held by %q until %v, unavailable since %v, %q; "+
			"want RUNNING, parked for later, waiting for the encryption service since it went away",
			got.State, got.LeaseOwner, got.LeaseUntil, got.UnavailableSince, got.Message)
	}
	if parked.Load() != 1 {
		t.Errorf("jobs parked = %d, want 1", parked.Load())
	}
}

// TestParkedJobResumes takes the encryption service away in the middle of a job: the job parks,
// is claimed again after its not-before time (and parks again at once while the service is still
// away), and completes from its checkpoint once the service is back, its wait forgotten.
func TestParkedJobResumes(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids := e.items(t, p, kc, nil, "item", 120)
	var parked atomic.Int64
	s := New(e.store, router{e.es}, parkOptions("a", 50*time.Millisecond, 200*time.Millisecond, &parked))
	e.es.hook(func(_ context.Context, call int, _ []esclient.Ciphertext) error {
		if call == 3 {
			e.es.setDown(true) // after two pages of 50
		}
		return nil
	})
	run(t, s)
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to park twice", func() bool { return parked.Load() >= 2 })
	mid, err := s.GetJob(as(e.admin), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mid.State != postgres.JobRunning || mid.Done != 100 || mid.UnavailableSince.IsZero() ||
		!strings.Contains(mid.Message, "waiting for the encryption service since") {
		t.Errorf("parked job = %+v; want RUNNING with 100 moved, waiting for the encryption service", mid)
	}

	e.es.setDown(false)
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobSucceeded || end.Total != 120 || end.Done != 120 || end.Skipped != 0 || end.Message != "" ||
		!end.UnavailableSince.IsZero() {
		t.Errorf("job = %+v; want SUCCEEDED with 120 moved once, no message, no wait recorded", end)
	}
	e.wantAllRead(t, p, kc, nil, "item", ids)
}

// TestGiveUpAfterCountsAcrossParks keeps the encryption service away: every run of the job waits
// far less than GiveUpAfter before it parks, yet the job fails once GiveUpAfter has passed since
// the service went away.
func TestGiveUpAfterCountsAcrossParks(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	p, kc := e.user(t, principal.RoleMember, nil)
	e.items(t, p, kc, nil, "item", 10)
	var parked atomic.Int64
	opts := parkOptions("a", 20*time.Millisecond, 50*time.Millisecond, &parked)
	opts.GiveUpAfter = 600 * time.Millisecond
	s := New(e.store, router{e.es}, opts)
	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	e.es.setDown(true)
	run(t, s)
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobFailed || !strings.Contains(end.Message, "for over 600ms") {
		t.Errorf("job = %s %q; want FAILED after 600ms of unavailability", end.State, end.Message)
	}
	if parked.Load() < 2 {
		t.Errorf("jobs parked = %d, want the job parked more than once before giving up", parked.Load())
	}
}

// TestOwnerJobDoesNotPark has the encryption service away, for longer than ParkAfter, while an
// owner's job runs with their master key, which only this replica holds: the job waits in place
// and completes once the service is back.
func TestOwnerJobDoesNotPark(t *testing.T) {
	e := newEnv(t, postgres.KeyModeClient)
	key := []byte(strings.Repeat("k", 32))
	zk, zkc := e.user(t, principal.RoleMember, key)
	ids := e.items(t, zk, zkc, key, "zk", 10)
	if _, err := e.es.Rotate(context.Background(), zkc.EncryptionID.String()); err != nil {
		t.Fatal(err)
	}
	var parked, retries atomic.Int64
	opts := parkOptions("a", 20*time.Millisecond, time.Minute, &parked)
	opts.Metrics.Retry = func() { retries.Add(1) }
	s := New(e.store, router{e.es}, opts)
	run(t, s)

	var outage atomic.Bool
	outage.Store(true)
	e.es.hook(func(_ context.Context, call int, _ []esclient.Ciphertext) error {
		if call > 1 && outage.Load() { // the first call checks the key
			return errs.E(errs.Unavailable, "the encryption service is unavailable; try again")
		}
		return nil
	})
	job, err := s.StartReencryption(as(zk), Call{MasterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the owner's job to back off", func() bool { return retries.Load() >= 3 })
	time.Sleep(100 * time.Millisecond) // well past ParkAfter
	outage.Store(false)

	end := waitJob(t, s, zk, job.ID)
	if end.State != postgres.JobSucceeded || end.Done != 10 {
		t.Errorf("owner's job = %+v; want SUCCEEDED with 10 moved", end)
	}
	if parked.Load() != 0 {
		t.Errorf("jobs parked = %d, want none: the owner's key is in this replica only", parked.Load())
	}
	e.wantAllRead(t, zk, zkc, key, "zk", ids)
}
