package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// API key field bounds, in characters; the migration checks the name's.
const (
	maxAPIKeyNameLen  = 200
	maxAPIKeyIDLen    = 100
	maxAPIKeyScopeLen = 100
	maxAPIKeyScopes   = 20
)

// APIKey is a machine credential of a tenant: the public KeyID sent as
// X-Api-Key and a secret, sent as X-Api-Secret, known here only by hash.
type APIKey struct {
	ID, TenantID uuid.UUID
	KeyID        string   // public, unique platform-wide
	Name         string   // 1–200 characters
	Scopes       []string // at least one; the caller decides which exist
	SecretHash   []byte   // SHA-256 of the current secret: 32 bytes
	// PreviousSecretHash is the secret replaced by the last rotation, still
	// accepted until PreviousExpiresAt; both nil when there is none.
	PreviousSecretHash []byte
	PreviousExpiresAt  *time.Time
	ExpiresAt          *time.Time // nil: never
	LastUsedAt         *time.Time // updated at most once a minute (see TouchAPIKey)
	RevokedAt          *time.Time
	CreatedBy          uuid.UUID // the user who created it; uuid.Nil when unknown
	// CreatedByUsername is that user's name, set by ListAPIKeys only; "" once they were deleted.
	CreatedByUsername string
	CreatedAt         time.Time
}

//nolint:gosec // G101: column names, not a credential
const apiKeyColumns = `id, tenant_id, key_id, name, scopes, secret_hash, previous_secret_hash, previous_expires_at,
	expires_at, last_used_at, revoked_at, created_by, created_at`

// scanAPIKey reads apiKeyColumns, then into extra the columns selected after them.
func scanAPIKey(row pgx.Row, extra ...any) (APIKey, error) {
	var (
		k         APIKey
		createdBy *uuid.UUID
	)
	err := row.Scan(append([]any{&k.ID, &k.TenantID, &k.KeyID, &k.Name, &k.Scopes, &k.SecretHash, &k.PreviousSecretHash,
		&k.PreviousExpiresAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt, &createdBy, &k.CreatedAt}, extra...)...)
	k.CreatedBy = deref(createdBy)
	return k, err
}

func apiKeyNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "API key %s not found", id)
}

// CreateAPIKey stores k. The database sets CreatedAt; PreviousSecretHash,
// PreviousExpiresAt, LastUsedAt and RevokedAt are ignored.
//
// Errors: Invalid for a zero id or tenant, a key id that is not 1–100
// characters without control characters, a name that is not 1–200, no
// scopes (or more than 20, or an empty one), or a secret hash that is not 32
// bytes; NotFound ("tenant <id> not found") for an unknown tenant; Conflict
// ("API key id %q is taken", or "API key %s already exists" for the id).
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey, audit AuditEvent) error {
	if err := validateAPIKey(k); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO api_keys (id, tenant_id, key_id, name, scopes, secret_hash, expires_at, created_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.TenantID, k.KeyID, k.Name, k.Scopes, k.SecretHash, k.ExpiresAt, nullIfNil(k.CreatedBy))
		constraint, dup := uniqueViolation(err)
		_, noTenant := foreignKeyViolation(err)
		switch {
		case dup && constraint == "api_keys_key_id_key":
			return errs.E(errs.Conflict, "API key id %q is taken", k.KeyID)
		case dup:
			return errs.E(errs.Conflict, "API key %s already exists", k.ID)
		case noTenant:
			return tenantNotFound(k.TenantID)
		case err != nil:
			return fmt.Errorf("insert API key: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&k.TenantID, "apikey:"+k.ID.String()))
	})
	return fail("create API key", err)
}

func validateAPIKey(k APIKey) error {
	switch {
	case k.ID == uuid.Nil:
		return errs.E(errs.Invalid, "API key id is required")
	case k.TenantID == uuid.Nil:
		return errs.E(errs.Invalid, "API key tenant is required")
	case !validText(k.KeyID, 1, maxAPIKeyIDLen):
		return errs.E(errs.Invalid, "API key id must be 1 to %d characters without control characters", maxAPIKeyIDLen)
	case !validText(k.Name, 1, maxAPIKeyNameLen):
		return errs.E(errs.Invalid, "API key name must be 1 to %d characters without control characters", maxAPIKeyNameLen)
	case len(k.Scopes) == 0 || len(k.Scopes) > maxAPIKeyScopes:
		return errs.E(errs.Invalid, "an API key needs 1 to %d scopes", maxAPIKeyScopes)
	case len(k.SecretHash) != hashLen:
		return errs.E(errs.Invalid, "API key secret hash must be %d bytes (SHA-256), got %d", hashLen, len(k.SecretHash))
	}
	for _, scope := range k.Scopes {
		if !validText(scope, 1, maxAPIKeyScopeLen) {
			return errs.E(errs.Invalid, "API key scopes must be 1 to %d characters without control characters", maxAPIKeyScopeLen)
		}
	}
	return nil
}

