package keywrap

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

// The RFC 9180 test vector for this package's exact suite: mode base (0), DHKEM(X25519,
// HKDF-SHA256) 0x0020, HKDF-SHA256 0x0001, AES-256-GCM 0x0002, first encryption (sequence number
// 0). RFC 9180's Appendix A prints no vector for this suite; this one is from the CFRG's companion
// file test-vectors.json (cfrg/draft-irtf-cfrg-hpke), whose entry the Go toolchain's own
// src/crypto/hpke/testdata/rfc9180.json also carries (same ikmR, skRm, pkRm and enc).
const (
	rfcInfo = "4f6465206f6e2061204772656369616e2055726e" // "Ode on a Grecian Urn"
	rfcIkmR = "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee"
	rfcSkRm = "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d"
	rfcPkRm = "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c"
	rfcEnc  = "6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256"
	rfcAAD  = "436f756e742d30"                                             // "Count-0"
	rfcPT   = "4265617574792069732074727574682c20747275746820626561757479" // "Beauty is truth, truth beauty"
	rfcCT   = "e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be9931980a41de125a925cdad859d5b7a"
)

// TestHPKESuiteMatchesRFC9180 checks crypto/hpke, through the same suite functions Seal and Open
// use, against the vector on the recipient's side. crypto/hpke offers no way to choose the
// sender's ephemeral key (it draws it from the standard library's own random source, and
// testing/cryptotest.SetGlobalRandom seeds a generator rather than supplying skEm), so the
// sender's side cannot reproduce enc and ct; it is checked by sealing to the vector's public key
// and opening with its private key instead.
func TestHPKESuiteMatchesRFC9180(t *testing.T) {
	if kem, kdf, aead := hpkeKEM().ID(), hpkeKDF().ID(), hpkeAEAD().ID(); kem != 0x0020 || kdf != 0x0001 || aead != 0x0002 {
		t.Fatalf("suite = %#04x/%#04x/%#04x, want 0x0020/0x0001/0x0002", kem, kdf, aead)
	}

	derived, err := hpkeKEM().DeriveKeyPair(mustHex(t, rfcIkmR))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(derived.PublicKey().Bytes()); got != rfcPkRm {
		t.Fatalf("DeriveKeyPair(ikmR) public key = %s, want pkRm %s", got, rfcPkRm)
	}
	// Bytes is SerializePrivateKey, which clamps X25519 scalars (RFC 9180 §7.1.2): compare clamped.
	fromSkRm, err := hpkeKEM().NewPrivateKey(mustHex(t, rfcSkRm))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustBytes(t, derived), mustBytes(t, fromSkRm); !bytes.Equal(a, b) {
		t.Fatalf("DeriveKeyPair(ikmR) private key = %x, want skRm (clamped) %x", a, b)
	}

	// skRm as the raw private key Open takes: it must give pkRm, as NewSealingKey's public half.
	priv, err := ecdh.X25519().NewPrivateKey(mustHex(t, rfcSkRm))
	if err != nil || hex.EncodeToString(priv.PublicKey().Bytes()) != rfcPkRm {
		t.Fatalf("X25519(skRm) = %x, %v; want pkRm", priv.PublicKey().Bytes(), err)
	}
	sk, err := hpkeKEM().NewPrivateKey(mustHex(t, rfcSkRm))
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(mustHex(t, rfcEnc), sk, hpkeKDF(), hpkeAEAD(), mustHex(t, rfcInfo))
	if err != nil {
		t.Fatalf("NewRecipient(enc) = %v", err)
	}
	got, err := r.Open(mustHex(t, rfcAAD), mustHex(t, rfcCT))
	if err != nil || hex.EncodeToString(got) != rfcPT {
		t.Fatalf("Open(ct) = %x, %v; want %s", got, err, rfcPT)
	}
	r, _ = hpke.NewRecipient(mustHex(t, rfcEnc), sk, hpkeKDF(), hpkeAEAD(), mustHex(t, rfcInfo))
	if _, err := r.Open(mustHex(t, rfcAAD), flipBit(mustHex(t, rfcCT), 0)); err == nil {
		t.Fatal("Open(altered ct) succeeded")
	}

	// This package's format, to the vector's key pair.
	blob := mustSeal(t, mustHex(t, rfcPkRm), mustHex(t, rfcPT), mustHex(t, rfcInfo))
	if got, err := Open(mustHex(t, rfcSkRm), blob, mustHex(t, rfcInfo)); err != nil || hex.EncodeToString(got) != rfcPT {
		t.Fatalf("Open(Seal to pkRm) = %x, %v", got, err)
	}
}

