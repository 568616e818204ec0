// Package erasure has tenants' encryption services destroy the key contexts core no longer uses
// (crypto-shredding): a deleted user's personal context, so that their ciphertext, backups and
// exports included, can never be decrypted again, and contexts created for a user but never
// recorded; and has the platform's encryption service destroy deleted tenants, every key of them,
// through its admin plane (core.tenant_erasures, written by postgres.Store.DeleteTenant).
//
// The obligation is a row of core.key_erasures, written in the transaction that makes the context
// unused (postgres.Store.DeleteUser, PutKeyContext); it is deleted only once the encryption service
// has destroyed the context or answers that it does not know it. Erase tries at once, in the
// request that deleted the user; Run retries what is left, on every replica, with exponential
// back-off, for as long as it takes: an unreachable service, a hosted one whose credential an
// operator must fix, or one that lacks the method (a plain 404 or 501 on DELETE
// /v1/encryptions/{encryptionId}) keep their rows, the last error and a warning in the log each
// attempt, and custos_key_erasures_pending above zero.
package erasure

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// Store is what erasure needs from the database; *postgres.Store is one.
type Store interface {
	ClaimErasures(ctx context.Context, limit int, lease time.Duration) ([]postgres.Erasure, error)
	FinishErasure(ctx context.Context, encryptionID uuid.UUID, audit postgres.AuditEvent) error
	DeferErasure(ctx context.Context, encryptionID uuid.UUID, attempts int, retryIn time.Duration, reason string) error
	ErasureBacklog(ctx context.Context) (postgres.ErasureBacklog, error)
	ClaimTenantErasures(ctx context.Context, limit int, lease time.Duration) ([]postgres.TenantErasure, error)
	FinishTenantErasure(ctx context.Context, esTenantID uuid.UUID, audit postgres.AuditEvent) error
	DeferTenantErasure(ctx context.Context, esTenantID uuid.UUID, attempts int, retryIn time.Duration, reason string) error
}

var _ Store = (*postgres.Store)(nil)

// Router gives a tenant's encryption-service client; *esclient.Router is one.
type Router interface {
	For(ctx context.Context, tenantID uuid.UUID) (esclient.Client, error)
}

// Admin destroys tenants on the platform's encryption service; *esclient.Admin is one. NotFound
// means the service does not know the tenant.
type Admin interface {
	DestroyTenant(ctx context.Context, esTenantID uuid.UUID) error
}

// Metrics are the counters erasure reports to; nil fields are skipped.
type Metrics struct {
	KeyErased        func() // a context or tenant destroyed (or found already gone)
	KeyErasureFailed func() // an attempt failed and was deferred
}

// Options tune a Service. Zero values mean the defaults.
type Options struct {
	// PollInterval is how often Run looks for due erasures (default 5 s, jittered): one indexed
	// query of a table that is almost always empty.
	PollInterval time.Duration
	// Lease is how long a claimed erasure is left to the replica that claimed it before another
	// may try (default 2 min).
	Lease time.Duration
	// Batch is how many erasures Run claims at a time (default 50).
	Batch int
	// FirstRetry is the delay after a first failed attempt, doubled after each further one up
	// to MaxRetry (defaults 5 s and 15 min).
	FirstRetry, MaxRetry time.Duration
	Logger               *slog.Logger
	Metrics              Metrics
}

func (o Options) withDefaults() Options {
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 2 * time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 50
	}
	if o.FirstRetry <= 0 {
		o.FirstRetry = 5 * time.Second
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = 15 * time.Minute
	}
	if o.MaxRetry < o.FirstRetry {
		o.MaxRetry = o.FirstRetry
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Service destroys the key contexts and tenants of pending erasures. Safe for concurrent use.
type Service struct {
	store   Store
	router  Router
	admin   Admin // nil: core has no admin token, and tenant erasures wait for one
	opts    Options
	pending atomic.Int64 // the backlog as last counted by Run
}

// New returns a Service. admin may be nil when core has no admin token for the platform's
// encryption service: tenant erasures then stay pending, with that reason, until it has one.
func New(store Store, router Router, admin Admin, opts Options) *Service {
	return &Service{store: store, router: router, admin: admin, opts: opts.withDefaults()}
}

// Pending is the number of erasures still pending, as last counted by Run (for a gauge).
func (s *Service) Pending() int { return int(s.pending.Load()) }

// Erase tries once to have e's context destroyed and reports whether it is gone. On failure the
// erasure stays queued for Run, with the reason and the next attempt recorded; nothing is
// returned but false, since the caller's own work (deleting the user) has succeeded regardless.
func (s *Service) Erase(ctx context.Context, e postgres.Erasure) bool {
	err := s.destroy(ctx, e)
	if err == nil {
		return true
	}
	s.failed(ctx, err, e.Attempts, "key context not destroyed yet; will retry",
		func(ctx context.Context, attempts int, retry time.Duration, msg string) error {
			return s.store.DeferErasure(ctx, e.EncryptionID, attempts, retry, msg)
		}, "encryption_id", e.EncryptionID, "tenant_id", e.TenantID, "reason", e.Reason)
	return false
}

// failed counts, logs and records a failed attempt (attempts made so far, at least this one) and
// schedules the next after the back-off; record stores it (on a context of its own if the
// request's has ended), and a failure to do so is logged too.
func (s *Service) failed(ctx context.Context, cause error, attempts int, what string,
	record func(ctx context.Context, attempts int, retry time.Duration, msg string) error, attrs ...any,
) {
	if s.opts.Metrics.KeyErasureFailed != nil {
		s.opts.Metrics.KeyErasureFailed()
	}
	attempts = max(attempts, 1) // one not claimed through a Claim method counts too
	retry, msg := s.backoff(attempts), safeMessage(cause)
	s.opts.Logger.WarnContext(ctx, what, append(attrs, "attempts", attempts, "retry_in", retry.String(), "error", msg)...)
	if ctx.Err() != nil {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		ctx = c
	}
	if err := record(ctx, attempts, retry, msg); err != nil {
		s.opts.Logger.WarnContext(ctx, "record a failed erasure attempt", append(attrs, "error", err)...)
	}
}

// safeMessage is what is recorded and logged of a failed attempt: the kind and the message of an
// *errs.Error, which never hold secrets, and nothing of any other error.
func safeMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) {
		return e.Kind.String() + ": " + e.Message
	}
	return "internal error"
}

