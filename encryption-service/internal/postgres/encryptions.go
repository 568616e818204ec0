package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

const encryptionColumns = `id, tenant_id, algorithm, key_mode, sealing_public_key, sealing_private_key,
	sealing_master_key_id, rotation_max_age, rotation_max_encryptions, created_at`

const versionColumns = `id, encryption_id, version, state, key_material, master_key_id, public_key,
	encryptions, created_at, updated_at`

// CreateEncryption stores the key context e (Versions and CreatedAt are
// ignored) with its first version, which must be ACTIVE and version 1
// (zero State, Version and EncryptionID are filled in). The caller has
// generated and wrapped the key material. The database sets the times.
//
// Errors: Invalid when e or first is inconsistent (unknown algorithm or key
// mode, sealing keys missing for CLIENT or present for PLATFORM, negative
// rotation policy, missing key material, a public key missing for RSA or
// present otherwise); NotFound ("tenant <id> not found") if the tenant does
// not exist or is destroyed; Conflict if an id exists.
func (s *Store) CreateEncryption(ctx context.Context, e Encryption, first KeyVersion, audit AuditEvent) error {
	if err := validateEncryption(e); err != nil {
		return err
	}
	first, err := completeVersion(e, first, 1)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// FOR SHARE: the tenant cannot be destroyed while its context is added.
		if err := lockTenant(ctx, tx, e.TenantID, false); err != nil {
			return err
		}
		var sealingPublic, sealingKey []byte // NULL for PLATFORM contexts
		var sealingMasterKeyID *string
		if e.KeyMode == KeyModeClient {
			sealingPublic = e.SealingPublicKey
			sealingKey, sealingMasterKeyID = e.SealingPrivateKey.Blob, &e.SealingPrivateKey.MasterKeyID
		}
		var maxAge *time.Duration
		if e.RotationMaxAge > 0 {
			maxAge = &e.RotationMaxAge
		}
		var maxEncryptions *int64
		if e.RotationMaxEncryptions > 0 {
			maxEncryptions = &e.RotationMaxEncryptions
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO encryptions (id, tenant_id, algorithm, key_mode, sealing_public_key, sealing_private_key,
				sealing_master_key_id, rotation_max_age, rotation_max_encryptions)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			e.ID, e.TenantID, e.Algorithm, e.KeyMode, sealingPublic, sealingKey,
			sealingMasterKeyID, maxAge, maxEncryptions)
		if _, dup := uniqueViolation(err); dup {
			return errs.E(errs.Conflict, "key context %s already exists", e.ID)
		}
		if err != nil {
			return fmt.Errorf("insert key context: %w", err)
		}
		if _, err := insertVersion(ctx, tx, first); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&e.TenantID, &e.ID, &first.ID)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeEncryption, e.ID)
	})
	return fail("create key context", err)
}

func validateEncryption(e Encryption) error {
	switch {
	case e.ID == uuid.Nil:
		return errs.E(errs.Invalid, "key context id is required")
	case e.TenantID == uuid.Nil:
		return errs.E(errs.Invalid, "key context %s: tenant id is required", e.ID)
	case !slices.Contains([]string{AlgorithmAES256GCM, AlgorithmXChaCha20Poly1305, AlgorithmRSAOAEP3072SHA256}, e.Algorithm):
		return errs.E(errs.Invalid, "algorithm must be %s, %s or %s",
			AlgorithmAES256GCM, AlgorithmXChaCha20Poly1305, AlgorithmRSAOAEP3072SHA256)
	case e.KeyMode != KeyModePlatform && e.KeyMode != KeyModeClient:
		return errs.E(errs.Invalid, "keyMode must be %s or %s", KeyModePlatform, KeyModeClient)
	case e.RotationMaxAge < 0 || (e.RotationMaxAge > 0 && e.RotationMaxAge < time.Microsecond):
		return errs.E(errs.Invalid, "key context %s: rotation max age must be zero (none) or at least 1µs", e.ID)
	case e.RotationMaxEncryptions < 0:
		return errs.E(errs.Invalid, "key context %s: rotation max encryptions must not be negative", e.ID)
	}
	if e.KeyMode == KeyModeClient {
		if len(e.SealingPublicKey) == 0 || !validWrappedKey(e.SealingPrivateKey) {
			return errs.E(errs.Invalid, "key context %s: a CLIENT context needs a sealing public key and a wrapped sealing private key", e.ID)
		}
	} else if len(e.SealingPublicKey) > 0 || e.SealingPrivateKey != nil {
		return errs.E(errs.Invalid, "key context %s: a PLATFORM context has no sealing key pair", e.ID)
	}
	return nil
}

