package apikey_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/custos-platform/custos/core/internal/apikey"
)

func mustNew(tb testing.TB) apikey.Credential {
	tb.Helper()
	c, err := apikey.New(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestNew(t *testing.T) {
	secretRE := regexp.MustCompile("^" + apikey.SecretPattern + "$")
	keyRE := regexp.MustCompile("^" + apikey.KeyIDPattern + "$")
	seen := map[string]bool{}
	for range 200 {
		c := mustNew(t)
		if !keyRE.MatchString(c.KeyID) || !secretRE.MatchString(c.Secret) {
			t.Fatalf("New = %q / secret of %d chars: does not match the published patterns", c.KeyID, len(c.Secret))
		}
		if err := apikey.CheckFormat(c.Secret); err != nil {
			t.Fatalf("CheckFormat(new secret) = %v", err)
		}
		if err := apikey.CheckKeyID(c.KeyID); err != nil {
			t.Fatalf("CheckKeyID(new id) = %v", err)
		}
		sum := sha256.Sum256([]byte(c.Secret))
		if !bytes.Equal(c.Hash, sum[:]) || !bytes.Equal(apikey.Hash(c.Secret), c.Hash) {
			t.Fatal("Hash is not SHA-256 of the secret")
		}
		if !apikey.Verify(c.Secret, c.Hash) {
			t.Fatal("Verify(own secret) = false")
		}
		if seen[c.KeyID] || seen[c.Secret] {
			t.Fatal("repeated key id or secret")
		}
		seen[c.KeyID], seen[c.Secret] = true, true
	}
	// Deterministic given the random bytes.
	fixed, err := apikey.New(bytes.NewReader(make([]byte, 42)))
	if err != nil {
		t.Fatal(err)
	}
	if fixed.KeyID != "cak_aaaaaaaaaaaaaaaa" || !strings.HasPrefix(fixed.Secret, "cas_"+strings.Repeat("A", 43)+"_") {
		t.Errorf("New(zeros) = %s, %s", fixed.KeyID, fixed.Secret)
	}
	if _, err := apikey.New(iotest.ErrReader(errors.New("x"))); !errors.Is(err, apikey.ErrRandom) {
		t.Errorf("New(failing rand) = %v, want ErrRandom", err)
	}
}

func TestVerify(t *testing.T) {
	c, other := mustNew(t), mustNew(t)
	for _, tc := range []struct {
		name   string
		secret string
		hash   []byte
		want   bool
	}{
		{"own", c.Secret, c.Hash, true},
		{"other secret", other.Secret, c.Hash, false},
		{"other hash", c.Secret, other.Hash, false},
		{"nil hash", c.Secret, nil, false},
		{"short hash", c.Secret, c.Hash[:16], false},
		{"empty secret", "", c.Hash, false},
		{"secret with newline", c.Secret + "\n", c.Hash, false},
		{"upper-cased", strings.ToUpper(c.Secret), c.Hash, false},
	} {
		if got := apikey.Verify(tc.secret, tc.hash); got != tc.want {
			t.Errorf("Verify(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCheckFormat(t *testing.T) {
	c := mustNew(t)
	s := c.Secret
	head, sum := s[:len(s)-7], s[len(s)-6:]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name   string
		secret string
		want   error
	}{
		{"empty", "", apikey.ErrMalformedSecret},
		{"prefix only", "cas_", apikey.ErrMalformedSecret},
		{"key id instead", c.KeyID, apikey.ErrMalformedSecret},
		{"truncated", s[:len(s)-1], apikey.ErrMalformedSecret},
		{"extra", s + "a", apikey.ErrMalformedSecret},
		{"wrong prefix", "cak_" + s[4:], apikey.ErrMalformedSecret},
		{"upper prefix", "CAS_" + s[4:], apikey.ErrMalformedSecret},
		{"separator replaced", head + "-" + sum, apikey.ErrMalformedSecret},
		{"newline in body", s[:10] + "\n" + s[11:], apikey.ErrMalformedSecret},
		{"plus in body", s[:10] + "+" + s[11:], apikey.ErrMalformedSecret},
		{"padding in body", s[:46] + "=" + s[47:], apikey.ErrMalformedSecret},
		{"space", s[:10] + " " + s[11:], apikey.ErrMalformedSecret},
		{"non-ASCII", s[:10] + "é" + s[12:], apikey.ErrMalformedSecret},
		{"typo in body", flip(s, 20), apikey.ErrChecksum},
		{"typo in checksum", flip(s, len(s)-1), apikey.ErrChecksum},
		{"checksum upper case", head + "_" + strings.ToUpper(sum), apikey.ErrChecksum},
		{"checksum of another", head + "_" + mustNew(t).Secret[len(s)-6:], apikey.ErrChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := apikey.CheckFormat(tc.secret)
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckFormat(%s) = %v, want %v", tc.name, err, tc.want)
			}
			if err != nil && len(tc.secret) > 8 && strings.Contains(err.Error(), tc.secret[4:12]) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
	// Every single-character change is caught, by shape or by checksum,
	// except the few that the 30-bit checksum lets through by chance
	// (about 2^-30 each: none expected).
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := len("cas_"); i < len(head); i++ {
		for _, r := range []byte(alphabet) {
			if r == s[i] {
				continue
			}
			b := []byte(s)
			b[i] = r
			if apikey.CheckFormat(string(b)) == nil {
				t.Fatalf("CheckFormat accepted the secret with character %d changed to %q", i, r)
			}
		}
	}
}

func TestCheckKeyID(t *testing.T) {
	c := mustNew(t)
	for _, id := range []string{"", "cak_", c.KeyID[:len(c.KeyID)-1], c.KeyID + "a", strings.ToUpper(c.KeyID),
		"cas_" + c.KeyID[4:], "cak_aaaaaaaaaaaaaaa1", "cak_aaaaaaaaaaaaaaa8", "cak_aaaaaaaaaaaaaaa=", c.Secret} {
		if err := apikey.CheckKeyID(id); !errors.Is(err, apikey.ErrMalformedKeyID) {
			t.Errorf("CheckKeyID(%q) = %v, want ErrMalformedKeyID", id, err)
		}
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		err  error
	}{
		{"one", []string{"export"}, []string{"export"}, nil},
		{"all, unsorted", []string{"users:manage", "export", "keys:rotate"}, []string{"export", "keys:rotate", "users:manage"}, nil},
		{"duplicates", []string{"export", "export", "keys:rotate", "export"}, []string{"export", "keys:rotate"}, nil},
		{"nil", nil, nil, apikey.ErrNoScopes},
		{"empty", []string{}, nil, apikey.ErrNoScopes},
		{"unknown", []string{"export", "admin"}, nil, apikey.ErrUnknownScope},
		{"case", []string{"Export"}, nil, apikey.ErrUnknownScope},
		{"space", []string{"export "}, nil, apikey.ErrUnknownScope},
		{"empty string", []string{""}, nil, apikey.ErrUnknownScope},
		{"wildcard", []string{"*"}, nil, apikey.ErrUnknownScope},
		{"prefix", []string{"keys"}, nil, apikey.ErrUnknownScope},
		{"vault access", []string{"vault:read"}, nil, apikey.ErrUnknownScope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := apikey.ParseScopes(tc.in)
			if !errors.Is(err, tc.err) || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseScopes(%q) = %q, %v, want %q, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	_, err := apikey.ParseScopes([]string{"export", "admin"})
	if err == nil || !strings.Contains(err.Error(), `"admin"`) {
		t.Errorf("ParseScopes error %v does not name the unknown scope", err)
	}
	_, err = apikey.ParseScopes([]string{strings.Repeat("x", 10000) + "\n\x1b[31m"})
	if err == nil || len(err.Error()) > 200 || strings.ContainsAny(err.Error(), "\n\x1b") {
		t.Errorf("ParseScopes(huge, control characters) error not bounded and escaped: %d bytes", len(err.Error()))
	}
	// ParseScopes must not reorder the caller's slice.
	in := []string{"users:manage", "export"}
	_, _ = apikey.ParseScopes(in)
	if in[0] != "users:manage" {
		t.Error("ParseScopes modified its argument")
	}
	if !slices.IsSorted(apikey.AllScopes()) {
		t.Error("AllScopes not sorted")
	}
}

func TestCredentialFormatting(t *testing.T) {
	c := mustNew(t)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(verb, c)
		if strings.Contains(out, c.Secret[4:20]) || strings.Contains(out, fmt.Sprintf("%x", c.Hash[:8])) {
			t.Errorf("Sprintf(%s, credential) = %q leaks", verb, out)
		}
	}
}
