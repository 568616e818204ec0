package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
)

// Tenant name bounds, in characters; the migration checks the same.
const (
	minTenantNameLen = 1
	maxTenantNameLen = 200
)

// secretHashLen is the length of a TenantSecret.Hash: a SHA-256 digest.
const secretHashLen = 32

const tenantSecretColumns = "id, tenant_id, secret_hash, created_at, revoked_at" //nolint:gosec // column names, not a credential

// CreateTenant stores t (ID and Name; CreatedAt and Secrets are ignored) with
// its first secret, whose TenantID may be left zero. The database sets the
// creation times.
//
// Errors: Invalid for a zero id, a name that is not 1–200 printable
// characters or a hash that is not 32 bytes; Conflict when the name is taken
// ("tenant name %q is taken", destroyed tenants included) or an id exists.
func (s *Store) CreateTenant(ctx context.Context, t Tenant, first TenantSecret, audit AuditEvent) error {
	if first.TenantID == uuid.Nil {
		first.TenantID = t.ID
	}
	if err := validateTenant(t); err != nil {
		return err
	}
	if err := validateSecret(first); err != nil {
		return err
	}
	if first.TenantID != t.ID {
		return errs.E(errs.Invalid, "tenant secret %s belongs to tenant %s, not %s", first.ID, first.TenantID, t.ID)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO tenants (id, name) VALUES ($1, $2)", t.ID, t.Name)
		switch constraint, dup := uniqueViolation(err); {
		case dup && constraint == "tenants_name_key":
			return errs.E(errs.Conflict, "tenant name %q is taken", t.Name)
		case dup:
			return errs.E(errs.Conflict, "tenant %s already exists", t.ID)
		case err != nil:
			return fmt.Errorf("insert tenant: %w", err)
		}
		if err := insertSecret(ctx, tx, first); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&t.ID, nil, nil)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeTenant, t.ID)
	})
	return fail("create tenant", err)
}

func validateTenant(t Tenant) error {
	if t.ID == uuid.Nil {
		return errs.E(errs.Invalid, "tenant id is required")
	}
	n := utf8.RuneCountInString(t.Name)
	if !utf8.ValidString(t.Name) || n < minTenantNameLen || n > maxTenantNameLen {
		return errs.E(errs.Invalid, "tenant name must be %d to %d characters of valid UTF-8", minTenantNameLen, maxTenantNameLen)
	}
	for _, r := range t.Name {
		// Control characters (NUL included, which PostgreSQL text cannot
		// hold) would garble logs and listings.
		if unicode.IsControl(r) {
			return errs.E(errs.Invalid, "tenant name must not contain control characters")
		}
	}
	return nil
}

func validateSecret(sec TenantSecret) error {
	switch {
	case sec.ID == uuid.Nil:
		return errs.E(errs.Invalid, "tenant secret id is required")
	case sec.TenantID == uuid.Nil:
		return errs.E(errs.Invalid, "tenant secret %s: tenant id is required", sec.ID)
	case len(sec.Hash) != secretHashLen:
		return errs.E(errs.Invalid, "tenant secret %s: hash must be %d bytes (SHA-256), got %d", sec.ID, secretHashLen, len(sec.Hash))
	}
	return nil
}

// insertSecret inserts an active secret.
func insertSecret(ctx context.Context, tx pgx.Tx, sec TenantSecret) error {
	_, err := tx.Exec(ctx, "INSERT INTO tenant_secrets (id, tenant_id, secret_hash) VALUES ($1, $2, $3)",
		sec.ID, sec.TenantID, sec.Hash)
	if _, dup := uniqueViolation(err); dup {
		return errs.E(errs.Conflict, "tenant secret %s already exists", sec.ID)
	}
	if err != nil {
		return fmt.Errorf("insert tenant secret: %w", err)
	}
	return nil
}

