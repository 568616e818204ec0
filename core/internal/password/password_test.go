package password_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/custos-platform/custos/core/internal/password"
)

const pw = "correct horse battery staple"

func mustHash(tb testing.TB, pw string, p password.Params) string {
	tb.Helper()
	h, err := password.Hash(pw, p, rand.Reader)
	if err != nil {
		tb.Fatalf("Hash: %v", err)
	}
	return h
}

func TestHashVerify(t *testing.T) {
	p := password.TestParams()
	h := mustHash(t, pw, p)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("Hash = %q, want prefix $argon2id$v=19$m=8192,t=1,p=1$", h)
	}
	if strings.Contains(h, pw) {
		t.Fatal("hash contains the password")
	}
	ok, rehash, err := password.Verify(pw, h, p)
	if !ok || rehash || err != nil {
		t.Fatalf("Verify(right) = %v, %v, %v, want true, false, nil", ok, rehash, err)
	}
	for _, wrong := range []string{"", pw + " ", strings.ToUpper(pw), pw[:len(pw)-1], "correct horse battery stapl\x00"} {
		ok, _, err := password.Verify(wrong, h, p)
		if ok || err != nil {
			t.Errorf("Verify(%q) = %v, %v, want false, nil", wrong, ok, err)
		}
	}
	// Two hashes of one password differ (fresh salt).
	if h2 := mustHash(t, pw, p); h2 == h {
		t.Error("two hashes of one password are equal: salt not random")
	}
}

// The reference implementation's own vectors use an 8-byte salt, which this
// package refuses for stored hashes (kat_test.go checks the primitive and
// the encoding against them); Verify must refuse such a string as malformed.
func TestReferenceVectorRefusedForShortSalt(t *testing.T) {
	const phc = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	if ok, _, err := password.Verify("password", phc, password.TestParams()); ok || !errors.Is(err, password.ErrMalformedHash) {
		t.Fatalf("Verify(8-byte salt) = %v, %v, want false, ErrMalformedHash", ok, err)
	}
}

func TestHashDeterministicGivenSalt(t *testing.T) {
	salt := bytes.Repeat([]byte{1}, 16)
	h1, err := password.Hash("password", password.TestParams(), bytes.NewReader(salt))
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := password.Hash("password", password.TestParams(), bytes.NewReader(salt))
	if h1 != h2 || !strings.HasPrefix(h1, "$argon2id$v=19$m=8192,t=1,p=1$AQEBAQEBAQEBAQEBAQEBAQ$") {
		t.Fatalf("Hash(fixed salt) = %q, %q: want equal, with the salt encoded", h1, h2)
	}
}

func TestVerifyRehash(t *testing.T) {
	p := password.TestParams()
	h := mustHash(t, pw, p)
	stronger := p
	stronger.Iterations = 2
	ok, rehash, err := password.Verify(pw, h, stronger)
	if !ok || !rehash || err != nil {
		t.Fatalf("Verify(want stronger) = %v, %v, %v, want true, true, nil", ok, rehash, err)
	}
	longerKey := p
	longerKey.KeyLen = 64
	if _, rehash, _ := password.Verify(pw, h, longerKey); !rehash {
		t.Error("Verify(want longer key): rehash = false, want true")
	}
	if ok, rehash, _ := password.Verify("wrong password!", h, stronger); ok || rehash {
		t.Errorf("Verify(wrong) = %v, %v, want false, false", ok, rehash)
	}
}

