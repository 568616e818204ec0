package grpcapi

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// BenchmarkRewrapBatchHandler measures RewrapBatch as the gRPC server calls it, without the
// transport: batches of 100 AES-256-GCM ciphertexts of 1 KiB on a cached PLATFORM context.
func BenchmarkRewrapBatchHandler(b *testing.B) {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testdb.New(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	tenant := postgres.Tenant{ID: uuid.New(), Name: "bench"}
	if err := store.CreateTenant(ctx, tenant, postgres.TenantSecret{ID: uuid.New(), Hash: bytes.Repeat([]byte{1}, 32)},
		postgres.AuditEvent{Actor: "bench", Action: "tenant.create", Outcome: "ok"}); err != nil {
		b.Fatal(err)
	}
	mk, err := masterkey.NewKeyring([]masterkey.Key{{ID: "k1", Bytes: bytes.Repeat([]byte{1}, 32)}}, "")
	if err != nil {
		b.Fatal(err)
	}
	srv := &EncryptionServer{Keys: keyring.New(store, mk, keyring.Options{})}
	cctx := context.WithValue(ctx, callerKey{}, keyring.Caller{TenantID: tenant.ID, Actor: "bench"})
	created, err := srv.CreateEncryption(cctx, &encryptionv1.CreateEncryptionRequest{})
	if err != nil {
		b.Fatal(err)
	}
	req := &encryptionv1.RewrapBatchRequest{}
	for range 100 {
		enc, err := srv.Encrypt(cctx, &encryptionv1.EncryptRequest{EncryptionId: created.EncryptionId, Data: string(bytes.Repeat([]byte("x"), 1024))})
		if err != nil {
			b.Fatal(err)
		}
		req.Items = append(req.Items, &encryptionv1.RewrapRequest{EncryptionId: enc.EncryptionId, CipherText: enc.CipherText,
			EncryptionVersionId: enc.EncryptionVersionId, Metadata: enc.Metadata})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := srv.RewrapBatch(cctx, req)
			if err != nil || resp.Results[0].Error != nil {
				b.Errorf("RewrapBatch() = %v, %v", resp.GetResults()[0], err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*len(req.Items))/b.Elapsed().Seconds(), "items/s")
}
