// Package aead encrypts and decrypts data under one key version of a key context. It is pure: no
// database, no network, no state beyond the key a Cipher was built from.
//
// # Algorithms
//
// Three algorithms are offered, named by the strings the API uses:
//
//   - AES-256-GCM (the default): a 32-byte key, a random 96-bit nonce per message, a 128-bit tag.
//   - XCHACHA20-POLY1305: a 32-byte key, a random 192-bit nonce per message, a 128-bit tag
//     (draft-irtf-cfrg-xchacha).
//   - RSA-OAEP-3072-SHA256: hybrid public-key encryption under an RSA-3072 key (e = 65537).
//     Every message, whatever its size, gets its own random AES-256-GCM data key; only that data
//     key is RSA-encrypted. Anyone holding the public key can encrypt; only the service decrypts.
//
// For every algorithm the ciphertext is the AEAD output (encrypted data followed by the 16-byte
// tag). The nonce is NOT part of the ciphertext: it travels in Metadata, next to the ciphertext,
// as the API's "metadata" object (see Metadata and Metadata.Check). So does the
// RSA-encrypted data key.
//
// # Associated data
//
// Every ciphertext is bound to the tenant, key context, key version and algorithm it belongs to by
// the associated data returned by AssociatedData, so a ciphertext moved to another context or
// version fails to decrypt. Its exact bytes are
//
//	"custos/es/data/v1" || len16(tenantID) || tenantID || len16(encryptionID) || encryptionID ||
//	len16(versionID) || versionID || len16(algorithm) || algorithm
//
// where each field is the UTF-8 string as given (the service passes UUIDs in their canonical
// lower-case 36-character form), len16(x) is the length of x in bytes as a 2-byte big-endian
// integer, and the 17-byte label has no length prefix. A field of 65,535 bytes or more (never
// produced by the service) is instead prefixed by the two bytes FF FF and its length as an 8-byte
// big-endian integer, which keeps the encoding unambiguous for every input.
//
// # Producing an RSA-OAEP-3072-SHA256 ciphertext with only the public key
//
// A producer that holds only a version's public key (PEM "PUBLIC KEY", i.e. an X.509
// SubjectPublicKeyInfo) can encrypt without calling the service. EncryptWithPublicKey does exactly
// this; another language must reproduce these steps:
//
//  1. ad = AssociatedData(tenantID, encryptionID, versionID, "RSA-OAEP-3072-SHA256"), as above.
//  2. dataKey = 32 fresh random bytes; nonce = 12 fresh random bytes. Never reuse either.
//  3. cipherText = AES-256-GCM encryption of the plaintext under dataKey with nonce and ad as
//     associated data: the encrypted bytes followed by the 16-byte tag.
//  4. encryptedKey = RSAES-OAEP encryption (RFC 8017) of dataKey under the public key, with
//     SHA-256 as the hash, MGF1 with SHA-256 as the mask generation function, and ad as the OAEP
//     label. It is exactly 384 bytes. Beware: Java's "OAEPWithSHA-256AndMGF1Padding" defaults to
//     MGF1 with SHA-1 and an empty label; pass an OAEPParameterSpec with MGF1ParameterSpec.SHA256
//     and PSource.PSpecified(ad). WebCrypto's RSA-OAEP with hash SHA-256 and label ad is correct
//     as it is.
//  5. metadata = {"formatVersion": 1, "nonce": base64(nonce), "encryptedKey": base64(encryptedKey)},
//     base64 being the standard, padded alphabet (RFC 4648 §4).
//
// The service decrypts with the private key: it undoes the OAEP encryption and then opens the GCM
// ciphertext. Whichever of the two fails, Decrypt returns the same ErrDecrypt after doing the same
// work (an OAEP failure continues with a random data key), so failures cannot be told apart.
//
// # Errors
//
// Each function documents its errors. Refusals of input wrap one of the sentinels
// ErrUnknownAlgorithm, ErrInvalidKey, ErrNoPublicKey, ErrMetadata and ErrDecrypt (test them with
// errors.Is); the only other failures are a broken random source and a plaintext over an
// algorithm's limit (64 GiB or more). No error contains plaintext or key bytes, and none panics on
// any input.
package aead

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
)

// The algorithm names, exactly as the API spells them.
const (
	AES256GCM         = "AES-256-GCM" // the default
	XChaCha20Poly1305 = "XCHACHA20-POLY1305"
	RSAOAEP3072SHA256 = "RSA-OAEP-3072-SHA256" // hybrid: RSA-OAEP wraps a per-message AES-256-GCM key
)

var (
	// ErrUnknownAlgorithm is returned when an algorithm name is not one of Algorithms().
	ErrUnknownAlgorithm = errors.New("aead: unknown algorithm")
	// ErrInvalidKey is returned when key material does not fit its algorithm: a symmetric key that
	// is not 32 bytes, or an RSA key that is not PKCS#8 (private) / PKIX PEM (public), not 3072
	// bits, or whose public exponent is not 65537.
	ErrInvalidKey = errors.New("aead: invalid key")
	// ErrNoPublicKey is returned by PublicKeyPEM for a symmetric algorithm.
	ErrNoPublicKey = errors.New("aead: algorithm has no public key")
	// ErrMetadata is returned for metadata that is malformed: missing or unknown fields, wrong
	// types, wrong lengths, non-canonical base64. It is wrapped with the name of the field.
	ErrMetadata = errors.New("aead: malformed metadata")
	// ErrDecrypt is returned for any failure to open a ciphertext whose metadata is well formed:
	// wrong key, wrong associated data, altered or truncated ciphertext, altered nonce or
	// encrypted key. It never says which.
	ErrDecrypt = errors.New("ciphertext does not authenticate")
)

