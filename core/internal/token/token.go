// Package token issues and verifies the access tokens of human users —
// EdDSA (Ed25519) JWTs with a key id, short-lived, checked against an
// algorithm allow-list, issuer, audience and validity window — and makes
// the opaque refresh tokens that renew them (DESIGN.md §5).
//
// Verification uses only the keys of a [Keys]: header parameters that point
// elsewhere (jku, x5u, jwk, x5c) are ignored and never fetched, a token
// without a kid or naming an unknown one is refused, and so is a token that
// declares critical extensions (crit), which this package issues none of.
//
// The package checks what a token says; whether it is still honoured is the
// caller's: compare [Claims].SecurityStamp with the user's current stamp
// (bumped by a password or MFA change, or disabling) and SessionID with the
// live refresh-token families.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Purposes: what a token may be used for. An MFA token only proves that
// the password was right and lets the client present a second factor; it
// is never an access token.
const (
	PurposeAccess = "access"
	PurposeMFA    = "mfa"
)

// Roles a tenant member may hold (DESIGN.md §2).
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Leeway is the clock skew tolerated on exp, nbf and iat.
const Leeway = 30 * time.Second

// Bounds: MaxTokenLen bounds what Verify parses; the TTL bounds keep
// tokens short-lived whatever the configuration says.
const (
	MaxTokenLen  = 4096
	MaxAccessTTL = time.Hour
	MaxMFATTL    = 10 * time.Minute
	maxClaimLen  = 256
)

// Errors. Every error of Verify wraps [ErrInvalidToken] and, where one
// applies, a more specific sentinel; none quotes the token or its contents.
var (
	ErrInvalidToken = errors.New("invalid token")
	ErrExpired      = errors.New("token expired")
	ErrNotYetValid  = errors.New("token not yet valid")
	ErrUnknownKey   = errors.New("token signed by an unknown or retired key")
	ErrWrongPurpose = errors.New("token issued for another purpose")

	// ErrInvalidClaims: Issue was given claims it cannot sign.
	ErrInvalidClaims = errors.New("invalid claims")
	// ErrInvalidKey: a signing key or key set is malformed.
	ErrInvalidKey = errors.New("invalid signing key")
	// ErrKeyExpired: the current signing key is past its NotAfter; rotate.
	ErrKeyExpired = errors.New("current signing key is past its NotAfter")
	// ErrInvalidConfig: NewIssuer was given unusable settings.
	ErrInvalidConfig = errors.New("invalid token issuer configuration")
	// ErrMalformedRefreshToken: not a refresh token of this package's format.
	ErrMalformedRefreshToken = errors.New("malformed refresh token")
	// ErrRandom: the random source failed.
	ErrRandom = errors.New("reading random bytes")
)

// Claims are what an access or MFA token asserts.
type Claims struct {
	Issuer        string // iss
	Audience      string // aud (exactly one)
	Subject       string // sub: the user id
	TenantID      string // tid; empty for a platform admin outside any tenant
	Role          string // role in TenantID: RoleOwner, RoleAdmin, RoleMember; empty without a tenant
	PlatformAdmin bool   // padm
	SecurityStamp string // sst: the user's stamp when the token was issued
	SessionID     string // sid: the refresh-token family
	Purpose       string // pur: PurposeAccess or PurposeMFA
	IssuedAt      time.Time
	NotBefore     time.Time
	ExpiresAt     time.Time
	ID            string // jti
}

// wireClaims is the JSON form of Claims.
type wireClaims struct {
	jwt.RegisteredClaims
	TenantID      string `json:"tid,omitempty"`
	Role          string `json:"role,omitempty"`
	PlatformAdmin bool   `json:"padm,omitempty"`
	SecurityStamp string `json:"sst"`
	SessionID     string `json:"sid,omitempty"`
	Purpose       string `json:"pur"`
}

// Issuer signs and verifies tokens for one issuer and audience. It is safe
// for concurrent use; [Issuer.SetKeys] swaps the key set atomically.
type Issuer struct {
	keys      atomic.Pointer[Keys]
	issuer    string
	audience  string
	accessTTL time.Duration
	mfaTTL    time.Duration
	now       func() time.Time
}