// TestNewSealingKey checks the key pair against RFC 7748 §6.1, whose private keys are read here
// as the random source.
func TestNewSealingKey(t *testing.T) {
	for _, tc := range []struct{ priv, pub string }{
		{"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"},
	} {
		priv, pub, err := NewSealingKey(bytes.NewReader(mustHex(t, tc.priv)))
		if err != nil || hex.EncodeToString(priv) != tc.priv || hex.EncodeToString(pub) != tc.pub {
			t.Fatalf("NewSealingKey(%s…) = %x, %x, %v; want public %s", tc.priv[:8], priv, pub, err, tc.pub)
		}
	}
	a, pa, err1 := NewSealingKey(nil)
	b, pb, err2 := NewSealingKey(nil)
	if err1 != nil || err2 != nil || len(a) != KeySize || len(pa) != KeySize || bytes.Equal(a, b) || bytes.Equal(pa, pb) {
		t.Fatalf("NewSealingKey(nil) twice = %v, %v, or equal keys", err1, err2)
	}
	if _, _, err := NewSealingKey(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Fatal("NewSealingKey(31-byte reader) succeeded")
	}
}

// TestSealingPublicKey checks the derivation against RFC 7748 §6.1 and refuses keys of the wrong
// size.
func TestSealingPublicKey(t *testing.T) {
	for _, tc := range []struct{ priv, pub string }{
		{"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"},
	} {
		if pub, err := SealingPublicKey(mustHex(t, tc.priv)); err != nil || hex.EncodeToString(pub) != tc.pub {
			t.Errorf("SealingPublicKey(%s…) = %x, %v; want %s", tc.priv[:8], pub, err, tc.pub)
		}
	}
	for _, n := range []int{0, 31, 33} {
		if _, err := SealingPublicKey(make([]byte, n)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("SealingPublicKey(%d bytes) = %v, want ErrInvalidKey", n, err)
		}
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	priv, pub, err := NewSealingKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	info := []byte("custos/es/version-key/v1\x00tenant\x00context\x00version")
	for _, n := range []int{0, 1, 32, 1791} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plaintext := pattern(n, 3)
			blob := mustSeal(t, pub, plaintext, info)
			if len(blob) != 1+32+n+16 || blob[0] != 1 {
				t.Fatalf("blob is %d bytes starting %#x, want %d starting 0x01", len(blob), blob[:1], 1+32+n+16)
			}
			got, err := Open(priv, blob, info)
			if err != nil || !bytes.Equal(got, plaintext) || got == nil {
				t.Fatalf("Open = %x, %v; want the %d-byte plaintext", got, err, n)
			}
		})
	}
	// Every seal has a fresh ephemeral key.
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		enc := string(mustSeal(t, pub, []byte("k"), info)[1:33])
		if seen[enc] {
			t.Fatal("Seal reused an ephemeral key")
		}
		seen[enc] = true
	}
}

