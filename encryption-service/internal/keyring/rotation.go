package keyring

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// Bounds of a rotation policy's MaxAge.
const (
	MinRotationMaxAge = time.Hour
	MaxRotationMaxAge = 100 * 365 * 24 * time.Hour
)

// autoRotationActor is the audit trail's actor of automatic rotations.
const autoRotationActor = "service:auto-rotation"

// rotationRetry is how long a replica waits before it tries again to rotate a context whose
// automatic rotation failed.
const rotationRetry = time.Second

// rotationTimeout bounds an automatic rotation, which outlives the request that makes it when that
// request ends first: other requests wait for it.
const rotationTimeout = 10 * time.Second

// RotationPolicy makes a key context rotate by itself: when its active version is older than
// MaxAge (zero: never by age) or has made MaxEncryptions encryptions (zero: only the service's
// bound, Options.MaxEncryptionsPerVersion, which applies to every context).
//
// A version that is due is rotated once: lazily, by the next encryption that would use it (on any
// replica), and, for counts, also by the replica whose flush of encryption counts shows it due.
// Replicas that find the same version due at once rotate it only once (the database checks that it
// is still the active version). Counts are exact within one replica and reach the others once a
// second, so with several replicas a version may make up to about a second's worth of their
// encryptions beyond MaxEncryptions.
type RotationPolicy struct {
	MaxAge         time.Duration
	MaxEncryptions int64
}

// checkPolicy refuses a policy out of bounds, naming the field.
func (s *Service) checkPolicy(p RotationPolicy) error {
	if p.MaxAge != 0 && (p.MaxAge < MinRotationMaxAge || p.MaxAge > MaxRotationMaxAge) {
		return errs.E(errs.Invalid, "rotationPolicy.maxAge: want 0 (never by age) or from %s to %s, got %s",
			MinRotationMaxAge, MaxRotationMaxAge, p.MaxAge)
	}
	if p.MaxEncryptions < 0 || p.MaxEncryptions > s.maxPerVersion {
		return errs.E(errs.Invalid,
			"rotationPolicy.maxEncryptions: want 0 (the service's bound) to %d (the service's bound of encryptions per key version), got %d",
			s.maxPerVersion, p.MaxEncryptions)
	}
	return nil
}

// SetRotationPolicy sets when key context encryptionID rotates by itself and returns the policy
// now in force. It needs no client master key. A version that the new policy makes due is rotated
// by the next encryption. Errors: Invalid for a MaxAge other than zero outside 1h–100 years or a
// MaxEncryptions outside 0 to the service's bound (naming the field), and when c carries a client
// master key and the context is PLATFORM; NotFound for an unknown, destroyed or other tenant's
// context.
func (s *Service) SetRotationPolicy(ctx context.Context, c Caller, encryptionID uuid.UUID, p RotationPolicy) (RotationPolicy, error) {
	if err := s.checkPolicy(p); err != nil {
		return RotationPolicy{}, err
	}
	if err := s.refuseMasterKeyOnPlatform(ctx, c, encryptionID); err != nil {
		return RotationPolicy{}, err
	}
	audit := s.audit(c, "encryption.rotation-policy.set", &encryptionID, nil)
	if err := s.store.SetRotationPolicy(ctx, c.TenantID, encryptionID, p.MaxAge, p.MaxEncryptions, audit); err != nil {
		return RotationPolicy{}, err
	}
	s.cache.invalidate(encryptionID)
	return p, nil
}

// limit is how many encryptions the active version of enc makes before it is rotated.
func (s *Service) limit(enc postgres.Encryption) int64 {
	if n := enc.RotationMaxEncryptions; n > 0 && n < s.maxPerVersion {
		return n
	}
	return s.maxPerVersion
}

// dueByAge reports whether v, the active version of e, is older than its context's MaxAge.
func (s *Service) dueByAge(e *entry, v postgres.KeyVersion) bool {
	return e.enc.RotationMaxAge > 0 && s.now().Sub(v.CreatedAt) >= e.enc.RotationMaxAge
}

// rotation is an automatic rotation of one context by a request of this replica.
type rotation struct {
	done chan struct{} // closed once it has finished
	err  error         // why it failed; written before done is closed
}

