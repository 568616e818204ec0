package esclient

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/errs"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// Admin provisions tenants on the platform's encryption service through its admin plane, with
// core's client certificate and the admin token.
type Admin struct {
	client  encryptionv1.AdminServiceClient
	token   string
	timeout time.Duration
}

// NewAdmin returns an Admin calling conn with token (X-Admin-Token).
func NewAdmin(conn *grpc.ClientConn, token string, timeout time.Duration) *Admin {
	return &Admin{client: encryptionv1.NewAdminServiceClient(conn), token: token, timeout: timeout}
}

// CreateTenant creates a tenant named name and returns its id and first secret. Errors: Unavailable
// when the encryption service cannot be reached, Internal when it refuses core (wrong token or
// certificate: an operator must fix the configuration).
func (a *Admin) CreateTenant(ctx context.Context, name string) (uuid.UUID, string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-admin-token", a.token)
	resp, err := a.client.CreateTenant(ctx, &encryptionv1.CreateTenantRequest{Name: name})
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			return uuid.Nil, "", errs.Wrap(errs.Unavailable, err, "the encryption service cannot be reached; try again")
		default:
			return uuid.Nil, "", errs.Wrap(errs.Internal, err, "the encryption service refused to create the tenant")
		}
	}
	id, err := uuid.Parse(resp.GetTenantId())
	if err != nil {
		return uuid.Nil, "", errs.Wrap(errs.Internal, fmt.Errorf("tenant id %q: %w", resp.GetTenantId(), err), "the encryption service answered with a malformed tenant id")
	}
	return id, resp.GetSecret(), nil
}

// DestroyTenant destroys tenant id on the platform's encryption service: every key of every one of
// its key contexts (all its data becomes unrecoverable) and its credentials. It cannot be undone.
// Errors: NotFound when the service does not know the tenant (never created, or already
// destroyed), which callers that want it gone may take as success; Unavailable when it cannot be
// reached; Internal when it refuses core (wrong token or certificate: an operator must fix the
// configuration).
func (a *Admin) DestroyTenant(ctx context.Context, id uuid.UUID) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-admin-token", a.token)
	_, err := a.client.DestroyTenant(ctx, &encryptionv1.DestroyTenantRequest{TenantId: id.String()})
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return errs.Wrap(errs.NotFound, err, "the encryption service does not know the tenant")
	case codes.Unavailable, codes.DeadlineExceeded:
		return errs.Wrap(errs.Unavailable, err, "the encryption service cannot be reached; try again")
	default:
		return errs.Wrap(errs.Internal, err, "the encryption service refused to destroy the tenant: check core's admin token and client certificate")
	}
}
