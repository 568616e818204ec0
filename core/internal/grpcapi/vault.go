package grpcapi

import (
	"context"
	"encoding/base64"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/server"
	"github.com/custos-platform/custos/core/internal/vault"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// VaultServer serves custos.core.v1.VaultService.
type VaultServer struct {
	corev1.UnimplementedVaultServiceServer
	Vault *vault.Service
}

// vaultCall reads the request's master key (X-Master-Key: base64 of 32 bytes, passed through to the
// encryption service, never stored or logged) and its audit metadata.
func vaultCall(ctx context.Context) (vault.Call, error) {
	r := request(ctx)
	c := vault.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}
	key, err := masterKeyHeader(ctx, "x-master-key", "X-Master-Key")
	c.MasterKey = key
	return c, err
}

// masterKeyHeader reads a client master key header (base64 of 32 bytes); nil when absent. The
// error names the header and never echoes its value.
func masterKeyHeader(ctx context.Context, key, name string) ([]byte, error) {
	vals := server.Incoming(ctx, key)
	switch len(vals) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, errs.E(errs.Invalid, "%s: sent more than once", name)
	}
	b, err := base64.StdEncoding.DecodeString(vals[0])
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(vals[0])
	}
	if err != nil || len(b) != 32 {
		return nil, errs.E(errs.Invalid, "%s: want base64 of exactly 32 bytes", name)
	}
	return b, nil
}

// CreateItem implements POST /v1/items.
func (s *VaultServer) CreateItem(ctx context.Context, req *corev1.CreateItemRequest) (*corev1.CreateItemResponse, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return nil, err
	}
	it, err := s.Vault.Create(ctx, c, req.GetName(), req.GetData())
	if err != nil {
		return nil, err
	}
	return &corev1.CreateItemResponse{Item: itemToProto(it)}, nil
}

// ListItems implements GET /v1/items.
func (s *VaultServer) ListItems(ctx context.Context, req *corev1.ListItemsRequest) (*corev1.ListItemsResponse, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = 50
	case size < 0 || size > 500:
		return nil, errs.E(errs.Invalid, "pageSize: want 1 to 500, got %d", size)
	}
	items, next, err := s.Vault.List(ctx, c, size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &corev1.ListItemsResponse{NextPageToken: next}
	for _, it := range items {
		out.Items = append(out.Items, itemToProto(it))
	}
	return out, nil
}

// GetItem implements GET /v1/items/{id}.
func (s *VaultServer) GetItem(ctx context.Context, req *corev1.GetItemRequest) (*corev1.GetItemResponse, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return nil, err
	}
	id, err := parseID("id", req.GetId())
	if err != nil {
		return nil, err
	}
	it, err := s.Vault.Get(ctx, c, id)
	if err != nil {
		return nil, err
	}
	return &corev1.GetItemResponse{Item: itemToProto(it)}, nil
}

// UpdateItem implements PUT /v1/items/{id}.
func (s *VaultServer) UpdateItem(ctx context.Context, req *corev1.UpdateItemRequest) (*corev1.UpdateItemResponse, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return nil, err
	}
	id, err := parseID("id", req.GetId())
	if err != nil {
		return nil, err
	}
	it, err := s.Vault.Update(ctx, c, id, int(req.GetRevision()), req.GetName(), req.GetData())
	if err != nil {
		return nil, err
	}
	return &corev1.UpdateItemResponse{Item: itemToProto(it)}, nil
}

// DeleteItem implements DELETE /v1/items/{id}.
func (s *VaultServer) DeleteItem(ctx context.Context, req *corev1.DeleteItemRequest) (*corev1.DeleteItemResponse, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return nil, err
	}
	id, err := parseID("id", req.GetId())
	if err != nil {
		return nil, err
	}
	if err := s.Vault.Delete(ctx, c, id); err != nil {
		return nil, err
	}
	return &corev1.DeleteItemResponse{}, nil
}

func itemToProto(it vault.Item) *corev1.Item {
	return &corev1.Item{
		Id: it.ID.String(), Name: it.Name, Data: it.Data, Revision: int32(it.Revision), //nolint:gosec // bounded: the column is a positive int4
		CreatedAt: timestamppb.New(it.CreatedAt), UpdatedAt: timestamppb.New(it.UpdatedAt),
	}
}
