package secretbox

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"testing/iotest"
)

// A known answer for the blob format, computed independently with Python's
// cryptography package (OpenSSL's AES-GCM):
//
//	key = bytes(range(32)); nonce = bytes(0xA0+i for i in range(12))
//	hdr = b"\x01\x02k1"; ad = b"totp-secret/user-1"; pt = b"JBSWY3DPEHPK3PXP"
//	blob = hdr + nonce + AESGCM(key).encrypt(nonce, pt, hdr + ad)
func TestSealKnownAnswer(t *testing.T) {
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(i)
	}
	nonce := make([]byte, nonceSize)
	for i := range nonce {
		nonce[i] = 0xA0 + byte(i)
	}
	b, err := NewBox([]Key{{ID: "k1", Bytes: key}}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	b.rand = bytes.NewReader(nonce)
	blob, err := b.Seal([]byte("JBSWY3DPEHPK3PXP"), []byte("totp-secret/user-1"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "01026b31a0a1a2a3a4a5a6a7a8a9aaabac5a2f7a1cf846ef272dd798342a988e18168fe9214d47d925e51f16f5c0ea2a"
	if got := hex.EncodeToString(blob); got != want {
		t.Fatalf("Seal = %s, want %s", got, want)
	}
	pt, err := b.Open(blob, []byte("totp-secret/user-1"))
	if err != nil || string(pt) != "JBSWY3DPEHPK3PXP" {
		t.Fatalf("Open(known answer) = %q, %v", pt, err)
	}
}

func TestSealRandomFailure(t *testing.T) {
	b, err := NewBox([]Key{{ID: "k1", Bytes: bytes.Repeat([]byte{1}, KeySize)}}, "")
	if err != nil {
		t.Fatal(err)
	}
	b.rand = iotest.ErrReader(errors.New("no entropy"))
	if blob, err := b.Seal([]byte("x"), nil); err == nil || blob != nil {
		t.Fatalf("Seal(failing rand) = %x, %v, want an error", blob, err)
	}
}
