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

// made estimates how many encryptions v, the active version of e, has made: its count as read
// with e, plus what this replica made since — counted with e, or, when e was read again meanwhile
// (another replica's change drops cached entries), still waiting for the flush, which holds the
// encryptions made before the reload too.
func (s *Service) made(e *entry, v postgres.KeyVersion) int64 {
	return v.Encryptions + max(e.encrypted.Load(), s.counts.of(v.ID))
}

// due reports whether v, the active version of e, is due for rotation.
func (s *Service) due(e *entry, v postgres.KeyVersion) bool {
	if s.made(e, v) >= s.limit(e.enc) {
		return true
	}
	return e.enc.RotationMaxAge > 0 && s.now().Sub(v.CreatedAt) >= e.enc.RotationMaxAge
}

// rotateDue rotates the context because v, its active version, is due, and continues with the
// context as read afterwards. When another request of this replica is rotating it already, or a
// rotation failed less than a second ago, it continues with v. It fails only when the rotation
// fails and v has reached the service's bound, which no version may pass knowingly.
func (ss *session) rotateDue(ctx context.Context, v postgres.KeyVersion) error {
	s, e := ss.s, ss.e
	atBound := s.made(e, v) >= s.maxPerVersion
	now := s.now()
	if now.UnixNano() < e.retryAt.Load() {
		if atBound {
			return errAtBound(v, ss.id, nil)
		}
		return nil
	}
	if !e.rotating.CompareAndSwap(false, true) {
		return nil // the rotation is under way: the next request uses the new version
	}
	defer e.rotating.Store(false)
	audit := s.audit(ss.c, "encryption.rotate.auto", &ss.id, nil)
	audit.Actor = autoRotationActor
	if _, _, err := s.store.RotateIfActive(ctx, ss.c.TenantID, ss.id, v.ID, s.newVersion, audit); err != nil {
		e.retryAt.Store(now.Add(rotationRetry).UnixNano())
		s.log.WarnContext(ctx, "keyring: automatic rotation failed; will retry",
			"encryption_id", ss.id, "version", v.Version, "request_id", ss.c.RequestID, "error", err)
		if atBound {
			return errAtBound(v, ss.id, err)
		}
		return nil
	}
	s.cache.invalidate(ss.id)
	return ss.reload(ctx)
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
