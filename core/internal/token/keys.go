package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// SigningKeyLifetime is the NotAfter that [GenerateSigningKey] gives a new
// key, counted from its creation. Rotate well before it (for instance every
// 30 days, keeping the previous key for verification): a key past NotAfter
// neither signs nor verifies.
const SigningKeyLifetime = 90 * 24 * time.Hour

// maxKeyIDLen bounds a key id; generated ids are 16 characters.
const maxKeyIDLen = 64

// SigningKey is an Ed25519 key that signs access tokens while it is the
// current key of a [Keys], and verifies them while it is current or
// previous, in both cases only until NotAfter (the zero time means no
// limit).
type SigningKey struct {
	ID       string // the JWS "kid"; see KeyID
	Private  ed25519.PrivateKey
	NotAfter time.Time
}

// Public returns the key's public half.
func (k SigningKey) Public() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

// String describes the key by id and NotAfter only.
func (k SigningKey) String() string {
	return fmt.Sprintf("token.SigningKey{ID: %s, NotAfter: %s, Private: [redacted]}", k.ID, k.NotAfter.Format(time.RFC3339))
}

// Format prints what String does, whatever the verb, so no verb (%x, %#v …)
// can print the private key.
func (k SigningKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue logs the key's id and NotAfter only.
func (k SigningKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.Time("notAfter", k.NotAfter))
}

// KeyID returns the key id of an Ed25519 public key: the unpadded base64url
// of the first 12 bytes of its SHA-256 (16 characters).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// GenerateSigningKey returns a new key from 32 bytes of rand, with ID =
// KeyID(public key) and NotAfter = now + [SigningKeyLifetime]. It fails,
// with an error wrapping [ErrRandom], only if rand does.
func GenerateSigningKey(rand io.Reader, now time.Time) (SigningKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return SigningKey{}, fmt.Errorf("%w: signing key seed: %w", ErrRandom, err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	return SigningKey{
		ID:       KeyID(priv.Public().(ed25519.PublicKey)),
		Private:  priv,
		NotAfter: now.Add(SigningKeyLifetime),
	}, nil
}

// Keys is an immutable set of signing keys: the current one, which signs,
// and previous ones, which only verify tokens they signed until those
// expire. It is safe for concurrent use. Build a new Keys to rotate, and
// hand it to [Issuer.SetKeys].
type Keys struct {
	current *SigningKey
	byID    map[string]*SigningKey
	order   []string // current first, then previous in the order given
}

// NewKeys returns a key set with current signing and previous verifying.
// It fails, with an error wrapping [ErrInvalidKey] and naming the key by id
// (or position, if the id itself is bad), if an id is empty, longer than 64
// bytes or not printable ASCII, a private key is not a well-formed Ed25519
// key (64 bytes whose second half is the public key of the first), or an id
// appears twice. The private keys are copied.
func NewKeys(current SigningKey, previous ...SigningKey) (*Keys, error) {
	all := append([]SigningKey{current}, previous...)
	ks := &Keys{byID: make(map[string]*SigningKey, len(all))}
	for i, k := range all {
		if err := checkSigningKey(k, i); err != nil {
			return nil, err
		}
		if _, dup := ks.byID[k.ID]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrInvalidKey, k.ID)
		}
		c := SigningKey{ID: k.ID, Private: bytes.Clone(k.Private), NotAfter: k.NotAfter}
		ks.byID[k.ID] = &c
		ks.order = append(ks.order, k.ID)
	}
	ks.current = ks.byID[current.ID]
	return ks, nil
}

func checkSigningKey(k SigningKey, i int) error {
	if k.ID == "" || len(k.ID) > maxKeyIDLen || !printableASCII(k.ID) {
		return fmt.Errorf("%w: key #%d: id must be 1–%d printable ASCII characters", ErrInvalidKey, i+1, maxKeyIDLen)
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: key %q: private key is %d bytes, want %d", ErrInvalidKey, k.ID, len(k.Private), ed25519.PrivateKeySize)
	}
	// A corrupt record (seed and public half out of step) would sign tokens
	// that never verify; catch it at load.
	if !bytes.Equal(ed25519.NewKeyFromSeed(k.Private.Seed()), k.Private) {
		return fmt.Errorf("%w: key %q: public half does not match the seed", ErrInvalidKey, k.ID)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CurrentID returns the id of the signing key.
func (k *Keys) CurrentID() string { return k.current.ID }

// CurrentNotAfter returns the NotAfter of the signing key, so that the
// caller can rotate before it.
func (k *Keys) CurrentNotAfter() time.Time { return k.current.NotAfter }

// IDs returns the ids of all keys, the current one first.
func (k *Keys) IDs() []string { return slices.Clone(k.order) }

// verifier returns the public key with id if it may verify at time at.
func (k *Keys) verifier(id string, at time.Time) (ed25519.PublicKey, bool) {
	sk := k.byID[id]
	if sk == nil || expired(sk, at) {
		return nil, false
	}
	return sk.Public(), true
}

func expired(k *SigningKey, at time.Time) bool {
	return !k.NotAfter.IsZero() && at.After(k.NotAfter)
}

// JWK is one public key as RFC 8037 spells an Ed25519 key in a JSON Web
// Key Set.
type JWK struct {
	Kty string `json:"kty"` // "OKP"
	Crv string `json:"crv"` // "Ed25519"
	X   string `json:"x"`   // unpadded base64url of the 32-byte public key
	Kid string `json:"kid"`
	Use string `json:"use"` // "sig"
	Alg string `json:"alg"` // "EdDSA"
}

// JWKS is a JSON Web Key Set, served at /.well-known/jwks.json.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWKS returns the public keys that verify at time at (current first, then
// previous ones; keys past NotAfter are left out). It holds no private
// material.
func (k *Keys) JWKS(at time.Time) JWKS {
	set := JWKS{Keys: []JWK{}}
	for _, id := range k.order {
		sk := k.byID[id]
		if expired(sk, at) {
			continue
		}
		set.Keys = append(set.Keys, JWK{
			Kty: "OKP", Crv: "Ed25519", Kid: id, Use: "sig", Alg: "EdDSA",
			X: base64.RawURLEncoding.EncodeToString(sk.Public()),
		})
	}
	return set
}

// Format prints the key ids only, whatever the verb, for a Keys or a
// *Keys alike.
func (k Keys) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "token.Keys{Current: %s, IDs: %v}", k.current.ID, k.order)
}
