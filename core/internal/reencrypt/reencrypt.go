// Package reencrypt rotates a tenant's keys and moves its vault items to their key contexts'
// active versions, by batch rewrap on the encryption service: the plaintext never leaves it.
//
// Moving is done by jobs, recorded in the database and worked by a worker in every core replica
// (Service.Run): a replica claims a job with a lease, moves it page by page, writes each page
// back with optimistic concurrency (an item edited meanwhile is never overwritten) together with
// the job's checkpoint, and renews the lease as it goes. If the replica dies, its lease expires
// and another one resumes from the checkpoint; if the encryption service is unavailable, the job
// backs off and retries, and after a short while parks: it frees its replica's slot for other
// tenants' jobs and is claimed again (by any replica) a little later, until the service is back
// or the job has waited Options.GiveUpAfter in all.
//
// Zero-knowledge (CLIENT) contexts cannot be rewrapped without their owner's master key. A job
// started by a tenant admin or machine moves the PLATFORM contexts and reports the CLIENT ones as
// waiting; a job started by an owner with X-Master-Key moves the owner's own context, with the key
// held only in the memory of the replica that accepted the request — never in the database. If
// that replica stops, the job ends WAITING_FOR_KEY and the owner starts it again.
//
// Every error is an *errs.Error whose message is safe to show; none holds data or keys.
package reencrypt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/vault"
)

// Store is what re-encryption needs from the database.
type Store interface {
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
	GetKeyContext(ctx context.Context, userID uuid.UUID) (postgres.KeyContext, error)
	KeyContexts(ctx context.Context, tenantID uuid.UUID) ([]postgres.KeyContext, error)
	CountItemsByVersion(ctx context.Context, tenantID uuid.UUID) ([]postgres.VersionCount, error)
	DisableUnusedVersion(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, disable func(context.Context) error, audit postgres.AuditEvent) error
	EnableVersion(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, enable func(context.Context) error, audit postgres.AuditEvent) error

	CreateJob(ctx context.Context, j postgres.Job, lease postgres.Lease, audit postgres.AuditEvent) (postgres.Job, error)
	CreateRotationJob(ctx context.Context, j postgres.Job, lease postgres.Lease, audit postgres.AuditEvent) (postgres.Job, error)
	UnfinishedJob(ctx context.Context, tenantID, ownerID uuid.UUID) (postgres.Job, bool, error)
	GetJob(ctx context.Context, tenantID, id uuid.UUID) (postgres.Job, error)
	ListJobs(ctx context.Context, tenantID uuid.UUID, pageSize int, cursor string) ([]postgres.Job, string, error)
	ClaimJob(ctx context.Context, lease postgres.Lease) (postgres.Job, bool, error)
	RenewLease(ctx context.Context, id uuid.UUID, lease postgres.Lease, message *string) error
	ReleaseJob(ctx context.Context, id uuid.UUID, owner string) error
	QueueJob(ctx context.Context, id uuid.UUID, owner string) (postgres.Job, error)
	ParkJob(ctx context.Context, id uuid.UUID, lease postgres.Lease, since time.Time, wait time.Duration, message string) error
	JobContexts(ctx context.Context, id uuid.UUID) ([]postgres.JobContext, error)
	PlanJobContext(ctx context.Context, id uuid.UUID, lease postgres.Lease, encryptionID, activeVersionID uuid.UUID, state string) (postgres.JobContext, error)
	ReplanJobContext(ctx context.Context, id uuid.UUID, lease postgres.Lease, encryptionID, activeVersionID uuid.UUID) (postgres.JobContext, error)
	ContextsToSweep(ctx context.Context, id uuid.UUID) ([]uuid.UUID, error)
	ItemsToMove(ctx context.Context, tenantID, encryptionID, activeVersionID, after uuid.UUID, limit int, maxBytes int64) ([]postgres.Item, bool, error)
	ApplyPage(ctx context.Context, id uuid.UUID, lease postgres.Lease, encryptionID uuid.UUID, p postgres.Page) (postgres.Applied, error)
	FinishJob(ctx context.Context, id uuid.UUID, lease postgres.Lease, state, message string, audit postgres.AuditEvent) (postgres.Job, error)
}