// GetAPIKeyByKeyID returns the API key whose public id is keyID, revoked or
// expired ones included: the caller checks RevokedAt and ExpiresAt.
//
// Errors: NotFound ("API key %q not found").
func (s *Store) GetAPIKeyByKeyID(ctx context.Context, keyID string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, "SELECT "+apiKeyColumns+" FROM api_keys WHERE key_id = $1", keyID))
	if errors.Is(err, pgx.ErrNoRows) {
		return APIKey{}, errs.E(errs.NotFound, "API key %q not found", keyID)
	}
	if err != nil {
		return APIKey{}, fail("get API key", err)
	}
	return k, nil
}

// ListAPIKeys returns up to pageSize API keys of tenant tenantID (100 if
// pageSize <= 0, at most 1000), revoked ones included, whose id sorts after
// after (uuid.Nil: from the start), ordered by id. The next page starts after
// the last id returned; a short page is the last. It returns no error of its
// own.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID uuid.UUID, pageSize int, after uuid.UUID) ([]APIKey, error) {
	cols := "k." + strings.Join(strings.Fields(strings.ReplaceAll(apiKeyColumns, ",", " ")), ", k.")
	rows, err := s.pool.Query(ctx, "SELECT "+cols+`, COALESCE(u.username, '')
		FROM api_keys k LEFT JOIN users u ON u.id = k.created_by
		WHERE k.tenant_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3`,
		tenantID, after, clampPageSize(pageSize))
	if err != nil {
		return nil, fail("list API keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (APIKey, error) {
		var username string
		k, err := scanAPIKey(row, &username)
		k.CreatedByUsername = username
		return k, err
	})
	if err != nil {
		return nil, fail("list API keys", err)
	}
	if keys == nil {
		keys = []APIKey{}
	}
	return keys, nil
}

// RevokeAPIKey revokes API key id of tenant tenantID. It is idempotent: a
// revoked key keeps its first RevokedAt, and the audit event is recorded
// either way.
//
// Errors: NotFound ("API key <id> not found") alike for an unknown key and
// another tenant's.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, id uuid.UUID, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2",
			id, tenantID)
		if err != nil {
			return fmt.Errorf("revoke API key: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return apiKeyNotFound(id)
		}
		return insertAudit(ctx, tx, audit.about(&tenantID, "apikey:"+id.String()))
	})
	return fail("revoke API key", err)
}

// RotateAPIKey gives API key id of tenant tenantID the secret whose SHA-256
// is newHash; the current secret stays accepted, as the previous one, until
// previousExpiresAt (a previous secret of an earlier rotation is dropped).
// It returns the key as updated.
//
// Errors: Invalid for a hash that is not 32 bytes or a zero
// previousExpiresAt; NotFound ("API key <id> not found") alike for an
// unknown key and another tenant's; FailedPrecondition ("API key <id> is
// revoked").
func (s *Store) RotateAPIKey(ctx context.Context, tenantID, id uuid.UUID, newHash []byte, previousExpiresAt time.Time, audit AuditEvent) (APIKey, error) {
	switch {
	case len(newHash) != hashLen:
		return APIKey{}, errs.E(errs.Invalid, "API key secret hash must be %d bytes (SHA-256), got %d", hashLen, len(newHash))
	case previousExpiresAt.IsZero():
		return APIKey{}, errs.E(errs.Invalid, "the previous secret's expiry is required")
	}
	var k APIKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var revoked bool
		err := tx.QueryRow(ctx, "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
			id, tenantID).Scan(&revoked)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return apiKeyNotFound(id)
		case err != nil:
			return fmt.Errorf("lock API key: %w", err)
		case revoked:
			return errs.E(errs.FailedPrecondition, "API key %s is revoked", id)
		}
		k, err = scanAPIKey(tx.QueryRow(ctx, `
			UPDATE api_keys SET previous_secret_hash = secret_hash, previous_expires_at = $3, secret_hash = $2
			 WHERE id = $1
			RETURNING `+apiKeyColumns, id, newHash, previousExpiresAt))
		if err != nil {
			return fmt.Errorf("rotate API key: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&tenantID, "apikey:"+id.String()))
	})
	if err != nil {
		return APIKey{}, fail("rotate API key", err)
	}
	return k, nil
}

// TouchAPIKey records that API key id was used at at. It writes only when
// the recorded LastUsedAt is unset or more than a minute older, so a busy
// key costs at most one write a minute. An unknown key is no error.
func (s *Store) TouchAPIKey(ctx context.Context, id uuid.UUID, at time.Time) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE api_keys SET last_used_at = $2
		 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')`, id, at)
	return fail("touch API key", err)
}