// TestSealFormatAsDocumented opens a blob with crypto/hpke directly, following the package
// documentation.
func TestSealFormatAsDocumented(t *testing.T) {
	priv, pub, _ := NewSealingKey(nil)
	info, secret := []byte("info"), []byte("key material")
	blob := mustSeal(t, pub, secret, info)
	sk, err := hpke.DHKEM(ecdh.X25519()).NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(blob[1:33], sk, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Open([]byte{0x01}, blob[33:])
	if blob[0] != 0x01 || err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("HPKE open(enc = blob[1:33], aad = 0x01) = %q, %v", got, err)
	}
}

func TestSealTampering(t *testing.T) {
	priv, pub, err := NewSealingKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherPriv, _, _ := NewSealingKey(nil)
	info := []byte("context of the sealed key")
	blob := mustSeal(t, pub, pattern(KeySize, 9), info)

	for bit := 0; bit < len(blob)*8; bit++ {
		got, err := Open(priv, flipBit(blob, bit), info)
		wantUnwrap(t, fmt.Sprintf("Open(blob bit %d flipped)", bit), got, err)
	}
	for n := 0; n < len(blob); n++ {
		got, err := Open(priv, blob[:n], info)
		wantUnwrap(t, fmt.Sprintf("Open(blob[:%d])", n), got, err)
	}
	got, err := Open(priv, append(bytes.Clone(blob), 0), info)
	wantUnwrap(t, "Open(blob + 1 byte)", got, err)
	for _, v := range []byte{0, 2, 0xFF} {
		b := bytes.Clone(blob)
		b[0] = v
		got, err := Open(priv, b, info)
		wantUnwrap(t, fmt.Sprintf("Open(version %#x)", v), got, err)
	}
	for bit := 0; bit < len(info)*8; bit++ {
		got, err := Open(priv, blob, flipBit(info, bit))
		wantUnwrap(t, fmt.Sprintf("Open(info bit %d flipped)", bit), got, err)
	}
	for _, other := range [][]byte{nil, info[:len(info)-1], append(bytes.Clone(info), 0)} {
		got, err := Open(priv, blob, other)
		wantUnwrap(t, fmt.Sprintf("Open(info %q)", other), got, err)
	}
	got, err = Open(otherPriv, blob, info)
	wantUnwrap(t, "Open(another private key)", got, err)
	for bit := 0; bit < len(priv)*8; bit++ {
		got, err := Open(flipBit(priv, bit), blob, info)
		// Bits 0–2, 254 and 255 of an X25519 scalar are cleared or set before use (RFC 7748 §5):
		// flipping them gives the same key, which must still open.
		if bit < 3 || bit >= 254 {
			if err != nil {
				t.Fatalf("Open(private bit %d flipped, same clamped scalar) = %v", bit, err)
			}
			continue
		}
		wantUnwrap(t, fmt.Sprintf("Open(private bit %d flipped)", bit), got, err)
	}
	for _, n := range []int{0, 16, 31, 33} {
		got, err := Open(pattern(n, 1), blob, info)
		wantUnwrap(t, fmt.Sprintf("Open(%d-byte private key)", n), got, err)
		if _, err := Seal(pattern(n, 1), []byte("k"), info); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Seal(%d-byte public key) = %v; want ErrInvalidKey", n, err)
		}
	}
	// A low-order point as the public key has no private half: Seal refuses it. As enc, Open
	// refuses it.
	zero := make([]byte, 32)
	if _, err := Seal(zero, []byte("k"), info); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Seal(all-zero public key) = %v; want ErrInvalidKey", err)
	}
	b := bytes.Clone(blob)
	copy(b[1:33], zero)
	got, err = Open(priv, b, info)
	wantUnwrap(t, "Open(all-zero enc)", got, err)
	// A Wrap blob is not a Seal blob, even under a 32-byte key that happens to be both.
	wrapped := mustWrap(t, priv, pattern(KeySize, 9), info)
	got, err = Open(priv, wrapped, info)
	wantUnwrap(t, "Open(Wrap blob)", got, err)
}

func mustBytes(tb testing.TB, k hpke.PrivateKey) []byte {
	tb.Helper()
	b, err := k.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