// NewIssuer returns an Issuer that signs with keys' current key, stamps
// tokens with issuer and audience, gives access tokens accessTTL and MFA
// tokens mfaTTL, and reads the time from now (time.Now if nil). It fails,
// with an error wrapping [ErrInvalidConfig], if keys is nil, issuer or
// audience is empty, accessTTL is not in (0, [MaxAccessTTL]] or mfaTTL not
// in (0, [MaxMFATTL]].
func NewIssuer(keys *Keys, issuer, audience string, accessTTL, mfaTTL time.Duration, now func() time.Time) (*Issuer, error) {
	switch {
	case keys == nil:
		return nil, fmt.Errorf("%w: no keys", ErrInvalidConfig)
	case issuer == "" || audience == "":
		return nil, fmt.Errorf("%w: issuer and audience are required", ErrInvalidConfig)
	case accessTTL <= 0 || accessTTL > MaxAccessTTL:
		return nil, fmt.Errorf("%w: access token TTL %v not in (0, %v]", ErrInvalidConfig, accessTTL, MaxAccessTTL)
	case mfaTTL <= 0 || mfaTTL > MaxMFATTL:
		return nil, fmt.Errorf("%w: MFA token TTL %v not in (0, %v]", ErrInvalidConfig, mfaTTL, MaxMFATTL)
	}
	if now == nil {
		now = time.Now
	}
	i := &Issuer{issuer: issuer, audience: audience, accessTTL: accessTTL, mfaTTL: mfaTTL, now: now}
	i.keys.Store(keys)
	return i, nil
}

// SetKeys replaces the key set, for rotation: tokens signed by a key absent
// from keys stop verifying at once. A nil keys is ignored.
func (i *Issuer) SetKeys(keys *Keys) {
	if keys != nil {
		i.keys.Store(keys)
	}
}

// Keys returns the key set in use.
func (i *Issuer) Keys() *Keys { return i.keys.Load() }

// JWKS returns the public keys that verify now (see [Keys.JWKS]).
func (i *Issuer) JWKS() JWKS { return i.keys.Load().JWKS(i.now()) }

// Issue signs an access token for c and returns it with its lifetime.
// Issuer, Audience, Purpose, IssuedAt, NotBefore, ExpiresAt and ID are set
// here (a Purpose other than "" or [PurposeAccess] is refused). It fails
// with an error wrapping [ErrInvalidClaims] if Subject, SecurityStamp or
// SessionID is empty, Role is not one of the roles or is given without a
// TenantID (or a TenantID without a Role), or a value exceeds 256 bytes; and
// with [ErrKeyExpired] if the current key is past its NotAfter.
func (i *Issuer) Issue(c Claims) (string, time.Duration, error) {
	switch {
	case c.Purpose != "" && c.Purpose != PurposeAccess:
		return "", 0, fmt.Errorf("%w: Issue makes access tokens only", ErrInvalidClaims)
	case c.Subject == "" || c.SecurityStamp == "" || c.SessionID == "":
		return "", 0, fmt.Errorf("%w: subject, security stamp and session id are required", ErrInvalidClaims)
	case (c.TenantID == "") != (c.Role == ""):
		return "", 0, fmt.Errorf("%w: a tenant id needs a role and a role a tenant id", ErrInvalidClaims)
	case c.Role != "" && c.Role != RoleOwner && c.Role != RoleAdmin && c.Role != RoleMember:
		return "", 0, fmt.Errorf("%w: unknown role", ErrInvalidClaims)
	}
	c.Purpose = PurposeAccess
	return i.sign(c, i.accessTTL)
}

// IssueMFA signs an MFA token: proof that userID gave the right password,
// to be exchanged with a TOTP or recovery code for an access token. It
// fails as [Issuer.Issue] does.
func (i *Issuer) IssueMFA(userID, securityStamp string) (string, time.Duration, error) {
	if userID == "" || securityStamp == "" {
		return "", 0, fmt.Errorf("%w: subject and security stamp are required", ErrInvalidClaims)
	}
	return i.sign(Claims{Subject: userID, SecurityStamp: securityStamp, Purpose: PurposeMFA}, i.mfaTTL)
}

func (i *Issuer) sign(c Claims, ttl time.Duration) (string, time.Duration, error) {
	for _, v := range []string{c.Subject, c.TenantID, c.Role, c.SecurityStamp, c.SessionID} {
		if len(v) > maxClaimLen {
			return "", 0, fmt.Errorf("%w: a claim is longer than %d bytes", ErrInvalidClaims, maxClaimLen)
		}
	}
	keys := i.keys.Load()
	now := i.now()
	if expired(keys.current, now) {
		return "", 0, ErrKeyExpired
	}
	// Whole seconds: JWT dates are seconds, and exp must not round up.
	now = now.Truncate(time.Second)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // never fails (crypto/rand crashes the program instead)
	w := wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{i.audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		TenantID:      c.TenantID,
		Role:          c.Role,
		PlatformAdmin: c.PlatformAdmin,
		SecurityStamp: c.SecurityStamp,
		SessionID:     c.SessionID,
		Purpose:       c.Purpose,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, w)
	t.Header["kid"] = keys.current.ID
	s, err := t.SignedString(keys.current.Private)
	if err != nil {
		return "", 0, fmt.Errorf("sign token: %w", err)
	}
	return s, ttl, nil
}

