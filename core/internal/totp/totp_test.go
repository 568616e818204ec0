package totp_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pquerna/otp"
	libtotp "github.com/pquerna/otp/totp"

	"github.com/custos-platform/custos/core/internal/totp"
)

// RFC 6238 Appendix B: the SHA-1 seed is the ASCII "12345678901234567890".
var rfcSecret = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte("12345678901234567890"))

var rfcVectors = []struct {
	unix  int64
	code8 string
}{
	{59, "94287082"},
	{1111111109, "07081804"},
	{1111111111, "14050471"},
	{1234567890, "89005924"},
	{2000000000, "69279037"},
	{20000000000, "65353130"},
}

// The library primitive, with 8 digits as in the RFC's table.
func TestRFC6238Primitive(t *testing.T) {
	opts := libtotp.ValidateOpts{Period: 30, Digits: otp.DigitsEight, Algorithm: otp.AlgorithmSHA1}
	for _, v := range rfcVectors {
		at := time.Unix(v.unix, 0).UTC()
		got, err := libtotp.GenerateCodeCustom(rfcSecret, at, opts)
		if err != nil || got != v.code8 {
			t.Errorf("GenerateCodeCustom(T=%d) = %s, %v, want %s", v.unix, got, err, v.code8)
		}
		if ok, err := libtotp.ValidateCustom(v.code8, rfcSecret, at, opts); !ok || err != nil {
			t.Errorf("ValidateCustom(T=%d) = %v, %v", v.unix, ok, err)
		}
	}
}

// This package's Validate on the 6-digit truncations of the same vectors.
func TestRFC6238Validate(t *testing.T) {
	for _, v := range rfcVectors {
		code := v.code8[2:]
		at := time.Unix(v.unix, 0).UTC()
		step, err := totp.Validate(rfcSecret, code, at, -1)
		if err != nil || step != v.unix/30 {
			t.Errorf("Validate(%s, T=%d) = %d, %v, want %d, nil", code, v.unix, step, err, v.unix/30)
		}
		// Lower-case and padded spellings of the secret are the same secret.
		if _, err := totp.Validate(strings.ToLower(rfcSecret)+"====", code, at, -1); err != nil {
			t.Errorf("Validate(lower-case padded secret) = %v", err)
		}
	}
}

func TestValidateWindowAndReplay(t *testing.T) {
	secret := rfcSecret
	at := time.Unix(1234567890, 0).UTC() // step 41152263
	cur := totp.Step(at)
	code := func(step int64) string {
		c, err := libtotp.GenerateCodeCustom(secret, time.Unix(step*30, 0), libtotp.ValidateOpts{Digits: otp.DigitsSix})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name     string
		code     string
		lastStep int64
		want     int64
		err      error
	}{
		{"current", code(cur), -1, cur, nil},
		{"previous step", code(cur - 1), -1, cur - 1, nil},
		{"next step", code(cur + 1), -1, cur + 1, nil},
		{"two steps old", code(cur - 2), -1, 0, totp.ErrMismatch},
		{"two steps ahead", code(cur + 2), -1, 0, totp.ErrMismatch},
		{"current, last was previous", code(cur), cur - 1, cur, nil},
		{"replay of current", code(cur), cur, 0, totp.ErrReplay},
		{"previous after current accepted", code(cur - 1), cur, 0, totp.ErrReplay},
		{"current after next accepted", code(cur), cur + 1, 0, totp.ErrReplay},
		{"next after current accepted", code(cur + 1), cur, cur + 1, nil},
		{"with spaces", code(cur)[:3] + " " + code(cur)[3:], -1, cur, nil},
		{"surrounded by spaces", "  " + code(cur) + " ", -1, cur, nil},
		{"wrong", wrongCode(code(cur-1), code(cur), code(cur+1)), -1, 0, totp.ErrMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := totp.Validate(secret, tc.code, at, tc.lastStep)
			if !errors.Is(err, tc.err) || (err == nil && got != tc.want) {
				t.Fatalf("Validate(%q, last %d) = %d, %v, want %d, %v", tc.code, tc.lastStep-cur, got-cur, err, tc.want-cur, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimSpace(tc.code)) {
				t.Errorf("error %q quotes the code", err)
			}
		})
	}
	// Accept-then-replay as the caller would run it.
	last := int64(-1)
	step, err := totp.Validate(secret, code(cur), at, last)
	if err != nil {
		t.Fatal(err)
	}
	last = step
	if _, err := totp.Validate(secret, code(cur), at.Add(10*time.Second), last); !errors.Is(err, totp.ErrReplay) {
		t.Fatalf("second use of a code = %v, want ErrReplay", err)
	}
}

// wrongCode returns a six-digit code equal to none of avoid.
func wrongCode(avoid ...string) string {
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i)
		ok := true
		for _, a := range avoid {
			ok = ok && a != c
		}
		if ok {
			return c
		}
	}
}