// ListTenants returns a page of up to pageSize tenants (100 if pageSize <= 0,
// at most 1000) whose id sorts after after (uuid.Nil: from the start),
// ordered by id, each with all its secrets, and next, the id the next page
// starts after (pass it as after), or uuid.Nil when no tenant follows this
// page. Destroyed tenants are left out. A full page may be the last: only
// next tells.
func (s *Store) ListTenants(ctx context.Context, pageSize int, after uuid.UUID) (page []Tenant, next uuid.UUID, err error) {
	limit := clampPageSize(pageSize)
	var tenants []Tenant
	err = s.inSnapshot(ctx, func(tx pgx.Tx) error {
		// One row more than the page tells whether another page follows.
		rows, err := tx.Query(ctx, `
			SELECT id, name, created_at FROM tenants
			 WHERE id > $1 AND destroyed_at IS NULL
			 ORDER BY id LIMIT $2`, after, limit+1)
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		tenants, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) {
			var t Tenant
			err := row.Scan(&t.ID, &t.Name, &t.CreatedAt)
			return t, err
		})
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		if len(tenants) > limit {
			tenants = tenants[:limit]
			next = tenants[limit-1].ID
		}
		return loadSecrets(ctx, tx, tenants)
	})
	if err != nil {
		return nil, uuid.Nil, fail("list tenants", err)
	}
	if tenants == nil {
		tenants = []Tenant{}
	}
	return tenants, next, nil
}

// loadSecrets fills in the Secrets of tenants with one query.
func loadSecrets(ctx context.Context, q querier, tenants []Tenant) error {
	if len(tenants) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(tenants))
	index := make(map[uuid.UUID]int, len(tenants))
	for i, t := range tenants {
		ids[i] = t.ID
		index[t.ID] = i
	}
	rows, err := q.Query(ctx, "SELECT "+tenantSecretColumns+` FROM tenant_secrets
		 WHERE tenant_id = ANY($1) ORDER BY tenant_id, created_at, id`, ids)
	if err != nil {
		return fmt.Errorf("list tenant secrets: %w", err)
	}
	secrets, err := pgx.CollectRows(rows, scanSecret)
	if err != nil {
		return fmt.Errorf("list tenant secrets: %w", err)
	}
	for _, sec := range secrets {
		t := &tenants[index[sec.TenantID]]
		t.Secrets = append(t.Secrets, sec)
	}
	return nil
}

func scanSecret(row pgx.CollectableRow) (TenantSecret, error) {
	var sec TenantSecret
	err := row.Scan(&sec.ID, &sec.TenantID, &sec.Hash, &sec.CreatedAt, &sec.RevokedAt)
	return sec, err
}

// GetTenant returns the tenant id with all its secrets.
//
// Errors: NotFound ("tenant <id> not found") if it does not exist or is
// destroyed.
func (s *Store) GetTenant(ctx context.Context, id uuid.UUID) (Tenant, error) {
	var t Tenant
	err := s.inSnapshot(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "SELECT id, name, created_at FROM tenants WHERE id = $1 AND destroyed_at IS NULL", id).
			Scan(&t.ID, &t.Name, &t.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return tenantNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("get tenant: %w", err)
		}
		tenants := []Tenant{t}
		if err := loadSecrets(ctx, tx, tenants); err != nil {
			return err
		}
		t = tenants[0]
		return nil
	})
	if err != nil {
		return Tenant{}, fail("get tenant", err)
	}
	return t, nil
}

func tenantNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "tenant %s not found", id)
}

// lockTenant locks the row of the live tenant id until tx ends, FOR UPDATE
// when exclusive (serializing with every other locker) or else FOR SHARE
// (keeping it from changing).
//
// Errors: NotFound if it does not exist or is destroyed.
func lockTenant(ctx context.Context, tx pgx.Tx, id uuid.UUID, exclusive bool) error {
	query := "SELECT 1 FROM tenants WHERE id = $1 AND destroyed_at IS NULL FOR SHARE"
	if exclusive {
		query = "SELECT 1 FROM tenants WHERE id = $1 AND destroyed_at IS NULL FOR UPDATE"
	}
	var one int
	err := tx.QueryRow(ctx, query, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenantNotFound(id)
	}
	if err != nil {
		return fmt.Errorf("lock tenant: %w", err)
	}
	return nil
}