var _ Store = (*postgres.Store)(nil)

// Router gives the encryption service client of a tenant; *esclient.Router is one.
type Router interface {
	For(ctx context.Context, tenantID uuid.UUID) (esclient.Client, error)
}

// Metrics receives the worker's progress; the nil funcs are skipped. Wire them to counters.
type Metrics struct {
	ItemsMoved   func(n int64)      // items written under the active version
	ItemsSkipped func(n int64)      // items edited or deleted meanwhile, or gone with their owner
	ItemsFailed  func(n int64)      // items the encryption service refused
	JobFinished  func(state string) // a job ended SUCCEEDED, FAILED or WAITING_FOR_KEY
	Retry        func()             // the worker backed off: the encryption service or database was unavailable
	JobParked    func()             // a job waiting for its encryption service freed its slot until later
}

func (m Metrics) moved(n int64) {
	if m.ItemsMoved != nil && n > 0 {
		m.ItemsMoved(n)
	}
}

func (m Metrics) skipped(n int64) {
	if m.ItemsSkipped != nil && n > 0 {
		m.ItemsSkipped(n)
	}
}

func (m Metrics) failed(n int64) {
	if m.ItemsFailed != nil && n > 0 {
		m.ItemsFailed(n)
	}
}

func (m Metrics) finished(state string) {
	if m.JobFinished != nil {
		m.JobFinished(state)
	}
}

func (m Metrics) retry() {
	if m.Retry != nil {
		m.Retry()
	}
}

func (m Metrics) parked() {
	if m.JobParked != nil {
		m.JobParked()
	}
}

// Defaults of Options.
const (
	DefaultPageSize     = 200
	DefaultPageBytes    = esclient.DefaultServiceMaxRequestBytes / 2
	DefaultLease        = 30 * time.Second
	DefaultPollInterval = 2 * time.Second
	DefaultMaxJobs      = 2
	DefaultRetryMin     = 250 * time.Millisecond
	DefaultRetryMax     = 10 * time.Second
	DefaultGiveUpAfter  = time.Hour
	DefaultParkAfter    = 30 * time.Second
	DefaultParkFor      = time.Minute
	DefaultParallelism  = 8
)

