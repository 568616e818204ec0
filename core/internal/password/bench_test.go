package password_test

import (
	"crypto/rand"
	"testing"

	"github.com/custos-platform/custos/core/internal/password"
)

// Benchmarks for the cost of a login: go test -run=^$ -bench=. ./internal/password/
// The default-parameter numbers are what each login costs the server, and
// what DummyVerify must match for unknown users.

func BenchmarkHashDefault(b *testing.B) { benchHash(b, password.DefaultParams()) }
func BenchmarkHashTest(b *testing.B)    { benchHash(b, password.TestParams()) }

func benchHash(b *testing.B, p password.Params) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := password.Hash(pw, p, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyDefault(b *testing.B) {
	p := password.DefaultParams()
	h := mustHash(b, pw, p)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := password.Verify(pw, h, p); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkDummyVerifyDefault(b *testing.B) {
	p := password.DefaultParams()
	b.ReportAllocs()
	for b.Loop() {
		password.DummyVerify(pw, p)
	}
}

// The client's derivation at default parameters, as the CLI or SDK pays it.
func BenchmarkClientDeriveDefault(b *testing.B) {
	k, err := password.NewClientKDF(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Derive(pw); err != nil {
			b.Fatal(err)
		}
	}
}
