package grpcapi

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/tenants"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// AuditLister is what the admin plane needs to read the audit trail.
type AuditLister interface {
	ListAuditEvents(ctx context.Context, filter postgres.AuditFilter) ([]postgres.AuditEvent, string, error)
}

// AdminServer serves custos.encryption.v1.AdminService.
type AdminServer struct {
	encryptionv1.UnimplementedAdminServiceServer
	Tenants *tenants.Service
	Audit   AuditLister
	// Keys, when set, drops a destroyed tenant's contexts from this replica's cache at once (the
	// others follow the database's notification).
	Keys *keyring.Service
	// MasterKeys are the configured platform master keys and StoredKeys counts what each wraps.
	MasterKeys *masterkey.Keyring
	StoredKeys keyring.StoredKeys
}

// CreateTenant implements POST /v1/admin/tenants.
func (s *AdminServer) CreateTenant(ctx context.Context, req *encryptionv1.CreateTenantRequest) (*encryptionv1.CreateTenantResponse, error) {
	actor, err := adminFrom(ctx)
	if err != nil {
		return nil, err
	}
	issued, err := s.Tenants.Create(ctx, actor, req.GetName())
	if err != nil {
		return nil, err
	}
	return &encryptionv1.CreateTenantResponse{
		TenantId: issued.TenantID.String(), Secret: issued.Secret, SecretId: issued.SecretID.String(),
	}, nil
}

