// Package tenants manages the encryption service's tenants and authenticates their calls.
//
// A tenant authenticates every data-plane call with its id and one of its secrets. Secrets are
// 256-bit random values shown once, at creation or rotation, and stored only as SHA-256 hashes: a
// high-entropy secret needs no slow password hash, and verification stays cheap on the hot path.
// Several secrets may be active at once, so a secret can be rotated without downtime; revoking one
// takes effect at once on every replica (the database notifies them).
//
// All errors are *errs.Error values and never contain a secret.
package tenants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// SecretPrefix starts every tenant secret, so that a leaked one is recognisable (secret scanners).
const SecretPrefix = "cts_"

// secretBytes is the entropy of a tenant secret.
const secretBytes = 32

// Store is what tenants needs from the database.
type Store interface {
	CreateTenant(ctx context.Context, t postgres.Tenant, first postgres.TenantSecret, audit postgres.AuditEvent) error
	ListTenants(ctx context.Context, pageSize int, after uuid.UUID) ([]postgres.Tenant, uuid.UUID, error)
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
	AddTenantSecret(ctx context.Context, s postgres.TenantSecret, audit postgres.AuditEvent) error
	RevokeTenantSecret(ctx context.Context, tenantID, secretID uuid.UUID, audit postgres.AuditEvent) (postgres.TenantSecret, error)
	ActiveSecrets(ctx context.Context, tenantID uuid.UUID) ([]postgres.TenantSecret, error)
	DestroyTenant(ctx context.Context, tenantID uuid.UUID, audit postgres.AuditEvent) (int, error)
}

var _ Store = (*postgres.Store)(nil)

// Actor is who performs an administrative change, for the audit trail: "admin:<certificate CN>" or
// "cli:<operating-system user>".
type Actor struct {
	Name      string
	RequestID string
}

// Service manages tenants.
type Service struct {
	store  Store
	rand   io.Reader
	now    func() time.Time
	maxAge time.Duration

	hearing atomic.Bool // the change listener is connected

	mu      sync.Mutex
	gen     uint64
	secrets map[uuid.UUID]cachedSecrets
}

// Hearing tells the secret cache whether the change listener is connected: while it is not, cached
// secrets are trusted for postgres.UnheardMaxAge only, so that a secret revoked through another
// replica stops working here within it. A new Service is not hearing until told.
func (s *Service) Hearing(on bool) { s.hearing.Store(on) }

type cachedSecrets struct {
	secrets  []postgres.TenantSecret
	loadedAt time.Time
}

// New returns a Service over store. rand nil means crypto/rand.
func New(store Store, rnd io.Reader) *Service {
	if rnd == nil {
		rnd = rand.Reader
	}
	return &Service{store: store, rand: rnd, now: time.Now, maxAge: 5 * time.Minute, secrets: make(map[uuid.UUID]cachedSecrets)}
}

// Issued is a new secret, shown once.
type Issued struct {
	TenantID, SecretID uuid.UUID
	Secret             string
}

// Create creates a tenant with its first secret. The name must be 1–200 printable characters and
// unused (Conflict otherwise).
func (s *Service) Create(ctx context.Context, actor Actor, name string) (Issued, error) {
	name = strings.TrimSpace(name)
	if err := validName(name); err != nil {
		return Issued{}, err
	}
	t := postgres.Tenant{ID: uuid.New(), Name: name}
	secret, stored, err := s.newSecret(t.ID)
	if err != nil {
		return Issued{}, err
	}
	if err := s.store.CreateTenant(ctx, t, stored, audit(actor, t.ID, "tenant.create")); err != nil {
		return Issued{}, err
	}
	s.Invalidate(t.ID)
	return Issued{TenantID: t.ID, SecretID: stored.ID, Secret: secret}, nil
}

// List returns up to pageSize tenants (1 to 1000; 100 for 0 or less) with ids after after
// (uuid.Nil: from the start), by id, and the id the next page starts after, uuid.Nil when this
// page is the last. Errors: the store's (Unavailable, Internal).
func (s *Service) List(ctx context.Context, pageSize int, after uuid.UUID) (page []postgres.Tenant, next uuid.UUID, err error) {
	return s.store.ListTenants(ctx, pageSize, after)
}

// RotateSecret issues a new secret; the existing ones keep working until revoked.
func (s *Service) RotateSecret(ctx context.Context, actor Actor, tenantID uuid.UUID) (Issued, error) {
	secret, stored, err := s.newSecret(tenantID)
	if err != nil {
		return Issued{}, err
	}
	if err := s.store.AddTenantSecret(ctx, stored, audit(actor, tenantID, "tenant.secret.rotate")); err != nil {
		return Issued{}, err
	}
	s.Invalidate(tenantID)
	return Issued{TenantID: tenantID, SecretID: stored.ID, Secret: secret}, nil
}

