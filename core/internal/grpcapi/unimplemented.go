package grpcapi

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Unimplemented returns interceptors that turn the generated "method X not implemented" answer into
// a message a caller can act on: which RPC, and that this release of component does not offer it.
func Unimplemented(component string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	rewrite := func(fullMethod string, err error) error {
		st, ok := status.FromError(err)
		if !ok || st.Code() != codes.Unimplemented || !strings.HasPrefix(st.Message(), "method ") {
			return err
		}
		return status.Error(codes.Unimplemented,
			fmt.Sprintf("%s is not implemented by this release of %s", strings.TrimPrefix(fullMethod, "/"), component))
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, rewrite(info.FullMethod, err)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return rewrite(info.FullMethod, handler(srv, ss))
	}
	return unary, stream
}