// AddTenantSecret adds an active secret to tenant sec.TenantID, for example to
// rotate its secret without downtime. The database sets CreatedAt.
//
// Errors: Invalid for a zero id or a hash that is not 32 bytes; NotFound if
// the tenant does not exist or is destroyed; Conflict if sec.ID exists.
func (s *Store) AddTenantSecret(ctx context.Context, sec TenantSecret, audit AuditEvent) error {
	if err := validateSecret(sec); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, sec.TenantID, false); err != nil {
			return err
		}
		if err := insertSecret(ctx, tx, sec); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&sec.TenantID, nil, nil)); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeTenant, sec.TenantID)
	})
	return fail("add tenant secret", err)
}

// RevokeTenantSecret revokes secret secretID of tenant tenantID and returns it.
// Revoking a revoked secret changes nothing and returns it as it is (the
// audit event is still recorded).
//
// Errors: NotFound if the tenant does not exist or is destroyed, or it has no
// such secret (a secret of another tenant included); FailedPrecondition if it
// is the tenant's last active secret. Concurrent revocations are serialized
// on the tenant, so together they cannot revoke the last secret either.
func (s *Store) RevokeTenantSecret(ctx context.Context, tenantID, secretID uuid.UUID, audit AuditEvent) (TenantSecret, error) {
	var sec TenantSecret
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenantID, true); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT "+tenantSecretColumns+" FROM tenant_secrets WHERE id = $1 AND tenant_id = $2",
			secretID, tenantID)
		if err != nil {
			return fmt.Errorf("get tenant secret: %w", err)
		}
		sec, err = pgx.CollectExactlyOneRow(rows, scanSecret)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "tenant secret %s not found", secretID)
		}
		if err != nil {
			return fmt.Errorf("get tenant secret: %w", err)
		}
		audit := audit.withDefaults(&tenantID, nil, nil)
		if sec.RevokedAt != nil {
			return insertAudit(ctx, tx, audit)
		}

		var others int
		err = tx.QueryRow(ctx, `SELECT count(*) FROM tenant_secrets
			 WHERE tenant_id = $1 AND id <> $2 AND revoked_at IS NULL`, tenantID, secretID).Scan(&others)
		if err != nil {
			return fmt.Errorf("count active tenant secrets: %w", err)
		}
		if others == 0 {
			return errs.E(errs.FailedPrecondition, "cannot revoke the tenant's last active secret: rotate first")
		}
		if err := tx.QueryRow(ctx, "UPDATE tenant_secrets SET revoked_at = now() WHERE id = $1 RETURNING revoked_at", secretID).
			Scan(&sec.RevokedAt); err != nil {
			return fmt.Errorf("revoke tenant secret: %w", err)
		}
		if err := insertAudit(ctx, tx, audit); err != nil {
			return err
		}
		return notify(ctx, tx, ChangeTenant, tenantID)
	})
	if err != nil {
		return TenantSecret{}, fail("revoke tenant secret", err)
	}
	return sec, nil
}

// ActiveSecrets returns the unrevoked secrets of tenant tenantID, oldest
// first: the ones its callers may authenticate with. An unknown or destroyed
// tenant has none: the result is empty and the error nil, so that callers
// cannot tell it from a tenant without secrets.
func (s *Store) ActiveSecrets(ctx context.Context, tenantID uuid.UUID) ([]TenantSecret, error) {
	// One statement: no transaction needed.
	rows, err := s.pool.Query(ctx, `
		SELECT s.id, s.tenant_id, s.secret_hash, s.created_at, s.revoked_at
		  FROM tenant_secrets s JOIN tenants t ON t.id = s.tenant_id
		 WHERE s.tenant_id = $1 AND s.revoked_at IS NULL AND t.destroyed_at IS NULL
		 ORDER BY s.created_at, s.id`, tenantID)
	if err != nil {
		return nil, fail("list active tenant secrets", err)
	}
	secrets, err := pgx.CollectRows(rows, scanSecret)
	if err != nil {
		return nil, fail("list active tenant secrets", err)
	}
	if secrets == nil {
		secrets = []TenantSecret{}
	}
	return secrets, nil
}

