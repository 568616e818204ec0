package aead

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"strings"
)

const pemPublicKey = "PUBLIC KEY"

// hybrid is RSA-OAEP-3072-SHA256: RSA-OAEP(SHA-256, MGF1-SHA-256, label = ad) wraps a fresh
// AES-256-GCM data key per message. The package documentation gives the format.
type hybrid struct {
	priv *rsa.PrivateKey // read-only after New; rsa's operations on it are safe for concurrent use
}

func (h *hybrid) Algorithm() string { return RSAOAEP3072SHA256 }

// Encrypt implements Cipher.
func (h *hybrid) Encrypt(plaintext, ad []byte) ([]byte, Metadata, error) {
	return hybridSeal(&h.priv.PublicKey, plaintext, ad, rand.Reader)
}

// Decrypt implements Cipher. Whether the RSA step or the GCM step fails, it does the same work and
// returns the same ErrDecrypt.
func (h *hybrid) Decrypt(ciphertext []byte, meta Metadata, ad []byte) ([]byte, error) {
	if err := meta.Check(RSAOAEP3072SHA256); err != nil {
		return nil, err
	}
	if len(ciphertext) < tagSize { // public: says nothing about the key
		return nil, ErrDecrypt
	}
	dataKey := h.openDataKey(meta.EncryptedKey, ad)
	defer clear(dataKey)
	gcm, err := newGCM(dataKey)
	if err != nil {
		return nil, ErrDecrypt
	}
	out, err := gcm.Open(make([]byte, 0, len(ciphertext)-tagSize), meta.Nonce, ciphertext, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// openDataKey returns the 32-byte data key that encryptedKey holds under label ad or, when it
// holds none (OAEP failure, wrong label, wrong length), a random 32-byte key. The caller then fails
// the GCM open exactly as with a wrong data key, so the two failures cannot be told apart by
// result or by the work done (implicit rejection, as against Manger's attack).
func (h *hybrid) openDataKey(encryptedKey, ad []byte) []byte {
	key := make([]byte, keySize)
	_, _ = rand.Read(key) // never fails since Go 1.24; a zero key would fail the GCM open anyway
	plain, err := h.decryptKey(encryptedKey, ad)
	valid := subtle.ConstantTimeEq(int32(len(plain)), keySize) //nolint:gosec // bounded above: an RSA plaintext is smaller than the modulus
	if err != nil {
		valid = 0
	}
	if len(plain) == keySize {
		subtle.ConstantTimeCopy(valid, key, plain)
	}
	clear(plain)
	return key
}

// decryptKey is the bare RSA-OAEP step with this package's parameters. The known-answer tests call
// it directly; Decrypt goes through openDataKey.
func (h *hybrid) decryptKey(encryptedKey, label []byte) ([]byte, error) {
	return rsa.DecryptOAEP(sha256.New(), nil, h.priv, encryptedKey, label)
}

// EncryptWithPublicKey encrypts plaintext bound to ad for an RSA-OAEP-3072-SHA256 key version
// knowing only its public key, pemPublicKey as returned by PublicKeyPEM. It produces exactly what
// the version's Cipher.Encrypt produces, following the steps in the package documentation; ad is
// normally AssociatedData(tenantID, encryptionID, versionID, RSAOAEP3072SHA256). random supplies
// the data key, the nonce and the OAEP seed; nil means crypto/rand.Reader. Errors: wraps
// ErrInvalidKey when pemPublicKey is not a single PEM "PUBLIC KEY" block holding a 3072-bit RSA key
// with exponent 65537; otherwise the failure of random, or a plaintext over GCM's 64 GiB limit.
func EncryptWithPublicKey(pemPublicKey string, plaintext, ad []byte, random io.Reader) ([]byte, Metadata, error) {
	pub, err := parsePublicKeyPEM(pemPublicKey)
	if err != nil {
		return nil, Metadata{}, err
	}
	if random == nil {
		random = rand.Reader
	}
	return hybridSeal(pub, plaintext, ad, random)
}

func hybridSeal(pub *rsa.PublicKey, plaintext, ad []byte, random io.Reader) ([]byte, Metadata, error) {
	if uint64(len(plaintext)) > gcmMaxPlaintext {
		return nil, Metadata{}, fmt.Errorf("aead: %s plaintext longer than %d bytes", RSAOAEP3072SHA256, uint64(gcmMaxPlaintext))
	}
	dataKey := make([]byte, keySize)
	defer clear(dataKey)
	nonce := make([]byte, gcmNonceSize)
	if _, err := io.ReadFull(random, dataKey); err != nil {
		return nil, Metadata{}, fmt.Errorf("aead: read random data key: %w", err)
	}
	if _, err := io.ReadFull(random, nonce); err != nil {
		return nil, Metadata{}, fmt.Errorf("aead: read random nonce: %w", err)
	}
	gcm, err := newGCM(dataKey)
	if err != nil {
		return nil, Metadata{}, err
	}
	ct := gcm.Seal(make([]byte, 0, len(plaintext)+tagSize), nonce, plaintext, ad)
	encryptedKey, err := rsa.EncryptOAEP(sha256.New(), random, pub, dataKey, ad)
	if err != nil {
		return nil, Metadata{}, fmt.Errorf("aead: RSA-OAEP encrypt data key: %w", err)
	}
	return ct, Metadata{FormatVersion: formatVersion, Nonce: nonce, EncryptedKey: encryptedKey}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aead: AES key: %w", ErrInvalidKey)
	}
	return cipher.NewGCM(block)
}

// parsePrivateKey reads an RSA-OAEP-3072-SHA256 private key: one DER-encoded PKCS#8 structure and
// nothing after it, RSA, 3072 bits, e = 65537, consistent.
func parsePrivateKey(der []byte) (*rsa.PrivateKey, error) {
	// x509 ignores bytes after the PKCS#8 structure; a key is exactly one DER value.
	var outer asn1.RawValue
	rest, err := asn1.Unmarshal(der, &outer)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: %s key must be one DER-encoded PKCS#8 structure", ErrInvalidKey, RSAOAEP3072SHA256)
	}
	// Parse errors are not wrapped: they are generic, but nothing about key bytes may leak.
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s key is not a PKCS#8 private key", ErrInvalidKey, RSAOAEP3072SHA256)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s key is a PKCS#8 %T, want RSA", ErrInvalidKey, RSAOAEP3072SHA256, k)
	}
	if err := checkPublicKey(&priv.PublicKey); err != nil {
		return nil, err
	}
	if priv.Validate() != nil {
		return nil, fmt.Errorf("%w: %s key fails RSA consistency checks", ErrInvalidKey, RSAOAEP3072SHA256)
	}
	return priv, nil
}

