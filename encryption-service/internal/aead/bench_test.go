package aead

import "testing"

// BenchmarkEncrypt and BenchmarkDecrypt measure one 1 KiB message under each algorithm, associated
// data of the service's usual size included: go test -run=^$ -bench=. ./internal/aead/
func BenchmarkEncrypt(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(alg+"/1KiB", func(b *testing.B) {
			c := mustNew(b, alg, testKey(b, alg))
			plaintext, ad := make([]byte, 1<<10), benchAD(alg)
			b.SetBytes(int64(len(plaintext)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.Encrypt(plaintext, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(alg+"/1KiB", func(b *testing.B) {
			c := mustNew(b, alg, testKey(b, alg))
			ad := benchAD(alg)
			ct, meta := mustEncrypt(b, c, make([]byte, 1<<10), ad)
			b.SetBytes(1 << 10)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decrypt(ct, meta, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchAD(alg string) []byte {
	return AssociatedData("3b0d6a62-5e5d-4f0c-9a43-2f1b7a3c2a10", "0f5f1b8e-9d3a-4c55-8f6e-7b2a61c4d9e0",
		"a1e2c3d4-b5a6-4789-8abc-def012345678", alg)
}
