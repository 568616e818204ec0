package reencrypt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/vault"
)

// stopTimeout bounds what a job does after its replica began shutting down: hand it over.
const stopTimeout = 5 * time.Second

// errParked ends a run whose job waits for its encryption service and was parked (see
// runner.park): the job stays RUNNING, for a later claim. It never leaves the package.
var errParked = errs.E(errs.Unavailable, "the re-encryption job was parked until its encryption service is back")

// Run works re-encryption jobs until ctx is cancelled: it claims runnable jobs (new ones, those
// whose replica died, and parked ones whose time has come) up to Options.MaxJobs at a time,
// looking every PollInterval and at once when this replica creates one or a slot frees up, and
// runs the jobs owners start here with their master key. A job that waits for an unavailable
// encryption service gives its slot up after Options.ParkAfter (see runner.park).
// On cancellation it hands its jobs over (their leases are released; jobs that held a master key
// end WAITING_FOR_KEY), waits for them and returns nil.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	s.running = ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = nil
		s.mu.Unlock()
		s.jobs.Wait()
	}()
	slots := make(chan struct{}, s.opts.MaxJobs)
	for {
		s.claim(ctx, slots)
		// Jittered, so that replicas started together do not poll in step.
		wait := s.opts.PollInterval/2 + rand.N(s.opts.PollInterval) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-time.After(wait):
		}
	}
}

// claim claims jobs while slots has room and jobs are runnable, and starts each.
func (s *Service) claim(ctx context.Context, slots chan struct{}) {
	for {
		select {
		case slots <- struct{}{}:
		default:
			return
		}
		lease := s.newLease()
		job, ok, err := s.store.ClaimJob(ctx, lease)
		if err != nil || !ok {
			<-slots
			if err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "re-encryption: look for jobs", "error", err)
			}
			return
		}
		if job.UnavailableSince.IsZero() {
			s.log.InfoContext(ctx, "re-encryption job claimed", "job_id", job.ID, "tenant_id", job.TenantID, "worker", lease.Owner)
		} else {
			// A parked job, back for another attempt: logged when it parks again or goes on.
			s.log.DebugContext(ctx, "re-encryption job claimed", "job_id", job.ID, "tenant_id", job.TenantID, "worker", lease.Owner,
				"unavailable_since", job.UnavailableSince)
		}
		s.jobs.Add(1)
		go func() {
			defer func() {
				<-slots
				s.notify() // a slot is free: look for more at once
				s.jobs.Done()
			}()
			s.work(ctx, job, lease, nil)
		}()
	}
}

// Running returns how many jobs this replica is working on now: cheap, never blocks (for a gauge).
func (s *Service) Running() int { return int(s.working.Load()) }

// runContext returns Run's context, if Run is running.
func (s *Service) runContext() (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil || s.running.Err() != nil {
		return nil, false
	}
	return s.running, true
}

// spawn works job on this replica with key, which it clears when done.
func (s *Service) spawn(ctx context.Context, job postgres.Job, lease postgres.Lease, key []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		// Run returned meanwhile: the job's lease expires and another replica reports it waiting.
		clear(key)
		return
	}
	s.jobs.Add(1)
	go func() {
		defer s.jobs.Done()
		s.work(ctx, job, lease, key)
	}()
}

// notify wakes the worker.
func (s *Service) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// work runs job under lease until it ends, the replica shuts down or another replica takes it
// over. key is the owner's master key for an OWNER job started here, nil otherwise.
func (s *Service) work(parent context.Context, job postgres.Job, lease postgres.Lease, key []byte) {
	defer clear(key)
	s.working.Add(1)
	defer s.working.Add(-1)
	log := s.log.With("job_id", job.ID, "tenant_id", job.TenantID, "worker", lease.Owner)
	if job.Scope == postgres.JobScopeOwner && key == nil {
		// Claimed after the replica holding the owner's key stopped: only the owner can go on.
		s.finish(parent, job, lease, postgres.JobWaitingForKey,
			"the core replica holding the master key for this job stopped; start the job again with X-Master-Key")
		return
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	go s.heartbeat(ctx, cancel, job.ID, lease)

	state, msg, err := s.run(ctx, job, lease, key)
	switch {
	case err == nil:
		s.finish(ctx, job, lease, state, msg)
	case errors.Is(err, errParked):
		// Given up on purpose, lease and all; the heartbeat may have noticed and cancelled ctx.
	case postgres.IsLeaseLost(err) || postgres.IsLeaseLost(context.Cause(ctx)):
		log.WarnContext(parent, "re-encryption job taken over by another replica; stopping here")
	case parent.Err() != nil:
		s.handOver(job, lease, key != nil)
	default:
		log.ErrorContext(ctx, "re-encryption job failed", "error", err)
		s.finish(ctx, job, lease, postgres.JobFailed, message(err))
	}
}

// handOver gives up a job because the replica is shutting down.
func (s *Service) handOver(job postgres.Job, lease postgres.Lease, heldKey bool) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if heldKey {
		s.finish(ctx, job, lease, postgres.JobWaitingForKey,
			"core stopped while re-encrypting with your master key, which it keeps only in memory; start the job again with X-Master-Key")
		return
	}
	if err := s.store.ReleaseJob(ctx, job.ID, lease.Owner); err != nil {
		s.log.Warn("re-encryption: release job at shutdown; another replica takes it over when its lease expires", "job_id", job.ID, "error", err)
	}
}

