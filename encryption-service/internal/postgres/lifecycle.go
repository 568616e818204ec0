package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

// GetEncryptions returns the live key contexts of tenant tenantID among ids,
// with their versions, in one snapshot and two queries whatever the number of
// ids, for batches. Unknown, destroyed and other tenants' ids are left out
// without error; the order is unspecified.
func (s *Store) GetEncryptions(ctx context.Context, tenantID uuid.UUID, ids []uuid.UUID) ([]Encryption, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Encryption
	err := s.inSnapshot(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT "+encryptionColumns+` FROM encryptions
			 WHERE id = ANY($1) AND tenant_id = $2 AND destroyed_at IS NULL`, ids, tenantID)
		if err != nil {
			return fmt.Errorf("get key contexts: %w", err)
		}
		out, err = pgx.CollectRows(rows, scanEncryption)
		if err != nil {
			return fmt.Errorf("get key contexts: %w", err)
		}
		if len(out) == 0 {
			return nil
		}
		found := make([]uuid.UUID, len(out))
		index := make(map[uuid.UUID]int, len(out))
		for i, e := range out {
			found[i], index[e.ID] = e.ID, i
		}
		rows, err = tx.Query(ctx, "SELECT "+versionColumns+` FROM encryption_key_versions
			 WHERE encryption_id = ANY($1) ORDER BY encryption_id, version`, found)
		if err != nil {
			return fmt.Errorf("list key versions: %w", err)
		}
		versions, err := pgx.CollectRows(rows, scanVersion)
		if err != nil {
			return fmt.Errorf("list key versions: %w", err)
		}
		for _, v := range versions {
			e := &out[index[v.EncryptionID]]
			e.Versions = append(e.Versions, v)
		}
		return nil
	})
	if err != nil {
		return nil, fail("get key contexts", err)
	}
	return out, nil
}

// scanEncryption reads a row of encryptionColumns.
func scanEncryption(row pgx.CollectableRow) (Encryption, error) {
	var (
		e                  Encryption
		sealingKey         []byte
		sealingMasterKeyID *string
		maxAge             *time.Duration
		maxEncryptions     *int64
	)
	err := row.Scan(&e.ID, &e.TenantID, &e.Algorithm, &e.KeyMode,
		&e.SealingPublicKey, &sealingKey, &sealingMasterKeyID, &maxAge, &maxEncryptions, &e.CreatedAt)
	if sealingKey != nil && sealingMasterKeyID != nil {
		e.SealingPrivateKey = &WrappedKey{MasterKeyID: *sealingMasterKeyID, Blob: sealingKey}
	}
	if maxAge != nil {
		e.RotationMaxAge = *maxAge
	}
	if maxEncryptions != nil {
		e.RotationMaxEncryptions = *maxEncryptions
	}
	return e, err
}

// SetRotationPolicy sets key context encryptionID's automatic rotation:
// maxAge and maxEncryptions, zero meaning none.
//
// Errors: Invalid for a negative value or a max age under 1µs; NotFound
// ("key context <id> not found") alike when the context does not exist, is
// destroyed or belongs to another tenant.
func (s *Store) SetRotationPolicy(ctx context.Context, tenantID, encryptionID uuid.UUID, maxAge time.Duration, maxEncryptions int64, audit AuditEvent) error {
	if maxAge < 0 || (maxAge > 0 && maxAge < time.Microsecond) {
		return errs.E(errs.Invalid, "key context %s: rotation max age must be zero (none) or at least 1µs", encryptionID)
	}
	if maxEncryptions < 0 {
		return errs.E(errs.Invalid, "key context %s: rotation max encryptions must not be negative", encryptionID)
	}
	var age *time.Duration
	if maxAge > 0 {
		age = &maxAge
	}
	var n *int64
	if maxEncryptions > 0 {
		n = &maxEncryptions
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE encryptions SET rotation_max_age = $3, rotation_max_encryptions = $4
			 WHERE id = $1 AND tenant_id = $2 AND destroyed_at IS NULL`, encryptionID, tenantID, age, n)
		if err != nil {
			return fmt.Errorf("set rotation policy: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return encryptionNotFound(encryptionID)
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, &encryptionID, nil)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	return fail("set rotation policy", err)
}

// SetVersionState moves version versionID of key context encryptionID to
// state, one of:
//
//   - StateDisabled, from DECRYPT_ONLY: the version keeps its key but refuses
//     to decrypt;
//   - StateDecryptOnly, from DISABLED (enabling it again);
//   - StateDestroyed, from DISABLED: its key material and master key id are
//     set to NULL in the same statement (crypto-shredding). It cannot be
//     undone.
//
// A version already in state is returned unchanged (the audit event is still
// recorded); so is an ACTIVE version asked to become DECRYPT_ONLY. It returns
// the version as it is after the change.
//
// Errors: Invalid for any other target state; NotFound ("key context <id> not
// found") alike when the context does not exist, is destroyed or belongs to
// another tenant, and "version <id> of key context <id> not found" for a
// version it does not have; FailedPrecondition for a transition the
// lifecycle forbids: disabling the ACTIVE version (rotate first), destroying
// a version that is not DISABLED (disable it first), anything but destroying
// a DESTROYED version (its data is unrecoverable).
func (s *Store) SetVersionState(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, state string, audit AuditEvent) (KeyVersion, error) {
	if state != StateDisabled && state != StateDecryptOnly && state != StateDestroyed {
		return KeyVersion{}, errs.E(errs.Invalid, "key version state must be %s, %s or %s, got %q",
			StateDisabled, StateDecryptOnly, StateDestroyed, state)
	}
	var out KeyVersion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// The context's row lock serializes lifecycle changes with rotations.
		e, err := loadEncryption(ctx, tx, tenantID, encryptionID, lockContext)
		if err != nil {
			return err
		}
		i := -1
		for j, v := range e.Versions {
			if v.ID == versionID {
				i = j
			}
		}
		if i < 0 {
			return errs.E(errs.NotFound, "version %s of key context %s not found", versionID, encryptionID)
		}
		v := e.Versions[i]
		if err := checkTransition(e.ID, v, state); err != nil {
			return err
		}
		audit := audit.withDefaults(&tenantID, &encryptionID, &versionID)
		if v.State == state || (v.State == StateActive && state == StateDecryptOnly) {
			out = v
			return insertAudit(ctx, tx, audit)
		}
		query := `UPDATE encryption_key_versions SET state = $2, updated_at = now() WHERE id = $1
			RETURNING ` + versionColumns
		if state == StateDestroyed {
			query = `UPDATE encryption_key_versions
				SET state = $2, key_material = NULL, master_key_id = NULL, updated_at = now() WHERE id = $1
				RETURNING ` + versionColumns
		}
		rows, err := tx.Query(ctx, query, versionID, state)
		if err != nil {
			return fmt.Errorf("change key version state: %w", err)
		}
		if out, err = pgx.CollectExactlyOneRow(rows, scanVersion); err != nil {
			return fmt.Errorf("change key version state: %w", err)
		}
		if err := insertAudit(ctx, tx, audit); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	if err != nil {
		return KeyVersion{}, fail("change key version state", err)
	}
	return out, nil
}

// checkTransition refuses the lifecycle transitions SetVersionState does not allow.
func checkTransition(encryptionID uuid.UUID, v KeyVersion, to string) error {
	switch {
	case v.State == StateDestroyed && to != StateDestroyed:
		return errs.E(errs.FailedPrecondition,
			"version %d of key context %s is destroyed: its key material is erased and its data is unrecoverable", v.Version, encryptionID)
	case v.State == StateActive && to == StateDisabled:
		return errs.E(errs.FailedPrecondition,
			"version %d of key context %s is ACTIVE and cannot be disabled: rotate first", v.Version, encryptionID)
	case to == StateDestroyed && v.State != StateDisabled && v.State != StateDestroyed:
		return errs.E(errs.FailedPrecondition,
			"version %d of key context %s is %s: only a DISABLED version can be destroyed, disable it first", v.Version, encryptionID, v.State)
	}
	return nil
}

// DestroyEncryption erases key context encryptionID (right to erasure): every
// version not yet DESTROYED becomes DESTROYED with its key material and
// master key id set to NULL, a CLIENT context's wrapped sealing private key
// is set to NULL too, and the context is marked destroyed, after which every
// Store method treats it as unknown. It returns how many versions had key
// material erased. It cannot be undone.
//
// Errors: NotFound ("key context <id> not found") alike when the context does
// not exist, is already destroyed or belongs to another tenant.
func (s *Store) DestroyEncryption(ctx context.Context, tenantID, encryptionID uuid.UUID, audit AuditEvent) (int, error) {
	var n int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := loadEncryption(ctx, tx, tenantID, encryptionID, lockContext); err != nil {
			return err
		}
		var err error
		if n, err = destroyEncryptions(ctx, tx, []uuid.UUID{encryptionID}); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, &encryptionID, nil)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	if err != nil {
		return 0, fail("destroy key context", err)
	}
	return n, nil
}

