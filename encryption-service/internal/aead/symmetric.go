package aead

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Plaintext limits of the primitives; their Seal panics beyond them, so Encrypt refuses first.
const (
	gcmMaxPlaintext     = (1<<32 - 2) * aes.BlockSize // NIST SP 800-38D
	xchachaMaxPlaintext = (1<<32 - 1) * 64            // RFC 8439 §2.8, 32-bit block counter
)

// symmetric is AES-256-GCM or XChaCha20-Poly1305 under one key.
type symmetric struct {
	alg       string
	aead      cipher.AEAD
	nonceSize int
	maxPlain  uint64
}

func newSymmetric(alg string, key []byte) (*symmetric, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("%w: %s key must be %d bytes, got %d", ErrInvalidKey, alg, keySize, len(key))
	}
	s := &symmetric{alg: alg}
	switch alg {
	case AES256GCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidKey, alg)
		}
		// The standard nonce and tag sizes; NewGCM keeps no reference to key.
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidKey, alg)
		}
		s.nonceSize, s.maxPlain = gcmNonceSize, gcmMaxPlaintext
	case XChaCha20Poly1305:
		var err error
		// NewX copies the key.
		if s.aead, err = chacha20poly1305.NewX(key); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidKey, alg)
		}
		s.nonceSize, s.maxPlain = xNonceSize, xchachaMaxPlaintext
	default:
		return nil, unknownAlgorithm(alg)
	}
	if s.aead.NonceSize() != s.nonceSize || s.aead.Overhead() != tagSize {
		return nil, fmt.Errorf("aead: %s primitive has unexpected parameters", alg) // unreachable
	}
	return s, nil
}

func (s *symmetric) Algorithm() string { return s.alg }

// Encrypt implements Cipher.
func (s *symmetric) Encrypt(plaintext, ad []byte) ([]byte, Metadata, error) {
	if uint64(len(plaintext)) > s.maxPlain {
		return nil, Metadata{}, fmt.Errorf("aead: %s plaintext longer than %d bytes", s.alg, s.maxPlain)
	}
	nonce := make([]byte, s.nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, Metadata{}, fmt.Errorf("aead: read random nonce: %w", err)
	}
	return s.seal(nonce, plaintext, ad), Metadata{FormatVersion: formatVersion, Nonce: nonce}, nil
}

// seal encrypts under a caller-chosen nonce. Only Encrypt (with a fresh random nonce) and the
// known-answer tests call it: a repeated nonce destroys both confidentiality and integrity.
func (s *symmetric) seal(nonce, plaintext, ad []byte) []byte {
	return s.aead.Seal(make([]byte, 0, len(plaintext)+tagSize), nonce, plaintext, ad)
}

// Decrypt implements Cipher.
func (s *symmetric) Decrypt(ciphertext []byte, meta Metadata, ad []byte) ([]byte, error) {
	if err := meta.Check(s.alg); err != nil {
		return nil, err
	}
	return s.open(meta.Nonce, ciphertext, ad)
}

// open is Decrypt after the metadata check: nonce has the primitive's size, which Open requires.
func (s *symmetric) open(nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != s.nonceSize || len(ciphertext) < tagSize {
		return nil, ErrDecrypt
	}
	// A non-nil destination: an empty plaintext comes back as an empty slice, not nil.
	out, err := s.aead.Open(make([]byte, 0, len(ciphertext)-tagSize), nonce, ciphertext, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}
