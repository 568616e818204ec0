package totp_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/custos-platform/custos/core/internal/totp"
)

var codeShape = regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$`)

func TestNewRecoveryCodes(t *testing.T) {
	codes, hashes, err := totp.NewRecoveryCodes(totp.RecoveryCodeCount, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("got %d codes, %d hashes, want 10", len(codes), len(hashes))
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if !codeShape.MatchString(c) || seen[c] {
			t.Errorf("code %d = %q: wrong shape or repeated", i, c)
		}
		seen[c] = true
		if h, err := totp.HashRecoveryCode(c); err != nil || !bytes.Equal(h, hashes[i]) {
			t.Errorf("HashRecoveryCode(code %d) = %x, %v, want %x", i, h, err, hashes[i])
		}
		if bytes.Contains(hashes[i], []byte(c)) {
			t.Error("hash holds the code")
		}
	}
	// Deterministic from the random bytes: byte b gives symbol b&31.
	fixed, _, err := totp.NewRecoveryCodes(1, bytes.NewReader([]byte{0, 1, 2, 3, 31, 32, 33, 255, 10, 17, 18, 27}))
	if err != nil || fixed[0] != "0123-z01z-ahjv" {
		t.Errorf("NewRecoveryCodes(fixed) = %v, %v, want [0123-z01z-ahjv]", fixed, err)
	}
	for _, n := range []int{0, -1, 101} {
		if _, _, err := totp.NewRecoveryCodes(n, rand.Reader); !errors.Is(err, totp.ErrInvalidCount) {
			t.Errorf("NewRecoveryCodes(%d) = %v, want ErrInvalidCount", n, err)
		}
	}
	if _, _, err := totp.NewRecoveryCodes(10, iotest.ErrReader(errors.New("x"))); !errors.Is(err, totp.ErrRandom) {
		t.Errorf("NewRecoveryCodes(failing rand) = %v, want ErrRandom", err)
	}
	// A broken source that repeats itself is caught.
	if _, _, err := totp.NewRecoveryCodes(2, bytes.NewReader(make([]byte, 24))); !errors.Is(err, totp.ErrRandom) {
		t.Errorf("NewRecoveryCodes(all-zero rand) = %v, want ErrRandom", err)
	}
}

// Every symbol is used, about equally: the mapping from bytes is uniform.
func TestRecoveryCodeAlphabet(t *testing.T) {
	codes, _, err := totp.NewRecoveryCodes(100, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	count := map[rune]int{}
	for _, c := range codes {
		for _, r := range strings.ReplaceAll(c, "-", "") {
			count[r]++
		}
	}
	if len(count) != 32 {
		t.Errorf("%d distinct symbols in 1200, want all 32", len(count))
	}
	for _, r := range "ilou" {
		if count[r] > 0 {
			t.Errorf("ambiguous symbol %q used", r)
		}
	}
}

func TestNormalizeRecoveryCode(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"abcd-efgh-jkmn", "abcd-efgh-jkmn"},
		{"ABCD-EFGH-JKMN", "abcd-efgh-jkmn"},
		{"abcdefghjkmn", "abcd-efgh-jkmn"},
		{"abcd efgh jkmn", "abcd-efgh-jkmn"},
		{" abcd--efgh - jkmn ", "abcd-efgh-jkmn"},
		{"a-b-c-d-e-f-g-h-j-k-m-n", "abcd-efgh-jkmn"},
		{"oOiI-lL00-1111", "0011-1100-1111"},
		{"", ""},
		{"abcd-efgh-jkm", ""},
		{"abcd-efgh-jkmnp", ""},
		{"abcd-efgh-jkmu", ""}, // u is not in the alphabet
		{"abcd_efgh_jkmn", ""},
		{"abcd-efgh-jkm\x00", ""},
		{"abcd-efgh-jkmé", ""},
		{"123456", ""},
		{"abcd\tefgh\tjkmn", ""},
		{strings.Repeat("-", 60) + "abcdefghjkmn", ""},
	}
	for _, tc := range tests {
		got, ok := totp.NormalizeRecoveryCode(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("NormalizeRecoveryCode(%q) = %q, %v, want %q", tc.in, got, ok, tc.want)
		}
		if totp.LooksLikeRecoveryCode(tc.in) != ok {
			t.Errorf("LooksLikeRecoveryCode(%q) disagrees with NormalizeRecoveryCode", tc.in)
		}
	}
}

func TestHashAndMatchRecoveryCode(t *testing.T) {
	codes, hashes, err := totp.NewRecoveryCodes(10, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range codes {
		for _, spelling := range []string{c, strings.ToUpper(c), strings.ReplaceAll(c, "-", ""), strings.ReplaceAll(c, "-", " ")} {
			if got, ok := totp.MatchRecoveryCode(spelling, hashes); !ok || got != i {
				t.Errorf("MatchRecoveryCode(%q) = %d, %v, want %d", spelling, got, ok, i)
			}
		}
	}
	// Used codes are removed by the caller: a removed hash no longer matches.
	if _, ok := totp.MatchRecoveryCode(codes[3], append(hashes[:3:3], hashes[4:]...)); ok {
		t.Error("a code matched after its hash was removed")
	}
	other, _, _ := totp.NewRecoveryCodes(1, rand.Reader)
	for _, s := range []string{other[0], "", "123456", "not a code"} {
		if i, ok := totp.MatchRecoveryCode(s, hashes); ok || i != -1 {
			t.Errorf("MatchRecoveryCode(%q) = %d, %v, want -1, false", s, i, ok)
		}
	}
	if _, err := totp.HashRecoveryCode("nope"); !errors.Is(err, totp.ErrInvalidRecoveryCode) || strings.Contains(err.Error(), "nope") {
		t.Errorf("HashRecoveryCode(malformed) = %v, want ErrInvalidRecoveryCode, unquoted", err)
	}
	// The stored form is domain-separated SHA-256 of the canonical code.
	h, _ := totp.HashRecoveryCode("ABCD EFGH JKMN")
	want := sha256.Sum256([]byte("custos/recovery-code/v1\x00abcd-efgh-jkmn"))
	if !bytes.Equal(h, want[:]) {
		t.Errorf("HashRecoveryCode = %x, want %x", h, want)
	}
}
