// Package keywrap protects key material at rest. It is pure: no database, no network. It has
// three tools, each with a fixed, versioned format.
//
// # Wrap and Unwrap
//
// Key material is sealed under a 32-byte key-encryption key (KEK) with AES-256-GCM. The blob is
//
//	0x01 (format version) || nonce (12 random bytes) || ciphertext || tag (16 bytes)
//
// and the GCM associated data is the version byte followed by the caller's ad, which names where
// the blob is stored: a blob copied to another row or column fails to unwrap.
//
// # DeriveClientKEK
//
// A client-provided master key (the X-Master-Key header, 32 bytes) becomes the KEK of one key
// context through HKDF-SHA256 (RFC 5869):
//
//	KEK  = HKDF-SHA256(ikm = masterKey, salt = "custos/es/client-kek/v1", info, L = 32)
//	info = len16(tenantID) || tenantID || len16(encryptionID) || encryptionID
//
// len16(x) being len(x) in bytes as a big-endian uint16. One master key thus gives an independent
// KEK per tenant and context.
//
// # Seal and Open
//
// HPKE (RFC 9180) in base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM
// (suite 0x0020/0x0001/0x0002), one message per HPKE context. Anyone with the public half of a
// sealing key pair can seal (the service makes a zero-knowledge context's new key versions this
// way, without the client's master key); only the private half opens. The blob is
//
//	0x01 (format version) || enc (32-byte X25519 ephemeral public key) || ciphertext || tag (16 bytes)
//
// with the caller's info as HPKE info and the version byte as HPKE aad.
//
// # Errors
//
// Every failure to unwrap or open — wrong key, wrong ad or info, any altered, truncated or
// extended byte, an unknown version — wraps ErrUnwrap; a wrong key, ad or info and an altered
// byte all give the bare ErrUnwrap, so nothing tells them apart. Other refusals wrap
// ErrInvalidKey or ErrInvalidMasterKey, except DeriveClientKEK's for an identifier over 65,535
// bytes. No error holds key material or the input it came from, and no input makes a function
// panic.
package keywrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// KeySize is the size of every key this package takes or returns: KEKs, master keys, derived KEKs
// and both halves of a sealing key pair.
const KeySize = 32

var (
	// ErrUnwrap is returned by Unwrap and Open for any failure: wrong key, wrong associated data
	// or info, an altered, truncated or extended blob, an unknown format version, a key of the
	// wrong size. It never says which.
	ErrUnwrap = errors.New("key material does not authenticate")
	// ErrInvalidKey is returned by Wrap and Seal for a key that is not KeySize bytes or, for
	// Seal, not a usable X25519 public key.
	ErrInvalidKey = errors.New("keywrap: invalid key")
	// ErrInvalidMasterKey is returned by ParseMasterKey and DeriveClientKEK for a client master
	// key that is not base64 of exactly KeySize bytes; the wrapping error says which rule failed.
	ErrInvalidMasterKey = errors.New("keywrap: invalid master key")
)

const (
	formatVersion = 1 // the first byte of Wrap and Seal blobs
	nonceSize     = 12
	tagSize       = 16
	encSize       = 32 // X25519 public key: the HPKE encapsulated key

	wrapOverhead = 1 + nonceSize + tagSize
	sealOverhead = 1 + encSize + tagSize

	gcmMaxPlaintext = (1<<32 - 2) * aes.BlockSize // NIST SP 800-38D; Seal panics beyond

	kekSalt = "custos/es/client-kek/v1"
)

// Wrap seals plaintext (key material) under kek, a 32-byte key-encryption key, with AES-256-GCM
// and a fresh random nonce, bound to ad, which names where the blob is stored. The blob format is
// in the package documentation. Errors: wraps ErrInvalidKey when kek is not 32 bytes; otherwise
// only a plaintext over GCM's 64 GiB limit or a failing system random source.
func Wrap(kek, plaintext, ad []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: kek must be %d bytes, got %d", ErrInvalidKey, KeySize, len(kek))
	}
	if uint64(len(plaintext)) > gcmMaxPlaintext {
		return nil, fmt.Errorf("keywrap: plaintext longer than %d bytes", uint64(gcmMaxPlaintext))
	}
	blob := make([]byte, 1+nonceSize, wrapOverhead+len(plaintext))
	blob[0] = formatVersion
	if _, err := rand.Read(blob[1 : 1+nonceSize]); err != nil {
		return nil, fmt.Errorf("keywrap: read random nonce: %w", err)
	}
	return gcm.Seal(blob, blob[1:1+nonceSize], plaintext, headerAD(ad)), nil
}

