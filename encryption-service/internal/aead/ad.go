package aead

import "encoding/binary"

// adLabel starts every data ciphertext's associated data; a new encoding gets a new label.
const adLabel = "custos/es/data/v1"

// AssociatedData returns the associated data that binds a ciphertext to its tenant, key context
// (encryptionID), key version and algorithm:
//
//	"custos/es/data/v1" || len16(tenantID) || tenantID || len16(encryptionID) || encryptionID ||
//	len16(versionID) || versionID || len16(alg) || alg
//
// len16(x) is len(x) in bytes as a big-endian uint16. A field of 65,535 bytes or more is prefixed
// instead by FF FF and its length as a big-endian uint64, so every tuple of strings has its own
// encoding. Other-language clients producing RSA-OAEP-3072-SHA256 ciphertexts must reproduce these
// bytes exactly (see the package documentation). AssociatedData never fails.
func AssociatedData(tenantID, encryptionID, versionID, alg string) []byte {
	fields := [...]string{tenantID, encryptionID, versionID, alg}
	n := len(adLabel)
	for _, f := range fields {
		n += 2 + len(f)
		if len(f) >= 0xFFFF {
			n += 8
		}
	}
	out := make([]byte, 0, n)
	out = append(out, adLabel...)
	for _, f := range fields {
		if len(f) < 0xFFFF {
			out = binary.BigEndian.AppendUint16(out, uint16(len(f))) //nolint:gosec // bounded above: len(f) < 0xFFFF checked right before
		} else {
			out = binary.BigEndian.AppendUint16(out, 0xFFFF)
			out = binary.BigEndian.AppendUint64(out, uint64(len(f)))
		}
		out = append(out, f...)
	}
	return out
}
