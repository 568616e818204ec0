package keyring

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// StoredKeys is what platform master-key rotation needs from the database.
type StoredKeys interface {
	CountWrappedKeys(ctx context.Context) (map[string]int64, error)
	RewrapStoredKeys(ctx context.Context, fromIDs []string, limit int,
		rewrap func(postgres.StoredKey) (postgres.WrappedKey, error), audit postgres.AuditEvent) (int, error)
}

var _ StoredKeys = (*postgres.Store)(nil)

// MasterKeyUsage is how many stored blobs (key versions' material and CLIENT contexts' sealing
// keys) a platform master key still wraps.
type MasterKeyUsage struct {
	ID          string
	Active      bool // wraps new keys
	Configured  bool // false: the database holds blobs under a key this service does not know
	WrappedKeys int64
}

// MasterKeyUsages lists every configured master key, in configuration order, then every key id
// that only the database knows, by id, with how many stored blobs each wraps. A key whose count is
// zero can be retired. Errors: the store's (Unavailable, Internal).
func MasterKeyUsages(ctx context.Context, store StoredKeys, keys *masterkey.Keyring) ([]MasterKeyUsage, error) {
	counts, err := store.CountWrappedKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []MasterKeyUsage
	for _, id := range keys.IDs() {
		out = append(out, MasterKeyUsage{ID: id, Active: id == keys.ActiveID(), Configured: true, WrappedKeys: counts[id]})
		delete(counts, id)
	}
	unknown := make([]string, 0, len(counts))
	for id := range counts {
		unknown = append(unknown, id)
	}
	slices.Sort(unknown)
	for _, id := range unknown {
		out = append(out, MasterKeyUsage{ID: id, WrappedKeys: counts[id]})
	}
	return out, nil
}

// MasterKeyRotation tunes RotateMasterKey.
type MasterKeyRotation struct {
	BatchSize int    // blobs rewrapped per transaction; default 500
	Actor     string // for the audit trail, e.g. "cli:<user>"
	// Progress, when set, is called after each committed batch with the blobs rewrapped so far by
	// this run and an estimate of how many are left on other keys.
	Progress func(rewrapped, left int64)
	// Wait is how long to wait before looking again for blobs that other transactions held
	// (default 200ms); it looks again up to 25 times.
	Wait time.Duration
}

// RotateMasterKey rewraps every stored blob wrapped by a configured master key other than the
// active one so that the active key wraps it: key versions' material and CLIENT contexts' sealing
// private keys, in batches of opts.BatchSize per transaction. Only the outer wrapping changes; it
// stays bound to the blob's row, and nothing under it (data keys, client master key wrapping) is
// touched. A legacy blob, written before public keys were bound, comes out bound to its row's
// public key only for a PLATFORM RSA version, once that public key matches the private key; a
// CLIENT context's legacy blobs keep their unbound associated data (see rewrapStoredKey).
//
// It runs while the service serves traffic and may run on several processes at once: each batch
// takes rows no other transaction holds, and replicas keep unwrapping with whichever key a row
// names. Each batch commits on its own, so an interrupted run (ctx cancelled) keeps what it did and
// a new run continues with what is left. It returns how many blobs this run rewrapped.
//
// Errors: ctx's error when cancelled; Unavailable when blobs are left under keys the configuration
// lacks (they cannot be rewrapped: add the key and run again), or when other transactions kept
// holding some rows; Internal, naming the row, for a blob that does not authenticate under its
// master key; the store's errors.
func RotateMasterKey(ctx context.Context, store StoredKeys, keys *masterkey.Keyring, opts MasterKeyRotation) (int64, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.Wait <= 0 {
		opts.Wait = 200 * time.Millisecond
	}
	if opts.Actor == "" {
		opts.Actor = "service"
	}
	var old []string
	for _, id := range keys.IDs() {
		if id != keys.ActiveID() {
			old = append(old, id)
		}
	}
	active := keys.Active()
	defer clear(active.Bytes)
	rewrap := func(k postgres.StoredKey) (postgres.WrappedKey, error) {
		return rewrapStoredKey(keys, active, k)
	}

	// What is stranded under unconfigured keys is reported at the end, from the final count.
	left, _, err := leftOn(ctx, store, keys)
	if err != nil {
		return 0, err
	}
	var stranded []string
	var done int64
	for waits := 0; ; {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		n := 0
		if len(old) > 0 {
			audit := postgres.AuditEvent{ID: uuid.New(), Actor: opts.Actor, Action: "masterkey.rewrap", Outcome: "ok"}
			if n, err = store.RewrapStoredKeys(ctx, old, opts.BatchSize, rewrap, audit); err != nil {
				if ctx.Err() != nil {
					return done, ctx.Err()
				}
				return done, err
			}
		}
		if n > 0 {
			done += int64(n)
			if opts.Progress != nil {
				opts.Progress(done, max(left-done, 0))
			}
			continue
		}
		// Nothing more to take: count what is really left.
		var remaining int64
		if remaining, stranded, err = leftOn(ctx, store, keys); err != nil {
			return done, err
		}
		if remaining == 0 {
			break
		}
		if waits++; waits > 25 {
			return done, errs.E(errs.Unavailable,
				"%d stored keys are still under older master keys: other transactions held them; run the rotation again", remaining)
		}
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-time.After(opts.Wait):
		}
	}
	if len(stranded) > 0 {
		return done, errs.E(errs.Unavailable,
			"stored keys are wrapped by master keys this configuration lacks (%s): add them to the master keys, keep %q active and run again",
			strings.Join(stranded, ", "), keys.ActiveID())
	}
	return done, nil
}

