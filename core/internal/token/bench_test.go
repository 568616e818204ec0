package token_test

import (
	"testing"

	"github.com/custos-platform/custos/core/internal/token"
)

// go test -run=^$ -bench=. ./internal/token/ — the per-request cost of
// authentication (Verify) and of a login or refresh (Issue).

func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	c := memberClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := f.issuer.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	s := mustIssue(b, f.issuer, memberClaims())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.issuer.Verify(s, token.PurposeAccess); err != nil {
			b.Fatal(err)
		}
	}
}
