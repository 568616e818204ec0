package password_test

import (
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/password"
)

// FuzzInspect: the PHC parser never panics, and whatever it accepts is
// within bounds and re-encodes to the same string (one spelling per hash).
// go test -run=^$ -fuzz=FuzzInspect ./internal/password/
func FuzzInspect(f *testing.F) {
	f.Add(mustHash(f, pw, password.TestParams()))
	f.Add("$argon2id$v=19$m=65536,t=3,p=2$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=0,t=0,p=0$$")
	f.Add("")
	f.Fuzz(func(t *testing.T, phc string) {
		p, err := password.Inspect(phc)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			t.Fatalf("Inspect accepted out-of-bounds %+v", p)
		}
		want := "$argon2id$v=19$m=" + itoa(p.MemoryKiB) + ",t=" + itoa(p.Iterations) + ",p=" + itoa(p.Parallelism) + "$"
		if !strings.HasPrefix(phc, want) {
			t.Fatalf("Inspect accepted non-canonical %q", phc)
		}
	})
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
