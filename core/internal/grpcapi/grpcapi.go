// Package grpcapi binds core's gRPC services (and through the gateway, their REST mapping) to the
// implementations behind them.
//
// Methods whose behaviour has not been built yet answer codes.Unimplemented with a message naming
// the method; see Unimplemented.
package grpcapi

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// Services is everything core serves over gRPC. A nil field is served by its generated
// Unimplemented type.
type Services struct {
	Auth    corev1.AuthServiceServer
	Tenants corev1.TenantServiceServer
	Users   corev1.UserServiceServer
	APIKeys corev1.ApiKeyServiceServer
	Vault   corev1.VaultServiceServer
	Export  corev1.ExportServiceServer
	Keys    corev1.KeyServiceServer
	Audit   corev1.AuditServiceServer
}

// Register registers the services on s.
func (sv Services) Register(s grpc.ServiceRegistrar) {
	corev1.RegisterAuthServiceServer(s, or[corev1.AuthServiceServer](sv.Auth, corev1.UnimplementedAuthServiceServer{}))
	corev1.RegisterTenantServiceServer(s, or[corev1.TenantServiceServer](sv.Tenants, corev1.UnimplementedTenantServiceServer{}))
	corev1.RegisterUserServiceServer(s, or[corev1.UserServiceServer](sv.Users, corev1.UnimplementedUserServiceServer{}))
	corev1.RegisterApiKeyServiceServer(s, or[corev1.ApiKeyServiceServer](sv.APIKeys, corev1.UnimplementedApiKeyServiceServer{}))
	corev1.RegisterVaultServiceServer(s, or[corev1.VaultServiceServer](sv.Vault, corev1.UnimplementedVaultServiceServer{}))
	corev1.RegisterExportServiceServer(s, or[corev1.ExportServiceServer](sv.Export, corev1.UnimplementedExportServiceServer{}))
	corev1.RegisterKeyServiceServer(s, or[corev1.KeyServiceServer](sv.Keys, corev1.UnimplementedKeyServiceServer{}))
	corev1.RegisterAuditServiceServer(s, or[corev1.AuditServiceServer](sv.Audit, corev1.UnimplementedAuditServiceServer{}))
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// RegisterGateway maps the services' REST paths onto conn, a connection to the same gRPC server, so
// that REST calls pass through the same interceptors as gRPC calls.
func RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		corev1.RegisterAuthServiceHandler,
		corev1.RegisterTenantServiceHandler,
		corev1.RegisterUserServiceHandler,
		corev1.RegisterApiKeyServiceHandler,
		corev1.RegisterVaultServiceHandler,
		corev1.RegisterExportServiceHandler,
		corev1.RegisterKeyServiceHandler,
		corev1.RegisterAuditServiceHandler,
		RegisterImportGateway, // after RegisterExportServiceHandler: it replaces its POST /v1/import
	} {
		if err := register(ctx, mux, conn); err != nil {
			return err
		}
	}
	return nil
}