// reserve takes a slot to encrypt with the context's active version — versionID's, when valid —
// and returns that version and the count the slot was taken from (give the slot back if the
// encryption fails). A version that is due is rotated first, once: the request that finds it due
// rotates it while the others that need a slot wait for that rotation (as long as ctx allows), then
// take theirs from the new version; a version due by age only goes on encrypting while another
// request rotates it. So within this replica a version never makes more encryptions than its
// bound. A request rotates by age at most once. When the rotation fails (or failed less than
// rotationRetry ago) the version goes on up to the service's bound, which no version passes
// knowingly.
//
// Errors: Unavailable when the version has reached the service's bound and cannot be rotated now;
// FailedPrecondition when versionID was rotated away meanwhile; ctx's error when it ends while
// waiting; the error of reading the context again.
func (ss *session) reserve(ctx context.Context, versionID uuid.NullUUID) (postgres.KeyVersion, *versionTally, error) {
	s := ss.s
	// A version that a rotation made during this request is not rotated again by age: its age is
	// the database's clock, which may be behind this replica's.
	rotated := false
	for {
		e := ss.e
		v, ok := e.active()
		if !ok {
			return v, nil, errNoActive(ss.id)
		}
		if versionID.Valid && versionID.UUID != v.ID {
			named, _ := e.version(versionID.UUID)
			return v, nil, errNoLongerEncrypts(named, ss.id)
		}
		byAge := !rotated && s.dueByAge(e, v)
		if !byAge && e.take(s.limit(e.enc)) {
			return v, e.count, nil
		}
		r, rotator := ss.startRotation(e)
		switch {
		case r == nil: // a rotation failed a moment ago: go on up to the service's bound
			if e.take(s.maxPerVersion) {
				return v, e.count, nil
			}
			return v, nil, errAtBound(v, ss.id, nil)
		case rotator:
			ss.rotate(ctx, e, v, r)
		default:
			select {
			case <-r.done:
			default:
				if byAge && e.take(s.limit(e.enc)) {
					return v, e.count, nil // due by age only: no need to wait for the new version
				}
				select {
				case <-r.done:
				case <-ctx.Done():
					return v, nil, ctx.Err()
				}
			}
		}
		if r != nil && r.err != nil {
			if e.take(s.maxPerVersion) {
				return v, e.count, nil
			}
			return v, nil, errAtBound(v, ss.id, r.err)
		}
		if err := ss.refresh(ctx); err != nil {
			return v, nil, err
		}
		rotated = true
	}
}

// startRotation returns the rotation of e's context: the one under way or done, or else a new one
// that this request is to make (rotator). It returns nil when a rotation failed less than
// rotationRetry ago.
func (ss *session) startRotation(e *entry) (r *rotation, rotator bool) {
	if r := e.rotation.Load(); r != nil {
		return r, false
	}
	if ss.s.now().UnixNano() < e.retryAt.Load() {
		return nil, false
	}
	r = &rotation{done: make(chan struct{})}
	if !e.rotation.CompareAndSwap(nil, r) {
		return e.rotation.Load(), false // another request started one meanwhile
	}
	return r, true
}

// rotate rotates e's context because v, its active version, is due, unless another replica did
// already, and finishes r. On success the cache holds the context as read afterwards and r stays
// on e, whose copy is outdated; on failure the next attempt waits rotationRetry. The requests
// waiting for r share it, so it does not end with the request that makes it, only after
// rotationTimeout.
func (ss *session) rotate(ctx context.Context, e *entry, v postgres.KeyVersion, r *rotation) {
	s := ss.s
	defer close(r.done)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rotationTimeout)
	defer cancel()
	audit := s.audit(ss.c, "encryption.rotate.auto", &ss.id, nil)
	audit.Actor = autoRotationActor
	if _, _, err := s.store.RotateIfActive(ctx, ss.c.TenantID, ss.id, v.ID, s.newVersion, audit); err != nil {
		r.err = err
		e.retryAt.Store(s.now().Add(rotationRetry).UnixNano())
		e.rotation.Store(nil)
		s.log.WarnContext(ctx, "keyring: automatic rotation failed; will retry",
			"encryption_id", ss.id, "version", v.Version, "request_id", ss.c.RequestID, "error", err)
		return
	}
	s.cache.invalidate(ss.id)
	// Read once for every request waiting: they continue with the cached copy. A failure here
	// leaves the cache empty and each of them reads for itself.
	if _, err := s.load(ctx, ss.c.TenantID, ss.id, true); err != nil {
		s.log.WarnContext(ctx, "keyring: reading a key context after its automatic rotation failed",
			"encryption_id", ss.id, "request_id", ss.c.RequestID, "error", err)
	}
}

func errAtBound(v postgres.KeyVersion, encryptionID uuid.UUID, cause error) error {
	return errs.Wrap(errs.Unavailable, cause, fmt.Sprintf(
		"version %d of key context %s has made as many encryptions as a key version may and could not be rotated yet: retry shortly",
		v.Version, encryptionID))
}

// rotateDueVersions rotates those of versionIDs that their counts in the database show due, once
// each however many replicas find them due. Failures are logged: the next flush tries again.
func (s *Service) rotateDueVersions(ctx context.Context, versionIDs []uuid.UUID) {
	due, err := s.store.DueByEncryptions(ctx, versionIDs, s.maxPerVersion)
	if err != nil {
		s.log.WarnContext(ctx, "keyring: cannot find key versions due for rotation", "error", err)
		return
	}
	for _, d := range due {
		audit := postgres.AuditEvent{
			ID: uuid.New(), TenantID: &d.TenantID, Actor: autoRotationActor, Action: "encryption.rotate.auto",
			EncryptionID: &d.EncryptionID, Outcome: "ok",
		}
		_, rotated, err := s.store.RotateIfActive(ctx, d.TenantID, d.EncryptionID, d.VersionID, s.newVersion, audit)
		if err != nil {
			s.log.WarnContext(ctx, "keyring: automatic rotation failed; will retry", "encryption_id", d.EncryptionID, "error", err)
			continue
		}
		if rotated {
			s.cache.invalidate(d.EncryptionID)
		}
	}
}
