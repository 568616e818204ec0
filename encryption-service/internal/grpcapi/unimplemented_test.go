package grpcapi

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

func TestUnimplementedNamesTheMethod(t *testing.T) {
	unary, stream := Unimplemented("the encryption service")
	info := &grpc.UnaryServerInfo{FullMethod: "/custos.encryption.v1.EncryptionService/Rewrap"}
	_, err := unary(context.Background(), &encryptionv1.RewrapRequest{}, info, func(ctx context.Context, req any) (any, error) {
		// What a method that a service leaves unimplemented answers.
		return encryptionv1.UnimplementedEncryptionServiceServer{}.Rewrap(ctx, req.(*encryptionv1.RewrapRequest))
	})
	want := "custos.encryption.v1.EncryptionService/Rewrap is not implemented by this release of the encryption service"
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != want {
		t.Errorf("Rewrap() = %v, want Unimplemented %q", err, want)
	}

	// Other errors, including Unimplemented errors of the service's own making, pass unchanged.
	own := status.Error(codes.Unimplemented, "algorithm FOO is not supported")
	if got := stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x.Y/Z"}, func(any, grpc.ServerStream) error { return own }); !errors.Is(got, own) {
		t.Errorf("stream interceptor changed %v into %v", own, got)
	}
}
