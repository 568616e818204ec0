package grpcapi

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
)

// Interceptors returns the service's own interceptors as one unary and one stream interceptor,
// one link of the server's chain instead of three: every call is authenticated by auth (see
// Auth), then handled, after which the client master keys it carried are cleared; an error, auth's or the handler's, is mapped once through the errs
// vocabulary to a gRPC status (see toStatus), and a method this release leaves unimplemented
// answers Unimplemented naming it and component (see unimplementedError).
func Interceptors(log *slog.Logger, auth *Auth, component string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		actx, release, err := auth.authenticate(ctx, info.FullMethod)
		if err == nil {
			var resp any
			resp, err = handler(actx, req)
			release()
			if err == nil {
				return resp, nil
			}
		}
		return nil, unimplementedError(component, info.FullMethod, toStatus(ctx, log, info.FullMethod, err))
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		actx, release, err := auth.authenticate(ss.Context(), info.FullMethod)
		if err == nil {
			err = handler(srv, &wrappedStream{ServerStream: ss, ctx: actx})
			release()
		}
		return unimplementedError(component, info.FullMethod, toStatus(ss.Context(), log, info.FullMethod, err))
	}
	return unary, stream
}