// finish ends job in state with msg.
func (s *Service) finish(ctx context.Context, job postgres.Job, lease postgres.Lease, state, msg string) {
	outcome := postgres.OutcomeOK
	switch state {
	case postgres.JobFailed:
		outcome = "ABORTED"
	case postgres.JobWaitingForKey:
		outcome = "FAILED_PRECONDITION"
	}
	done, err := s.store.FinishJob(ctx, job.ID, lease, state, msg, postgres.AuditEvent{
		ActorType: postgres.ActorSystem, Action: "keys.reencrypt.finish", Outcome: outcome})
	if err != nil {
		if !postgres.IsLeaseLost(err) {
			s.log.ErrorContext(ctx, "re-encryption: record the end of a job; another replica retries it when the lease expires",
				"job_id", job.ID, "state", state, "error", err)
		}
		return
	}
	s.opts.Metrics.finished(state)
	s.log.InfoContext(ctx, "re-encryption job finished", "job_id", job.ID, "tenant_id", job.TenantID, "state", state,
		"total", done.Total, "done", done.Done, "skipped", done.Skipped, "failed", done.Failed, "waiting", done.WaitingItems)
}

// heartbeat renews the lease every third of its length until ctx ends; if another replica took
// the job over, it cancels ctx with the cause.
func (s *Service) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, id uuid.UUID, lease postgres.Lease) {
	t := time.NewTicker(lease.For / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.store.RenewLease(ctx, id, lease, nil)
		switch {
		case postgres.IsLeaseLost(err):
			cancel(err)
			return
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "re-encryption: renew job lease", "job_id", id, "error", err)
		}
	}
}

// run plans every context of job, then moves the movable ones, and returns the state the job
// ends in with its message. An error means the job stopped before the end; errParked that it was
// parked.
func (s *Service) run(ctx context.Context, job postgres.Job, lease postgres.Lease, key []byte) (string, string, error) {
	r := &runner{s: s, job: job, lease: lease, key: key, since: job.UnavailableSince, callItems: s.opts.PageSize,
		wasParked: !job.UnavailableSince.IsZero(), degraded: !job.UnavailableSince.IsZero()}
	var es esclient.Client
	if err := r.retryES(ctx, "reach the encryption service", func() error {
		var err error
		es, err = s.router.For(ctx, job.TenantID)
		return err
	}); err != nil {
		return "", "", err
	}
	r.es = es
	var contexts []postgres.JobContext
	if err := r.retry(ctx, "read the job", func() error {
		var err error
		contexts, err = s.store.JobContexts(ctx, job.ID)
		return err
	}); err != nil {
		return "", "", err
	}
	for i, c := range contexts {
		if c.State != postgres.JobContextPending {
			continue
		}
		planned, err := r.plan(ctx, c)
		if err != nil {
			if postgres.IsLeaseLost(err) || errors.Is(err, errParked) || ctx.Err() != nil {
				return "", "", err
			}
			return "", "", errs.Wrap(errs.KindOf(err), err, fmt.Sprintf("key context %s: %s", c.EncryptionID, message(err)))
		}
		contexts[i] = planned
	}
	for _, c := range contexts {
		if c.State != postgres.JobContextMoving {
			continue
		}
		if err := r.move(ctx, c); err != nil {
			return "", "", err
		}
	}
	end, err := r.readJob(ctx)
	if err != nil {
		return "", "", err
	}
	if end.Failed == 0 {
		// With failures the job ends FAILED anyway, and sweeping would only count them again.
		swept, err := r.sweep(ctx)
		if err != nil {
			return "", "", err
		}
		if swept {
			if end, err = r.readJob(ctx); err != nil {
				return "", "", err
			}
		}
	}
	switch {
	case end.Failed > 0:
		return postgres.JobFailed, fmt.Sprintf("%d items could not be re-encrypted; the first: %s; start the job again to retry them",
			end.Failed, end.FirstFailure), nil
	case end.WaitingItems > 0:
		return postgres.JobWaitingForKey, fmt.Sprintf("%d items in %d zero-knowledge key contexts wait for their owners' master keys: "+
			"each owner starts a job with X-Master-Key (POST /v1/keys/jobs), or edits the items", end.WaitingItems, end.WaitingContexts), nil
	}
	return postgres.JobSucceeded, "", nil
}

