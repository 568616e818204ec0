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
	// At the cost budget, one past it, and the reviewer's 1 GiB × 100 passes.
	f.Add("$argon2id$v=19$m=262144,t=4,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=262144,t=5,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=1048576,t=100,p=16$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, phc string) {
		p, err := password.Inspect(phc)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			t.Fatalf("Inspect accepted out-of-bounds %+v", p)
		}
		// The point of the bounds: one stored hash costs at most this much.
		if p.MemoryKiB > password.MaxMemoryKiB || uint64(p.MemoryKiB)*uint64(p.Iterations) > password.MaxCostKiB {
			t.Fatalf("Inspect accepted %+v, over the cost budget", p)
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

// FuzzClientKDFValidate: whatever prelogin parameters a client accepts are
// at or above the downgrade floor and within the work bounds, whatever a
// hostile server answers.
// go test -run=^$ -fuzz=FuzzClientKDFValidate ./internal/password/
func FuzzClientKDFValidate(f *testing.F) {
	f.Add(uint32(64*1024), uint32(3), uint32(1), 32)
	f.Add(uint32(16*1024), uint32(2), uint32(1), 16)
	f.Add(uint32(256*1024), uint32(4), uint32(1), 32)
	f.Add(uint32(256*1024), uint32(5), uint32(1), 32)
	f.Add(uint32(1<<20), uint32(100), uint32(16), 64)
	f.Add(^uint32(0), ^uint32(0), ^uint32(0), 0)
	f.Fuzz(func(t *testing.T, m, it, p uint32, saltLen int) {
		if saltLen < 0 || saltLen > 1024 {
			return
		}
		k := password.ClientKDF{Salt: make([]byte, saltLen), MemoryKiB: m, Iterations: it, Parallelism: p}
		if k.Validate() != nil {
			return
		}
		if !k.AboveFloor() {
			t.Fatalf("Validate accepted %+v below the floor", k)
		}
		if m > password.MaxMemoryKiB || it > password.MaxIterations || p > password.MaxParallelism ||
			uint64(m)*uint64(it) > password.MaxCostKiB || saltLen > password.MaxSaltLen {
			t.Fatalf("Validate accepted %+v, over the work bounds", k)
		}
	})
}