// destroyEncryptions erases the key material of the contexts ids, whose rows
// the caller has locked, and marks them destroyed. It returns how many
// versions had key material erased.
func destroyEncryptions(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (int, error) {
	tag, err := tx.Exec(ctx, `UPDATE encryption_key_versions
		SET state = $2, key_material = NULL, master_key_id = NULL, updated_at = now()
		WHERE encryption_id = ANY($1) AND state <> $2`, ids, StateDestroyed)
	if err != nil {
		return 0, fmt.Errorf("destroy key versions: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE encryptions
		SET destroyed_at = now(), sealing_private_key = NULL, sealing_master_key_id = NULL
		WHERE id = ANY($1) AND destroyed_at IS NULL`, ids); err != nil {
		return 0, fmt.Errorf("destroy key contexts: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// SealingKeyChange is what a change of client master key stores for a CLIENT
// key context: a new sealing key pair, its private half wrapped (under the
// new client master key, then a platform master key), and the key material of
// every version not DESTROYED sealed to the new public half, by version id.
type SealingKeyChange struct {
	PublicKey  []byte
	PrivateKey WrappedKey
	Versions   map[uuid.UUID]WrappedKey
}

// ChangeSealingKey replaces the sealing key pair of CLIENT key context
// encryptionID and the key material of all its versions not DESTROYED, in one
// transaction, for a change of client master key. Under the context's row
// lock and its versions' (taken in id order before the versions are read, so
// that a blob a platform master-key rotation rewrapped meanwhile is read as
// rewrapped) it calls change with the context as stored (versions included);
// change opens every version's key with
// the old private half, which the old client master key unwraps, and returns a
// new pair with every such version sealed to it. change runs inside the
// transaction, and again if it is retried. Nothing the old client master key
// unwraps is left in the live rows afterwards. It returns the context as it
// was read.
//
// Errors: NotFound ("key context <id> not found") alike when the context does
// not exist, is destroyed or belongs to another tenant; FailedPrecondition
// for a PLATFORM context; Invalid for an incomplete result of change (a
// missing key, a version not DESTROYED left out, a version that is DESTROYED
// or unknown given); an *errs.Error from change as it is, any other error
// from it as Internal.
func (s *Store) ChangeSealingKey(ctx context.Context, tenantID, encryptionID uuid.UUID,
	change func(e Encryption) (SealingKeyChange, error), audit AuditEvent) (Encryption, error) {
	var e Encryption
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if e, err = loadEncryption(ctx, tx, tenantID, encryptionID, lockContextAndVersions); err != nil {
			return err
		}
		if e.KeyMode != KeyModeClient {
			return errs.E(errs.FailedPrecondition, "key context %s is %s: it has no client master key", encryptionID, e.KeyMode)
		}
		ch, err := change(e)
		if err != nil {
			var kindErr *errs.Error
			if errors.As(err, &kindErr) {
				return err
			}
			return errs.Wrap(errs.Internal, err, "cannot change the sealing key")
		}
		if err := checkSealingKeyChange(e, ch); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE encryptions
			SET sealing_public_key = $2, sealing_private_key = $3, sealing_master_key_id = $4 WHERE id = $1`,
			encryptionID, ch.PublicKey, ch.PrivateKey.Blob, ch.PrivateKey.MasterKeyID); err != nil {
			return fmt.Errorf("replace sealing key: %w", err)
		}
		ids := make([]uuid.UUID, 0, len(ch.Versions))
		blobs := make([][]byte, 0, len(ch.Versions))
		mks := make([]string, 0, len(ch.Versions))
		for id, w := range ch.Versions {
			ids, blobs, mks = append(ids, id), append(blobs, w.Blob), append(mks, w.MasterKeyID)
		}
		tag, err := tx.Exec(ctx, `
			UPDATE encryption_key_versions t SET key_material = u.blob, master_key_id = u.mk, updated_at = now()
			  FROM unnest($2::uuid[], $3::bytea[], $4::text[]) AS u (id, blob, mk)
			 WHERE t.id = u.id AND t.encryption_id = $1 AND t.state <> $5`,
			encryptionID, ids, blobs, mks, StateDestroyed)
		if err != nil {
			return fmt.Errorf("reseal key versions: %w", err)
		}
		if n := tag.RowsAffected(); n != int64(len(ids)) {
			return fmt.Errorf("reseal key versions: %d of %d rows updated", n, len(ids)) // the rows are locked: unreachable
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, &encryptionID, nil)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	if err != nil {
		return Encryption{}, fail("change sealing key", err)
	}
	return e, nil
}

// LegacyBinding is what binding a CLIENT key context's legacy blobs (written
// before public keys were bound) stores: those blobs rewrapped bound to their
// public keys, and nothing else. The key pair, the public keys and every
// version's key stay as they are.
type LegacyBinding struct {
	SealingPrivateKey *WrappedKey              // nil: the stored one is kept
	Versions          map[uuid.UUID]WrappedKey // by version id; a version left out keeps its stored blob
}

// BindLegacyKeys rewrites the legacy blobs of CLIENT key context encryptionID,
// once their public keys have been checked with the client master key. Under
// the context's row lock and its versions' (taken in id order before the
// versions are read) it calls bind with the context as stored; bind returns
// the blobs it rewrapped, and only those rows are written, so that a blob it
// leaves out keeps whatever it holds — a platform master-key rotation that
// committed before the locks were taken is never undone. bind runs inside the
// transaction, and again if it is retried. An empty binding (another replica
// bound the context first) writes nothing and records no audit event. It
// returns whether anything was written. The rows' updated_at is kept: only
// the outer wrapping changes, as in RewrapStoredKeys.
//
// Errors: NotFound ("key context <id> not found") alike when the context does
// not exist, is destroyed or belongs to another tenant; FailedPrecondition
// for a PLATFORM context; Invalid for an incomplete blob, or a version that
// is DESTROYED or unknown; an *errs.Error from bind as it is, any other error
// from it as Internal. Nothing is changed on any error.
func (s *Store) BindLegacyKeys(ctx context.Context, tenantID, encryptionID uuid.UUID,
	bind func(e Encryption) (LegacyBinding, error), audit AuditEvent) (bool, error) {
	written := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		written = false
		e, err := loadEncryption(ctx, tx, tenantID, encryptionID, lockContextAndVersions)
		if err != nil {
			return err
		}
		if e.KeyMode != KeyModeClient {
			return errs.E(errs.FailedPrecondition, "key context %s is %s: it has no client master key", encryptionID, e.KeyMode)
		}
		b, err := bind(e)
		if err != nil {
			var kindErr *errs.Error
			if errors.As(err, &kindErr) {
				return err
			}
			return errs.Wrap(errs.Internal, err, "cannot bind the legacy keys")
		}
		if err := checkLegacyBinding(e, b); err != nil {
			return err
		}
		if b.SealingPrivateKey == nil && len(b.Versions) == 0 {
			return nil
		}
		if b.SealingPrivateKey != nil {
			if _, err := tx.Exec(ctx, `UPDATE encryptions SET sealing_private_key = $2, sealing_master_key_id = $3 WHERE id = $1`,
				encryptionID, b.SealingPrivateKey.Blob, b.SealingPrivateKey.MasterKeyID); err != nil {
				return fmt.Errorf("bind sealing key: %w", err)
			}
		}
		if len(b.Versions) > 0 {
			ids := make([]uuid.UUID, 0, len(b.Versions))
			blobs := make([][]byte, 0, len(b.Versions))
			mks := make([]string, 0, len(b.Versions))
			for id, w := range b.Versions {
				ids, blobs, mks = append(ids, id), append(blobs, w.Blob), append(mks, w.MasterKeyID)
			}
			if _, err := tx.Exec(ctx, `
				UPDATE encryption_key_versions t SET key_material = u.blob, master_key_id = u.mk
				  FROM unnest($2::uuid[], $3::bytea[], $4::text[]) AS u (id, blob, mk)
				 WHERE t.id = u.id AND t.encryption_id = $1`, encryptionID, ids, blobs, mks); err != nil {
				return fmt.Errorf("bind key versions: %w", err)
			}
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, &encryptionID, nil)); err != nil {
			return err
		}
		written = true
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	if err != nil {
		return false, fail("bind legacy keys", err)
	}
	return written, nil
}

// checkLegacyBinding refuses a binding that is incomplete or names a version
// e does not have or that keeps no key material.
func checkLegacyBinding(e Encryption, b LegacyBinding) error {
	if b.SealingPrivateKey != nil && !validWrappedKey(b.SealingPrivateKey) {
		return errs.E(errs.Invalid, "key context %s: a wrapped sealing key and its master key id are required", e.ID)
	}
	found := 0
	for _, v := range e.Versions {
		w, ok := b.Versions[v.ID]
		switch {
		case !ok:
		case v.State == StateDestroyed:
			return errs.E(errs.Invalid, "key context %s: version %d is destroyed and keeps no key material", e.ID, v.Version)
		case !validWrappedKey(&w):
			return errs.E(errs.Invalid, "key context %s: version %d needs its key material and its master key id", e.ID, v.Version)
		default:
			found++
		}
	}
	if found != len(b.Versions) {
		return errs.E(errs.Invalid, "key context %s: key material given for a version it does not have", e.ID)
	}
	return nil
}

// checkSealingKeyChange refuses a change that would leave a live version
// under the old sealing key, or touch a destroyed or unknown one.
func checkSealingKeyChange(e Encryption, ch SealingKeyChange) error {
	if len(ch.PublicKey) == 0 || !validWrappedKey(&ch.PrivateKey) {
		return errs.E(errs.Invalid, "key context %s: a sealing public key, a wrapped sealing key and its master key id are required", e.ID)
	}
	live := 0
	for _, v := range e.Versions {
		w, ok := ch.Versions[v.ID]
		switch {
		case v.State == StateDestroyed && ok:
			return errs.E(errs.Invalid, "key context %s: version %d is destroyed and keeps no key material", e.ID, v.Version)
		case v.State == StateDestroyed:
		case !ok || !validWrappedKey(&w):
			return errs.E(errs.Invalid, "key context %s: version %d needs its key material sealed to the new sealing key", e.ID, v.Version)
		default:
			live++
		}
	}
	if live != len(ch.Versions) {
		return errs.E(errs.Invalid, "key context %s: key material given for a version it does not have", e.ID)
	}
	return nil
}

// DueVersion is an ACTIVE key version that has reached its rotation limit.
type DueVersion struct {
	TenantID, EncryptionID, VersionID uuid.UUID
	Encryptions                       int64
}

// DueByEncryptions returns those of versionIDs that are ACTIVE in a live
// context and have made at least as many encryptions as their context's
// rotation_max_encryptions or, when that is NULL or higher, bound (bound <= 0:
// no service-wide bound). One query, whatever the number of ids.
func (s *Store) DueByEncryptions(ctx context.Context, versionIDs []uuid.UUID, bound int64) ([]DueVersion, error) {
	if len(versionIDs) == 0 {
		return nil, nil
	}
	var b *int64
	if bound > 0 {
		b = &bound
	}
	rows, err := s.pool.Query(ctx, `
		SELECT e.tenant_id, e.id, v.id, v.encryptions
		  FROM encryption_key_versions v JOIN encryptions e ON e.id = v.encryption_id
		 WHERE v.id = ANY($1) AND v.state = $2 AND e.destroyed_at IS NULL
		   AND v.encryptions >= LEAST(e.rotation_max_encryptions, $3::bigint)`, versionIDs, StateActive, b)
	if err != nil {
		return nil, fail("find key versions due for rotation", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DueVersion, error) {
		var d DueVersion
		err := row.Scan(&d.TenantID, &d.EncryptionID, &d.VersionID, &d.Encryptions)
		return d, err
	})
	if err != nil {
		return nil, fail("find key versions due for rotation", err)
	}
	return due, nil
}
