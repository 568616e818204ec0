// Package apikey makes and checks machine credentials (DESIGN.md §5): a key
// id, sent as X-Api-Key and stored in clear to find the record, and a
// secret, sent as X-Api-Secret and stored only as its SHA-256.
//
// Both are prefixed (cak_, cas_) so that a leaked one is recognisable by a
// secret scanner ([SecretPattern]), and the secret ends in a checksum so
// that a truncated or mistyped secret is refused before any database
// lookup.
package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Prefixes and shapes.
const (
	KeyIDPrefix  = "cak_"
	SecretPrefix = "cas_"
	// SecretPattern is a regular expression matching a secret, for secret
	// scanners (GitHub push protection, gitleaks, trufflehog).
	SecretPattern = `cas_[A-Za-z0-9_-]{43}_[a-z2-7]{6}` //nolint:gosec // a format pattern, not a credential
	// KeyIDPattern matches a key id.
	KeyIDPattern = `cak_[a-z2-7]{16}`
)

const (
	keyIDBytes    = 10 // 80 bits → 16 base32 characters
	keyIDLen      = len(KeyIDPrefix) + 16
	secretBytes   = 32
	bodyLen       = 43 // unpadded base64url of 32 bytes
	checksumLen   = 6  // 30 bits of SHA-256, base32
	secretLen     = len(SecretPrefix) + bodyLen + 1 + checksumLen
	maxScopeInErr = 64
)

// Errors. None quotes a secret.
var (
	// ErrMalformedSecret: not a secret of this package's shape (prefix,
	// length, characters). ErrChecksum wraps it.
	ErrMalformedSecret = errors.New("malformed API secret")
	// ErrChecksum: the right shape, but the checksum does not match: a typo
	// or a truncated copy.
	ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrMalformedSecret)
	// ErrMalformedKeyID: not a key id of this package's shape.
	ErrMalformedKeyID = errors.New("malformed API key id")
	// ErrUnknownScope: a scope not among the three (the error names it).
	ErrUnknownScope = errors.New("unknown scope")
	// ErrNoScopes: a credential needs at least one scope.
	ErrNoScopes = errors.New("at least one scope is required")
	// ErrRandom: the random source failed.
	ErrRandom = errors.New("reading random bytes")
)

var (
	lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	body64      = base64.RawURLEncoding.Strict()
)

// Credential is a new machine credential. Show KeyID and Secret once;
// store KeyID and Hash.
type Credential struct {
	KeyID  string
	Secret string
	Hash   []byte // SHA-256 of Secret
}

// String prints the key id only.
func (c Credential) String() string {
	return "apikey.Credential{KeyID: " + c.KeyID + ", Secret: [redacted]}"
}

// Format prints what String does, whatever the verb, so no verb can print
// the secret.
func (c Credential) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// New makes a credential: KeyID "cak_" + 16 base32 characters (80 random
// bits), Secret "cas_" + base64url of 32 random bytes + "_" + a 6-character
// checksum, and Hash. It fails, with an error wrapping [ErrRandom], only if
// rand does.
func New(rand io.Reader) (Credential, error) {
	b := make([]byte, keyIDBytes+secretBytes)
	if _, err := io.ReadFull(rand, b); err != nil {
		return Credential{}, fmt.Errorf("%w: API credential: %w", ErrRandom, err)
	}
	head := SecretPrefix + body64.EncodeToString(b[keyIDBytes:])
	secret := head + "_" + checksum(head)
	clear(b[keyIDBytes:])
	return Credential{
		KeyID:  KeyIDPrefix + lowerBase32.EncodeToString(b[:keyIDBytes]),
		Secret: secret,
		Hash:   Hash(secret),
	}, nil
}

// checksum is the first 30 bits of SHA-256(head), as 6 base32 characters.
func checksum(head string) string {
	sum := sha256.Sum256([]byte(head))
	return lowerBase32.EncodeToString(sum[:4])[:checksumLen]
}

// Hash returns the stored form of secret, its SHA-256. (A 256-bit random
// secret needs no slow hash.) It does not check the format.
func Hash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// Verify reports whether secret hashes to hash, comparing in constant time.
func Verify(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(Hash(secret), hash) == 1
}

// CheckFormat reports whether secret is shaped like one of this package's
// secrets: the prefix, 43 base64url characters that decode canonically to
// 32 bytes, "_", and the matching checksum. It returns nil, [ErrChecksum],
// or another error wrapping [ErrMalformedSecret]; none quotes the input.
func CheckFormat(secret string) error {
	if len(secret) != secretLen || !strings.HasPrefix(secret, SecretPrefix) || secret[secretLen-checksumLen-1] != '_' {
		return fmt.Errorf("%w: want %s followed by %d characters", ErrMalformedSecret, SecretPrefix, secretLen-len(SecretPrefix))
	}
	head, sum := secret[:secretLen-checksumLen-1], secret[secretLen-checksumLen:]
	body := head[len(SecretPrefix):]
	// The decoder skips \r and \n; refuse them (and anything else) first.
	if !isBase64URL(body) {
		return fmt.Errorf("%w: invalid characters", ErrMalformedSecret)
	}
	if b, err := body64.DecodeString(body); err != nil || len(b) != secretBytes {
		return fmt.Errorf("%w: invalid body", ErrMalformedSecret)
	}
	if subtle.ConstantTimeCompare([]byte(sum), []byte(checksum(head))) != 1 {
		return ErrChecksum
	}
	return nil
}

// CheckKeyID reports whether id is shaped like a key id ("cak_" and 16
// lower-case base32 characters); if not it returns [ErrMalformedKeyID],
// which does not quote id.
func CheckKeyID(id string) error {
	if len(id) != keyIDLen || !strings.HasPrefix(id, KeyIDPrefix) {
		return ErrMalformedKeyID
	}
	for i := len(KeyIDPrefix); i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return ErrMalformedKeyID
		}
	}
	return nil
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Scopes a machine credential may hold (DESIGN.md §5).
const (
	ScopeExport      = "export"       // read encrypted blobs for backup/export
	ScopeKeysRotate  = "keys:rotate"  // rotate tenant keys, start re-encryption
	ScopeUsersManage = "users:manage" // manage users
)

// AllScopes returns every scope, sorted.
func AllScopes() []string { return []string{ScopeExport, ScopeKeysRotate, ScopeUsersManage} }

// ParseScopes checks requested scopes and returns them deduplicated and
// sorted. It fails with [ErrNoScopes] if none is given, and with an error
// wrapping [ErrUnknownScope] that names the first unknown one (quoted,
// truncated to 64 bytes) otherwise. Matching is exact: "Export" is unknown.
func ParseScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, ErrNoScopes
	}
	all := AllScopes()
	out := make([]string, 0, len(all))
	for _, s := range scopes {
		if !slices.Contains(all, s) {
			if len(s) > maxScopeInErr {
				s = s[:maxScopeInErr]
			}
			return nil, fmt.Errorf("%w %s: want %s", ErrUnknownScope, strconv.QuoteToASCII(s), strings.Join(all, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}