const (
	formatVersion = 1 // the only metadata format this package writes and reads

	keySize      = 32 // AES-256 and XChaCha20 keys; the RSA hybrid's data key
	tagSize      = 16 // both AEADs
	gcmNonceSize = 12 // AES-256-GCM
	xNonceSize   = 24 // XChaCha20-Poly1305
	rsaBits      = 3072
	rsaSize      = rsaBits / 8 // RSA-3072 ciphertext: the encrypted data key
	rsaExponent  = 65537
)

// Algorithms returns the algorithm names New accepts, default first. The slice is the caller's.
func Algorithms() []string {
	return []string{AES256GCM, XChaCha20Poly1305, RSAOAEP3072SHA256}
}

// Cipher encrypts and decrypts under one key version. Implementations are safe for concurrent use:
// build one per key version, cache it, reuse it.
type Cipher interface {
	// Algorithm returns the algorithm name, one of Algorithms().
	Algorithm() string
	// Encrypt encrypts plaintext bound to ad with a fresh random nonce (and, for the RSA hybrid, a
	// fresh data key). It fails only if the plaintext is longer than the algorithm allows (at least
	// 64 GiB) or the system's random source fails.
	Encrypt(plaintext, ad []byte) (ciphertext []byte, meta Metadata, err error)
	// Decrypt returns the plaintext of ciphertext if it authenticates under this key with meta and
	// ad. Metadata that is malformed for the algorithm (wrong format version, nonce length,
	// encrypted key present or absent or of the wrong length) yields an error wrapping ErrMetadata
	// and naming the field; every other failure yields ErrDecrypt.
	Decrypt(ciphertext []byte, meta Metadata, ad []byte) ([]byte, error)
}

// NewKey returns fresh key material for alg: 32 bytes read from random for AES-256-GCM and
// XCHACHA20-POLY1305; the PKCS#8 DER encoding of a new RSA-3072 key (e = 65537) for
// RSA-OAEP-3072-SHA256. A nil random means crypto/rand.Reader. Since Go 1.26 the standard library
// draws RSA key generation from its own secure source whatever random is passed. Errors: wraps
// ErrUnknownAlgorithm for an unknown alg; otherwise the failure of random.
func NewKey(alg string, random io.Reader) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	switch alg {
	case AES256GCM, XChaCha20Poly1305:
		key := make([]byte, keySize)
		if _, err := io.ReadFull(random, key); err != nil {
			return nil, fmt.Errorf("aead: read random key: %w", err)
		}
		return key, nil
	case RSAOAEP3072SHA256:
		priv, err := rsa.GenerateKey(random, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("aead: generate RSA-3072 key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("aead: encode RSA key: %w", err)
		}
		return der, nil
	default:
		return nil, unknownAlgorithm(alg)
	}
}

// New returns the Cipher for alg under key, as made by NewKey. It validates the key: 32 bytes for
// the symmetric algorithms; for RSA-OAEP-3072-SHA256 a single DER-encoded PKCS#8 RSA private key
// of exactly 3072 bits with public exponent 65537 that passes the standard library's consistency
// checks. The Cipher keeps its own copy of what it needs, so the caller may clear key afterwards.
// Errors: wraps ErrUnknownAlgorithm or ErrInvalidKey.
func New(alg string, key []byte) (Cipher, error) {
	switch alg {
	case AES256GCM, XChaCha20Poly1305:
		s, err := newSymmetric(alg, key)
		if err != nil {
			return nil, err // not a nil *symmetric inside a non-nil Cipher
		}
		return s, nil
	case RSAOAEP3072SHA256:
		priv, err := parsePrivateKey(key)
		if err != nil {
			return nil, err
		}
		return &hybrid{priv: priv}, nil
	default:
		return nil, unknownAlgorithm(alg)
	}
}

// PublicKeyPEM returns the public half of an RSA-OAEP-3072-SHA256 key (as made by NewKey) as a PEM
// block "PUBLIC KEY" holding the PKIX (SubjectPublicKeyInfo) encoding, the form
// EncryptWithPublicKey and other producers read. Errors: wraps ErrUnknownAlgorithm for an unknown
// alg, ErrNoPublicKey for a symmetric one, ErrInvalidKey for a key New would refuse.
func PublicKeyPEM(alg string, key []byte) (string, error) {
	switch alg {
	case RSAOAEP3072SHA256:
		priv, err := parsePrivateKey(key)
		if err != nil {
			return "", err
		}
		return encodePublicKey(&priv.PublicKey)
	case AES256GCM, XChaCha20Poly1305:
		return "", fmt.Errorf("%w: %s is symmetric", ErrNoPublicKey, alg)
	default:
		return "", unknownAlgorithm(alg)
	}
}

func unknownAlgorithm(alg string) error {
	return fmt.Errorf("%w: %s; want one of %v", ErrUnknownAlgorithm, quoteShort(alg), Algorithms())
}

// quoteShort quotes s for an error message, cut to a length that cannot flood a log line.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
