package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// What is sealed of a tenant's encryption endpoint.
const (
	SealedTenantSecret = "tenant-secret"
	SealedClientKey    = "client-key"
)

// EndpointSecretAD is the associated data that binds a sealed secret of a tenant's encryption
// endpoint (SealedTenantSecret, SealedClientKey) to its tenant: one definition for who seals and
// who opens.
func EndpointSecretAD(tenantID uuid.UUID, field string) []byte {
	return []byte("custos/core/tenant-endpoint/v1\x00" + tenantID.String() + "\x00" + field)
}

// KeyContext is a user's personal key context on their tenant's encryption service.
type KeyContext struct {
	UserID, TenantID, EncryptionID uuid.UUID
	KeyMode                        string
	CreatedAt                      time.Time
}

// Item is a vault item as stored: ciphertext and key references, never plaintext.
type Item struct {
	ID, TenantID, OwnerID uuid.UUID
	Revision              int
	CipherText            string
	EncryptionID          uuid.UUID
	VersionID             uuid.UUID
	Algorithm             string
	Metadata              json.RawMessage
	CreatedAt, UpdatedAt  time.Time
}

// GetKeyContext returns a user's personal key context; NotFound when the user has none yet.
func (s *Store) GetKeyContext(ctx context.Context, userID uuid.UUID) (KeyContext, error) {
	var k KeyContext
	err := s.pool.QueryRow(ctx, `SELECT user_id, tenant_id, encryption_id, key_mode, created_at
		FROM key_contexts WHERE user_id = $1`, userID).
		Scan(&k.UserID, &k.TenantID, &k.EncryptionID, &k.KeyMode, &k.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return KeyContext{}, errs.E(errs.NotFound, "user %s has no key context yet", userID)
	}
	if err != nil {
		return KeyContext{}, fail("read key context", err)
	}
	return k, nil
}

// PutKeyContext records a user's personal key context unless they have one already, and returns
// the one in force: of two requests racing to create a context, the first recorded wins. A context
// that is not recorded (the loser's, or any when the user is gone) is queued for erasure (see
// ClaimErasures), so no unused key material stays on the encryption service. Recording, reading
// back and queueing the loser are one transaction. After an error other than NotFound the outcome
// may be unknown (the request ended or the connection broke during the commit): calling again with
// the same k is harmless and answers what is recorded (see vault.Service.EnsureContext).
//
// Errors: NotFound when the user does not exist (any more).
func (s *Store) PutKeyContext(ctx context.Context, k KeyContext) (KeyContext, error) {
	return s.PutKeyContextUnder(ctx, k, "")
}

// errStampChanged refuses to record a zero-knowledge context made with a master key of a password
// that changed meanwhile.
var errStampChanged = errs.E(errs.Unauthenticated,
	"your password changed while this request ran: nothing was stored; log in again")

