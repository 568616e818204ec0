package keyring

import (
	"context"
	"crypto/subtle"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// DisableVersion makes a DECRYPT_ONLY version refuse decryption and rewrap (FailedPrecondition)
// until it is enabled again, on every replica within moments. It needs no client master key.
// Disabling a DISABLED version changes nothing. Errors: FailedPrecondition for the ACTIVE version
// (rotate first) and a DESTROYED one; NotFound for an unknown, destroyed or other tenant's context
// or an unknown version.
func (s *Service) DisableVersion(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID) (postgres.KeyVersion, error) {
	return s.setState(ctx, c, encryptionID, versionID, StateDisabled, "encryption.version.disable")
}

// EnableVersion returns a DISABLED version to DECRYPT_ONLY. Enabling a version that is not
// DISABLED changes nothing. Errors: FailedPrecondition for a DESTROYED version; NotFound as
// DisableVersion.
func (s *Service) EnableVersion(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID) (postgres.KeyVersion, error) {
	return s.setState(ctx, c, encryptionID, versionID, StateDecryptOnly, "encryption.version.enable")
}

// DestroyVersion erases a DISABLED version's key material from the database (crypto-shredding):
// what it encrypted can never be decrypted again. It cannot be undone. Destroying a DESTROYED
// version changes nothing. Errors: FailedPrecondition for a version that is not DISABLED (disable
// it first); NotFound as DisableVersion.
func (s *Service) DestroyVersion(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID) (postgres.KeyVersion, error) {
	return s.setState(ctx, c, encryptionID, versionID, StateDestroyed, "encryption.version.destroy")
}

func (s *Service) setState(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID, state, action string) (postgres.KeyVersion, error) {
	v, err := s.store.SetVersionState(ctx, c.TenantID, encryptionID, versionID, state, s.audit(c, action, &encryptionID, &versionID))
	if err != nil {
		return postgres.KeyVersion{}, err
	}
	s.cache.invalidate(encryptionID)
	return v, nil
}

// DestroyEncryption erases every version of a key context (right to erasure) and returns how many
// versions had key material erased. The context then answers NotFound like an unknown one, on
// every replica within moments. It needs no client master key and cannot be undone. Errors:
// NotFound for an unknown, already destroyed or other tenant's context.
func (s *Service) DestroyEncryption(ctx context.Context, c Caller, encryptionID uuid.UUID) (int, error) {
	n, err := s.store.DestroyEncryption(ctx, c.TenantID, encryptionID, s.audit(c, "encryption.destroy", &encryptionID, nil))
	if err != nil {
		return 0, err
	}
	s.cache.invalidate(encryptionID)
	return n, nil
}

// ChangeMasterKey changes the client master key of a CLIENT context from c.MasterKey to
// c.NewMasterKey, in one transaction, and returns how many versions are now under the new key:
// every version not destroyed. The versions' keys are sealed to the context's key pair, so
// rewrapping the pair's private half, the only blob the client master key protects, moves all of
// them; no data and no version row is touched. Afterwards the old key gets PermissionDenied and the
// new one opens everything written before.
//
// Errors: Invalid when c.NewMasterKey is missing, or for a PLATFORM context (which has no client
// master key); Unauthenticated when c.MasterKey is missing; PermissionDenied when it is wrong;
// NotFound for an unknown, destroyed or other tenant's context.
func (s *Service) ChangeMasterKey(ctx context.Context, c Caller, encryptionID uuid.UUID) (int, error) {
	e, err := s.load(ctx, c.TenantID, encryptionID, false)
	if err != nil {
		return 0, err
	}
	if e.enc.KeyMode == ModePlatform {
		return 0, errs.E(errs.Invalid,
			"key context %s is PLATFORM: its keys are platform-managed and it has no client master key to change", encryptionID)
	}
	if c.NewMasterKey == nil {
		return 0, errs.E(errs.Invalid, "X-New-Master-Key: required: the new client master key, base64 of 32 bytes")
	}
	if c.MasterKey == nil {
		return 0, errs.E(errs.Unauthenticated,
			"key context %s is zero-knowledge (CLIENT): send its current client master key in X-Master-Key", encryptionID)
	}
	if subtle.ConstantTimeCompare(c.MasterKey, c.NewMasterKey) == 1 {
		return 0, errs.E(errs.Invalid, "X-New-Master-Key: the same as X-Master-Key: nothing to change")
	}
	audit := s.audit(c, "encryption.master-key.change", &encryptionID, nil)
	stored, err := s.store.ReplaceSealingKey(ctx, c.TenantID, encryptionID, func(enc postgres.Encryption) (postgres.WrappedKey, error) {
		priv, err := s.unwrapSealingKey(enc, c.MasterKey)
		if err != nil {
			return postgres.WrappedKey{}, err
		}
		defer clear(priv)
		return s.wrapSealingKey(enc, c.NewMasterKey, priv)
	}, audit)
	if err != nil {
		return 0, err
	}
	s.cache.invalidate(encryptionID)
	n := 0
	for _, v := range stored.Versions {
		if v.State != StateDestroyed {
			n++
		}
	}
	return n, nil
}