func validWrappedKey(k *WrappedKey) bool {
	return k != nil && k.MasterKeyID != "" && len(k.Blob) > 0
}

// completeVersion fills in v's zero EncryptionID, Version and State for
// version number want of e, a new ACTIVE version, and checks it.
func completeVersion(e Encryption, v KeyVersion, want int) (KeyVersion, error) {
	if v.EncryptionID == uuid.Nil {
		v.EncryptionID = e.ID
	}
	if v.Version == 0 {
		v.Version = want
	}
	if v.State == "" {
		v.State = StateActive
	}
	switch {
	case v.ID == uuid.Nil:
		return v, errs.E(errs.Invalid, "key version id is required")
	case v.EncryptionID != e.ID:
		return v, errs.E(errs.Invalid, "key version %s belongs to key context %s, not %s", v.ID, v.EncryptionID, e.ID)
	case v.Version != want:
		return v, errs.E(errs.Invalid, "key version %s: version must be %d, got %d", v.ID, want, v.Version)
	case v.State != StateActive:
		return v, errs.E(errs.Invalid, "key version %s: a new key version must be %s, got %q", v.ID, StateActive, v.State)
	case !validWrappedKey(v.Material):
		return v, errs.E(errs.Invalid, "key version %s: wrapped key material and its master key id are required", v.ID)
	case e.Algorithm == AlgorithmRSAOAEP3072SHA256 && len(v.PublicKey) == 0:
		return v, errs.E(errs.Invalid, "key version %s: an %s version needs its public key", v.ID, e.Algorithm)
	case e.Algorithm != AlgorithmRSAOAEP3072SHA256 && len(v.PublicKey) > 0:
		return v, errs.E(errs.Invalid, "key version %s: an %s version has no public key", v.ID, e.Algorithm)
	}
	return v, nil
}

// insertVersion inserts v and returns it with the values the database set.
func insertVersion(ctx context.Context, tx pgx.Tx, v KeyVersion) (KeyVersion, error) {
	if len(v.PublicKey) == 0 {
		v.PublicKey = nil // NULL, not an empty key
	}
	err := tx.QueryRow(ctx, `
		INSERT INTO encryption_key_versions (id, encryption_id, version, state, key_material, master_key_id, public_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		RETURNING encryptions, created_at, updated_at`,
		v.ID, v.EncryptionID, v.Version, v.State, v.Material.Blob, v.Material.MasterKeyID, v.PublicKey,
	).Scan(&v.Encryptions, &v.CreatedAt, &v.UpdatedAt)
	if constraint, dup := uniqueViolation(err); dup && constraint == "encryption_key_versions_pkey" {
		return v, errs.E(errs.Conflict, "key version %s already exists", v.ID)
	}
	if err != nil {
		return v, fmt.Errorf("insert key version: %w", err)
	}
	return v, nil
}

// GetEncryption returns key context encryptionID of tenant tenantID with its
// versions, ordered by version.
//
// Errors: NotFound ("key context <id> not found") alike when it does not
// exist, is destroyed or belongs to another tenant.
func (s *Store) GetEncryption(ctx context.Context, tenantID, encryptionID uuid.UUID) (Encryption, error) {
	var e Encryption
	err := s.inSnapshot(ctx, func(tx pgx.Tx) error {
		var err error
		e, err = loadEncryption(ctx, tx, tenantID, encryptionID, lockNone)
		return err
	})
	if err != nil {
		return Encryption{}, fail("get key context", err)
	}
	return e, nil
}

func encryptionNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "key context %s not found", id)
}

// rowLock is what loadEncryption locks until the transaction ends.
type rowLock int