// Unwrap returns the key material in blob, made by Wrap under kek with the same ad. Errors:
// ErrUnwrap, possibly wrapped with the structural reason (too short, unknown version); the same
// bare ErrUnwrap for a wrong kek, a wrong ad and any altered byte.
func Unwrap(kek, blob, ad []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: kek must be %d bytes", ErrUnwrap, KeySize)
	}
	if len(blob) < wrapOverhead {
		return nil, fmt.Errorf("%w: blob shorter than %d bytes", ErrUnwrap, wrapOverhead)
	}
	if blob[0] != formatVersion {
		return nil, fmt.Errorf("%w: unknown format version", ErrUnwrap)
	}
	nonce, ct := blob[1:1+nonceSize], blob[1+nonceSize:]
	out, err := gcm.Open(make([]byte, 0, len(ct)-tagSize), nonce, ct, headerAD(ad))
	if err != nil {
		return nil, ErrUnwrap
	}
	return out, nil
}

// headerAD is the GCM associated data: the version byte, so the header is authenticated too,
// then ad. The version byte has a fixed length, so the concatenation is unambiguous.
func headerAD(ad []byte) []byte {
	out := make([]byte, 0, 1+len(ad))
	out = append(out, formatVersion)
	return append(out, ad...)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, ErrInvalidKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrInvalidKey
	}
	return cipher.NewGCM(block)
}

// DeriveClientKEK derives the KEK that protects one key context's material from a client-provided
// master key: HKDF-SHA256 with masterKey as input keying material, the salt
// "custos/es/client-kek/v1" and as info the length-prefixed tenantID and encryptionID (see the
// package documentation); 32 bytes out. Errors: wraps ErrInvalidMasterKey when masterKey is not 32
// bytes; an error when tenantID or encryptionID is longer than 65,535 bytes.
func DeriveClientKEK(masterKey []byte, tenantID, encryptionID string) ([]byte, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrInvalidMasterKey, KeySize, len(masterKey))
	}
	if len(tenantID) > math.MaxUint16 || len(encryptionID) > math.MaxUint16 {
		return nil, errors.New("keywrap: tenantID and encryptionID must be at most 65535 bytes")
	}
	info := make([]byte, 0, 4+len(tenantID)+len(encryptionID))
	info = binary.BigEndian.AppendUint16(info, uint16(len(tenantID))) //nolint:gosec // bounded above: checked against math.MaxUint16 above
	info = append(info, tenantID...)
	info = binary.BigEndian.AppendUint16(info, uint16(len(encryptionID))) //nolint:gosec // bounded above: checked against math.MaxUint16 above
	info = append(info, encryptionID...)
	kek, err := hkdf.Key(sha256.New, masterKey, []byte(kekSalt), string(info), KeySize)
	if err != nil {
		return nil, fmt.Errorf("keywrap: HKDF: %w", err) // unreachable for 32 bytes of output
	}
	return kek, nil
}

// The HPKE suite of Seal and Open: RFC 9180 0x0020 / 0x0001 / 0x0002.
func hpkeKEM() hpke.KEM   { return hpke.DHKEM(ecdh.X25519()) }
func hpkeKDF() hpke.KDF   { return hpke.HKDFSHA256() }
func hpkeAEAD() hpke.AEAD { return hpke.AES256GCM() }

