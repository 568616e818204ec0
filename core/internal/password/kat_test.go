package password

import (
	"encoding/hex"
	"testing"
)

// Known answers from the Argon2 reference implementation's test suite
// (P-H-C/phc-winner-argon2, src/test.c, Argon2id, version 0x13): password
// "password", salt "somesalt", 32-byte tag. They pin both the primitive
// (derive) and the PHC encoding (encode), byte for byte.
func TestReferenceVectors(t *testing.T) {
	tests := []struct {
		m, t, p uint32
		tag     string
		phc     string
	}{
		{65536, 2, 1, "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7",
			"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"},
		{256, 2, 1, "",
			"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"},
		{256, 2, 2, "",
			"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc"},
	}
	for _, tc := range tests {
		p := Params{MemoryKiB: tc.m, Iterations: tc.t, Parallelism: tc.p, SaltLen: 8, KeyLen: 32}
		salt := []byte("somesalt")
		key := derive("password", salt, p)
		if tc.tag != "" && hex.EncodeToString(key) != tc.tag {
			t.Errorf("derive(m=%d,t=%d,p=%d) = %x, want %s", tc.m, tc.t, tc.p, key, tc.tag)
		}
		if got := encode(p, salt, key); got != tc.phc {
			t.Errorf("encode(m=%d,t=%d,p=%d) = %s, want %s", tc.m, tc.t, tc.p, got, tc.phc)
		}
	}
}
