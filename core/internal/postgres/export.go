package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// ItemCursor is the position just after it in an export: Export resumes there.
func ItemCursor(it Item) string {
	return encodePosition(it.CreatedAt, it.ID)
}

// ExportItems returns up to limit items of tenantID — only those of ownerID unless it is
// uuid.Nil — oldest first by (created_at, id), after cursor (an ItemCursor; "" from the start).
// Errors: Invalid for a cursor ItemCursor did not make.
func (s *Store) ExportItems(ctx context.Context, tenantID, ownerID uuid.UUID, cursor string, limit int) ([]Item, error) {
	var (
		rows pgx.Rows
		err  error
	)
	switch cursor {
	case "":
		rows, err = s.pool.Query(ctx, `SELECT `+itemColumns+` FROM items
			WHERE tenant_id = $1 AND ($2::uuid IS NULL OR owner_id = $2)
			ORDER BY created_at, id LIMIT $3`, tenantID, nullIfNil(ownerID), limit)
	default:
		t, id, ok := decodePosition(cursor)
		if !ok {
			return nil, errs.E(errs.Invalid, "cursor: not a cursor of an exported record")
		}
		rows, err = s.pool.Query(ctx, `SELECT `+itemColumns+` FROM items
			WHERE tenant_id = $1 AND ($2::uuid IS NULL OR owner_id = $2) AND (created_at, id) > ($4, $5)
			ORDER BY created_at, id LIMIT $3`, tenantID, nullIfNil(ownerID), limit, t, id)
	}
	if err != nil {
		return nil, fail("export items", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) { return scanItem(r) })
	if err != nil {
		return nil, fail("export items", err)
	}
	return items, nil
}

// ImportResult counts what ImportItems did.
type ImportResult struct {
	Imported  int // items stored
	Unchanged int // items already present, unchanged since the export
}

// ImportItems stores the items of records into tenantID exactly as they are (id, owner, revision,
// ciphertext, key references, timestamps), all in one transaction with audit: if any record fails,
// nothing is stored. records is consumed inside the transaction, so it must not wait on anyone
// (a client's next message, say): the transaction, its locks and its connection would be held as
// long; grpcapi receives a whole import before calling this. An error it yields aborts the import
// and is returned unchanged. Records are numbered from 1 in messages.
//
// Each item's owner must be a user of tenantID and its key context that owner's personal one
// (FailedPrecondition otherwise, naming the record). An item whose id exists at the same revision,
// owner, key context and timestamps counts as unchanged (see sameItem); with other content (or in
// another tenant) it is Conflict, naming the record. The key contexts imported into are locked
// against DisableUnusedVersion until the transaction ends.
//
// Unlike the other methods, ImportItems runs its transaction once: records is a stream that cannot
// be read again, so a deadlock or serialization failure is not retried but answered Aborted
// (nothing was imported; the caller sends the records again).
func (s *Store) ImportItems(ctx context.Context, tenantID uuid.UUID, records iter.Seq2[Item, error], audit AuditEvent) (ImportResult, error) {
	var res ImportResult
	n := 0 // records read so far
	err := runTx(ctx, s.pool, pgx.ReadCommitted, func(tx pgx.Tx) error {
		contexts := map[uuid.UUID]uuid.UUID{} // owner → their key context, checked and locked
		for it, err := range records {
			n++
			if err != nil {
				return err
			}
			if err := checkImportOwner(ctx, tx, tenantID, n, it, contexts); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO items (id, tenant_id, owner_id, revision, cipher_text, encryption_id,
				encryption_version_id, algorithm, metadata, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
				it.ID, tenantID, it.OwnerID, it.Revision, it.CipherText, it.EncryptionID, it.VersionID, it.Algorithm,
				it.Metadata, it.CreatedAt, it.UpdatedAt)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				res.Imported++
				continue
			}
			same, err := sameItem(ctx, tx, tenantID, it)
			if errors.Is(err, pgx.ErrNoRows) { // deleted since the INSERT found it
				return errs.E(errs.Aborted, "record %d (item %s): the item was deleted while it was being imported; nothing was imported; send all the records again", n, it.ID)
			}
			if err != nil {
				return err
			}
			if !same {
				return errs.E(errs.Conflict, "record %d (item %s): an item with this id and different content exists; nothing was imported", n, it.ID)
			}
			res.Unchanged++
		}
		return insertAudit(ctx, tx, audit.about(&tenantID, "tenant:"+tenantID.String()))
	})
	if isSQLState(err, sqlstateSerializationFailure, sqlstateDeadlockDetected) {
		return ImportResult{}, errs.Wrap(errs.Aborted, fmt.Errorf("import items: %w", err),
			fmt.Sprintf("the import collided with a concurrent change to the same items at record %d: nothing was imported; send all the records again", n))
	}
	if err != nil {
		return ImportResult{}, fail("import items", err)
	}
	return res, nil
}

// sameItem reports whether the stored item with it's id is it: in tenantID, of the same owner and
// key context, at the same revision with the same timestamps. Its ciphertext, key version,
// algorithm and metadata may differ if the version does: a re-encryption job moves an item to
// another version of the same key context (ApplyPage) without changing its revision, its
// timestamps or its plaintext, and every other change of content is an update, which increments
// the revision and sets updated_at. On the same version they must be equal too.
func sameItem(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, it Item) (bool, error) {
	// jsonb equality is semantic: the metadata may come back with its keys reordered.
	var same bool
	err := tx.QueryRow(ctx, `SELECT tenant_id = $2 AND owner_id = $3 AND revision = $4 AND encryption_id = $6
		AND created_at = $10 AND updated_at = $11
		AND (encryption_version_id <> $7 OR (cipher_text = $5 AND algorithm = $8 AND metadata = $9::jsonb))
		FROM items WHERE id = $1`,
		it.ID, tenantID, it.OwnerID, it.Revision, it.CipherText, it.EncryptionID, it.VersionID, it.Algorithm,
		it.Metadata, it.CreatedAt, it.UpdatedAt).Scan(&same)
	return same, err
}

// checkImportOwner checks that it's owner is a user of tenantID whose personal key context is
// it's, and locks that context's row.
func checkImportOwner(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, n int, it Item, contexts map[uuid.UUID]uuid.UUID) error {
	enc, ok := contexts[it.OwnerID]
	if !ok {
		err := tx.QueryRow(ctx, `SELECT encryption_id FROM key_contexts WHERE user_id = $1 AND tenant_id = $2 FOR SHARE`,
			it.OwnerID, tenantID).Scan(&enc)
		if errors.Is(err, pgx.ErrNoRows) {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND tenant_id = $2)`,
				it.OwnerID, tenantID).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return errs.E(errs.FailedPrecondition, "record %d (item %s): owner %s is not a user of this tenant; nothing was imported", n, it.ID, it.OwnerID)
			}
			return errs.E(errs.FailedPrecondition, "record %d (item %s): owner %s has no key context; nothing was imported", n, it.ID, it.OwnerID)
		}
		if err != nil {
			return err
		}
		contexts[it.OwnerID] = enc
	}
	if enc != it.EncryptionID {
		return errs.E(errs.FailedPrecondition, "record %d (item %s): key context %s is not the personal key context of owner %s; nothing was imported",
			n, it.ID, it.EncryptionID, it.OwnerID)
	}
	return nil
}
