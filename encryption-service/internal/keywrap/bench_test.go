package keywrap

import "testing"

// Benchmarks for one 32-byte key under each operation: go test -run=^$ -bench=. ./internal/keywrap/
func BenchmarkWrap(b *testing.B) {
	kek, key, ad := pattern(KeySize, 1), pattern(KeySize, 2), []byte("custos/es/version-key/v1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Wrap(kek, key, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrap(b *testing.B) {
	kek, key, ad := pattern(KeySize, 1), pattern(KeySize, 2), []byte("custos/es/version-key/v1")
	blob := mustWrap(b, kek, key, ad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unwrap(kek, blob, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	_, pub, err := NewSealingKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	key, info := pattern(KeySize, 2), []byte("custos/es/version-key/v1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(pub, key, info); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	priv, pub, err := NewSealingKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	key, info := pattern(KeySize, 2), []byte("custos/es/version-key/v1")
	blob := mustSeal(b, pub, key, info)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(priv, blob, info); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDeriveClientKEK(b *testing.B) {
	master := pattern(KeySize, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DeriveClientKEK(master, "3b0d6a62-5e5d-4f0c-9a43-2f1b7a3c2a10", "0f5f1b8e-9d3a-4c55-8f6e-7b2a61c4d9e0"); err != nil {
			b.Fatal(err)
		}
	}
}
