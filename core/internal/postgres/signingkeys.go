package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// maxSigningKeyIDLen bounds a signing key's id (the JWT "kid"), in characters.
const maxSigningKeyIDLen = 100

// SigningKey is a private key that signs access tokens, sealed under core's
// secret keys. Every unretired key verifies; the newest signs.
type SigningKey struct {
	ID               string // the "kid" of the tokens it signs
	PrivateKeySealed []byte
	CreatedAt        time.Time  // zero when inserting: the database's time
	RetiredAt        *time.Time // nil while it verifies
}

// signingKeysLockKey serializes the changes that decide whether an
// unretired signing key exists.
var signingKeysLockKey = advisoryLockKey("signing-keys")

// ListSigningKeys returns the unretired signing keys, newest first. It
// returns no error of its own.
func (s *Store) ListSigningKeys(ctx context.Context) ([]SigningKey, error) {
	keys, err := listSigningKeys(ctx, s.pool)
	if err != nil {
		return nil, fail("list signing keys", err)
	}
	return keys, nil
}

func listSigningKeys(ctx context.Context, q querier) ([]SigningKey, error) {
	rows, err := q.Query(ctx, `SELECT id, private_key_sealed, created_at, retired_at FROM signing_keys
		 WHERE retired_at IS NULL ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SigningKey, error) {
		var k SigningKey
		err := row.Scan(&k.ID, &k.PrivateKeySealed, &k.CreatedAt, &k.RetiredAt)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	if keys == nil {
		keys = []SigningKey{}
	}
	return keys, nil
}

// InsertSigningKey stores k, unretired (RetiredAt is ignored).
//
// Errors: Invalid for an id that is not 1–100 characters without control
// characters or an empty sealed key; Conflict ("signing key %q already
// exists").
func (s *Store) InsertSigningKey(ctx context.Context, k SigningKey) error {
	return fail("insert signing key", insertSigningKey(ctx, s.pool, k))
}

// createSigningKey inserts and returns the key newKey makes; newKey's failure is Internal unless
// it says otherwise (an *errs.Error).
func createSigningKey(ctx context.Context, tx pgx.Tx, newKey func() (SigningKey, error)) (SigningKey, error) {
	k, err := newKey()
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			return SigningKey{}, err
		}
		return SigningKey{}, errs.Wrap(errs.Internal, err, "create signing key")
	}
	return k, insertSigningKey(ctx, tx, k)
}

func insertSigningKey(ctx context.Context, q querier, k SigningKey) error {
	switch {
	case !validText(k.ID, 1, maxSigningKeyIDLen):
		return errs.E(errs.Invalid, "signing key id must be 1 to %d characters without control characters", maxSigningKeyIDLen)
	case len(k.PrivateKeySealed) == 0:
		return errs.E(errs.Invalid, "sealed signing key is required")
	}
	var createdAt *time.Time
	if !k.CreatedAt.IsZero() {
		createdAt = &k.CreatedAt
	}
	_, err := q.Exec(ctx, "INSERT INTO signing_keys (id, private_key_sealed, created_at) VALUES ($1, $2, COALESCE($3, now()))",
		k.ID, k.PrivateKeySealed, createdAt)
	if _, dup := uniqueViolation(err); dup {
		return errs.E(errs.Conflict, "signing key %q already exists", k.ID)
	}
	if err != nil {
		return fmt.Errorf("insert signing key: %w", err)
	}
	return nil
}

// RetireSigningKey retires signing key id: it no longer verifies, so tokens
// it signed are refused. Retiring a retired key is no error. Insert the
// successor first: the last unretired key cannot be retired.
//
// Errors: NotFound ("signing key %q not found"); FailedPrecondition ("cannot
// retire the last signing key").
func (s *Store) RetireSigningKey(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockAdvisory(ctx, tx, signingKeysLockKey); err != nil {
			return err
		}
		var retired, others bool
		err := tx.QueryRow(ctx, `
			SELECT retired_at IS NOT NULL,
			       EXISTS (SELECT FROM signing_keys WHERE retired_at IS NULL AND id <> $1)
			  FROM signing_keys WHERE id = $1`, id).Scan(&retired, &others)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errs.E(errs.NotFound, "signing key %q not found", id)
		case err != nil:
			return fmt.Errorf("find signing key: %w", err)
		case retired:
			return nil
		case !others:
			return errs.E(errs.FailedPrecondition, "cannot retire the last signing key")
		}
		if _, err := tx.Exec(ctx, "UPDATE signing_keys SET retired_at = now() WHERE id = $1", id); err != nil {
			return fmt.Errorf("retire signing key: %w", err)
		}
		return nil
	})
	return fail("retire signing key", err)
}

// EnsureSigningKey returns the unretired signing keys, newest first, after
// inserting one made by newKey if there are none. Replicas starting together
// create exactly one: the check and the insertion run under an advisory
// lock. newKey runs inside that transaction and may be called more than once
// if the transaction is retried; it should only generate and seal a key.
//
// Errors: those of newKey (an *errs.Error is passed through, any other error
// becomes Internal "create signing key"), and InsertSigningKey's for the key
// it returns.
func (s *Store) EnsureSigningKey(ctx context.Context, newKey func() (SigningKey, error)) ([]SigningKey, error) {
	// The common case, keys present, takes no lock.
	keys, err := s.ListSigningKeys(ctx)
	if err != nil || len(keys) > 0 {
		return keys, err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockAdvisory(ctx, tx, signingKeysLockKey); err != nil {
			return err
		}
		if keys, err = listSigningKeys(ctx, tx); err != nil || len(keys) > 0 {
			return err
		}
		if _, err := createSigningKey(ctx, tx, newKey); err != nil {
			return err
		}
		keys, err = listSigningKeys(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fail("ensure signing key", err)
	}
	return keys, nil
}

// RotateSigningKey makes a key from newKey the signing key and retires every older key whose
// successor has been in force for longer than keep (the tokens it signed have expired by then), in
// one transaction under the signing keys' advisory lock, and returns the new key's id. With due
// > 0 it rotates only when the newest key is older than due, and otherwise returns "" and changes
// nothing: replicas that find a scheduled rotation due at the same moment make one key, not one
// each. Ages are measured by the database's clock. newKey runs inside the transaction and may be
// called more than once if it is retried; it should only generate and seal a key.
//
// Errors: Invalid for a negative keep or due; those of newKey (an *errs.Error passes through,
// any other error becomes Internal "create signing key") and InsertSigningKey's for its key.
func (s *Store) RotateSigningKey(ctx context.Context, newKey func() (SigningKey, error), keep, due time.Duration) (string, error) {
	if keep < 0 || due < 0 {
		return "", errs.E(errs.Invalid, "signing key rotation: keep and due must not be negative")
	}
	var id string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		id = ""
		if err := lockAdvisory(ctx, tx, signingKeysLockKey); err != nil {
			return err
		}
		keys, err := listSigningKeys(ctx, tx)
		if err != nil {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			return fmt.Errorf("read the time: %w", err)
		}
		if due > 0 && len(keys) > 0 && keys[0].CreatedAt.After(now.Add(-due)) {
			return nil
		}
		k, err := createSigningKey(ctx, tx, newKey)
		if err != nil {
			return err
		}
		// keys are newest first: keys[i-1] replaced keys[i].
		for i := 1; i < len(keys); i++ {
			if keys[i-1].CreatedAt.Before(now.Add(-keep)) {
				if _, err := tx.Exec(ctx, "UPDATE signing_keys SET retired_at = now() WHERE id = $1", keys[i].ID); err != nil {
					return fmt.Errorf("retire signing key: %w", err)
				}
			}
		}
		id = k.ID
		return nil
	})
	if err != nil {
		return "", fail("rotate signing key", err)
	}
	return id, nil
}
