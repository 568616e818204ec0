package aead

import "fmt"

// Metadata is what Decrypt needs besides the ciphertext and the associated data. Nothing in it is
// secret (the data key is RSA-encrypted), so it travels in the clear as the API's "metadata"
// object (the CipherMetadata message; in JSON {"formatVersion": 1, "nonce": "<base64>"} and, for
// RSA-OAEP-3072-SHA256, "encryptedKey").
type Metadata struct {
	FormatVersion int32  // always 1
	Nonce         []byte // 12 bytes for AES-256-GCM and the RSA hybrid's GCM, 24 for XCHACHA20-POLY1305
	EncryptedKey  []byte // RSA-OAEP-3072-SHA256 only: the RSA-OAEP-SHA256 encryption of the data key, 384 bytes
}

// The metadata object's field names on the wire (JSON), used in error messages.
const (
	fieldFormatVersion = "formatVersion"
	fieldNonce         = "nonce"
	fieldEncryptedKey  = "encryptedKey"
)

// Check reports whether m is well-formed for alg: formatVersion 1; a nonce of exactly the
// algorithm's size (12 bytes for AES-256-GCM and RSA-OAEP-3072-SHA256, 24 for
// XCHACHA20-POLY1305); an encrypted key of exactly 384 bytes for RSA-OAEP-3072-SHA256 and none for
// the others. Decrypt applies the same rules before touching the primitive; callers check first to
// tell a malformed request from a ciphertext that does not authenticate.
//
// Errors: wraps ErrUnknownAlgorithm for an unknown alg; otherwise wraps ErrMetadata and names the
// offending field by its wire name (formatVersion, nonce, encryptedKey) and the length it wants,
// never a value.
func (m Metadata) Check(alg string) error {
	nonceSize, hasKey, err := layout(alg)
	if err != nil {
		return err
	}
	switch {
	case m.FormatVersion == 0:
		return fmt.Errorf("%w: %s: missing", ErrMetadata, fieldFormatVersion)
	case m.FormatVersion != formatVersion:
		return fmt.Errorf("%w: %s: want %d", ErrMetadata, fieldFormatVersion, formatVersion)
	}
	if err := checkLen(fieldNonce, m.Nonce, nonceSize); err != nil {
		return err
	}
	switch {
	case hasKey:
		return checkLen(fieldEncryptedKey, m.EncryptedKey, rsaSize)
	case len(m.EncryptedKey) != 0:
		return fmt.Errorf("%w: %s: not used by %s", ErrMetadata, fieldEncryptedKey, alg)
	}
	return nil
}

// checkLen checks that field b holds exactly n bytes.
func checkLen(field string, b []byte, n int) error {
	switch len(b) {
	case n:
		return nil
	case 0:
		return fmt.Errorf("%w: %s: missing", ErrMetadata, field)
	default:
		return fmt.Errorf("%w: %s: want %d bytes, got %d", ErrMetadata, field, n, len(b))
	}
}

// layout returns alg's nonce size and whether its metadata carries an encrypted key.
func layout(alg string) (nonceSize int, hasKey bool, err error) {
	switch alg {
	case AES256GCM:
		return gcmNonceSize, false, nil
	case XChaCha20Poly1305:
		return xNonceSize, false, nil
	case RSAOAEP3072SHA256:
		return gcmNonceSize, true, nil
	default:
		return 0, false, unknownAlgorithm(alg)
	}
}