// maxSweeps bounds how many times a run goes through the job's contexts again after moving them
// (see runner.sweep); maxRedos how many times in a row it rewraps a page whose target version was
// disabled before the page was written (see runner.move).
const (
	maxSweeps = 2
	maxRedos  = 3
)

// runner is one run of one job.
type runner struct {
	s     *Service
	job   postgres.Job
	lease postgres.Lease
	key   []byte
	es    esclient.Client
	// callItems bounds the items of one rewrap call: Options.PageSize, halved each time the
	// encryption service refuses a call as too large (see rewrap).
	callItems int
	// degraded is set while the run retries after an outage; the next page clears the message.
	degraded bool
	// since is when the job began waiting for something unavailable — in this run, or in an
	// earlier one that parked it (Job.UnavailableSince) — and zero while it makes progress:
	// GiveUpAfter counts from it. waiting is when this run began waiting, for ParkAfter.
	since, waiting time.Time
	// wasParked is set when the run took over a parked job that has made no progress since: it
	// parks again at its first failed attempt rather than hold a slot for ParkAfter.
	wasParked bool
}

// progressed records that the job advanced (a context planned, a page written, each clearing
// Job.UnavailableSince in the database): any wait before it no longer counts.
func (r *runner) progressed() {
	r.since, r.waiting, r.wasParked = time.Time{}, time.Time{}, false
}

// plan reads c's active version from the encryption service and records it with the count of
// items to move (or, for a zero-knowledge context of a TENANT job, to wait for).
func (r *runner) plan(ctx context.Context, c postgres.JobContext) (postgres.JobContext, error) {
	var info esclient.Context
	if err := r.retryES(ctx, "read the key context", func() error {
		var err error
		info, err = r.es.GetContext(ctx, c.EncryptionID.String())
		return err
	}); errs.Is(err, errs.NotFound) {
		// Erased with its owner, who was deleted since the job was created: nothing to move.
		// If the database still has the context, the service lost it: the job fails with its answer.
		return r.planGone(ctx, c, err)
	} else if err != nil {
		return c, err
	}
	active, err := uuid.Parse(info.ActiveVersionID)
	if err != nil {
		return c, errs.E(errs.Internal, "the encryption service answered an active version that is not a UUID")
	}
	state := postgres.JobContextMoving
	if r.job.Scope == postgres.JobScopeTenant && c.KeyMode == postgres.KeyModeClient {
		state = postgres.JobContextWaitingForKey
	}
	var planned postgres.JobContext
	err = r.retry(ctx, "plan the key context", func() error {
		var err error
		planned, err = r.s.store.PlanJobContext(ctx, r.job.ID, r.lease, c.EncryptionID, active, state)
		return err
	})
	if err == nil {
		r.progressed()
	}
	return planned, err
}

// planGone plans c, whose key context the encryption service does not know (notFound, its
// answer), as done with nothing to move if the key context is gone from the database too.
func (r *runner) planGone(ctx context.Context, c postgres.JobContext, notFound error) (postgres.JobContext, error) {
	var planned postgres.JobContext
	err := r.retry(ctx, "plan the key context", func() error {
		var err error
		planned, err = r.s.store.PlanJobContext(ctx, r.job.ID, r.lease, c.EncryptionID, uuid.Nil, postgres.JobContextDone)
		return err
	})
	if errs.Is(err, errs.FailedPrecondition) {
		return c, notFound
	}
	if err == nil {
		r.progressed()
	}
	return planned, err
}