// Options tune the service; zero values mean the defaults.
type Options struct {
	// PageSize is how many items one page moves, at most: one rewrap call and one transaction
	// (DefaultPageSize; the encryption service takes at most 1000 in a call).
	PageSize int
	// PageBytes bounds the ciphertext (as stored: base64) of a page, so that its rewrap call fits
	// the encryption service's limit on a request (DefaultPageBytes: half the service's default
	// of 4 MiB, leaving room for the call's other fields; any single item fits, as core bounds an
	// item's encoded name and data to 1 MiB). A page holds at least one item whatever its size.
	// A call the service still refuses as too large (ResourceExhausted: it was configured with a
	// lower limit) is split in halves, down to one item; the rest of the run keeps to that size.
	PageBytes int64
	// Lease is how long a replica holds a job without renewing it (DefaultLease); another
	// replica takes a job over this long after its replica died. Renewed every Lease/3.
	Lease time.Duration
	// PollInterval is how often the worker looks for jobs that other replicas created or
	// abandoned (DefaultPollInterval); jobs created by this replica start at once.
	PollInterval time.Duration
	// MaxJobs bounds the jobs this replica's worker claims at a time (DefaultMaxJobs). Jobs an
	// owner started here with their master key are not counted: only this replica can run them.
	MaxJobs int
	// RetryMin and RetryMax bound the back-off while the encryption service or the database is
	// unavailable (DefaultRetryMin, DefaultRetryMax); after GiveUpAfter of unavailability the
	// job fails (DefaultGiveUpAfter), counted across parks (see ParkAfter).
	RetryMin, RetryMax, GiveUpAfter time.Duration
	// ParkAfter is how long a claimed job waits in its slot for an unavailable encryption service
	// before it parks (DefaultParkAfter): it frees the slot, so that an offline tenant does not
	// hold up other tenants' jobs, and no replica claims it again for ParkFor (DefaultParkFor).
	// A job claimed again while still waiting parks at its first failed attempt. Jobs an owner
	// started here with their master key never park: no other replica could run them.
	ParkAfter, ParkFor time.Duration
	// Parallelism bounds concurrent calls to a tenant's encryption service when rotating or
	// reading the status of many contexts (DefaultParallelism).
	Parallelism int
	// WorkerID names this replica in job leases; default host name, process id and a random
	// suffix.
	WorkerID string
	Logger   *slog.Logger // progress and failures, never data or keys; nil discards
	Metrics  Metrics
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.PageSize <= 0 || o.PageSize > 1000 {
		o.PageSize = DefaultPageSize
	}
	if o.PageBytes <= 0 {
		o.PageBytes = DefaultPageBytes
	}
	def(&o.Lease, DefaultLease)
	def(&o.PollInterval, DefaultPollInterval)
	def(&o.RetryMin, DefaultRetryMin)
	def(&o.RetryMax, DefaultRetryMax)
	def(&o.GiveUpAfter, DefaultGiveUpAfter)
	def(&o.ParkAfter, DefaultParkAfter)
	def(&o.ParkFor, DefaultParkFor)
	if o.MaxJobs <= 0 {
		o.MaxJobs = DefaultMaxJobs
	}
	if o.Parallelism <= 0 {
		o.Parallelism = DefaultParallelism
	}
	if o.WorkerID == "" {
		host, _ := os.Hostname()
		o.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), rand.Text()[:6])
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Service rotates keys, starts and reports jobs, and (Run) works them.
type Service struct {
	store  Store
	router Router
	opts   Options
	log    *slog.Logger

	wake chan struct{} // a job was created here: look now

	mu      sync.Mutex
	running context.Context // Run's context while it runs; nil before and after
	jobs    sync.WaitGroup  // work goroutines
	working atomic.Int64    // jobs being worked here, for Running
}

