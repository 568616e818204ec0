package token

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// RefreshTokenPrefix starts every refresh token, so that a leaked one is
// recognisable (and a secret scanner can look for crt_ followed by 43
// base64url characters).
const RefreshTokenPrefix = "crt_"

const (
	refreshTokenBytes = 32
	refreshTokenLen   = len(RefreshTokenPrefix) + 43 // base64url, unpadded, of 32 bytes
)

var refreshEncoding = base64.RawURLEncoding.Strict()

// NewRefreshToken returns a new opaque refresh token, "crt_" followed by the
// unpadded base64url of 32 bytes read from rand, and its SHA-256, which is
// all the server stores. It fails, with an error wrapping [ErrRandom], only
// if rand does.
func NewRefreshToken(rand io.Reader) (token string, hash []byte, err error) {
	b := make([]byte, refreshTokenBytes)
	if _, err := io.ReadFull(rand, b); err != nil {
		return "", nil, fmt.Errorf("%w: refresh token: %w", ErrRandom, err)
	}
	token = RefreshTokenPrefix + refreshEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	return token, sum[:], nil
}

// HashRefreshToken returns the SHA-256 under which token is stored, after
// checking its format (prefix, length, canonical base64url), so that garbage
// never reaches a database lookup. It fails with [ErrMalformedRefreshToken],
// which never quotes the token. (A 256-bit random token needs no slow hash:
// no guessing attack on its SHA-256 is feasible.)
func HashRefreshToken(token string) ([]byte, error) {
	body, ok := strings.CutPrefix(token, RefreshTokenPrefix)
	if !ok || len(token) != refreshTokenLen || !compactJWSCharset(body) || strings.Contains(body, ".") {
		return nil, ErrMalformedRefreshToken
	}
	if b, err := refreshEncoding.DecodeString(body); err != nil || len(b) != refreshTokenBytes {
		return nil, ErrMalformedRefreshToken
	}
	sum := sha256.Sum256([]byte(token))
	return sum[:], nil
}