// readJob reads the job as it stands.
func (r *runner) readJob(ctx context.Context) (postgres.Job, error) {
	var j postgres.Job
	err := r.retry(ctx, "read the job", func() error {
		var err error
		j, err = r.s.store.GetJob(ctx, r.job.TenantID, r.job.ID)
		return err
	})
	return j, err
}

// sweep goes once more through the contexts the job has moved, for items that are on another
// version than the one they were moved to (see postgres.Store.ContextsToSweep): typically an
// owner's edit encrypted before the rotation and stored after the job passed the item (it carries
// the item's revision, so it succeeds). Such a context is planned again under its active version
// now and moved from the start, its items counted into Total again. It does so up to maxSweeps
// times, so that edits landing during a sweep are caught too, and reports whether it moved
// anything.
func (r *runner) sweep(ctx context.Context) (bool, error) {
	swept := false
	for range maxSweeps {
		var behind []uuid.UUID
		if err := r.retry(ctx, "look for items left behind", func() error {
			var err error
			behind, err = r.s.store.ContextsToSweep(ctx, r.job.ID)
			return err
		}); err != nil {
			return swept, err
		}
		again := false
		for _, enc := range behind {
			var info esclient.Context
			err := r.retryES(ctx, "read the key context", func() error {
				var err error
				info, err = r.es.GetContext(ctx, enc.String())
				return err
			})
			if errs.Is(err, errs.NotFound) {
				continue // erased with its owner meanwhile
			}
			if err != nil {
				return swept, err
			}
			active, err := uuid.Parse(info.ActiveVersionID)
			if err != nil {
				return swept, errs.E(errs.Internal, "the encryption service answered an active version that is not a UUID")
			}
			var c postgres.JobContext
			if err := r.retry(ctx, "sweep the key context", func() error {
				var err error
				c, err = r.s.store.ReplanJobContext(ctx, r.job.ID, r.lease, enc, active)
				return err
			}); err != nil {
				return swept, err
			}
			r.progressed()
			if c.State != postgres.JobContextMoving {
				continue // all on the active version after all: the service rotated by itself
			}
			r.s.log.InfoContext(ctx, "re-encryption: items left on an older version; moving them too", "job_id", r.job.ID,
				"encryption_id", enc, "items", c.ToMove)
			if err := r.move(ctx, c); err != nil {
				return swept, err
			}
			swept, again = true, true
		}
		if !again {
			break
		}
	}
	return swept, nil
}

// move moves c's items page by page from its checkpoint.
func (r *runner) move(ctx context.Context, c postgres.JobContext) error {
	after := c.Checkpoint
	redos := 0
	for {
		var items []postgres.Item
		var more bool
		if err := r.retry(ctx, "read items", func() error {
			var err error
			items, more, err = r.s.store.ItemsToMove(ctx, r.job.TenantID, c.EncryptionID, c.ActiveVersionID, after,
				r.s.opts.PageSize, r.s.opts.PageBytes)
			return err
		}); err != nil {
			return err
		}
		page := postgres.Page{Checkpoint: after, Last: !more}
		if len(items) > 0 {
			page.Checkpoint = items[len(items)-1].ID
			if err := r.rewrap(ctx, items, &page); err != nil {
				return err
			}
		}
		if r.degraded {
			clearMsg := ""
			page.Message, r.degraded = &clearMsg, false
		}
		// If a commit succeeded but its answer was lost, the retry finds the page written and
		// counts nothing more.
		var applied postgres.Applied
		err := r.retry(ctx, "write items", func() error {
			var err error
			applied, err = r.s.store.ApplyPage(ctx, r.job.ID, r.lease, c.EncryptionID, page)
			return err
		})
		if postgres.IsVersionDisabled(err) && redos < maxRedos {
			// Rewrapped into a version disabled since (the service rotated the context by itself,
			// and an admin disabled the version that no item used yet): rewrapped again, the page
			// goes to the version active now.
			redos++
			r.degraded = r.degraded || page.Message != nil
			r.s.log.WarnContext(ctx, "re-encryption: page rewrapped into a version disabled since; rewrapping it again", "job_id", r.job.ID,
				"encryption_id", c.EncryptionID, "error", err)
			continue
		}
		if err != nil {
			return err
		}
		redos = 0
		r.progressed()
		r.s.opts.Metrics.moved(applied.Done)
		r.s.opts.Metrics.skipped(applied.Skipped)
		r.s.opts.Metrics.failed(applied.Failed)
		r.s.log.DebugContext(ctx, "re-encryption page written", "job_id", r.job.ID, "encryption_id", c.EncryptionID,
			"done", applied.Done, "skipped", applied.Skipped, "failed", applied.Failed)
		if page.Last {
			return nil
		}
		after = page.Checkpoint
	}
}