func TestVerifyTooLong(t *testing.T) {
	long := strings.Repeat("a", password.MaxLen+1)
	h := mustHash(t, long, password.TestParams())
	if ok, _, err := password.Verify(long, h, password.TestParams()); ok || err != nil {
		t.Fatalf("Verify(over MaxLen) = %v, %v, want false, nil", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	good := mustHash(t, pw, password.TestParams())
	parts := strings.Split(good, "$")
	salt, hash := parts[4], parts[5]
	with := func(alg, ver, params, s, h string) string {
		return strings.Join([]string{"", alg, ver, params, s, h}, "$")
	}
	tests := []struct {
		name, phc string
	}{
		{"empty", ""},
		{"garbage", "not a hash"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", with("argon2i", "v=19", "m=8192,t=1,p=1", salt, hash)},
		{"argon2d", with("argon2d", "v=19", "m=8192,t=1,p=1", salt, hash)},
		{"version 16", with("argon2id", "v=16", "m=8192,t=1,p=1", salt, hash)},
		{"no version", "$argon2id$m=8192,t=1,p=1$" + salt + "$" + hash},
		{"extra field", good + "$x"},
		{"leading text", "x" + good},
		{"params reordered", with("argon2id", "v=19", "t=1,m=8192,p=1", salt, hash)},
		{"extra param", with("argon2id", "v=19", "m=8192,t=1,p=1,keyid=x", salt, hash)},
		{"missing param", with("argon2id", "v=19", "m=8192,t=1", salt, hash)},
		{"leading zero", with("argon2id", "v=19", "m=08192,t=1,p=1", salt, hash)},
		{"plus sign", with("argon2id", "v=19", "m=+8192,t=1,p=1", salt, hash)},
		{"negative", with("argon2id", "v=19", "m=8192,t=-1,p=1", salt, hash)},
		{"space", with("argon2id", "v=19", "m=8192, t=1,p=1", salt, hash)},
		{"overflow", with("argon2id", "v=19", "m=99999999999,t=1,p=1", salt, hash)},
		{"m over 256 MiB", with("argon2id", "v=19", "m=262145,t=1,p=1", salt, hash)},
		{"m 1 GiB", with("argon2id", "v=19", "m=1048576,t=1,p=1", salt, hash)},
		{"m 4 GiB", with("argon2id", "v=19", "m=4294967295,t=1,p=1", salt, hash)},
		{"t over 10", with("argon2id", "v=19", "m=8192,t=11,p=1", salt, hash)},
		{"t 100", with("argon2id", "v=19", "m=8192,t=100,p=1", salt, hash)},
		{"over budget, m at cap", with("argon2id", "v=19", "m=262144,t=5,p=1", salt, hash)},
		{"over budget, t at cap", with("argon2id", "v=19", "m=104858,t=10,p=1", salt, hash)},
		{"review DoS hash", with("argon2id", "v=19", "m=1048576,t=100,p=16", salt, hash)},
		{"t zero", with("argon2id", "v=19", "m=8192,t=0,p=1", salt, hash)},
		{"p zero", with("argon2id", "v=19", "m=8192,t=1,p=0", salt, hash)},
		{"p over 16", with("argon2id", "v=19", "m=8192,t=1,p=17", salt, hash)},
		{"p 255", with("argon2id", "v=19", "m=8192,t=1,p=255", salt, hash)},
		{"p 256 (uint8 wrap)", with("argon2id", "v=19", "m=8192,t=1,p=256", salt, hash)},
		{"m below 8 KiB per lane", with("argon2id", "v=19", "m=63,t=1,p=8", salt, hash)},
		{"empty salt", with("argon2id", "v=19", "m=8192,t=1,p=1", "", hash)},
		{"short salt", with("argon2id", "v=19", "m=8192,t=1,p=1", "c29tZXNhbHQ", hash)},
		{"long salt", with("argon2id", "v=19", "m=8192,t=1,p=1", strings.Repeat("A", 87), hash)},
		{"huge salt", with("argon2id", "v=19", "m=8192,t=1,p=1", strings.Repeat("A", 100000), hash)},
		{"empty hash", with("argon2id", "v=19", "m=8192,t=1,p=1", salt, "")},
		{"short hash", with("argon2id", "v=19", "m=8192,t=1,p=1", salt, hash[:10])},
		{"padded salt", with("argon2id", "v=19", "m=8192,t=1,p=1", salt+"==", hash)},
		{"url base64", with("argon2id", "v=19", "m=8192,t=1,p=1", strings.ReplaceAll(salt+"_-", "", ""), hash)},
		{"non-canonical base64 tail", with("argon2id", "v=19", "m=8192,t=1,p=1", salt[:len(salt)-1]+"B", hash)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, rehash, err := password.Verify(pw, tc.phc, password.TestParams())
			if ok || rehash || !errors.Is(err, password.ErrMalformedHash) {
				t.Fatalf("Verify(%s) = %v, %v, %v, want false, false, ErrMalformedHash", tc.name, ok, rehash, err)
			}
			if strings.Contains(err.Error(), salt) || strings.Contains(err.Error(), hash) || strings.Contains(err.Error(), pw) {
				t.Errorf("error %q echoes its input", err)
			}
		})
	}
}

func TestHashRejectsBadParams(t *testing.T) {
	base := password.TestParams()
	mod := func(f func(*password.Params)) password.Params { p := base; f(&p); return p }
	tests := []struct {
		name string
		p    password.Params
	}{
		{"zero", password.Params{}},
		{"m too big", mod(func(p *password.Params) { p.MemoryKiB = password.MaxMemoryKiB + 1 })},
		{"m below 8p", mod(func(p *password.Params) { p.Parallelism = 4; p.MemoryKiB = 31 })},
		{"t zero", mod(func(p *password.Params) { p.Iterations = 0 })},
		{"t too big", mod(func(p *password.Params) { p.Iterations = password.MaxIterations + 1 })},
		{"over budget", mod(func(p *password.Params) { p.MemoryKiB, p.Iterations = password.MaxMemoryKiB, 5 })},
		{"m and t at their caps", mod(func(p *password.Params) { p.MemoryKiB, p.Iterations = password.MaxMemoryKiB, password.MaxIterations })},
		{"p zero", mod(func(p *password.Params) { p.Parallelism = 0 })},
		{"p 256", mod(func(p *password.Params) { p.Parallelism = 256 })},
		{"salt short", mod(func(p *password.Params) { p.SaltLen = 8 })},
		{"salt long", mod(func(p *password.Params) { p.SaltLen = 65 })},
		{"key short", mod(func(p *password.Params) { p.KeyLen = 15 })},
		{"key long", mod(func(p *password.Params) { p.KeyLen = 65 })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := password.Hash(pw, tc.p, rand.Reader); !errors.Is(err, password.ErrInvalidParams) {
				t.Fatalf("Hash(%+v) error = %v, want ErrInvalidParams", tc.p, err)
			}
		})
	}
	if err := password.DefaultParams().Validate(); err != nil {
		t.Errorf("DefaultParams().Validate() = %v", err)
	}
}

func TestHashRandomFailure(t *testing.T) {
	_, err := password.Hash(pw, password.TestParams(), iotest.ErrReader(errors.New("no entropy")))
	if !errors.Is(err, password.ErrRandom) {
		t.Fatalf("Hash(failing rand) error = %v, want ErrRandom", err)
	}
	_, err = password.Hash(pw, password.TestParams(), bytes.NewReader(make([]byte, 3)))
	if !errors.Is(err, password.ErrRandom) {
		t.Fatalf("Hash(short rand) error = %v, want ErrRandom", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		pw   string
		want error
	}{
		{"derived (44 base64)", "q5ZkC1fS0yS9a4tq3Qm0Jq1S0gkC9uWm1cVxVt6rK8o=", nil},
		{"exactly 12", "abcdefghijkl", nil},
		{"exactly 1024", strings.Repeat("x", 1024), nil},
		{"unicode", "pässwörd-lång-ünïcode", nil},
		{"spaces allowed", "four words with spaces", nil},
		{"empty", "", password.ErrTooShort},
		{"11 bytes", "abcdefghijk", password.ErrTooShort},
		{"4 runes, 12 bytes? no: 8 bytes", "ääää", password.ErrTooShort},
		{"1025", strings.Repeat("x", 1025), password.ErrTooLong},
		{"NUL", "abcdefghijkl\x00", password.ErrInvalidCharacters},
		{"invalid UTF-8", "abcdefghijkl\xff", password.ErrInvalidCharacters},
		{"truncated rune", "abcdefghijkl\xc3", password.ErrInvalidCharacters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := password.Validate(tc.pw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate(%q) = %v, want %v", tc.pw, err, tc.want)
			}
			if err != nil {
				if !errors.Is(err, password.ErrPolicy) {
					t.Errorf("Validate error %v does not wrap ErrPolicy", err)
				}
				if len(tc.pw) > 0 && strings.Contains(err.Error(), tc.pw) {
					t.Errorf("Validate error %q echoes the password", err)
				}
			}
		})
	}
}

func TestDummyVerify(t *testing.T) {
	// Must not panic on any input, including bad params.
	password.DummyVerify(pw, password.TestParams())
	password.DummyVerify("", password.Params{MemoryKiB: 8, Iterations: 1, Parallelism: 1, SaltLen: 16, KeyLen: 16})
	password.DummyVerify(strings.Repeat("a", password.MaxLen+1), password.TestParams())
}

func TestInspect(t *testing.T) {
	p := password.TestParams()
	h := mustHash(t, pw, p)
	got, err := password.Inspect(h)
	if err != nil || got != p {
		t.Fatalf("Inspect = %+v, %v, want %+v, nil", got, err, p)
	}
}

func TestDefaultParamsRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB hash")
	}
	p := password.DefaultParams()
	h := mustHash(t, pw, p)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("Hash = %q", h)
	}
	if ok, rehash, err := password.Verify(pw, h, p); !ok || rehash || err != nil {
		t.Fatalf("Verify = %v, %v, %v", ok, rehash, err)
	}
}