func checkPublicKey(pub *rsa.PublicKey) error {
	if pub.N == nil || pub.N.BitLen() != rsaBits {
		bits := 0
		if pub.N != nil {
			bits = pub.N.BitLen()
		}
		return fmt.Errorf("%w: %s key must be %d bits, got %d", ErrInvalidKey, RSAOAEP3072SHA256, rsaBits, bits)
	}
	if pub.E != rsaExponent {
		return fmt.Errorf("%w: %s key must have public exponent %d", ErrInvalidKey, RSAOAEP3072SHA256, rsaExponent)
	}
	return nil
}

func encodePublicKey(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("aead: encode public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der})), nil
}

// parsePublicKeyPEM reads exactly one PEM "PUBLIC KEY" block (surrounding white space allowed,
// nothing else) holding a PKIX RSA-3072 public key with e = 65537.
func parsePublicKeyPEM(s string) (*rsa.PublicKey, error) {
	// pem.Decode skips any text before a block; a key file is the block alone.
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "-----BEGIN ") {
		return nil, fmt.Errorf("%w: public key: no PEM block", ErrInvalidKey)
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return nil, fmt.Errorf("%w: public key: no PEM block", ErrInvalidKey)
	}
	if block.Type != pemPublicKey || len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: public key: PEM block must be %q without headers", ErrInvalidKey, pemPublicKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: public key: data after the PEM block", ErrInvalidKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes) // refuses trailing bytes itself
	if err != nil {
		return nil, fmt.Errorf("%w: public key: not a PKIX public key", ErrInvalidKey)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is a %T, want RSA", ErrInvalidKey, k)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}
