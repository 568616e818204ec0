package token_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/custos-platform/custos/core/internal/token"
)

func TestRefreshToken(t *testing.T) {
	tok, hash, err := token.NewRefreshToken(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "crt_") || len(tok) != 47 {
		t.Fatalf("NewRefreshToken = %q, want crt_ + 43 characters", tok)
	}
	sum := sha256.Sum256([]byte(tok))
	if !bytes.Equal(hash, sum[:]) {
		t.Fatal("hash is not SHA-256 of the token")
	}
	got, err := token.HashRefreshToken(tok)
	if err != nil || !bytes.Equal(got, hash) {
		t.Fatalf("HashRefreshToken = %x, %v, want %x", got, err, hash)
	}
	seen := map[string]bool{tok: true}
	for range 100 {
		s, _, _ := token.NewRefreshToken(rand.Reader)
		if seen[s] {
			t.Fatal("repeated refresh token")
		}
		seen[s] = true
	}
	fixed, _, _ := token.NewRefreshToken(bytes.NewReader(make([]byte, 32)))
	if fixed != "crt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" {
		t.Errorf("NewRefreshToken(zeros) = %s", fixed)
	}
	for _, r := range []interface{ Read([]byte) (int, error) }{iotest.ErrReader(errors.New("x")), bytes.NewReader(make([]byte, 31))} {
		if _, _, err := token.NewRefreshToken(r); !errors.Is(err, token.ErrRandom) {
			t.Errorf("NewRefreshToken(failing rand) = %v, want ErrRandom", err)
		}
	}
}

func TestHashRefreshTokenMalformed(t *testing.T) {
	good, _, _ := token.NewRefreshToken(rand.Reader)
	body := strings.TrimPrefix(good, "crt_")
	// The last character carries 4 data bits and 2 zero bits: "B" (000001)
	// after "A" decodes to the same bytes as "A" but is not canonical.
	nonCanonical := "crt_" + strings.Repeat("A", 42) + "B"
	tests := []string{
		"", "crt_", "crt", "CRT_" + body, "crt-" + body, "crs_" + body, body,
		good[:len(good)-1], good + "A", good + "=", " " + good, good + "\n",
		"crt_" + strings.Repeat("A", 42) + "+", "crt_" + strings.Repeat("A", 42) + "/",
		"crt_" + strings.Repeat("A", 41) + "==",
		nonCanonical,
		"crt_" + strings.Repeat("A", 21) + "\n" + strings.Repeat("A", 21),
		"crt_" + strings.Repeat("A", 21) + "." + strings.Repeat("A", 21),
		"crt_" + strings.Repeat("é", 21) + "A",
		"crt_" + strings.Repeat("A", 1000),
	}
	for _, s := range tests {
		if _, err := token.HashRefreshToken(s); !errors.Is(err, token.ErrMalformedRefreshToken) {
			t.Errorf("HashRefreshToken(%.50q) = %v, want ErrMalformedRefreshToken", s, err)
		} else if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error quotes the token")
		}
	}
}
