package grpcapi

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

func TestUnimplementedNamesTheMethod(t *testing.T) {
	unary, _ := Unimplemented("core")
	info := &grpc.UnaryServerInfo{FullMethod: "/custos.core.v1.VaultService/CreateItem"}
	_, err := unary(context.Background(), &corev1.CreateItemRequest{}, info, func(ctx context.Context, req any) (any, error) {
		return corev1.UnimplementedVaultServiceServer{}.CreateItem(ctx, req.(*corev1.CreateItemRequest))
	})
	want := "custos.core.v1.VaultService/CreateItem is not implemented by this release of core"
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != want {
		t.Errorf("CreateItem() = %v, want Unimplemented %q", err, want)
	}
}