// RevokeSecret makes one secret stop working. The tenant's last active secret cannot be revoked
// (FailedPrecondition).
func (s *Service) RevokeSecret(ctx context.Context, actor Actor, tenantID, secretID uuid.UUID) (postgres.TenantSecret, error) {
	sec, err := s.store.RevokeTenantSecret(ctx, tenantID, secretID, audit(actor, tenantID, "tenant.secret.revoke"))
	if err != nil {
		return postgres.TenantSecret{}, err
	}
	s.Invalidate(tenantID)
	return sec, nil
}

// Destroy erases a tenant: every key of every one of its key contexts (all its data becomes
// unrecoverable) and its credentials, which stop working at once on every replica. It returns how
// many key contexts were erased. It cannot be undone; the tenant's name stays taken. Errors:
// NotFound for an unknown or already destroyed tenant.
func (s *Service) Destroy(ctx context.Context, actor Actor, tenantID uuid.UUID) (int, error) {
	n, err := s.store.DestroyTenant(ctx, tenantID, audit(actor, tenantID, "tenant.destroy"))
	if err != nil {
		return 0, err
	}
	s.Invalidate(tenantID)
	return n, nil
}

// ErrBadCredential is the one answer to every failed authentication, so that a caller learns
// nothing about which part was wrong: an id that is not a UUID, an unknown or destroyed tenant, a
// wrong, revoked or malformed secret. Only a missing credential is answered otherwise.
var ErrBadCredential = errs.E(errs.Unauthenticated, "tenant credential rejected: check X-Tenant-Id and X-Tenant-Secret")

// Authenticate checks a tenant's id and secret and returns the id of the secret that matched.
// Every failure — unknown tenant, wrong, revoked or malformed secret — gets the same
// Unauthenticated error. The comparison is constant-time.
func (s *Service) Authenticate(ctx context.Context, tenantID uuid.UUID, secret string) (uuid.UUID, error) {
	if !strings.HasPrefix(secret, SecretPrefix) || len(secret) != len(SecretPrefix)+base64.RawURLEncoding.EncodedLen(secretBytes) {
		return uuid.Nil, ErrBadCredential
	}
	secrets, err := s.activeSecrets(ctx, tenantID)
	if err != nil {
		return uuid.Nil, err
	}
	h := sha256.Sum256([]byte(secret))
	match := uuid.Nil
	for _, sec := range secrets {
		// No early exit: every active secret is compared.
		if subtle.ConstantTimeCompare(h[:], sec.Hash) == 1 {
			match = sec.ID
		}
	}
	if match == uuid.Nil {
		return uuid.Nil, ErrBadCredential
	}
	return match, nil
}

// Invalidate drops a tenant's cached secrets; the change listener calls it when any replica
// changed the tenant.
func (s *Service) Invalidate(tenantID uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	delete(s.secrets, tenantID)
}

// ResetCache drops every cached secret.
func (s *Service) ResetCache() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	clear(s.secrets)
}

func (s *Service) activeSecrets(ctx context.Context, tenantID uuid.UUID) ([]postgres.TenantSecret, error) {
	s.mu.Lock()
	c, ok := s.secrets[tenantID]
	gen := s.gen
	s.mu.Unlock()
	maxAge := s.maxAge
	if !s.hearing.Load() {
		maxAge = min(maxAge, postgres.UnheardMaxAge)
	}
	if ok && s.now().Sub(c.loadedAt) <= maxAge {
		return c.secrets, nil
	}
	secrets, err := s.store.ActiveSecrets(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen == s.gen {
		if len(s.secrets) >= 100_000 {
			clear(s.secrets)
		}
		s.secrets[tenantID] = cachedSecrets{secrets: secrets, loadedAt: s.now()}
	}
	return secrets, nil
}

func (s *Service) newSecret(tenantID uuid.UUID) (string, postgres.TenantSecret, error) {
	b := make([]byte, secretBytes)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return "", postgres.TenantSecret{}, errs.Wrap(errs.Internal, err, "generate tenant secret")
	}
	secret := SecretPrefix + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(secret))
	return secret, postgres.TenantSecret{ID: uuid.New(), TenantID: tenantID, Hash: h[:]}, nil
}

func validName(name string) error {
	n := utf8.RuneCountInString(name)
	if n < 1 || n > 200 {
		return errs.E(errs.Invalid, "name: want 1 to 200 characters, got %d", n)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errs.E(errs.Invalid, "name: control characters are not allowed")
		}
	}
	return nil
}

// audit is the event of an administrative change to tenant tenantID. Its ID is left to the store,
// which assigns a time-ordered one: a tenant's destruction then lists after the erasures of its
// key contexts recorded in the same transaction.
func audit(actor Actor, tenantID uuid.UUID, action string) postgres.AuditEvent {
	return postgres.AuditEvent{
		TenantID: &tenantID, Actor: actor.Name, Action: action, Outcome: "ok", RequestID: actor.RequestID,
	}
}