// Verify checks token and returns its claims if it is valid now for
// purpose ([PurposeAccess] or [PurposeMFA]): at most [MaxTokenLen] bytes
// of base64url segments (no whitespace, no padding), algorithm EdDSA (nothing else is accepted: not none, not HS256, not
// RS256), a kid naming a key of the current key set that is not past its
// NotAfter, a valid signature by that key, no crit header, this issuer and
// audience, exp, nbf and iat present and valid with [Leeway], and subject,
// stamp, jti and purpose present.
//
// Every error wraps [ErrInvalidToken]; an expired token also wraps
// [ErrExpired], a not-yet-valid one [ErrNotYetValid], an unknown or retired
// key id [ErrUnknownKey], a token of another purpose [ErrWrongPurpose] (an
// MFA token presented as an access token, or the reverse). Errors never
// quote the token or any of its fields.
func (i *Issuer) Verify(token, purpose string) (Claims, error) {
	invalid := func(reason error) (Claims, error) {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, reason)
	}
	if purpose != PurposeAccess && purpose != PurposeMFA {
		return invalid(errors.New("unknown purpose requested"))
	}
	if len(token) > MaxTokenLen {
		return invalid(errors.New("too long"))
	}
	// Go's base64 decoder skips \r and \n, so without this check one token
	// would have many spellings (a denylist keyed on the string could be
	// bypassed).
	if !compactJWSCharset(token) {
		return invalid(errors.New("malformed"))
	}
	keys := i.keys.Load()
	var unknownKey bool
	keyfunc := func(t *jwt.Token) (any, error) {
		// WithValidMethods already holds the line; check the type too, so
		// that a change of options cannot open the HS256-with-public-key
		// confusion.
		if t.Method != jwt.SigningMethodEdDSA {
			return nil, errors.New("algorithm")
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit")
		}
		kid, ok := t.Header["kid"].(string)
		if !ok || kid == "" {
			unknownKey = true
			return nil, errors.New("kid")
		}
		pub, ok := keys.verifier(kid, i.now())
		if !ok {
			unknownKey = true
			return nil, errors.New("kid")
		}
		return pub, nil
	}
	var w wireClaims
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(i.issuer),
		jwt.WithAudience(i.audience),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(i.now),
		jwt.WithExpirationRequired(),
		jwt.WithNotBeforeRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	)
	if _, err := p.ParseWithClaims(token, &w, keyfunc); err != nil {
		return invalid(reason(err, unknownKey))
	}
	// The parser checks iat only when present; our tokens always carry it.
	switch {
	case w.IssuedAt == nil:
		return invalid(errors.New("missing iat"))
	case len(w.Audience) != 1:
		return invalid(errors.New("want exactly one audience"))
	case w.Subject == "" || w.SecurityStamp == "" || w.ID == "":
		return invalid(errors.New("missing sub, sst or jti"))
	case w.Purpose != PurposeAccess && w.Purpose != PurposeMFA:
		return invalid(errors.New("unknown purpose"))
	case w.Purpose != purpose:
		return invalid(ErrWrongPurpose)
	}
	return Claims{
		Issuer:        w.Issuer,
		Audience:      w.Audience[0],
		Subject:       w.Subject,
		TenantID:      w.TenantID,
		Role:          w.Role,
		PlatformAdmin: w.PlatformAdmin,
		SecurityStamp: w.SecurityStamp,
		SessionID:     w.SessionID,
		Purpose:       w.Purpose,
		IssuedAt:      w.IssuedAt.Time,
		NotBefore:     w.NotBefore.Time,
		ExpiresAt:     w.ExpiresAt.Time,
		ID:            w.ID,
	}, nil
}

// compactJWSCharset reports whether s holds only base64url characters and dots.
func compactJWSCharset(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// reason turns a parser error into a safe one: jwt's messages may include
// fragments of the decoded input, so only its sentinels are kept.
func reason(err error, unknownKey bool) error {
	switch {
	case unknownKey:
		return ErrUnknownKey
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errors.New("malformed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return errors.New("bad signature, algorithm or header")
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errors.New("wrong audience")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errors.New("wrong issuer")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("missing required claim")
	default:
		return errors.New("rejected")
	}
}
