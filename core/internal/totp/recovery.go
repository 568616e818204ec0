package totp

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strings"
)

// RecoveryCodeCount is how many recovery codes a user gets.
const RecoveryCodeCount = 10

// recoveryAlphabet is Crockford's base32, lower case: no i, l, o or u, so
// nothing reads as another character; on input i and l mean 1 and o means 0.
const recoveryAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// recoveryChars is the number of symbols in a code: 12 × 5 = 60 bits.
const recoveryChars = 12

// maxRecoveryCodes bounds n in NewRecoveryCodes.
const maxRecoveryCodes = 100

var (
	// ErrInvalidRecoveryCode: not a recovery code of this package's format.
	ErrInvalidRecoveryCode = errors.New("malformed recovery code")
	// ErrInvalidCount: NewRecoveryCodes was asked for n outside 1–100.
	ErrInvalidCount = errors.New("invalid number of recovery codes")
)

// NewRecoveryCodes returns n recovery codes, each 12 random symbols of
// Crockford's base32 (60 bits) written xxxx-xxxx-xxxx, and their hashes
// (see [HashRecoveryCode]), in the same order. Show the codes once; store
// only the hashes, and delete (or mark) a hash when its code is used. It
// fails with [ErrInvalidCount] if n is not in 1–100 and with an error
// wrapping [ErrRandom] if rand fails.
//
// An unsalted SHA-256 is enough for 60-bit random codes: a stolen table
// cannot be reversed by guessing (and a recovery code replaces only the
// second factor, never the password).
func NewRecoveryCodes(n int, rand io.Reader) (codes []string, hashes [][]byte, err error) {
	if n < 1 || n > maxRecoveryCodes {
		return nil, nil, fmt.Errorf("%w: %d not in [1, %d]", ErrInvalidCount, n, maxRecoveryCodes)
	}
	buf := make([]byte, n*recoveryChars)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, nil, fmt.Errorf("%w: recovery codes: %w", ErrRandom, err)
	}
	seen := make(map[string]bool, n)
	for i := range n {
		var b strings.Builder
		for j, c := range buf[i*recoveryChars : (i+1)*recoveryChars] {
			if j > 0 && j%4 == 0 {
				b.WriteByte('-')
			}
			// 256 is a multiple of 32: the low five bits are uniform.
			b.WriteByte(recoveryAlphabet[c&31])
		}
		code := b.String()
		if seen[code] {
			// 2^-60 per pair; a repeat means the random source is broken.
			return nil, nil, fmt.Errorf("%w: recovery codes repeat", ErrRandom)
		}
		seen[code] = true
		codes = append(codes, code)
		hashes = append(hashes, hashNormalized(code))
	}
	return codes, hashes, nil
}

// NormalizeRecoveryCode returns s in canonical form (xxxx-xxxx-xxxx, lower
// case) and true if s is a recovery code: 12 symbols of Crockford's base32
// in any case, with dashes and spaces anywhere or nowhere, i and l read as
// 1, o as 0. Otherwise it returns "", false.
func NormalizeRecoveryCode(s string) (string, bool) {
	if len(s) > 64 {
		return "", false
	}
	var sym [recoveryChars]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch c {
		case '-', ' ':
			continue
		case 'i', 'l':
			c = '1'
		case 'o':
			c = '0'
		}
		if strings.IndexByte(recoveryAlphabet, c) < 0 || n == recoveryChars {
			return "", false
		}
		sym[n] = c
		n++
	}
	if n != recoveryChars {
		return "", false
	}
	return string(sym[0:4]) + "-" + string(sym[4:8]) + "-" + string(sym[8:12]), true
}

// LooksLikeRecoveryCode reports whether s is a recovery code rather than,
// say, a six-digit TOTP code (see [NormalizeRecoveryCode]).
func LooksLikeRecoveryCode(s string) bool {
	_, ok := NormalizeRecoveryCode(s)
	return ok
}

// HashRecoveryCode returns the stored form of the recovery code s:
// SHA-256 of "custos/recovery-code/v1", a NUL byte and its canonical form. It fails with [ErrInvalidRecoveryCode]
// if s is not a recovery code; the error does not quote s.
func HashRecoveryCode(s string) ([]byte, error) {
	norm, ok := NormalizeRecoveryCode(s)
	if !ok {
		return nil, ErrInvalidRecoveryCode
	}
	return hashNormalized(norm), nil
}

func hashNormalized(code string) []byte {
	sum := sha256.Sum256([]byte("custos/recovery-code/v1\x00" + code))
	return sum[:]
}

// MatchRecoveryCode reports which of hashes (as NewRecoveryCodes returned
// them) the recovery code s matches, comparing with every hash in constant
// time. It returns -1, false if s is malformed or matches none.
func MatchRecoveryCode(s string, hashes [][]byte) (int, bool) {
	h, err := HashRecoveryCode(s)
	if err != nil {
		return -1, false
	}
	found := -1
	for i, stored := range hashes {
		if subtle.ConstantTimeCompare(h, stored) == 1 && found < 0 {
			found = i
		}
	}
	return found, found >= 0
}