// DestroyTenant erases tenant tenantID: every one of its live key contexts is
// destroyed as [Store.DestroyEncryption] does (all its data becomes
// unrecoverable), every secret is revoked, and the tenant is marked
// destroyed, after which every Store method treats it as unknown (its name
// stays taken). It returns how many key contexts were destroyed. It cannot be
// undone.
//
// The tenant's row is locked first, so no key context can be added while it
// is destroyed. One transaction erases everything: a tenant with very many
// contexts holds their locks until it commits.
//
// Besides audit (completed with the tenant's id), it records for each key
// context it destroys an encryption.destroy event with audit's actor,
// outcome, request id and time, the tenant's id and the context's, so that
// each context's own trail shows its erasure. These are recorded first, with
// time-ordered ids: when audit.ID is zero, the tenant's event sorts as the
// newest of the transaction in [Store.ListAuditEvents].
//
// Errors: NotFound ("tenant <id> not found") if it does not exist or is
// already destroyed.
func (s *Store) DestroyTenant(ctx context.Context, tenantID uuid.UUID, audit AuditEvent) (int, error) {
	var n int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenantID, true); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id FROM encryptions WHERE tenant_id = $1 AND destroyed_at IS NULL
			 ORDER BY id FOR UPDATE`, tenantID)
		if err != nil {
			return fmt.Errorf("lock key contexts: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return fmt.Errorf("lock key contexts: %w", err)
		}
		n = len(ids)
		if _, err := destroyEncryptions(ctx, tx, ids); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE tenant_secrets SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL", tenantID); err != nil {
			return fmt.Errorf("revoke tenant secrets: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE tenants SET destroyed_at = now() WHERE id = $1", tenantID); err != nil {
			return fmt.Errorf("destroy tenant: %w", err)
		}
		if err := insertDestroyAudits(ctx, tx, audit, tenantID, ids); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, audit.withDefaults(&tenantID, nil, nil)); err != nil {
			return err
		}
		// One notification for the tenant: replicas drop its secrets and
		// every cached context of it (rather than one notification per context).
		return notify(ctx, tx, ChangeTenant, tenantID)
	})
	if err != nil {
		return 0, fail("destroy tenant", err)
	}
	return n, nil
}

// encryptionDestroyAction is the audit action of a key context's erasure, as
// keyring records it for DestroyEncryption.
const encryptionDestroyAction = "encryption.destroy"

// insertDestroyAudits records, in one statement, an encryption.destroy event
// of tenant tenantID for each key context of ids, with tenantAudit's actor,
// outcome, request id and time (the transaction's when zero).
func insertDestroyAudits(ctx context.Context, tx pgx.Tx, tenantAudit AuditEvent, tenantID uuid.UUID, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	if err := validateAudit(tenantAudit); err != nil {
		return err
	}
	eventIDs := make([]uuid.UUID, len(ids))
	for i := range ids {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new audit event id: %w", err)
		}
		eventIDs[i] = id
	}
	var occurredAt *time.Time
	if !tenantAudit.OccurredAt.IsZero() {
		occurredAt = &tenantAudit.OccurredAt
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO audit_events (id, occurred_at, tenant_id, actor, action, encryption_id, outcome, request_id)
		SELECT u.id, COALESCE($3, now()), $4, $5, $6, u.encryption_id, $7, $8
		  FROM unnest($1::uuid[], $2::uuid[]) AS u (id, encryption_id)`,
		eventIDs, ids, occurredAt, tenantID, tenantAudit.Actor, encryptionDestroyAction, tenantAudit.Outcome, tenantAudit.RequestID)
	if err != nil {
		return fmt.Errorf("insert key context destroy audit events: %w", err)
	}
	return nil
}