// NewSealingKey returns a fresh X25519 sealing key pair as raw 32-byte strings (RFC 7748): the
// private key is 32 bytes read from random (nil means crypto/rand.Reader), the public key its
// X25519 base-point multiple. Errors: only the failure of random.
func NewSealingKey(random io.Reader) (private, public []byte, err error) {
	if random == nil {
		random = rand.Reader
	}
	private = make([]byte, KeySize)
	if _, err := io.ReadFull(random, private); err != nil {
		return nil, nil, fmt.Errorf("keywrap: read random sealing key: %w", err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(private)
	if err != nil {
		clear(private)
		return nil, nil, fmt.Errorf("keywrap: X25519 key: %w", ErrInvalidKey) // unreachable for 32 bytes
	}
	return private, priv.PublicKey().Bytes(), nil
}

// SealingPublicKey returns the public half of private, a raw 32-byte X25519 private key as
// NewSealingKey returns it: its X25519 base-point multiple, so that a stored public half can be
// checked against the private half it claims to belong to. Errors: wraps ErrInvalidKey when
// private is not 32 bytes.
func SealingPublicKey(private []byte) ([]byte, error) {
	if len(private) != KeySize {
		return nil, fmt.Errorf("%w: sealing private key must be %d bytes, got %d", ErrInvalidKey, KeySize, len(private))
	}
	priv, err := ecdh.X25519().NewPrivateKey(private)
	if err != nil {
		return nil, fmt.Errorf("keywrap: X25519 key: %w", ErrInvalidKey) // unreachable for 32 bytes
	}
	return priv.PublicKey().Bytes(), nil
}

// Seal encrypts plaintext (key material) to the holder of the private half of public, a raw
// 32-byte X25519 public key, with HPKE base mode; info binds the blob to its context and must be
// given again to Open. The blob format is in the package documentation. Errors: wraps
// ErrInvalidKey when public is not 32 bytes or is a low-order point, which no honest key pair has;
// otherwise only a failing system random source.
func Seal(public, plaintext, info []byte) ([]byte, error) {
	if len(public) != encSize {
		return nil, fmt.Errorf("%w: sealing public key must be %d bytes, got %d", ErrInvalidKey, encSize, len(public))
	}
	if uint64(len(plaintext)) > gcmMaxPlaintext {
		return nil, fmt.Errorf("keywrap: plaintext longer than %d bytes", uint64(gcmMaxPlaintext))
	}
	pk, err := hpkeKEM().NewPublicKey(public)
	if err != nil {
		return nil, fmt.Errorf("%w: sealing public key is not an X25519 key", ErrInvalidKey)
	}
	enc, sender, err := hpke.NewSender(pk, hpkeKDF(), hpkeAEAD(), info)
	if err != nil {
		// The only input-dependent failure: an all-zero shared secret from a low-order point.
		return nil, fmt.Errorf("%w: sealing public key is unusable", ErrInvalidKey)
	}
	if len(enc) != encSize {
		return nil, fmt.Errorf("keywrap: HPKE enc is %d bytes, want %d", len(enc), encSize) // unreachable
	}
	blob := make([]byte, 0, sealOverhead+len(plaintext))
	blob = append(blob, formatVersion)
	blob = append(blob, enc...)
	ct, err := sender.Seal([]byte{formatVersion}, plaintext)
	if err != nil {
		return nil, fmt.Errorf("keywrap: HPKE seal: %w", err)
	}
	return append(blob, ct...), nil
}

// Open returns the plaintext of blob, made by Seal to the public half of private (a raw 32-byte
// X25519 private key) with the same info. Errors: ErrUnwrap for every failure, possibly wrapped
// with the structural reason (key or blob size, unknown version).
func Open(private, blob, info []byte) ([]byte, error) {
	if len(private) != KeySize {
		return nil, fmt.Errorf("%w: sealing private key must be %d bytes", ErrUnwrap, KeySize)
	}
	if len(blob) < sealOverhead {
		return nil, fmt.Errorf("%w: blob shorter than %d bytes", ErrUnwrap, sealOverhead)
	}
	if blob[0] != formatVersion {
		return nil, fmt.Errorf("%w: unknown format version", ErrUnwrap)
	}
	sk, err := hpkeKEM().NewPrivateKey(private)
	if err != nil {
		return nil, ErrUnwrap
	}
	enc, ct := blob[1:1+encSize], blob[1+encSize:]
	recipient, err := hpke.NewRecipient(enc, sk, hpkeKDF(), hpkeAEAD(), info)
	if err != nil {
		return nil, ErrUnwrap // e.g. a low-order enc
	}
	out, err := recipient.Open([]byte{formatVersion}, ct)
	if err != nil {
		return nil, ErrUnwrap
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// maxMasterKeyLen bounds the input ParseMasterKey looks at: base64 of 32 bytes is 43 or 44
// characters.
const maxMasterKeyLen = 64

// ParseMasterKey decodes a client-provided master key (the X-Master-Key header): base64 of
// exactly 32 bytes, in the standard or the URL-safe alphabet, padded or not. Padding, when
// present, must be correct, and the unused low bits of the last character must be zero, so each
// key has only these four spellings. Errors: wraps ErrInvalidMasterKey and says which rule failed
// (empty, too long, a character outside the alphabet and its position, mixed alphabets, misplaced
// padding, non-canonical encoding, wrong decoded length); it never echoes the input.
func ParseMasterKey(b64 string) ([]byte, error) {
	switch {
	case b64 == "":
		return nil, fmt.Errorf("%w: empty; want base64 of %d bytes", ErrInvalidMasterKey, KeySize)
	case len(b64) > maxMasterKeyLen:
		return nil, fmt.Errorf("%w: longer than %d characters; want base64 of %d bytes (43 or 44 characters)",
			ErrInvalidMasterKey, maxMasterKeyLen, KeySize)
	}
	var std, url bool
	body := len(b64) // characters before the padding
	for i := 0; i < len(b64); i++ {
		c := b64[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '+' || c == '/':
			std = true
		case c == '-' || c == '_':
			url = true
		case c == '=':
			if body == len(b64) {
				body = i
			}
		default:
			return nil, fmt.Errorf("%w: character %d is not in the base64 alphabet", ErrInvalidMasterKey, i+1)
		}
		if c != '=' && body != len(b64) {
			return nil, fmt.Errorf("%w: padding '=' is allowed only at the end", ErrInvalidMasterKey)
		}
	}
	if std && url {
		return nil, fmt.Errorf("%w: mixes the standard (+/) and URL-safe (-_) base64 alphabets", ErrInvalidMasterKey)
	}
	enc := base64.StdEncoding
	if url {
		enc = base64.URLEncoding
	}
	if body == len(b64) {
		enc = enc.WithPadding(base64.NoPadding)
	}
	key, err := enc.Strict().DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: not canonical base64 (wrong padding or non-zero trailing bits)", ErrInvalidMasterKey)
	}
	if len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("%w: decodes to %d bytes, want %d", ErrInvalidMasterKey, len(key), KeySize)
	}
	return key, nil
}