// rewrap rewraps items and fills page with the moves and failures. They go to the service in
// calls of at most callItems: the whole page, unless the service refused a call as too large
// (ResourceExhausted), which is then split in halves, down to one item, and the rest of the run
// keeps to the size taken; an item refused so on its own fails. An item the service refuses on
// its own fails, unless it does not know the item's key context or version (then ApplyPage finds
// out whether its owner is gone); an unavailable service is retried for the call; a refused
// master key fails the job.
func (r *runner) rewrap(ctx context.Context, items []postgres.Item, page *postgres.Page) error {
	cts := make([]esclient.Ciphertext, len(items))
	for i, it := range items {
		cts[i] = vault.Ciphertext(it)
	}
	results := make([]esclient.RewrapResult, len(items))
	for start := 0; start < len(cts); {
		end := min(start+r.callItems, len(cts))
		err := r.rewrapCall(ctx, cts[start:end], results[start:end])
		switch {
		case errs.Is(err, errs.ResourceExhausted) && end-start > 1:
			// Over the service's limit on a request or on a batch's items (it was configured
			// below the page budget): half as many, for this call and the rest of the run.
			r.callItems = (end - start) / 2
			r.s.log.DebugContext(ctx, "re-encryption: rewrap call refused as too large; splitting it", "job_id", r.job.ID,
				"items", end-start, "error", err)
			continue
		case errs.Is(err, errs.ResourceExhausted):
			results[start].Err = err // too large on its own: it fails alone
		case err != nil:
			return err
		}
		start = end
	}
	for i, res := range results {
		it := items[i]
		if res.Err == nil && res.Ciphertext.EncryptionID != it.EncryptionID.String() {
			res.Err = errs.E(errs.Internal, "the encryption service rewrapped it into another key context")
		}
		var to postgres.Item
		if res.Err == nil {
			to, res.Err = toItem(res.Ciphertext)
		}
		if res.Err != nil {
			if errs.Is(res.Err, errs.PermissionDenied) || errs.Is(res.Err, errs.Unauthenticated) {
				return errs.Wrap(errs.PermissionDenied, res.Err, "the encryption service refused the master key: "+message(res.Err))
			}
			if errs.Is(res.Err, errs.NotFound) {
				page.Unknown = append(page.Unknown, postgres.Unknown{ID: it.ID, Reason: message(res.Err)})
				continue
			}
			page.Failed++
			if page.Failure == "" {
				page.Failure = fmt.Sprintf("item %s: %s", it.ID, message(res.Err))
			}
			continue
		}
		page.Moves = append(page.Moves, postgres.Move{ID: it.ID, Revision: it.Revision, FromVersionID: it.VersionID, To: to})
	}
	return nil
}

