package aead

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
)

// Metadata is what Decrypt needs besides the ciphertext and the associated data. Nothing in it is
// secret (the data key is RSA-encrypted), so it travels in the clear as the API's "metadata"
// object.
type Metadata struct {
	FormatVersion int    // always 1
	Nonce         []byte // 12 bytes for AES-256-GCM and the RSA hybrid's GCM, 24 for XCHACHA20-POLY1305
	EncryptedKey  []byte // RSA-OAEP-3072-SHA256 only: the RSA-OAEP-SHA256 encryption of the data key, 384 bytes
}

// The metadata object's field names on the wire.
const (
	fieldFormatVersion = "formatVersion"
	fieldNonce         = "nonce"
	fieldEncryptedKey  = "encryptedKey"
)

// Map returns the metadata as the API's JSON object in decoded form:
// {"formatVersion": 1, "nonce": "<base64>", "encryptedKey": "<base64>"}, base64 being the standard
// padded alphabet and encryptedKey present only when the metadata has one. The map is new; it
// converts directly with encoding/json or structpb.NewStruct. Map never fails.
func (m Metadata) Map() map[string]any {
	out := map[string]any{
		fieldFormatVersion: m.FormatVersion,
		fieldNonce:         base64.StdEncoding.EncodeToString(m.Nonce),
	}
	if len(m.EncryptedKey) > 0 {
		out[fieldEncryptedKey] = base64.StdEncoding.EncodeToString(m.EncryptedKey)
	}
	return out
}

// ParseMetadata reads the API's metadata object for alg, in the decoded form encoding/json or
// structpb's AsMap produce, and checks it strictly:
//
//   - formatVersion is present and is the number 1 (a JSON number; the string "1" is refused);
//   - nonce is a string holding the canonical standard padded base64 of exactly the algorithm's
//     nonce size (12 bytes for AES-256-GCM and RSA-OAEP-3072-SHA256, 24 for XCHACHA20-POLY1305);
//   - encryptedKey is present for RSA-OAEP-3072-SHA256 only, the same kind of base64 of exactly
//     384 bytes;
//   - no other field is present.
//
// Errors: wraps ErrUnknownAlgorithm for an unknown alg; otherwise wraps ErrMetadata and names the
// offending field (an unknown field's name is quoted, shortened), never its value.
func ParseMetadata(alg string, v map[string]any) (Metadata, error) {
	nonceSize, hasKey, err := layout(alg)
	if err != nil {
		return Metadata{}, err
	}
	var unknown []string
	for k := range v {
		if k != fieldFormatVersion && k != fieldNonce && k != fieldEncryptedKey {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown) // the same input always names the same field
		return Metadata{}, fmt.Errorf("%w: unknown field %s", ErrMetadata, quoteShort(unknown[0]))
	}

	raw, ok := v[fieldFormatVersion]
	if !ok {
		return Metadata{}, fmt.Errorf("%w: %s: missing", ErrMetadata, fieldFormatVersion)
	}
	if !isOne(raw) {
		return Metadata{}, fmt.Errorf("%w: %s: want the number %d", ErrMetadata, fieldFormatVersion, formatVersion)
	}
	m := Metadata{FormatVersion: formatVersion}

	if m.Nonce, err = decodeField(v, fieldNonce, nonceSize); err != nil {
		return Metadata{}, err
	}
	_, present := v[fieldEncryptedKey]
	switch {
	case hasKey:
		if m.EncryptedKey, err = decodeField(v, fieldEncryptedKey, rsaSize); err != nil {
			return Metadata{}, err
		}
	case present:
		return Metadata{}, fmt.Errorf("%w: %s: not used by %s", ErrMetadata, fieldEncryptedKey, alg)
	}
	return m, nil
}

// check is ParseMetadata's structural rules applied to a Metadata value; Decrypt calls it before
// touching the primitive, so a caller that builds Metadata by hand gets the same answers.
func (m Metadata) check(alg string) error {
	nonceSize, hasKey, err := layout(alg)
	if err != nil {
		return err
	}
	if m.FormatVersion != formatVersion {
		return fmt.Errorf("%w: %s: want %d", ErrMetadata, fieldFormatVersion, formatVersion)
	}
	if len(m.Nonce) != nonceSize {
		return fmt.Errorf("%w: %s: want %d bytes", ErrMetadata, fieldNonce, nonceSize)
	}
	switch {
	case hasKey && len(m.EncryptedKey) != rsaSize:
		return fmt.Errorf("%w: %s: want %d bytes", ErrMetadata, fieldEncryptedKey, rsaSize)
	case !hasKey && len(m.EncryptedKey) != 0:
		return fmt.Errorf("%w: %s: not used by %s", ErrMetadata, fieldEncryptedKey, alg)
	}
	return nil
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

// decodeField decodes v[name], which must be the canonical standard padded base64 of n bytes.
func decodeField(v map[string]any, name string, n int) ([]byte, error) {
	raw, ok := v[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s: missing", ErrMetadata, name)
	}
	s, ok := raw.(string)
	if !ok {
		return nil, fmt.Errorf("%w: %s: want a base64 string", ErrMetadata, name)
	}
	// Checked before decoding, so an oversized value costs nothing.
	if len(s) != base64.StdEncoding.EncodedLen(n) {
		return nil, fmt.Errorf("%w: %s: want %d bytes in padded standard base64 (%d characters)",
			ErrMetadata, name, n, base64.StdEncoding.EncodedLen(n))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	// The decoder skips CR and LF; re-encoding catches those and anything else non-canonical.
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("%w: %s: not canonical padded standard base64", ErrMetadata, name)
	}
	if len(b) != n { // the right length in characters, but padding for fewer bytes
		return nil, fmt.Errorf("%w: %s: want %d bytes, got %d", ErrMetadata, name, n, len(b))
	}
	return b, nil
}

// isOne reports whether x, a decoded JSON value, is the number 1.
func isOne(x any) bool {
	switch n := x.(type) {
	case float64: // encoding/json and structpb
		return n == 1
	case float32:
		return n == 1
	case int:
		return n == 1
	case int32:
		return n == 1
	case int64:
		return n == 1
	case uint:
		return n == 1
	case uint32:
		return n == 1
	case uint64:
		return n == 1
	case json.Number: // a decoder with UseNumber
		f, err := n.Float64()
		return err == nil && f == 1
	default:
		return false
	}
}
