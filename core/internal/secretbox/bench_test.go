package secretbox_test

import (
	"testing"
)

// go test -run=^$ -bench=. ./internal/secretbox/
func BenchmarkSeal(b *testing.B) {
	box := mustBox(b, "k1", k1)
	pt, ad := make([]byte, 32), []byte("signing-key/1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := box.Seal(pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	box := mustBox(b, "k1", k1)
	ad := []byte("signing-key/1")
	blob := mustSeal(b, box, make([]byte, 32), ad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := box.Open(blob, ad); err != nil {
			b.Fatal(err)
		}
	}
}