// destroy destroys e's context and records it done. A service that does not know the context
// (already destroyed, or never created) counts as done.
func (s *Service) destroy(ctx context.Context, e postgres.Erasure) error {
	es, err := s.router.For(ctx, e.TenantID)
	if err != nil {
		return err
	}
	if err := es.DestroyContext(ctx, e.EncryptionID.String()); err != nil && !errs.Is(err, errs.NotFound) {
		return err
	}
	// The context is gone; should recording it fail, the next attempt finds it gone too.
	if err := s.store.FinishErasure(ctx, e.EncryptionID, postgres.AuditEvent{
		ActorType: postgres.ActorSystem, Action: "keys.erase", Outcome: "ok",
	}); err != nil {
		return err
	}
	s.erased()
	s.opts.Logger.InfoContext(ctx, "key context destroyed", "encryption_id", e.EncryptionID, "tenant_id", e.TenantID,
		"reason", e.Reason)
	return nil
}

// EraseTenant tries once to have the platform's encryption service destroy the deleted tenant of
// e, and reports whether it is gone; on failure it stays queued for Run, as with Erase.
func (s *Service) EraseTenant(ctx context.Context, e postgres.TenantErasure) bool {
	err := s.destroyTenant(ctx, e)
	if err == nil {
		return true
	}
	s.failed(ctx, err, e.Attempts, "deleted tenant not destroyed on the encryption service yet; will retry",
		func(ctx context.Context, attempts int, retry time.Duration, msg string) error {
			return s.store.DeferTenantErasure(ctx, e.ESTenantID, attempts, retry, msg)
		}, "tenant_id", e.TenantID, "es_tenant_id", e.ESTenantID)
	return false
}

var errNoAdmin = errs.E(errs.FailedPrecondition,
	"core has no admin token for the platform's encryption service (CORE_ES_ADMIN_TOKEN): deleted tenants wait for one")

func (s *Service) destroyTenant(ctx context.Context, e postgres.TenantErasure) error {
	if s.admin == nil {
		return errNoAdmin
	}
	if err := s.admin.DestroyTenant(ctx, e.ESTenantID); err != nil && !errs.Is(err, errs.NotFound) {
		return err
	}
	if err := s.store.FinishTenantErasure(ctx, e.ESTenantID, postgres.AuditEvent{
		ActorType: postgres.ActorSystem, Action: "tenant.erase", Outcome: "ok",
	}); err != nil {
		return err
	}
	s.erased()
	s.opts.Logger.InfoContext(ctx, "deleted tenant destroyed on the encryption service", "tenant_id", e.TenantID, "es_tenant_id", e.ESTenantID)
	return nil
}

func (s *Service) erased() {
	if s.opts.Metrics.KeyErased != nil {
		s.opts.Metrics.KeyErased()
	}
}

// backoff is the delay after the attempts-th failed attempt: FirstRetry doubled each further time,
// at most MaxRetry, drawn from its upper half so that replicas spread out.
func (s *Service) backoff(attempts int) time.Duration {
	d := s.opts.FirstRetry
	for i := 1; i < attempts && d < s.opts.MaxRetry; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxRetry)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not a secret
}

// Run works the queue until ctx ends: every PollInterval (jittered) it claims the due erasures,
// a batch at a time, and tries each. It returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	for {
		s.sweep(ctx)
		wait := s.opts.PollInterval/2 + rand.N(s.opts.PollInterval) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// sweep tries every due erasure once and counts what is left.
func (s *Service) sweep(ctx context.Context) {
	work(ctx, s, "tenant", s.store.ClaimTenantErasures, s.EraseTenant)
	work(ctx, s, "key", s.store.ClaimErasures, s.Erase)
	if ctx.Err() != nil {
		return
	}
	if b, err := s.store.ErasureBacklog(ctx); err == nil {
		s.pending.Store(int64(b.Pending))
	}
}

// work claims the due erasures of one kind a batch at a time and tries each once, until none is
// due or ctx ends (then the leases run out and another replica, or the next start, takes over).
func work[T any](ctx context.Context, s *Service, kind string,
	claim func(context.Context, int, time.Duration) ([]T, error), erase func(context.Context, T) bool,
) {
	for ctx.Err() == nil {
		batch, err := claim(ctx, s.opts.Batch, s.opts.Lease)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.WarnContext(ctx, kind+" erasure: look for pending erasures", "error", err)
			}
			return
		}
		for _, e := range batch {
			if ctx.Err() != nil {
				return
			}
			_ = erase(ctx, e)
		}
		if len(batch) < s.opts.Batch {
			return
		}
	}
}
