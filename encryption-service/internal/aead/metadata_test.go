package aead

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestMetadataCheck(t *testing.T) {
	n12, n24, key := bytes.Repeat([]byte{0xFB}, 12), bytes.Repeat([]byte{0xFB}, 24), bytes.Repeat([]byte{0xFB}, 384)
	valid := map[string]Metadata{
		AES256GCM:         {FormatVersion: 1, Nonce: n12},
		XChaCha20Poly1305: {FormatVersion: 1, Nonce: n24},
		RSAOAEP3072SHA256: {FormatVersion: 1, Nonce: n12, EncryptedKey: key},
	}
	with := func(alg string, f func(*Metadata)) Metadata {
		m := valid[alg]
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name  string
		alg   string
		in    Metadata
		field string // named in the error; "" means the input is valid
	}{
		{"AES valid", AES256GCM, valid[AES256GCM], ""},
		{"XChaCha valid", XChaCha20Poly1305, valid[XChaCha20Poly1305], ""},
		{"RSA valid", RSAOAEP3072SHA256, valid[RSAOAEP3072SHA256], ""},
		{"empty encryptedKey for AES is absent", AES256GCM, with(AES256GCM, func(m *Metadata) { m.EncryptedKey = []byte{} }), ""},

		{"zero value", AES256GCM, Metadata{}, "formatVersion: missing"},
		{"formatVersion 2", AES256GCM, with(AES256GCM, func(m *Metadata) { m.FormatVersion = 2 }), "formatVersion: want 1"},
		{"formatVersion -1", AES256GCM, with(AES256GCM, func(m *Metadata) { m.FormatVersion = -1 }), "formatVersion: want 1"},

		{"nonce missing", AES256GCM, with(AES256GCM, func(m *Metadata) { m.Nonce = nil }), "nonce: missing"},
		{"nonce 11 bytes", AES256GCM, with(AES256GCM, func(m *Metadata) { m.Nonce = n12[:11] }), "nonce: want 12 bytes, got 11"},
		{"nonce 13 bytes", AES256GCM, with(AES256GCM, func(m *Metadata) { m.Nonce = append(n12, 0) }), "nonce: want 12 bytes, got 13"},
		{"nonce 24 bytes for AES", AES256GCM, with(AES256GCM, func(m *Metadata) { m.Nonce = n24 }), "nonce: want 12 bytes"},
		{"nonce 12 bytes for XChaCha", XChaCha20Poly1305, with(XChaCha20Poly1305, func(m *Metadata) { m.Nonce = n12 }), "nonce: want 24 bytes"},
		{"nonce huge", AES256GCM, with(AES256GCM, func(m *Metadata) { m.Nonce = make([]byte, 1<<20) }), "nonce: want 12 bytes"},
		{"RSA nonce 24 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, func(m *Metadata) { m.Nonce = n24 }), "nonce: want 12 bytes"},

		{"encryptedKey missing", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, func(m *Metadata) { m.EncryptedKey = nil }), "encryptedKey: missing"},
		{"encryptedKey 383 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, func(m *Metadata) { m.EncryptedKey = key[:383] }), "encryptedKey: want 384 bytes, got 383"},
		{"encryptedKey 512 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, func(m *Metadata) { m.EncryptedKey = make([]byte, 512) }), "encryptedKey: want 384 bytes"},
		{"encryptedKey for AES", AES256GCM, with(AES256GCM, func(m *Metadata) { m.EncryptedKey = key }), "encryptedKey: not used by AES-256-GCM"},
		{"encryptedKey for XChaCha", XChaCha20Poly1305, with(XChaCha20Poly1305, func(m *Metadata) { m.EncryptedKey = []byte{1} }), "encryptedKey: not used by XCHACHA20-POLY1305"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.in.Check(tc.alg)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check = %v, want success", err)
				}
				return
			}
			if !errors.Is(err, ErrMetadata) {
				t.Fatalf("Check = %v; want ErrMetadata", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Check error = %q, want it to mention %q", err, tc.field)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("Check error is %d characters long", len(err.Error()))
			}
			// Decrypt refuses the same metadata with the same error, before touching the primitive.
			c := mustNew(t, tc.alg, testKey(t, tc.alg))
			if _, derr := c.Decrypt(make([]byte, 64), tc.in, nil); derr == nil || derr.Error() != err.Error() {
				t.Fatalf("Decrypt = %v; want Check's error %v", derr, err)
			}
		})
	}
	if err := valid[AES256GCM].Check("AES-128-GCM"); !errors.Is(err, ErrUnknownAlgorithm) {
		t.Fatalf("Check(unknown algorithm) = %v; want ErrUnknownAlgorithm", err)
	}
}
