package totp_test

import (
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/totp"
)

// FuzzNormalizeRecoveryCode: never panics; what it accepts is canonical and
// stable under a second normalization.
func FuzzNormalizeRecoveryCode(f *testing.F) {
	f.Add("abcd-efgh-jkmn")
	f.Add("OOII LL00 1111")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := totp.NormalizeRecoveryCode(s)
		if !ok {
			return
		}
		if again, ok2 := totp.NormalizeRecoveryCode(n); !ok2 || again != n || !codeShape.MatchString(n) {
			t.Fatalf("NormalizeRecoveryCode(%q) = %q, not canonical", s, n)
		}
	})
}

// FuzzValidate: never panics on any code, secret or time.
func FuzzValidate(f *testing.F) {
	f.Add(rfcSecret, "287082", int64(59), int64(-1))
	f.Add("", "", int64(0), int64(0))
	f.Fuzz(func(t *testing.T, secret, code string, unix, last int64) {
		step, err := totp.Validate(secret, code, time.Unix(unix, 0), last)
		if err == nil && step <= last {
			t.Fatalf("Validate accepted step %d ≤ last %d", step, last)
		}
	})
}
