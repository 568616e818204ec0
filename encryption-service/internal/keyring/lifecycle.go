package keyring

import (
	"context"
	"crypto/subtle"
	"fmt"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// DisableVersion makes a DECRYPT_ONLY version refuse decryption and rewrap (FailedPrecondition)
// until it is enabled again, on every replica within moments. It needs no client master key.
// Disabling a DISABLED version changes nothing. The version is returned with its public key checked
// as GetEncryption checks it. Errors: FailedPrecondition for the ACTIVE version (rotate first) and
// a DESTROYED one; NotFound for an unknown, destroyed or other tenant's context or an unknown
// version; Invalid when c carries a client master key and the context is PLATFORM.
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
	if err := s.refuseMasterKeyOnPlatform(ctx, c, encryptionID); err != nil {
		return postgres.KeyVersion{}, err
	}
	v, err := s.store.SetVersionState(ctx, c.TenantID, encryptionID, versionID, state, s.audit(c, action, &encryptionID, &versionID))
	if err != nil {
		return postgres.KeyVersion{}, err
	}
	s.cache.invalidate(encryptionID)
	return s.servedVersion(ctx, c, encryptionID, v)
}

// servedVersion is v, a version of key context encryptionID, with its public key checked as
// GetEncryption checks it. A Service without master keys (the version command) cannot check it and
// leaves it out.
func (s *Service) servedVersion(ctx context.Context, c Caller, encryptionID uuid.UUID, v postgres.KeyVersion) (postgres.KeyVersion, error) {
	if len(v.PublicKey) == 0 {
		return v, nil
	}
	if s.masterKeys == nil {
		v.PublicKey = nil
		return v, nil
	}
	e, err := s.load(ctx, c.TenantID, encryptionID, false)
	if err != nil {
		return postgres.KeyVersion{}, err
	}
	checked, err := s.checkPublicKeys(e.enc, []postgres.KeyVersion{v})
	if err != nil {
		return postgres.KeyVersion{}, err
	}
	return checked[0], nil
}

// DestroyEncryption erases every version of a key context (right to erasure) and returns how many
// versions had key material erased. The context then answers NotFound like an unknown one, on
// every replica within moments. It needs no client master key and cannot be undone. Errors:
// NotFound for an unknown, already destroyed or other tenant's context; Invalid when c carries a
// client master key and the context is PLATFORM.
func (s *Service) DestroyEncryption(ctx context.Context, c Caller, encryptionID uuid.UUID) (int, error) {
	if err := s.refuseMasterKeyOnPlatform(ctx, c, encryptionID); err != nil {
		return 0, err
	}
	n, err := s.store.DestroyEncryption(ctx, c.TenantID, encryptionID, s.audit(c, "encryption.destroy", &encryptionID, nil))
	if err != nil {
		return 0, err
	}
	s.cache.invalidate(encryptionID)
	return n, nil
}

// ChangeMasterKey changes the client master key of a CLIENT context from c.MasterKey to
// c.NewMasterKey and returns how many versions are now under the new key: every version not
// destroyed. In one transaction, with the context's row locked, it unwraps the context's private
// sealing key with the old client key, opens every version's key with it, makes a new sealing key
// pair, seals every version's key to the new public half and stores the new private half wrapped
// under the new client key (then the platform master key). The versions' keys themselves do not
// change, so no data is touched; but nothing the old client key unwraps remains in the live rows:
// a copy of the old wrapped private half (a backup, the write-ahead log, a row version VACUUM has
// not yet reclaimed) opens only what was sealed to the old pair — the versions that existed when
// the copy was taken, and only with their old sealed copies — never a version created, or a key
// sealed, afterwards. Afterwards the old key gets PermissionDenied and the new one opens everything
// written before, on every replica within moments (the change is notified).
//
// Errors: Invalid when c.NewMasterKey is missing or equals c.MasterKey, or for a PLATFORM context
// (which has no client master key); Unauthenticated when c.MasterKey is missing; PermissionDenied
// when it is wrong; NotFound for an unknown, destroyed or other tenant's context; Internal when a
// stored key does not authenticate (the row was altered); nothing is changed on any error.
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
	stored, err := s.store.ChangeSealingKey(ctx, c.TenantID, encryptionID, func(enc postgres.Encryption) (postgres.SealingKeyChange, error) {
		return s.resealContext(enc, c.MasterKey, c.NewMasterKey)
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

// resealContext opens every version of enc not destroyed with the private sealing key that
// oldKey unwraps and seals it to a fresh key pair whose private half newKey wraps. An RSA version's
// stored public key is checked against the private key it opens to before the new wrapping binds
// it.
func (s *Service) resealContext(enc postgres.Encryption, oldKey, newKey []byte) (postgres.SealingKeyChange, error) {
	oldPriv, _, err := s.unwrapSealingKey(enc, oldKey)
	if err != nil {
		return postgres.SealingKeyChange{}, err
	}
	defer clear(oldPriv)
	newPriv, newPub, err := keywrap.NewSealingKey(s.rand)
	if err != nil {
		return postgres.SealingKeyChange{}, errs.Wrap(errs.Internal, err, "generate sealing key")
	}
	defer clear(newPriv)
	next := enc
	next.SealingPublicKey = newPub
	ch := postgres.SealingKeyChange{PublicKey: newPub, Versions: make(map[uuid.UUID]postgres.WrappedKey, len(enc.Versions))}
	for _, v := range enc.Versions {
		if v.State == StateDestroyed {
			continue
		}
		w, err := s.resealVersion(enc, v, oldPriv, newPub)
		if err != nil {
			return postgres.SealingKeyChange{}, err
		}
		ch.Versions[v.ID] = w
	}
	if ch.PrivateKey, err = s.wrapSealingKey(next, newKey, newPriv); err != nil {
		return postgres.SealingKeyChange{}, err
	}
	return ch, nil
}

// resealVersion opens version v of enc with priv and seals its key to newPub.
func (s *Service) resealVersion(enc postgres.Encryption, v postgres.KeyVersion, priv, newPub []byte) (postgres.WrappedKey, error) {
	sealed, _, err := s.unwrapVersion(enc, v)
	if err != nil {
		return postgres.WrappedKey{}, err
	}
	key, err := keywrap.Open(priv, sealed, versionAD(enc, v.ID))
	clear(sealed)
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err, fmt.Sprintf("open version %d of key context %s", v.Version, enc.ID))
	}
	defer clear(key)
	if len(v.PublicKey) > 0 {
		derived, err := aead.PublicKeyPEM(enc.Algorithm, key)
		if err != nil || derived != string(v.PublicKey) {
			return postgres.WrappedKey{}, errs.E(errs.Internal,
				"the public key of version %d of key context %s does not match its private key: the stored key version was altered", v.Version, enc.ID)
		}
	}
	return s.wrapVersion(enc, v, newPub, key)
}