// New returns a Service over store, reaching each tenant's encryption service through router.
func New(store Store, router Router, opts Options) *Service {
	opts = opts.withDefaults()
	return &Service{store: store, router: router, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
}

// Call is the request's metadata: the caller's master key (nil when the request carried none)
// and what the audit trail records.
type Call struct {
	MasterKey  []byte
	RequestID  string
	RemoteAddr string
}

// RotateKeys gives every key context of the caller's tenant a new active version on its
// encryption service (zero-knowledge ones too: that needs no master key) and creates a job that
// moves the items to them. It returns how many contexts were rotated and the job.
//
// The job is created first, held by this replica while the contexts rotate: the tenant's one
// unfinished tenant-wide job is the lock that refuses a concurrent rotation before it rotates
// anything (two at once would give every context two new versions), and no worker starts moving
// items before every context has its new version. A rotation that fails part-way ends the job
// FAILED at once, so that rotating again is not refused.
//
// Errors: PermissionDenied for a caller outside a tenant; FailedPrecondition while another
// tenant-wide job, or a zero-knowledge owner's job of the tenant, is unfinished (rotating would
// leave it moving items to versions that are no longer active); the encryption service's errors (Unavailable: contexts rotated before the
// failure keep their new version — rotating again is harmless).
func (s *Service) RotateKeys(ctx context.Context, c Call) (int, postgres.Job, error) {
	p, err := admin(ctx)
	if err != nil {
		return 0, postgres.Job{}, err
	}
	kcs, err := s.store.KeyContexts(ctx, p.TenantID)
	if err != nil {
		return 0, postgres.Job{}, err
	}
	es, err := s.router.For(ctx, p.TenantID)
	if err != nil {
		return 0, postgres.Job{}, err
	}
	lease := s.newLease()
	job, err := s.store.CreateRotationJob(ctx, newJob(p, postgres.JobScopeTenant), lease, event(p, c, "keys.rotate"))
	if err != nil {
		return 0, postgres.Job{}, err
	}
	held, release := context.WithCancelCause(ctx)
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		s.heartbeat(held, release, job.ID, lease)
	}()
	rotated, err := s.parallel(held, len(kcs), func(ctx context.Context, i int) error {
		_, err := es.Rotate(ctx, kcs[i].EncryptionID.String())
		return err
	})
	release(nil)
	<-beat
	// Past the request's end: the job must not stay held until its lease expires.
	after, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if err != nil {
		if cause := context.Cause(held); postgres.IsLeaseLost(cause) {
			err = cause
		}
		msg := fmt.Sprintf("rotated %d of %d key contexts, then: %s; rotate again", rotated, len(kcs), message(err))
		if _, ferr := s.store.FinishJob(after, job.ID, lease, postgres.JobFailed, "keys not moved: "+msg, postgres.AuditEvent{
			ActorType: postgres.ActorSystem, Action: "keys.reencrypt.finish", Outcome: "ABORTED"}); ferr != nil && !postgres.IsLeaseLost(ferr) {
			s.log.WarnContext(ctx, "re-encryption: end the job of a failed rotation", "job_id", job.ID, "error", ferr)
		}
		return rotated, postgres.Job{}, errs.Wrap(errs.KindOf(err), err, msg)
	}
	if queued, err := s.store.QueueJob(after, job.ID, lease.Owner); err == nil {
		job = queued
	} else if !postgres.IsLeaseLost(err) {
		// Its lease expires on its own; a worker takes the job then.
		s.log.WarnContext(ctx, "re-encryption: hand the job of a rotation to the workers", "job_id", job.ID, "error", err)
	}
	s.log.InfoContext(ctx, "keys rotated; re-encryption job created", "tenant_id", p.TenantID, "contexts", rotated, "job_id", job.ID)
	s.notify()
	return rotated, job, nil
}

