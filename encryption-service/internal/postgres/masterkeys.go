package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

// Kinds of blob stored under a platform master key (StoredKey.Kind).
const (
	StoredVersionKey = "version" // a key version's key_material
	StoredSealingKey = "sealing" // a CLIENT context's sealing_private_key
)

// StoredKey is one blob stored wrapped under a platform master key, with the
// ids its wrapping is bound to.
type StoredKey struct {
	Kind                   string // StoredVersionKey or StoredSealingKey
	TenantID, EncryptionID uuid.UUID
	VersionID              uuid.UUID // StoredVersionKey only
	Algorithm              string    // the context's
	KeyMode                string    // the context's
	// PublicKey is what the wrapping also authenticates: for StoredVersionKey the version's
	// public key (RSA versions only, else nil), for StoredSealingKey the context's sealing public
	// key.
	PublicKey []byte
	Key       WrappedKey
}

// CountWrappedKeys returns, per platform master key id, how many stored blobs
// it wraps: live key versions' material and live CLIENT contexts' sealing
// private keys. Destroyed ones hold nothing and are not counted.
func (s *Store) CountWrappedKeys(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT master_key_id, count(*) FROM encryption_key_versions
		 WHERE master_key_id IS NOT NULL GROUP BY master_key_id
		UNION ALL
		SELECT sealing_master_key_id, count(*) FROM encryptions
		 WHERE sealing_master_key_id IS NOT NULL GROUP BY sealing_master_key_id`)
	if err != nil {
		return nil, fail("count wrapped keys", err)
	}
	out := map[string]int64{}
	var (
		id string
		n  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		out[id] += n
		return nil
	})
	if err != nil {
		return nil, fail("count wrapped keys", err)
	}
	return out, nil
}

// RewrapStoredKeys rewraps, in one transaction, up to limit of the blobs
// wrapped by any of the master keys fromIDs: key versions' material first,
// then CLIENT contexts' sealing private keys. For each it calls rewrap, which
// returns the blob wrapped under another master key (bound to the same ids
// and public key);
// rewrap runs inside the transaction, and again if it is retried. It returns
// how many blobs were rewrapped: zero when none is left that another
// transaction does not hold.
//
// Rows are taken FOR UPDATE SKIP LOCKED, so that it runs while traffic
// continues and from several processes at once, each taking different rows;
// a row another transaction holds is left for a later call. Each call
// commits on its own, so an interrupted rotation simply continues with what
// is left. audit is recorded once per call that rewraps anything.
//
// Errors: Invalid if fromIDs is empty, limit is not positive, or rewrap
// returns an incomplete blob or one still under a key of fromIDs; an
// *errs.Error from rewrap as it is, any other error from it as Internal.
// Nothing of the call is kept when it fails.
func (s *Store) RewrapStoredKeys(ctx context.Context, fromIDs []string, limit int,
	rewrap func(StoredKey) (WrappedKey, error), audit AuditEvent) (int, error) {
	if len(fromIDs) == 0 || limit <= 0 {
		return 0, errs.E(errs.Invalid, "rewrap stored keys: want master key ids and a positive limit")
	}
	var n int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `
			SELECT 'version', e.tenant_id, e.id, v.id, e.algorithm, e.key_mode, v.public_key, v.key_material, v.master_key_id
			  FROM encryption_key_versions v JOIN encryptions e ON e.id = v.encryption_id
			 WHERE v.master_key_id = ANY($1)
			 LIMIT $2 FOR UPDATE OF v SKIP LOCKED`, fromIDs, limit)
		if err != nil {
			return fmt.Errorf("select key versions to rewrap: %w", err)
		}
		versions, err := pgx.CollectRows(rows, scanStoredKey)
		if err != nil {
			return fmt.Errorf("select key versions to rewrap: %w", err)
		}
		if err := rewrapAll(ctx, tx, versions, fromIDs, rewrap, `
			UPDATE encryption_key_versions t SET key_material = u.blob, master_key_id = u.mk
			  FROM unnest($1::uuid[], $2::bytea[], $3::text[]) AS u (id, blob, mk)
			 WHERE t.id = u.id`); err != nil {
			return err
		}
		var sealing []StoredKey
		if rest := limit - len(versions); rest > 0 {
			rows, err := tx.Query(ctx, `
				SELECT 'sealing', tenant_id, id, '00000000-0000-0000-0000-000000000000'::uuid, algorithm, key_mode,
				       sealing_public_key, sealing_private_key, sealing_master_key_id
				  FROM encryptions
				 WHERE sealing_master_key_id = ANY($1)
				 LIMIT $2 FOR UPDATE SKIP LOCKED`, fromIDs, rest)
			if err != nil {
				return fmt.Errorf("select sealing keys to rewrap: %w", err)
			}
			if sealing, err = pgx.CollectRows(rows, scanStoredKey); err != nil {
				return fmt.Errorf("select sealing keys to rewrap: %w", err)
			}
			if err := rewrapAll(ctx, tx, sealing, fromIDs, rewrap, `
				UPDATE encryptions t SET sealing_private_key = u.blob, sealing_master_key_id = u.mk
				  FROM unnest($1::uuid[], $2::bytea[], $3::text[]) AS u (id, blob, mk)
				 WHERE t.id = u.id`); err != nil {
				return err
			}
		}
		n = len(versions) + len(sealing)
		if n == 0 {
			return nil
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fail("rewrap stored keys", err)
	}
	return n, nil
}

func scanStoredKey(row pgx.CollectableRow) (StoredKey, error) {
	var k StoredKey
	err := row.Scan(&k.Kind, &k.TenantID, &k.EncryptionID, &k.VersionID, &k.Algorithm, &k.KeyMode, &k.PublicKey,
		&k.Key.Blob, &k.Key.MasterKeyID)
	return k, err
}

// rewrapAll rewraps keys with rewrap and writes them back with update, a
// statement taking arrays of row ids, blobs and master key ids.
func rewrapAll(ctx context.Context, tx pgx.Tx, keys []StoredKey, fromIDs []string,
	rewrap func(StoredKey) (WrappedKey, error), update string) error {
	if len(keys) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(keys))
	blobs := make([][]byte, len(keys))
	mks := make([]string, len(keys))
	for i, k := range keys {
		w, err := rewrap(k)
		if err != nil {
			var kindErr *errs.Error
			if errors.As(err, &kindErr) {
				return err
			}
			return errs.Wrap(errs.Internal, err, "cannot rewrap a stored key")
		}
		if !validWrappedKey(&w) || slices.Contains(fromIDs, w.MasterKeyID) {
			return errs.E(errs.Invalid, "rewrap stored keys: the rewrapped blob must be complete and under another master key")
		}
		ids[i] = k.EncryptionID
		if k.Kind == StoredVersionKey {
			ids[i] = k.VersionID
		}
		blobs[i], mks[i] = w.Blob, w.MasterKeyID
	}
	if _, err := tx.Exec(ctx, update, ids, blobs, mks); err != nil {
		return fmt.Errorf("write rewrapped keys: %w", err)
	}
	return nil
}