func TestValidateMalformed(t *testing.T) {
	at := time.Unix(1234567890, 0)
	for _, code := range []string{
		"", "1", "12345", "1234567", "12345678", "abcdef", "12345a", "１２３４５６", "12-456",
		"12\t3456", "123456\n", "+12345", "-12345", "0x1234", "１23456", strings.Repeat("1", 1000),
		"1 2 3 4 5 6 7",
	} {
		if _, err := totp.Validate(rfcSecret, code, at, -1); !errors.Is(err, totp.ErrInvalidCode) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidCode", code, err)
		}
	}
	for _, secret := range []string{"", "!!!!", "GEZDGNBV", strings.Repeat("A", 25), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1"} {
		if _, err := totp.Validate(secret, "123456", at, -1); !errors.Is(err, totp.ErrInvalidSecret) {
			t.Errorf("Validate(secret %q) = %v, want ErrInvalidSecret", secret, err)
		}
	}
}

func TestStep(t *testing.T) {
	for _, tc := range []struct {
		unix int64
		want int64
	}{{0, 0}, {29, 0}, {30, 1}, {59, 1}, {1111111109, 37037036}, {-1, -1}, {-30, -1}, {-31, -2}} {
		if got := totp.Step(time.Unix(tc.unix, 0)); got != tc.want {
			t.Errorf("Step(%d) = %d, want %d", tc.unix, got, tc.want)
		}
	}
	// Before the epoch nothing validates (and nothing panics).
	if _, err := totp.Validate(rfcSecret, "123456", time.Unix(-100, 0), -1); !errors.Is(err, totp.ErrMismatch) {
		t.Errorf("Validate before 1970 = %v, want ErrMismatch", err)
	}
}

func TestGenerate(t *testing.T) {
	seed := bytes.Repeat([]byte{0xAB}, 20)
	k, err := totp.Generate("Custos", "alice@example.com", bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(k.Secret); err != nil || !bytes.Equal(raw, seed) {
		t.Fatalf("Secret = %q decodes to %x, %v; want the 20 bytes read", k.Secret, raw, err)
	}
	u, err := url.Parse(k.URI)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/Custos:alice@example.com" ||
		q.Get("secret") != k.Secret || q.Get("issuer") != "Custos" || q.Get("algorithm") != "SHA1" ||
		q.Get("digits") != "6" || q.Get("period") != "30" {
		t.Fatalf("URI = %s", k.URI)
	}
	img, err := png.Decode(bytes.NewReader(k.PNG))
	if err != nil {
		t.Fatalf("PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Errorf("QR is %dx%d, want 256x256", b.Dx(), b.Dy())
	}
	// A code from an authenticator (the library) validates.
	now := time.Unix(1_900_000_000, 0)
	c, _ := libtotp.GenerateCode(k.Secret, now)
	if _, err := totp.Validate(k.Secret, c, now, -1); err != nil {
		t.Errorf("Validate(code of the new key) = %v", err)
	}
	// Random keys differ.
	a, _ := totp.Generate("Custos", "a", rand.Reader)
	b, _ := totp.Generate("Custos", "a", rand.Reader)
	if a.Secret == b.Secret {
		t.Error("two secrets are equal")
	}
	// The key prints no secret.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
		if out := fmt.Sprintf(verb, k); strings.Contains(out, k.Secret) || strings.Contains(out, "otpauth") {
			t.Errorf("Sprintf(%s, key) = %q leaks", verb, out)
		}
	}
}

func TestGenerateRejects(t *testing.T) {
	tests := []struct {
		name, issuer, account string
		want                  error
	}{
		{"no issuer", "", "alice", totp.ErrInvalidLabel},
		{"no account", "Custos", "", totp.ErrInvalidLabel},
		{"colon in issuer", "Cus:tos", "alice", totp.ErrInvalidLabel},
		{"colon in account", "Custos", "evil:alice", totp.ErrInvalidLabel},
		{"newline", "Custos", "alice\nbob", totp.ErrInvalidLabel},
		{"NUL", "Custos\x00", "alice", totp.ErrInvalidLabel},
		{"bad UTF-8", "Custos", "al\xffice", totp.ErrInvalidLabel},
		{"too long", "Custos", strings.Repeat("a", 129), totp.ErrInvalidLabel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := totp.Generate(tc.issuer, tc.account, rand.Reader); !errors.Is(err, tc.want) {
				t.Fatalf("Generate(%q, %q) = %v, want %v", tc.issuer, tc.account, err, tc.want)
			}
		})
	}
	if _, err := totp.Generate("Custos", "alice", iotest.ErrReader(errors.New("x"))); !errors.Is(err, totp.ErrRandom) {
		t.Errorf("Generate(failing rand) = %v, want ErrRandom", err)
	}
	// Unicode and spaces are fine, and escaped in the URI.
	k, err := totp.Generate("Custos Cloud", "jürgen müller", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(k.URI); err != nil || u.Path != "/Custos Cloud:jürgen müller" {
		t.Errorf("URI %s: path %q, %v", k.URI, u.Path, err)
	}
}