// PutKeyContextUnder is PutKeyContext for a context bound to a master key derived from the
// password in force under security stamp stamp ("" checks nothing): when the user has no context
// yet and their stamp is no longer stamp (the password changed while the context was being made,
// so the change could not move it to the new password's key), the context is not recorded but
// queued for erasure, and the answer is Unauthenticated. A context already recorded is answered as
// by PutKeyContext. The user's row is share-locked, so a password change commits either before
// (this sees its stamp) or after (it sees the context; see ChangePassword).
func (s *Store) PutKeyContextUnder(ctx context.Context, k KeyContext, stamp string) (KeyContext, error) {
	var kc KeyContext
	refused := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		refused = false
		if stamp != "" {
			var current string
			err := tx.QueryRow(ctx, "SELECT security_stamp FROM users WHERE id = $1 FOR SHARE", k.UserID).Scan(&current)
			if errors.Is(err, pgx.ErrNoRows) {
				return userNotFound(k.UserID)
			}
			if err != nil {
				return fmt.Errorf("lock user: %w", err)
			}
			if current != stamp {
				err := tx.QueryRow(ctx, `SELECT user_id, tenant_id, encryption_id, key_mode, created_at
					FROM key_contexts WHERE user_id = $1`, k.UserID).
					Scan(&kc.UserID, &kc.TenantID, &kc.EncryptionID, &kc.KeyMode, &kc.CreatedAt)
				switch {
				case err == nil && kc.EncryptionID == k.EncryptionID:
					return nil // recorded before the change (an earlier attempt of this call): it is the user's
				case err == nil || errors.Is(err, pgx.ErrNoRows):
					refused = true
					return queueErasure(ctx, tx, k.EncryptionID, k.TenantID, k.UserID, ErasureUnused, 0)
				default:
					return fmt.Errorf("read key context: %w", err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO key_contexts (user_id, tenant_id, encryption_id, key_mode)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING`, k.UserID, k.TenantID, k.EncryptionID, k.KeyMode); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT user_id, tenant_id, encryption_id, key_mode, created_at
			FROM key_contexts WHERE user_id = $1`, k.UserID).
			Scan(&kc.UserID, &kc.TenantID, &kc.EncryptionID, &kc.KeyMode, &kc.CreatedAt)
		if err != nil {
			return fmt.Errorf("read key context: %w", err)
		}
		if kc.EncryptionID != k.EncryptionID {
			return queueErasure(ctx, tx, k.EncryptionID, k.TenantID, k.UserID, ErasureUnused, 0)
		}
		return nil
	})
	if err == nil && refused {
		return KeyContext{}, errStampChanged
	}
	if errs.Is(err, errs.NotFound) {
		// The user is gone: queue the context on its own.
		if qerr := queueErasure(ctx, s.pool, k.EncryptionID, k.TenantID, k.UserID, ErasureUnused, 0); qerr != nil {
			return KeyContext{}, fail("record key context", qerr)
		}
		return KeyContext{}, err
	}
	if _, ok := foreignKeyViolation(err); ok {
		// The transaction recorded nothing: queue the context on its own.
		if qerr := queueErasure(ctx, s.pool, k.EncryptionID, k.TenantID, k.UserID, ErasureUnused, 0); qerr != nil {
			return KeyContext{}, fail("record key context", qerr)
		}
		return KeyContext{}, errs.E(errs.NotFound, "user %s not found", k.UserID)
	}
	if err != nil {
		return KeyContext{}, fail("record key context", err)
	}
	return kc, nil
}

const itemColumns = `id, tenant_id, owner_id, revision, cipher_text, encryption_id, encryption_version_id,
	algorithm, metadata, created_at, updated_at`

func scanItem(row pgx.Row) (Item, error) {
	var it Item
	err := row.Scan(itemFields(&it)...)
	return it, err
}

// itemFields are the scan destinations of itemColumns in it.
func itemFields(it *Item) []any {
	return []any{&it.ID, &it.TenantID, &it.OwnerID, &it.Revision, &it.CipherText, &it.EncryptionID,
		&it.VersionID, &it.Algorithm, &it.Metadata, &it.CreatedAt, &it.UpdatedAt}
}

// checkVersionEnabled refuses, with Aborted, a write of data encrypted under a version that core
// disabled in the meantime (see DisableUnusedVersion): the data was encrypted while the version was
// active, and the rotation, re-encryption and disable completed before the write reached the
// database (see lockedDisabledVersion).
func checkVersionEnabled(ctx context.Context, tx pgx.Tx, encryptionID, versionID uuid.UUID) error {
	_, disabled, err := lockedDisabledVersion(ctx, tx, encryptionID, []uuid.UUID{versionID})
	if err != nil {
		return err
	}
	if disabled {
		return errs.E(errs.Aborted, "key version %s was disabled while this request was in flight: nothing was stored; send the request again", versionID)
	}
	return nil
}

// lockedDisabledVersion share-locks key context encryptionID's row and reports the first of
// versionIDs that core has disabled (DisableUnusedVersion), if any. A disable in progress holds
// the row for update, so it finishes before the check, and the check, a statement of its own (with
// a snapshot taken after the lock), sees it; a disable that comes later waits for tx and then
// counts what tx wrote under the version. Both go in one round trip. A context gone from the
// database locks nothing and has no disabled versions.
func lockedDisabledVersion(ctx context.Context, tx pgx.Tx, encryptionID uuid.UUID, versionIDs []uuid.UUID) (uuid.UUID, bool, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT 1 FROM key_contexts WHERE encryption_id = $1 FOR SHARE`, encryptionID)
	b.Queue(`SELECT encryption_version_id FROM disabled_key_versions WHERE encryption_version_id = ANY($1) LIMIT 1`, versionIDs)
	res := tx.SendBatch(ctx, b)
	var disabled uuid.UUID
	_, err := res.Exec()
	if err == nil {
		err = res.QueryRow().Scan(&disabled)
	}
	found := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return uuid.Nil, false, err
	}
	return disabled, found, nil
}

// CreateItem stores a new item (revision 1) and returns it as stored. Data encrypted under a
// version disabled since gets Aborted (see checkVersionEnabled) and stores nothing.
func (s *Store) CreateItem(ctx context.Context, it Item, audit AuditEvent) (Item, error) {
	var out Item
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := checkVersionEnabled(ctx, tx, it.EncryptionID, it.VersionID); err != nil {
			return err
		}
		var err error
		out, err = scanItem(tx.QueryRow(ctx, `INSERT INTO items (id, tenant_id, owner_id, cipher_text, encryption_id,
			encryption_version_id, algorithm, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+itemColumns,
			it.ID, it.TenantID, it.OwnerID, it.CipherText, it.EncryptionID, it.VersionID, it.Algorithm, it.Metadata))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&it.TenantID, "item:"+it.ID.String()))
	})
	if _, ok := foreignKeyViolation(err); ok {
		return Item{}, errs.E(errs.NotFound, "owner %s not found", it.OwnerID)
	}
	if err != nil {
		return Item{}, fail("create item", err)
	}
	return out, nil
}