func TestNoSecretsInFormatting(t *testing.T) {
	s := password.ClientSecrets{AuthPassword: "AUTHSECRET", MasterKey: "MASTERSECRET"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(verb, s)
		if strings.Contains(out, "SECRET") || strings.Contains(out, fmt.Sprintf("%x", "SECRET")) {
			t.Errorf("Sprintf(%s, secrets) = %q leaks", verb, out)
		}
	}
}

// TestCostBudget pins the work bound on stored hashes: a PHC string whose
// memory × passes exceeds MaxCostKiB (each within its own cap or not) is a
// malformed hash, refused by Inspect and Verify before any hashing, with an
// error that says why; one exactly at the budget parses.
func TestCostBudget(t *testing.T) {
	salt, key := make([]byte, 16), make([]byte, 32)
	phc := func(m, it, p uint32) string {
		return "$argon2id$v=19$m=" + itoa(m) + ",t=" + itoa(it) + ",p=" + itoa(p) + "$" +
			base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(key)
	}
	tests := []struct {
		name    string
		m, t, p uint32
		ok      bool
		why     string
	}{
		{"default", 64 * 1024, 3, 2, true, ""},
		{"floor", 16 * 1024, 2, 1, true, ""},
		{"memory cap at budget", password.MaxMemoryKiB, password.MaxCostKiB / password.MaxMemoryKiB, 1, true, ""},
		{"passes cap within budget", password.MaxCostKiB / password.MaxIterations, password.MaxIterations, 16, true, ""},
		{"one KiB·pass over", password.MaxCostKiB/password.MaxIterations + 1, password.MaxIterations, 1, false, "budget"},
		{"memory cap, one pass over", password.MaxMemoryKiB, password.MaxCostKiB/password.MaxMemoryKiB + 1, 1, false, "budget"},
		{"both caps", password.MaxMemoryKiB, password.MaxIterations, 1, false, "budget"},
		{"memory over cap", password.MaxMemoryKiB + 1, 1, 1, false, "memory"},
		{"passes over cap", 8 * 1024, password.MaxIterations + 1, 1, false, "iterations"},
		{"1 GiB, 100 passes, 16 lanes", 1 << 20, 100, 16, false, "iterations"},
		{"product over 32 bits", 1 << 17, 1 << 15, 1, false, "iterations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := phc(tc.m, tc.t, tc.p)
			got, err := password.Inspect(s)
			if tc.ok {
				if err != nil || got.MemoryKiB != tc.m || got.Iterations != tc.t {
					t.Fatalf("Inspect(m=%d,t=%d) = %+v, %v, want accepted", tc.m, tc.t, got, err)
				}
				return
			}
			if !errors.Is(err, password.ErrMalformedHash) || !errors.Is(err, password.ErrInvalidParams) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Inspect(m=%d,t=%d,p=%d) error = %v, want ErrMalformedHash wrapping ErrInvalidParams, naming %q", tc.m, tc.t, tc.p, err, tc.why)
			}
			// Refused by parsing, before any Argon2id work: this returns at once.
			if ok, rehash, err := password.Verify(pw, s, password.DefaultParams()); ok || rehash || !errors.Is(err, password.ErrMalformedHash) {
				t.Fatalf("Verify(m=%d,t=%d,p=%d) = %v, %v, %v, want false, false, ErrMalformedHash", tc.m, tc.t, tc.p, ok, rehash, err)
			}
		})
	}
	if got := uint64(password.DefaultParams().MemoryKiB) * uint64(password.DefaultParams().Iterations); got > password.MaxCostKiB {
		t.Errorf("DefaultParams cost %d over MaxCostKiB %d", got, password.MaxCostKiB)
	}
	if got := uint64(password.ClientMemoryKiB) * password.ClientIterations; got > password.MaxCostKiB {
		t.Errorf("client default cost %d over MaxCostKiB %d", got, password.MaxCostKiB)
	}
}