// leftOn returns how many blobs configured non-active keys still wrap, and the ids of unconfigured
// keys that wrap any.
func leftOn(ctx context.Context, store StoredKeys, keys *masterkey.Keyring) (int64, []string, error) {
	usages, err := MasterKeyUsages(ctx, store, keys)
	if err != nil {
		return 0, nil, err
	}
	var left int64
	var stranded []string
	for _, u := range usages {
		switch {
		case !u.Configured && u.WrappedKeys > 0:
			stranded = append(stranded, fmt.Sprintf("%s: %d", u.ID, u.WrappedKeys))
		case u.Configured && !u.Active:
			left += u.WrappedKeys
		}
	}
	return left, stranded, nil
}

// rewrapStoredKey unwraps k's blob with the master key it names and wraps the same material under
// active, bound to the same row and public key. A legacy blob (written before public keys were
// bound, under the unbound associated data) of a PLATFORM RSA version is rewrapped with the
// binding once its stored public key has been checked against the private key. A legacy blob of a
// CLIENT context (its sealing key, or an RSA version's sealed key) is rewrapped under the same
// unbound associated data: its public key cannot be checked without the client master key, and
// binding whatever public key the row holds now would make one swapped in the database
// authenticate. It is bound when the client master key is next presented (Service.bindLegacy).
func rewrapStoredKey(keys *masterkey.Keyring, active masterkey.Key, k postgres.StoredKey) (postgres.WrappedKey, error) {
	enc := postgres.Encryption{ID: k.EncryptionID, TenantID: k.TenantID, Algorithm: k.Algorithm, KeyMode: k.KeyMode}
	var ad, legacyAD []byte
	var what string
	switch k.Kind {
	case postgres.StoredVersionKey:
		v := postgres.KeyVersion{ID: k.VersionID, PublicKey: k.PublicKey}
		ad, what = versionWrapAD(enc, v), fmt.Sprintf("key version %s of key context %s", k.VersionID, k.EncryptionID)
		if enc.Algorithm == aead.RSAOAEP3072SHA256 {
			legacyAD = versionAD(enc, k.VersionID)
		}
	case postgres.StoredSealingKey:
		enc.SealingPublicKey = k.PublicKey
		ad, legacyAD, what = sealingWrapAD(enc), sealingAD(enc), fmt.Sprintf("the sealing key of key context %s", k.EncryptionID)
	default:
		return postgres.WrappedKey{}, errs.E(errs.Internal, "unknown kind of stored key %q", k.Kind)
	}
	old, ok := keys.Get(k.Key.MasterKeyID)
	if !ok {
		return postgres.WrappedKey{}, errs.E(errs.Unavailable, "%s is wrapped by master key %q, which is not configured", what, k.Key.MasterKeyID)
	}
	material, err := keywrap.Unwrap(old.Bytes, k.Key.Blob, ad)
	legacy := false
	if err != nil && legacyAD != nil {
		if material, err = keywrap.Unwrap(old.Bytes, k.Key.Blob, legacyAD); err == nil {
			legacy = true
		}
	}
	clear(old.Bytes)
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err,
			fmt.Sprintf("%s does not authenticate under master key %q", what, k.Key.MasterKeyID))
	}
	defer clear(material)
	if legacy && k.Kind == postgres.StoredVersionKey && enc.KeyMode == ModePlatform {
		derived, err := aead.PublicKeyPEM(enc.Algorithm, material)
		if err != nil || derived != string(k.PublicKey) {
			return postgres.WrappedKey{}, errs.E(errs.Internal,
				"the public key of %s does not match its private key: the stored key version was altered", what)
		}
	}
	if legacy && enc.KeyMode != ModePlatform {
		ad = legacyAD // the outer key changes, the (absent) binding does not
	}
	blob, err := keywrap.Wrap(active.Bytes, material, ad)
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err, "wrap under the active master key")
	}
	return postgres.WrappedKey{MasterKeyID: active.ID, Blob: blob}, nil
}