// StartReencryption creates a job moving items to their contexts' active versions. With a master
// key (c.MasterKey) it moves the caller's own zero-knowledge items, on this replica, holding the
// key only in memory; without one, a tenant admin or machine moves every platform-managed context
// of the tenant (zero-knowledge ones are counted as waiting for their owners).
//
// Errors: Invalid for a master key in a platform-managed tenant or from a machine;
// PermissionDenied for a member without a master key; PermissionDenied when the encryption
// service refuses the master key (checked on one item before the job is created);
// FailedPrecondition while a job of the same scope is unfinished, or when the caller has no
// zero-knowledge key context; Unavailable when this replica is shutting down.
func (s *Service) StartReencryption(ctx context.Context, c Call) (postgres.Job, error) {
	p, err := member(ctx)
	if err != nil {
		return postgres.Job{}, err
	}
	if c.MasterKey == nil {
		if !p.TenantAdmin() && p.Kind != principal.APIKey {
			return postgres.Job{}, errs.E(errs.PermissionDenied,
				"a member re-encrypts only their own zero-knowledge items, sending X-Master-Key; the tenant's admins re-encrypt the rest")
		}
		job, err := s.store.CreateJob(ctx, newJob(p, postgres.JobScopeTenant), postgres.Lease{}, event(p, c, "keys.reencrypt.start"))
		if err != nil {
			return postgres.Job{}, err
		}
		s.notify()
		return job, nil
	}

	if !p.Human() {
		return postgres.Job{}, errs.E(errs.Invalid, "X-Master-Key: machines have no master key; send none")
	}
	t, err := s.store.GetTenant(ctx, p.TenantID)
	if err != nil {
		return postgres.Job{}, err
	}
	if t.KeyMode != postgres.KeyModeClient {
		return postgres.Job{}, errs.E(errs.Invalid, "X-Master-Key must not be sent: this tenant's keys are platform-managed")
	}
	kc, err := s.store.GetKeyContext(ctx, p.ID)
	if errs.Is(err, errs.NotFound) {
		return postgres.Job{}, errs.E(errs.FailedPrecondition, "you have no key context yet: you have no items to re-encrypt")
	}
	if err != nil {
		return postgres.Job{}, err
	}
	if j, found, err := s.store.UnfinishedJob(ctx, p.TenantID, p.ID); err != nil {
		return postgres.Job{}, err
	} else if found {
		return postgres.Job{}, postgres.ErrUnfinished(j)
	}
	if err := s.checkKey(ctx, p.TenantID, kc.EncryptionID, c.MasterKey); err != nil {
		return postgres.Job{}, err
	}
	key := append([]byte(nil), c.MasterKey...)
	run, ok := s.runContext()
	if !ok {
		return postgres.Job{}, errs.E(errs.Unavailable, "this core replica is shutting down; try again")
	}
	job := newJob(p, postgres.JobScopeOwner)
	job.OwnerID = p.ID
	lease := s.newLease()
	job, err = s.store.CreateJob(ctx, job, lease, event(p, c, "keys.reencrypt.start"))
	if err != nil {
		clear(key)
		return postgres.Job{}, err
	}
	s.spawn(run, job, lease, key)
	return job, nil
}

// checkKey rewraps one item of the caller's context that is not on the active version, if there
// is one, to find out before creating a job whether the encryption service takes masterKey. The
// result is dropped: the job moves that item too.
func (s *Service) checkKey(ctx context.Context, tenantID, encryptionID uuid.UUID, masterKey []byte) error {
	es, err := s.router.For(ctx, tenantID)
	if err != nil {
		return err
	}
	info, err := es.GetContext(ctx, encryptionID.String())
	if err != nil {
		return err
	}
	active, err := uuid.Parse(info.ActiveVersionID)
	if err != nil {
		return errs.E(errs.Internal, "the encryption service answered an active version that is not a UUID")
	}
	items, _, err := s.store.ItemsToMove(ctx, tenantID, encryptionID, active, uuid.Nil, 1, s.opts.PageBytes)
	if err != nil || len(items) == 0 {
		return err
	}
	res, err := es.RewrapBatch(ctx, []esclient.Ciphertext{vault.Ciphertext(items[0])}, masterKey)
	if err != nil {
		return err
	}
	if err := res[0].Err; errs.Is(err, errs.PermissionDenied) || errs.Is(err, errs.Unauthenticated) {
		return err
	}
	return nil
}

// GetJob returns a job of the caller's tenant. A member sees only the jobs they started.
// Errors: NotFound for an unknown job, another tenant's, or (for a member) another person's.
func (s *Service) GetJob(ctx context.Context, id uuid.UUID) (postgres.Job, error) {
	p, err := member(ctx)
	if err != nil {
		return postgres.Job{}, err
	}
	j, err := s.store.GetJob(ctx, p.TenantID, id)
	if err != nil {
		return postgres.Job{}, err
	}
	if p.Kind == principal.User && !p.TenantAdmin() && j.OwnerID != p.ID && j.CreatedBy != p.ID {
		return postgres.Job{}, errs.E(errs.NotFound, "job %s not found", id)
	}
	return j, nil
}

// ListJobs returns a page of the caller's tenant's jobs, newest first, and the token of the next
// page ("" on the last). Errors: Invalid for a token ListJobs did not return.
func (s *Service) ListJobs(ctx context.Context, pageSize int, token string) ([]postgres.Job, string, error) {
	p, err := admin(ctx)
	if err != nil {
		return nil, "", err
	}
	return s.store.ListJobs(ctx, p.TenantID, pageSize, token)
}

