package token_test

import (
	"testing"

	"github.com/custos-platform/custos/core/internal/token"
)

// FuzzVerify: Verify never panics, and accepts only tokens signed by the
// issuer's key. The seeds are made with deterministic Ed25519 signatures
// over fixed payloads, so that every fuzz worker rebuilds the same set.
// go test -run=^$ -fuzz=FuzzVerify ./internal/token/
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	genuine := map[string]bool{}
	for _, p := range []map[string]any{goodPayload(), with(goodPayload(), "role", "owner"), with(goodPayload(), "pur", "mfa")} {
		s := craft(f, edHeader(fx.key.ID), p, edSigner(fx.key.Private))
		genuine[s] = true
		f.Add(s)
	}
	f.Add("")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, s string) {
		_, errA := fx.issuer.Verify(s, token.PurposeAccess)
		_, errM := fx.issuer.Verify(s, token.PurposeMFA)
		if (errA == nil || errM == nil) && !genuine[s] {
			t.Fatalf("Verify accepted %q", s)
		}
		_, _ = token.HashRefreshToken(s)
	})
}