// rewrapCall rewraps cts into out in one call. The service's answer for the call as a whole is
// returned as is, unless it was unavailable (then the call is retried: see retryES).
func (r *runner) rewrapCall(ctx context.Context, cts []esclient.Ciphertext, out []esclient.RewrapResult) error {
	var results []esclient.RewrapResult
	err := r.retryES(ctx, "rewrap", func() error {
		var err error
		results, err = r.es.RewrapBatch(ctx, cts, r.key)
		if err != nil {
			return err
		}
		for _, res := range results {
			if errs.Is(res.Err, errs.Unavailable) {
				return res.Err // the service is in trouble: the whole call again
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(results) != len(cts) {
		return errs.E(errs.Internal, "the encryption service answered %d rewrap results for %d items", len(results), len(cts))
	}
	copy(out, results)
	return nil
}

// toItem turns a rewrapped ciphertext into the fields stored.
func toItem(ct esclient.Ciphertext) (postgres.Item, error) {
	enc, err1 := uuid.Parse(ct.EncryptionID)
	ver, err2 := uuid.Parse(ct.VersionID)
	if err1 != nil || err2 != nil || ct.CipherText == "" || len(ct.Metadata) == 0 || ct.Metadata[0] != '{' {
		return postgres.Item{}, errs.E(errs.Internal, "the encryption service answered a malformed ciphertext")
	}
	return postgres.Item{CipherText: ct.CipherText, EncryptionID: enc, VersionID: ver, Algorithm: ct.Algorithm, Metadata: ct.Metadata}, nil
}

// retry runs fn, a step on the database, until it succeeds or fails with something other than
// Unavailable, backing off exponentially with jitter between attempts and saying so in the job's
// message. After GiveUpAfter of unavailability it gives up with Unavailable.
func (r *runner) retry(ctx context.Context, what string, fn func() error) error {
	return r.retryStep(ctx, what, false, fn)
}

// retryES is retry for a step on the tenant's encryption service, which may also end with
// errParked: the job was parked after waiting ParkAfter for the service (see park).
func (r *runner) retryES(ctx context.Context, what string, fn func() error) error {
	return r.retryStep(ctx, what, true, fn)
}

// retryStep is retry, parking the job if es says that fn calls the encryption service. A database
// outage does not park: it holds up every tenant alike, and parking would need the database.
func (r *runner) retryStep(ctx context.Context, what string, es bool, fn func() error) error {
	delay := r.s.opts.RetryMin
	for {
		err := fn()
		if err == nil || !errs.Is(err, errs.Unavailable) || postgres.IsLeaseLost(err) {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		now := time.Now()
		if r.since.IsZero() {
			r.since = now
		}
		first := r.waiting.IsZero()
		if first {
			r.waiting, r.degraded = now, true
		}
		if now.Sub(r.since) > r.s.opts.GiveUpAfter {
			return errs.Wrap(errs.Unavailable, err, fmt.Sprintf("%s: %s for over %s; start the job again", what, message(err), r.s.opts.GiveUpAfter))
		}
		// An owner's job cannot park: its master key is in this replica's memory only.
		if es && r.key == nil && (r.wasParked || now.Sub(r.waiting) >= r.s.opts.ParkAfter) {
			perr := r.park(ctx, what, err)
			if errors.Is(perr, errParked) || postgres.IsLeaseLost(perr) {
				return perr
			}
			// The database failed too: wait here, and park after the next attempt.
			r.s.log.WarnContext(ctx, "re-encryption: park job", "job_id", r.job.ID, "error", perr)
		}
		if first {
			msg := fmt.Sprintf("%s: %s since %s; retrying", what, message(err), r.since.UTC().Format(time.RFC3339))
			// Best effort: the database may be what is unavailable.
			if err := r.s.store.RenewLease(ctx, r.job.ID, r.lease, &msg); postgres.IsLeaseLost(err) {
				return err
			}
			r.s.log.WarnContext(ctx, "re-encryption: unavailable, backing off", "job_id", r.job.ID, "step", what, "error", err)
		}
		r.s.opts.Metrics.retry()
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(delay/2 + rand.N(delay/2+1)): //nolint:gosec // jitter, not a secret
		}
		delay = min(2*delay, r.s.opts.RetryMax)
	}
}

// park frees the job's slot while its encryption service is unavailable: the job stays RUNNING,
// says since when it waits, and no replica claims it again for ParkFor; whoever claims it then
// counts GiveUpAfter from r.since. It returns errParked, or why the job could not be parked.
func (r *runner) park(ctx context.Context, what string, cause error) error {
	next := time.Now().Add(r.s.opts.ParkFor)
	msg := fmt.Sprintf("waiting for the encryption service since %s (%s: %s); next attempt after %s",
		r.since.UTC().Format(time.RFC3339), what, message(cause), next.UTC().Format(time.RFC3339))
	if err := r.s.store.ParkJob(ctx, r.job.ID, r.lease, r.since, r.s.opts.ParkFor, msg); err != nil {
		return err
	}
	r.s.opts.Metrics.parked()
	log := r.s.log.InfoContext
	if r.wasParked {
		log = r.s.log.DebugContext // parked again after one more attempt: said before
	}
	log(ctx, "re-encryption: encryption service unavailable; job parked", "job_id", r.job.ID, "tenant_id", r.job.TenantID,
		"step", what, "unavailable_since", r.since, "next_attempt", next, "error", cause)
	return errParked
}