const (
	lockNone rowLock = iota
	// lockContext locks the context's row FOR UPDATE: lifecycle changes,
	// rotations and changes of sealing key serialize on it.
	lockContext
	// lockContextAndVersions locks the context's row, then its versions'
	// rows in id order (as AddEncryptions locks them, so that the two cannot
	// deadlock), each read as it is once locked: for callers that write back
	// blobs they read, so that what they write is derived from what is stored
	// until they commit. A platform master-key rotation (RewrapStoredKeys)
	// locks only version rows, and may have rewrapped one meanwhile.
	lockContextAndVersions
)

// loadEncryption reads a live key context of tenantID and its versions,
// ordered by version, taking the row locks lock names.
func loadEncryption(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID, lock rowLock) (Encryption, error) {
	query := "SELECT " + encryptionColumns + " FROM encryptions WHERE id = $1 AND tenant_id = $2 AND destroyed_at IS NULL"
	if lock != lockNone {
		query += " FOR UPDATE"
	}
	rows, err := tx.Query(ctx, query, id, tenantID)
	if err != nil {
		return Encryption{}, fmt.Errorf("get key context: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEncryption)
	if errors.Is(err, pgx.ErrNoRows) {
		return Encryption{}, encryptionNotFound(id)
	}
	if err != nil {
		return Encryption{}, fmt.Errorf("get key context: %w", err)
	}

	query = "SELECT " + versionColumns + " FROM encryption_key_versions WHERE encryption_id = $1 ORDER BY version"
	if lock == lockContextAndVersions {
		// Locked rows are returned as they are once the lock is taken (READ COMMITTED).
		query = "SELECT " + versionColumns + " FROM encryption_key_versions WHERE encryption_id = $1 ORDER BY id FOR UPDATE"
	}
	rows, err = tx.Query(ctx, query, id)
	if err != nil {
		return Encryption{}, fmt.Errorf("list key versions: %w", err)
	}
	e.Versions, err = pgx.CollectRows(rows, scanVersion)
	if err != nil {
		return Encryption{}, fmt.Errorf("list key versions: %w", err)
	}
	slices.SortFunc(e.Versions, func(a, b KeyVersion) int { return a.Version - b.Version })
	return e, nil
}

func scanVersion(row pgx.CollectableRow) (KeyVersion, error) {
	var (
		v           KeyVersion
		material    []byte
		masterKeyID *string
	)
	err := row.Scan(&v.ID, &v.EncryptionID, &v.Version, &v.State, &material, &masterKeyID, &v.PublicKey,
		&v.Encryptions, &v.CreatedAt, &v.UpdatedAt)
	if material != nil && masterKeyID != nil {
		v.Material = &WrappedKey{MasterKeyID: *masterKeyID, Blob: material}
	}
	return v, err
}

// Rotate gives key context encryptionID of tenant tenantID a new ACTIVE
// version and returns it; the previous ACTIVE version becomes DECRYPT_ONLY.
//
// The context's row stays locked from reading it to commit, so concurrent
// rotations of one context (from any replica) run one after the other and
// number their versions consecutively. Under that lock Rotate calls
// newVersion with the context (versions included) and the new version
// number; newVersion creates and wraps the key material (for a CLIENT
// context, sealed to e.SealingPublicKey) and returns the version with a new
// ID; zero EncryptionID, Version and State are filled in. newVersion must be
// quick and free of effects outside its result: it runs inside the
// transaction, and runs again if the transaction is retried.
//
// Errors: NotFound ("key context <id> not found") alike when the context does
// not exist, is destroyed or belongs to another tenant; Invalid if
// newVersion's result is inconsistent (see CreateEncryption); Conflict if its
// ID exists; an *errs.Error from newVersion as it is, any other error from it
// as Internal.
func (s *Store) Rotate(ctx context.Context, tenantID, encryptionID uuid.UUID,
	newVersion func(e Encryption, version int) (KeyVersion, error), audit AuditEvent) (KeyVersion, error) {
	v, _, err := s.rotate(ctx, tenantID, encryptionID, uuid.Nil, newVersion, audit)
	if err != nil {
		return KeyVersion{}, fail("rotate key context", err)
	}
	return v, nil
}

// RotateIfActive is Rotate on the condition that version expectedActive is
// still the context's ACTIVE version once its row is locked, for automatic
// rotation: replicas that find the same version due at once rotate it only
// once. When the condition does not hold it changes nothing, does not call
// newVersion and returns rotated false.
//
// Errors: as Rotate's.
func (s *Store) RotateIfActive(ctx context.Context, tenantID, encryptionID, expectedActive uuid.UUID,
	newVersion func(e Encryption, version int) (KeyVersion, error), audit AuditEvent) (v KeyVersion, rotated bool, err error) {
	if expectedActive == uuid.Nil {
		return KeyVersion{}, false, errs.E(errs.Invalid, "expected active key version id is required")
	}
	v, rotated, err = s.rotate(ctx, tenantID, encryptionID, expectedActive, newVersion, audit)
	if err != nil {
		return KeyVersion{}, false, fail("rotate key context", err)
	}
	return v, rotated, nil
}

// rotate is Rotate, and RotateIfActive when expectedActive is not uuid.Nil.
func (s *Store) rotate(ctx context.Context, tenantID, encryptionID, expectedActive uuid.UUID,
	newVersion func(e Encryption, version int) (KeyVersion, error), audit AuditEvent) (KeyVersion, bool, error) {
	var created KeyVersion
	rotated := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rotated = false
		e, err := loadEncryption(ctx, tx, tenantID, encryptionID, lockContext)
		if err != nil {
			return err
		}
		if expectedActive != uuid.Nil {
			if i := slices.IndexFunc(e.Versions, func(v KeyVersion) bool { return v.State == StateActive }); i < 0 || e.Versions[i].ID != expectedActive {
				return nil // rotated already, by another caller
			}
		}
		next := 1
		if n := len(e.Versions); n > 0 {
			next = e.Versions[n-1].Version + 1
		}
		v, err := newVersion(e, next)
		if err != nil {
			var kindErr *errs.Error
			if errors.As(err, &kindErr) {
				return err
			}
			return errs.Wrap(errs.Internal, err, "cannot create a key version")
		}
		if v, err = completeVersion(e, v, next); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE encryption_key_versions SET state = $2, updated_at = now()
			 WHERE encryption_id = $1 AND state = $3`, encryptionID, StateDecryptOnly, StateActive); err != nil {
			return fmt.Errorf("demote active key version: %w", err)
		}
		if created, err = insertVersion(ctx, tx, v); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, &encryptionID, &created.ID)); err != nil {
			return err
		}
		rotated = true
		return notify(ctx, tx, ChangeEncryption, encryptionID)
	})
	if err != nil || !rotated {
		return KeyVersion{}, false, err
	}
	return created, true, nil
}

// AddEncryptions adds counts[versionID] to each version's encryptions
// counter, in one statement. It is meant for a batched in-memory counter, so
// it records no audit event and sends no notification: counters change too
// often to drop every replica's cache for them. Ids of versions that no
// longer exist are ignored, as are zero counts.
//
// Errors: Invalid for a negative count.
func (s *Store) AddEncryptions(ctx context.Context, counts map[uuid.UUID]int64) error {
	ids := make([]uuid.UUID, 0, len(counts))
	deltas := make([]int64, 0, len(counts))
	for id, n := range counts {
		if n < 0 {
			return errs.E(errs.Invalid, "encryption count of key version %s must not be negative, got %d", id, n)
		}
		if n > 0 {
			ids = append(ids, id)
			deltas = append(deltas, n)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	// Rows are locked in id order, so that two flushes touching the same
	// versions cannot deadlock.
	_, err := s.pool.Exec(ctx, `
		WITH delta AS (
			SELECT * FROM unnest($1::uuid[], $2::bigint[]) AS d (id, n)
		), locked AS (
			SELECT v.id FROM encryption_key_versions v
			 WHERE v.id = ANY($1::uuid[]) ORDER BY v.id FOR UPDATE
		)
		UPDATE encryption_key_versions v SET encryptions = v.encryptions + delta.n
		  FROM delta
		 WHERE v.id = delta.id AND v.id IN (SELECT id FROM locked)`, ids, deltas)
	return fail("add encryption counts", err)
}
