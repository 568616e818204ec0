package grpcapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

func TestUnimplementedNamesTheMethod(t *testing.T) {
	// What a method that a service leaves unimplemented answers.
	_, generated := encryptionv1.UnimplementedEncryptionServiceServer{}.Rewrap(context.Background(), &encryptionv1.RewrapRequest{})
	err := unimplementedError("the encryption service", "/custos.encryption.v1.EncryptionService/Rewrap", generated)
	want := "custos.encryption.v1.EncryptionService/Rewrap is not implemented by this release of the encryption service"
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != want {
		t.Errorf("Rewrap() = %v, want Unimplemented %q", err, want)
	}
	// Other errors, including Unimplemented errors of the service's own making, pass unchanged.
	own := status.Error(codes.Unimplemented, "algorithm FOO is not supported")
	if got := unimplementedError("x", "/x.Y/Z", own); !errors.Is(got, own) {
		t.Errorf("unimplementedError changed %v into %v", own, got)
	}
	if got := unimplementedError("x", "/x.Y/Z", nil); got != nil {
		t.Errorf("unimplementedError(nil) = %v", got)
	}
}

type stubStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stubStream) Context() context.Context { return s.ctx }

// TestInterceptorsAuthenticateThenMapErrors checks the one interceptor's order: no handler runs
// for an unauthenticated data-plane call, and every error leaves as a gRPC status.
func TestInterceptorsAuthenticateThenMapErrors(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	unary, stream := Interceptors(log, &Auth{}, "the encryption service")
	called := false
	handler := func(ctx context.Context, req any) (any, error) {
		called = true
		return nil, errs.E(errs.NotFound, "key context %s not found", "x")
	}

	_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: dataPlanePrefix + "Encrypt"}, handler)
	if status.Code(err) != codes.Unauthenticated || called {
		t.Errorf("data plane without a tenant credential = %v (handler called: %v), want Unauthenticated before the handler", err, called)
	}
	err = stream(nil, stubStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: adminPlanePrefix + "ListTenants"},
		func(any, grpc.ServerStream) error { called = true; return nil })
	if status.Code(err) != codes.Unauthenticated || called {
		t.Errorf("admin plane stream without a certificate = %v (handler called: %v), want Unauthenticated before the handler", err, called)
	}

	// Outside both planes (gRPC health) calls pass to the handler, whose errors are mapped.
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, handler)
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "key context x not found" || !called {
		t.Errorf("handler's NotFound = %v, want NotFound with its message", err)
	}
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"},
		func(context.Context, any) (any, error) { return nil, errors.New("disk on fire at /secret/path") })
	if status.Code(err) != codes.Internal || status.Convert(err).Message() == "disk on fire at /secret/path" {
		t.Errorf("unclassified error = %v, want a generic Internal", err)
	}
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/List"},
		func(ctx context.Context, _ any) (any, error) {
			return encryptionv1.UnimplementedEncryptionServiceServer{}.Rewrap(ctx, nil)
		})
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != "grpc.health.v1.Health/List is not implemented by this release of the encryption service" {
		t.Errorf("generated Unimplemented = %v, want the method named", err)
	}
	resp, err := unary(context.Background(), "req", &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"},
		func(_ context.Context, req any) (any, error) { return req, nil })
	if err != nil || resp != "req" {
		t.Errorf("success = %v, %v; want the handler's answer", resp, err)
	}
}
