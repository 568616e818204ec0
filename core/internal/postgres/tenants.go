package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Key modes of a tenant (Tenant.KeyMode), as on the wire.
const (
	KeyModePlatform = "PLATFORM" // the platform manages the tenant's users' key contexts
	KeyModeClient   = "CLIENT"   // zero-knowledge: opening a key needs the client's master key
)

// Kinds of encryption-service endpoint (ESEndpoint.Kind).
const (
	ESKindPlatform = "platform" // the platform's own encryption service; core provisioned the tenant there
	ESKindHosted   = "hosted"   // a tenant-hosted encryption service
)

// Protocols of a hosted encryption service (ESEndpoint.Protocol).
const (
	ESProtocolGRPC  = "grpc"
	ESProtocolHTTPS = "https"
)

// Tenant name bounds, in characters; the migration checks the same.
const (
	minTenantNameLen = 1
	maxTenantNameLen = 200
)

// ESEndpoint is where a tenant's encryption service is and how core
// authenticates to it. Secrets are sealed by the caller under core's secret
// keys; the store never sees them in clear.
type ESEndpoint struct {
	Kind string // ESKindPlatform or ESKindHosted
	// For ESKindHosted only (empty for ESKindPlatform): the service's URL
	// and protocol, the CA bundle to verify it, and optionally a client
	// certificate with its sealed private key (both or neither).
	URL, Protocol, CABundlePEM, ClientCertPEM string
	ClientKeySealed                           []byte
	// The tenant's id and sealed secret on that service; always required.
	TenantID           uuid.UUID
	TenantSecretSealed []byte
}

// Tenant is an organisation on the platform.
type Tenant struct {
	ID                   uuid.UUID
	Name                 string // 1–200 characters, unique case-insensitively
	KeyMode              string // KeyModePlatform or KeyModeClient
	PasswordHintsEnabled bool
	ES                   ESEndpoint
	CreatedAt            time.Time // set by the database
}

const tenantColumns = `id, name, key_mode, password_hints_enabled, es_kind, es_url, es_protocol, es_ca_bundle_pem,
	es_client_cert_pem, es_client_key_sealed, es_tenant_id, es_tenant_secret_sealed, created_at`

func scanTenant(row pgx.Row) (Tenant, error) {
	var (
		t                                Tenant
		url, protocol, caBundle, certPEM *string
	)
	err := row.Scan(&t.ID, &t.Name, &t.KeyMode, &t.PasswordHintsEnabled, &t.ES.Kind, &url, &protocol, &caBundle,
		&certPEM, &t.ES.ClientKeySealed, &t.ES.TenantID, &t.ES.TenantSecretSealed, &t.CreatedAt)
	t.ES.URL, t.ES.Protocol, t.ES.CABundlePEM, t.ES.ClientCertPEM = deref(url), deref(protocol), deref(caBundle), deref(certPEM)
	return t, err
}

func tenantNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "tenant %s not found", id)
}