// ListTenants implements GET /v1/admin/tenants.
func (s *AdminServer) ListTenants(ctx context.Context, req *encryptionv1.ListTenantsRequest) (*encryptionv1.ListTenantsResponse, error) {
	if _, err := adminFrom(ctx); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := parseOptionalID("pageToken", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	// The page token is the last tenant id of the previous page: every id sorts after the nil UUID.
	list, next, err := s.Tenants.List(ctx, size, after.UUID)
	if err != nil {
		return nil, err
	}
	resp := &encryptionv1.ListTenantsResponse{}
	if next != uuid.Nil {
		resp.NextPageToken = next.String()
	}
	for _, t := range list {
		resp.Tenants = append(resp.Tenants, tenantToProto(t))
	}
	return resp, nil
}

// RotateTenantSecret implements POST /v1/admin/tenants/{tenantId}/secrets:rotate.
func (s *AdminServer) RotateTenantSecret(ctx context.Context, req *encryptionv1.RotateTenantSecretRequest) (*encryptionv1.RotateTenantSecretResponse, error) {
	actor, err := adminFrom(ctx)
	if err != nil {
		return nil, err
	}
	id, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	issued, err := s.Tenants.RotateSecret(ctx, actor, id)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.RotateTenantSecretResponse{
		TenantId: issued.TenantID.String(), Secret: issued.Secret, SecretId: issued.SecretID.String(),
	}, nil
}

// RevokeTenantSecret implements POST /v1/admin/tenants/{tenantId}/secrets/{secretId}:revoke.
func (s *AdminServer) RevokeTenantSecret(ctx context.Context, req *encryptionv1.RevokeTenantSecretRequest) (*encryptionv1.RevokeTenantSecretResponse, error) {
	actor, err := adminFrom(ctx)
	if err != nil {
		return nil, err
	}
	tenantID, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	secretID, err := parseID("secretId", req.GetSecretId())
	if err != nil {
		return nil, err
	}
	sec, err := s.Tenants.RevokeSecret(ctx, actor, tenantID, secretID)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.RevokeTenantSecretResponse{Secret: secretToProto(sec)}, nil
}

// DestroyTenant implements DELETE /v1/admin/tenants/{tenantId}: every key of the tenant is erased
// and its secrets revoked. It cannot be undone.
func (s *AdminServer) DestroyTenant(ctx context.Context, req *encryptionv1.DestroyTenantRequest) (*encryptionv1.DestroyTenantResponse, error) {
	actor, err := adminFrom(ctx)
	if err != nil {
		return nil, err
	}
	id, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	n, err := s.Tenants.Destroy(ctx, actor, id)
	if err != nil {
		return nil, err
	}
	if s.Keys != nil {
		s.Keys.InvalidateTenant(id)
	}
	return &encryptionv1.DestroyTenantResponse{TenantId: id.String(), EncryptionsDestroyed: uint32(n)}, nil //nolint:gosec // bounded: a count of one tenant's key contexts
}

// ListMasterKeys implements GET /v1/admin/master-keys: the configured platform master keys, which
// one is active and how many stored keys each still wraps, then any key id the database names but
// the configuration lacks (never active; its stored keys cannot be used until it is configured).
func (s *AdminServer) ListMasterKeys(ctx context.Context, _ *encryptionv1.ListMasterKeysRequest) (*encryptionv1.ListMasterKeysResponse, error) {
	if _, err := adminFrom(ctx); err != nil {
		return nil, err
	}
	if s.MasterKeys == nil || s.StoredKeys == nil {
		return nil, errs.E(errs.Internal, "admin server without master keys")
	}
	usages, err := keyring.MasterKeyUsages(ctx, s.StoredKeys, s.MasterKeys)
	if err != nil {
		return nil, err
	}
	resp := &encryptionv1.ListMasterKeysResponse{MasterKeys: make([]*encryptionv1.MasterKey, 0, len(usages))}
	for _, u := range usages {
		resp.MasterKeys = append(resp.MasterKeys, &encryptionv1.MasterKey{KeyId: u.ID, Active: u.Active, WrappedKeys: uint64(u.WrappedKeys)}) //nolint:gosec // non-negative: a row count
	}
	return resp, nil
}

// ListAuditEvents implements GET /v1/admin/audit.
func (s *AdminServer) ListAuditEvents(ctx context.Context, req *encryptionv1.ListAuditEventsRequest) (*encryptionv1.ListAuditEventsResponse, error) {
	if _, err := adminFrom(ctx); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	filter := postgres.AuditFilter{PageSize: size, Cursor: req.GetPageToken()}
	if filter.TenantID, err = optionalIDPtr("tenantId", req.GetTenantId()); err != nil {
		return nil, err
	}
	if filter.EncryptionID, err = optionalIDPtr("encryptionId", req.GetEncryptionId()); err != nil {
		return nil, err
	}
	events, next, err := s.Audit.ListAuditEvents(ctx, filter)
	if err != nil {
		return nil, err
	}
	resp := &encryptionv1.ListAuditEventsResponse{NextPageToken: next}
	for _, e := range events {
		resp.Events = append(resp.Events, &encryptionv1.AuditEvent{
			EventId:      e.ID.String(),
			Time:         timestamppb.New(e.OccurredAt),
			TenantId:     idString(e.TenantID),
			Actor:        e.Actor,
			Action:       e.Action,
			EncryptionId: idString(e.EncryptionID),
			VersionId:    idString(e.VersionID),
			Outcome:      e.Outcome,
			RequestId:    e.RequestID,
		})
	}
	return resp, nil
}

func tenantToProto(t postgres.Tenant) *encryptionv1.Tenant {
	out := &encryptionv1.Tenant{TenantId: t.ID.String(), Name: t.Name, CreatedAt: timestamppb.New(t.CreatedAt)}
	for _, s := range t.Secrets {
		out.Secrets = append(out.Secrets, secretToProto(s))
	}
	return out
}

func secretToProto(s postgres.TenantSecret) *encryptionv1.TenantSecret {
	out := &encryptionv1.TenantSecret{SecretId: s.ID.String(), State: "ACTIVE", CreatedAt: timestamppb.New(s.CreatedAt)}
	if s.RevokedAt != nil {
		out.State = "REVOKED"
		out.RevokedAt = timestamppb.New(*s.RevokedAt)
	}
	return out
}

// pageSize applies the default (100) and bound (1000) of list calls.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n < 0 || n > 1000:
		return 0, errs.E(errs.Invalid, "pageSize: want 1 to 1000, got %d", n)
	}
	return int(n), nil
}

func optionalIDPtr(field, s string) (*uuid.UUID, error) {
	if s == "" {
		return nil, nil
	}
	id, err := parseID(field, s)
	if err != nil {
		return nil, err
	}
	return &id, nil
}

func idString(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	return id.String()
}
