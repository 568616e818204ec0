// Package grpcapi binds the encryption service's gRPC services (and through the gateway, their REST
// mapping) to the implementations behind them.
//
// Methods whose behaviour has not been built yet answer codes.Unimplemented with a message naming
// the method; see Unimplemented.
package grpcapi

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

var (
	_ encryptionv1.EncryptionServiceServer = (*EncryptionServer)(nil)
	_ encryptionv1.AdminServiceServer      = (*AdminServer)(nil)
)

// Services is everything the encryption service serves over gRPC.
type Services struct {
	Encryption *EncryptionServer
	Admin      *AdminServer
}

// Register registers the services on s.
func (sv Services) Register(s grpc.ServiceRegistrar) {
	encryptionv1.RegisterEncryptionServiceServer(s, sv.Encryption)
	encryptionv1.RegisterAdminServiceServer(s, sv.Admin)
}

// RegisterGateway maps the services' REST paths onto conn, a connection to the same gRPC server, so
// that REST calls pass through the same interceptors as gRPC calls.
func RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	if err := encryptionv1.RegisterEncryptionServiceHandler(ctx, mux, conn); err != nil {
		return err
	}
	return encryptionv1.RegisterAdminServiceHandler(ctx, mux, conn)
}