// CreateTenant stores t (CreatedAt is ignored; the database sets it).
//
// Errors: Invalid for a zero id, a name that is not 1–200 characters without
// control characters, an unknown key mode, or an inconsistent endpoint (an
// unknown kind or protocol; a hosted endpoint without URL, protocol or CA
// bundle, or with a client certificate but no key or the reverse; a platform
// endpoint with any of those; a zero ES tenant id or an empty sealed
// secret); Conflict ("tenant name %q is taken") when another tenant has the
// name, compared case-insensitively, or ("tenant %s already exists") the id.
func (s *Store) CreateTenant(ctx context.Context, t Tenant, audit AuditEvent) error {
	if err := validateTenant(t); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		es := t.ES
		_, err := tx.Exec(ctx, `
			INSERT INTO tenants (id, name, key_mode, password_hints_enabled, es_kind, es_url, es_protocol,
				es_ca_bundle_pem, es_client_cert_pem, es_client_key_sealed, es_tenant_id, es_tenant_secret_sealed)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			t.ID, t.Name, t.KeyMode, t.PasswordHintsEnabled, es.Kind, nullIfEmpty(es.URL), nullIfEmpty(es.Protocol),
			nullIfEmpty(es.CABundlePEM), nullIfEmpty(es.ClientCertPEM), nilIfEmpty(es.ClientKeySealed),
			es.TenantID, es.TenantSecretSealed)
		switch constraint, dup := uniqueViolation(err); {
		case dup && constraint == "tenants_name_key":
			return errs.E(errs.Conflict, "tenant name %q is taken", t.Name)
		case dup:
			return errs.E(errs.Conflict, "tenant %s already exists", t.ID)
		case err != nil:
			return fmt.Errorf("insert tenant: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&t.ID, "tenant:"+t.ID.String()))
	})
	return fail("create tenant", err)
}

func validateTenant(t Tenant) error {
	if t.ID == uuid.Nil {
		return errs.E(errs.Invalid, "tenant id is required")
	}
	if err := validateTenantName(t.Name); err != nil {
		return err
	}
	if t.KeyMode != KeyModePlatform && t.KeyMode != KeyModeClient {
		return errs.E(errs.Invalid, "key mode must be %s or %s", KeyModePlatform, KeyModeClient)
	}
	es := t.ES
	switch es.Kind {
	case ESKindPlatform:
		if es.URL != "" || es.Protocol != "" || es.CABundlePEM != "" || es.ClientCertPEM != "" || len(es.ClientKeySealed) > 0 {
			return errs.E(errs.Invalid, "the platform's encryption service takes no URL, protocol, CA bundle or client certificate")
		}
	case ESKindHosted:
		switch {
		case !validText(es.URL, 1, 2048):
			return errs.E(errs.Invalid, "a hosted encryption service needs its URL")
		case es.Protocol != ESProtocolGRPC && es.Protocol != ESProtocolHTTPS:
			return errs.E(errs.Invalid, "encryption service protocol must be %s or %s", ESProtocolGRPC, ESProtocolHTTPS)
		case es.CABundlePEM == "":
			return errs.E(errs.Invalid, "a hosted encryption service needs a CA bundle")
		case (es.ClientCertPEM == "") != (len(es.ClientKeySealed) == 0):
			return errs.E(errs.Invalid, "a client certificate and its key go together")
		}
	default:
		return errs.E(errs.Invalid, "encryption service kind must be %s or %s, got %q", ESKindPlatform, ESKindHosted, es.Kind)
	}
	switch {
	case es.TenantID == uuid.Nil:
		return errs.E(errs.Invalid, "the tenant id on the encryption service is required")
	case len(es.TenantSecretSealed) == 0:
		return errs.E(errs.Invalid, "the sealed tenant secret of the encryption service is required")
	}
	return nil
}

func validateTenantName(name string) error {
	if !validText(name, minTenantNameLen, maxTenantNameLen) {
		return errs.E(errs.Invalid, "tenant name must be %d to %d characters of valid UTF-8 without control characters",
			minTenantNameLen, maxTenantNameLen)
	}
	return nil
}

// nilIfEmpty maps an empty byte slice to SQL NULL.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// GetTenant returns tenant id.
//
// Errors: NotFound ("tenant <id> not found").
func (s *Store) GetTenant(ctx context.Context, id uuid.UUID) (Tenant, error) {
	t, err := getTenant(ctx, s.pool, id, "")
	if err != nil {
		return Tenant{}, fail("get tenant", err)
	}
	return t, nil
}

// getTenant reads tenant id, with lock ("FOR UPDATE", …) appended if set.
func getTenant(ctx context.Context, q querier, id uuid.UUID, lock string) (Tenant, error) {
	t, err := scanTenant(q.QueryRow(ctx, "SELECT "+tenantColumns+" FROM tenants WHERE id = $1 "+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, tenantNotFound(id)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", err)
	}
	return t, nil
}

// ListTenants returns up to pageSize tenants (100 if pageSize <= 0, at most
// 1000) whose id sorts after after (uuid.Nil: from the start), ordered by id.
// The next page starts after the last id returned; a short page is the last.
// It returns no error of its own.
func (s *Store) ListTenants(ctx context.Context, pageSize int, after uuid.UUID) ([]Tenant, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+tenantColumns+" FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
		after, clampPageSize(pageSize))
	if err != nil {
		return nil, fail("list tenants", err)
	}
	tenants, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Tenant, error) { return scanTenant(row) })
	if err != nil {
		return nil, fail("list tenants", err)
	}
	if tenants == nil {
		tenants = []Tenant{}
	}
	return tenants, nil
}

// UpdateTenant changes tenant id's name and whether password hints are
// enabled; a nil argument leaves its field unchanged. It returns the tenant
// as updated.
//
// Errors: Invalid for a name that is not 1–200 characters without control
// characters; NotFound ("tenant <id> not found"); Conflict ("tenant name %q
// is taken") when another tenant has the name, compared case-insensitively.
func (s *Store) UpdateTenant(ctx context.Context, id uuid.UUID, name *string, hintsEnabled *bool, audit AuditEvent) (Tenant, error) {
	if name != nil {
		if err := validateTenantName(*name); err != nil {
			return Tenant{}, err
		}
	}
	var t Tenant
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		t, err = scanTenant(tx.QueryRow(ctx, `
			UPDATE tenants SET name = COALESCE($2, name), password_hints_enabled = COALESCE($3, password_hints_enabled)
			 WHERE id = $1
			RETURNING `+tenantColumns, id, name, hintsEnabled))
		constraint, dup := uniqueViolation(err)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return tenantNotFound(id)
		case dup && constraint == "tenants_name_key":
			return errs.E(errs.Conflict, "tenant name %q is taken", *name)
		case err != nil:
			return fmt.Errorf("update tenant: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&id, "tenant:"+id.String()))
	})
	if err != nil {
		return Tenant{}, fail("update tenant", err)
	}
	return t, nil
}