// ContextStatus is one key context of a tenant with its versions.
type ContextStatus struct {
	EncryptionID, OwnerID uuid.UUID
	KeyMode               string
	Versions              []VersionStatus // oldest first
}

// VersionStatus is one key version: its state on the encryption service and the items it
// encrypts.
type VersionStatus struct {
	ID      string
	Version int
	State   string // ACTIVE, DECRYPT_ONLY, DISABLED or DESTROYED
	Items   int64
}

// KeyStatus describes every key context of the caller's tenant: each version's state, from the
// encryption service, and how many items it encrypts. Errors: the encryption service's.
func (s *Service) KeyStatus(ctx context.Context) ([]ContextStatus, error) {
	p, err := admin(ctx)
	if err != nil {
		return nil, err
	}
	kcs, err := s.store.KeyContexts(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	counts, err := s.store.CountItemsByVersion(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	perVersion := map[[2]uuid.UUID]int64{}
	for _, c := range counts {
		perVersion[[2]uuid.UUID{c.EncryptionID, c.VersionID}] = c.Items
	}
	es, err := s.router.For(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	out := make([]ContextStatus, len(kcs))
	_, err = s.parallel(ctx, len(kcs), func(ctx context.Context, i int) error {
		info, err := es.GetContext(ctx, kcs[i].EncryptionID.String())
		if err != nil {
			return err
		}
		cs := ContextStatus{EncryptionID: kcs[i].EncryptionID, OwnerID: kcs[i].UserID, KeyMode: kcs[i].KeyMode}
		for _, v := range info.Versions {
			vid, _ := uuid.Parse(v.ID)
			cs.Versions = append(cs.Versions, VersionStatus{ID: v.ID, Version: v.Version, State: v.State,
				Items: perVersion[[2]uuid.UUID{kcs[i].EncryptionID, vid}]})
		}
		out[i] = cs
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DisableVersion disables a version of one of the caller's tenant's key contexts on its
// encryption service, if no item uses it, and returns the version afterwards.
//
// Errors: NotFound for a context that is not the tenant's (or an unknown version);
// FailedPrecondition while items use the version (saying how many) and for the active version;
// the encryption service's other errors.
func (s *Service) DisableVersion(ctx context.Context, c Call, encryptionID, versionID uuid.UUID) (VersionStatus, error) {
	p, err := admin(ctx)
	if err != nil {
		return VersionStatus{}, err
	}
	es, err := s.router.For(ctx, p.TenantID)
	if err != nil {
		return VersionStatus{}, err
	}
	err = s.store.DisableUnusedVersion(ctx, p.TenantID, encryptionID, versionID, func(ctx context.Context) error {
		return es.DisableVersion(ctx, encryptionID.String(), versionID.String())
	}, event(p, c, "keys.version.disable"))
	if err != nil {
		return VersionStatus{}, err
	}
	return s.versionAfter(ctx, es, encryptionID, versionID, "DISABLED"), nil
}

// EnableVersion makes a disabled version of one of the tenant's key contexts decrypt again
// (DECRYPT_ONLY) on the encryption service, for instance to read items restored from a backup
// made before it was disabled, and returns its state. Items under it can then be moved to the
// active version by a re-encryption job.
//
// Errors: PermissionDenied unless the caller is a tenant admin or holds keys:rotate; NotFound for
// another tenant's or an unknown context or version; FailedPrecondition for a destroyed version;
// Unavailable when the encryption service cannot be reached.
func (s *Service) EnableVersion(ctx context.Context, c Call, encryptionID, versionID uuid.UUID) (VersionStatus, error) {
	p, err := admin(ctx)
	if err != nil {
		return VersionStatus{}, err
	}
	es, err := s.router.For(ctx, p.TenantID)
	if err != nil {
		return VersionStatus{}, err
	}
	err = s.store.EnableVersion(ctx, p.TenantID, encryptionID, versionID, func(ctx context.Context) error {
		return es.EnableVersion(ctx, encryptionID.String(), versionID.String())
	}, event(p, c, "keys.version.enable"))
	if err != nil {
		return VersionStatus{}, err
	}
	return s.versionAfter(ctx, es, encryptionID, versionID, "DECRYPT_ONLY"), nil
}

// versionAfter describes a version just changed to state, as the encryption service now reports
// it; when it cannot be read, the answer lacks the version number but the change stands.
func (s *Service) versionAfter(ctx context.Context, es esclient.Client, encryptionID, versionID uuid.UUID, state string) VersionStatus {
	out := VersionStatus{ID: versionID.String(), State: state}
	info, err := es.GetContext(ctx, encryptionID.String())
	if err != nil {
		s.log.WarnContext(ctx, "read a key context after changing a version's state", "encryption_id", encryptionID, "error", err)
		return out
	}
	for _, v := range info.Versions {
		if v.ID == versionID.String() {
			out.Version, out.State = v.Version, v.State
		}
	}
	return out
}

// newLease is a lease for one run of one job. Its owner is unique to the run, so that two runs
// of a job in one replica (after a lease expired during a stall) never both pass as the holder.
func (s *Service) newLease() postgres.Lease {
	return postgres.Lease{Owner: s.opts.WorkerID + "/" + rand.Text()[:8], For: s.opts.Lease}
}

// parallel runs fn for 0 ≤ i < n with at most Options.Parallelism at a time, stopping at the
// first error, and returns how many succeeded and that error.
func (s *Service) parallel(ctx context.Context, n int, fn func(context.Context, int) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		ok    int
		wg    sync.WaitGroup
		slots = make(chan struct{}, s.opts.Parallelism)
	)
	for i := 0; i < n; i++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			err := fn(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case first == nil:
				first = err
				cancel()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = errs.Wrap(errs.Unavailable, ctx.Err(), "request cancelled")
	}
	return ok, first
}

// admin returns the caller, who must be a tenant admin or a machine of a tenant (the policy
// already lets only those in; checked again where the service relies on it).
func admin(ctx context.Context) (principal.Principal, error) {
	p, err := member(ctx)
	if err != nil {
		return p, err
	}
	if !p.TenantAdmin() && p.Kind != principal.APIKey {
		return principal.Principal{}, errs.E(errs.PermissionDenied, "your role (%s) may not manage the tenant's keys", p.Role)
	}
	return p, nil
}

// member returns the caller, who must belong to a tenant.
func member(ctx context.Context) (principal.Principal, error) {
	p := principal.FromContext(ctx)
	if p.TenantID == uuid.Nil || (p.Kind != principal.User && p.Kind != principal.APIKey) {
		return principal.Principal{}, errs.E(errs.PermissionDenied, "keys are managed by the people and machines of a tenant")
	}
	return p, nil
}

func newJob(p principal.Principal, scope string) postgres.Job {
	j := postgres.Job{TenantID: p.TenantID, Scope: scope, CreatedByType: postgres.ActorUser, CreatedBy: p.ID}
	if p.Kind == principal.APIKey {
		j.CreatedByType = postgres.ActorAPIKey
	}
	return j
}

func event(p principal.Principal, c Call, action string) postgres.AuditEvent {
	id := p.ID
	actor := postgres.ActorUser
	if p.Kind == principal.APIKey {
		actor = postgres.ActorAPIKey
	}
	return postgres.AuditEvent{ActorType: actor, ActorID: &id, Action: action, Outcome: postgres.OutcomeOK,
		RemoteAddr: c.RemoteAddr, RequestID: c.RequestID}
}

// message is err's message safe to show.
func message(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Kind != errs.Internal {
		return e.Message
	}
	return "internal error"
}