// GetItem returns an item of owner; NotFound for an unknown item and for another user's alike.
func (s *Store) GetItem(ctx context.Context, ownerID, id uuid.UUID) (Item, error) {
	it, err := scanItem(s.pool.QueryRow(ctx, `SELECT `+itemColumns+` FROM items WHERE id = $1 AND owner_id = $2`, id, ownerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Item{}, errs.E(errs.NotFound, "item %s not found", id)
	}
	if err != nil {
		return Item{}, fail("read item", err)
	}
	return it, nil
}

// ListPageBytes bounds the ciphertext (as stored: base64) of one ListItems page, whatever its
// pageSize: the page's answer, decrypted, stays well within gRPC's default message limit of 4 MiB
// and the clients' cap on a REST answer. A page holds at least one item whatever its size (an
// item's encoded name and data are at most 1 MiB).
const ListPageBytes = 2 << 20

// ListItems returns a page of owner's items, newest first by (created_at, id), and the token of
// the next page ("" on the last). A page holds at most pageSize items (pageSize <= 0 means 100, at
// most 1000) and ListPageBytes of ciphertext, or a single larger item. pageToken ("" from the
// start) is a position, not an item: the listing continues where it was even if the last item it
// returned has been deleted since. Errors: Invalid naming pageToken for a token ListItems did not
// return.
func (s *Store) ListItems(ctx context.Context, ownerID uuid.UUID, pageSize int, pageToken string) ([]Item, string, error) {
	limit := clampPageSize(pageSize)
	// The window runs over the owner's items in listing order, read from the items_owner index,
	// summing the lengths of their ciphertext, and stops after limit + 1 of them: the one past
	// the page only says that more follow. Only the page's rows are read whole.
	from, args := "", []any{ownerID, limit, ListPageBytes}
	if pageToken != "" {
		t, id, ok := decodePosition(pageToken)
		if !ok {
			return nil, "", errs.E(errs.Invalid, "pageToken: not a token ListItems returned")
		}
		from, args = `AND (created_at, id) < ($4, $5)`, append(args, t, id)
	}
	rows, err := s.pool.Query(ctx, `WITH candidates AS (
			SELECT id, row_number() OVER w AS n, sum(octet_length(cipher_text)) OVER w AS bytes
			FROM items WHERE owner_id = $1 `+from+`
			WINDOW w AS (ORDER BY created_at DESC, id DESC ROWS UNBOUNDED PRECEDING)
			ORDER BY created_at DESC, id DESC LIMIT $2 + 1)
		SELECT `+itemColumns+`, (SELECT count(*) FROM candidates)
		FROM candidates JOIN items USING (id)
		WHERE n <= $2 AND (n = 1 OR bytes <= $3) ORDER BY n`, args...)
	if err != nil {
		return nil, "", fail("list items", err)
	}
	var candidates int
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) {
		var it Item
		err := r.Scan(append(itemFields(&it), &candidates)...)
		return it, err
	})
	if err != nil {
		return nil, "", fail("list items", err)
	}
	if candidates <= len(items) {
		return items, "", nil
	}
	last := items[len(items)-1]
	return items, encodePosition(last.CreatedAt, last.ID), nil
}

// UpdateItem replaces an item's ciphertext if its revision is still revision, and increments it.
// A stale revision gets Aborted and changes nothing; an unknown item (or another owner's) NotFound;
// data encrypted under a version disabled since, Aborted (see checkVersionEnabled).
func (s *Store) UpdateItem(ctx context.Context, ownerID, id uuid.UUID, revision int, ct Item, audit AuditEvent) (Item, error) {
	var out Item
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := checkVersionEnabled(ctx, tx, ct.EncryptionID, ct.VersionID); err != nil {
			return err
		}
		var err error
		out, err = scanItem(tx.QueryRow(ctx, `UPDATE items SET cipher_text = $4, encryption_id = $5,
			encryption_version_id = $6, algorithm = $7, metadata = $8, revision = revision + 1, updated_at = now()
			WHERE id = $1 AND owner_id = $2 AND revision = $3 RETURNING `+itemColumns,
			id, ownerID, revision, ct.CipherText, ct.EncryptionID, ct.VersionID, ct.Algorithm, ct.Metadata))
		if errors.Is(err, pgx.ErrNoRows) {
			var current int
			if err := tx.QueryRow(ctx, `SELECT revision FROM items WHERE id = $1 AND owner_id = $2`, id, ownerID).Scan(&current); errors.Is(err, pgx.ErrNoRows) {
				return errs.E(errs.NotFound, "item %s not found", id)
			} else if err != nil {
				return err
			}
			return errs.E(errs.Aborted, "item %s is at revision %d, not %d: it changed since you read it; read it again and retry", id, current, revision)
		}
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&out.TenantID, "item:"+id.String()))
	})
	if err != nil {
		return Item{}, fail("update item", err)
	}
	return out, nil
}

// DeleteItem deletes an item of owner; NotFound for an unknown item and for another user's alike.
func (s *Store) DeleteItem(ctx context.Context, ownerID, id uuid.UUID, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var tenant uuid.UUID
		err := tx.QueryRow(ctx, `DELETE FROM items WHERE id = $1 AND owner_id = $2 RETURNING tenant_id`, id, ownerID).Scan(&tenant)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "item %s not found", id)
		}
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(&tenant, "item:"+id.String()))
	})
	return fail("delete item", err)
}
