package totp_test

import (
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/totp"
)

// go test -run=^$ -bench=. ./internal/totp/
func BenchmarkValidate(b *testing.B) {
	at := time.Unix(1234567890, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := totp.Validate(rfcSecret, "005924", at, -1); err != nil {
			b.Fatal(err)
		}
	}
}
