package keyring

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkRewrapBatch rewraps batches of 100 AES-256-GCM ciphertexts of 1 KiB each on a PLATFORM
// context whose keys are cached, as a running service does; items/s is the figure to watch.
func BenchmarkRewrapBatch(b *testing.B) {
	ctx := context.Background()
	svc, _, _, c := mustServiceWith(b, Options{})
	id := mustCreate(b, svc, c, "", "", RotationPolicy{})
	data := bytes.Repeat([]byte("x"), 1024)
	items := make([]DecryptItem, 100)
	for i := range items {
		enc := mustEncrypt(b, svc, c, id, string(data))
		items[i] = DecryptItem{EncryptionID: id, VersionID: enc.VersionID, CipherText: enc.CipherText, Metadata: metaOf(b, enc)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, failures := svc.RewrapBatch(ctx, c, items)
			if failures[0] != nil {
				b.Error(failures[0])
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "items/s")
}
