package keywrap

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex in test table: %v", err)
	}
	return b
}

func pattern(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func flipBit(b []byte, bit int) []byte {
	out := bytes.Clone(b)
	out[bit/8] ^= 1 << (bit % 8)
	return out
}

func mustWrap(tb testing.TB, kek, plaintext, ad []byte) []byte {
	tb.Helper()
	blob, err := Wrap(kek, plaintext, ad)
	if err != nil {
		tb.Fatalf("Wrap = %v", err)
	}
	return blob
}

func mustSeal(tb testing.TB, public, plaintext, info []byte) []byte {
	tb.Helper()
	blob, err := Seal(public, plaintext, info)
	if err != nil {
		tb.Fatalf("Seal = %v", err)
	}
	return blob
}

// wantUnwrap fails unless err wraps ErrUnwrap and nothing was returned with it.
func wantUnwrap(tb testing.TB, what string, got []byte, err error) {
	tb.Helper()
	if !errors.Is(err, ErrUnwrap) || got != nil {
		tb.Fatalf("%s = %x, %v; want nil, ErrUnwrap", what, got, err)
	}
}

func TestWrapRoundTrip(t *testing.T) {
	kek := pattern(KeySize, 1)
	ad := []byte("custos/es/version-key/v1\x00tenant\x00context\x00version")
	for _, n := range []int{0, 1, 32, 1791, 64 << 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plaintext := pattern(n, 7)
			blob := mustWrap(t, kek, plaintext, ad)
			if len(blob) != 1+12+n+16 || blob[0] != 1 {
				t.Fatalf("blob is %d bytes starting %#x, want %d starting 0x01", len(blob), blob[:1], 1+12+n+16)
			}
			got, err := Unwrap(kek, blob, ad)
			if err != nil || !bytes.Equal(got, plaintext) || got == nil {
				t.Fatalf("Unwrap = %x, %v; want the %d-byte plaintext", got, err, n)
			}
		})
	}
}

// TestWrapTampering alters every bit of the blob, the KEK and the associated data, truncates the
// blob at every length and tries other format versions: each must be ErrUnwrap.
func TestWrapTampering(t *testing.T) {
	kek := pattern(KeySize, 1)
	ad := []byte("where the blob lives")
	secret := pattern(KeySize, 100)
	blob := mustWrap(t, kek, secret, ad)

	for bit := 0; bit < len(blob)*8; bit++ {
		got, err := Unwrap(kek, flipBit(blob, bit), ad)
		wantUnwrap(t, fmt.Sprintf("Unwrap(blob bit %d flipped)", bit), got, err)
	}
	for n := 0; n < len(blob); n++ {
		got, err := Unwrap(kek, blob[:n], ad)
		wantUnwrap(t, fmt.Sprintf("Unwrap(blob[:%d])", n), got, err)
	}
	got, err := Unwrap(kek, append(bytes.Clone(blob), 0), ad)
	wantUnwrap(t, "Unwrap(blob + 1 byte)", got, err)
	for _, v := range []byte{0, 2, 0x81, 0xFF} {
		b := bytes.Clone(blob)
		b[0] = v
		got, err := Unwrap(kek, b, ad)
		wantUnwrap(t, fmt.Sprintf("Unwrap(version %#x)", v), got, err)
	}
	for bit := 0; bit < len(kek)*8; bit++ {
		got, err := Unwrap(flipBit(kek, bit), blob, ad)
		wantUnwrap(t, fmt.Sprintf("Unwrap(kek bit %d flipped)", bit), got, err)
	}
	for bit := 0; bit < len(ad)*8; bit++ {
		got, err := Unwrap(kek, blob, flipBit(ad, bit))
		wantUnwrap(t, fmt.Sprintf("Unwrap(ad bit %d flipped)", bit), got, err)
	}
	for _, other := range [][]byte{nil, ad[:len(ad)-1], append(bytes.Clone(ad), 0), append([]byte{1}, ad...)} {
		got, err := Unwrap(kek, blob, other)
		wantUnwrap(t, fmt.Sprintf("Unwrap(ad %q)", other), got, err)
	}
	for _, n := range []int{0, 16, 31, 33} {
		got, err := Unwrap(pattern(n, 1), blob, ad)
		wantUnwrap(t, fmt.Sprintf("Unwrap(%d-byte kek)", n), got, err)
		if _, err := Wrap(pattern(n, 1), secret, ad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Wrap(%d-byte kek) = %v; want ErrInvalidKey", n, err)
		}
	}
	// A wrong key and an altered tag give the same error, not just the same sentinel.
	_, errKey := Unwrap(pattern(KeySize, 2), blob, ad)
	_, errTag := Unwrap(kek, flipBit(blob, len(blob)*8-1), ad)
	if errKey.Error() != errTag.Error() || errKey.Error() != ErrUnwrap.Error() {
		t.Errorf("wrong key: %q; altered tag: %q; want both %q", errKey, errTag, ErrUnwrap)
	}
}

// TestWrapFormatAsDocumented opens a blob with the standard library alone, following the package
// documentation.
func TestWrapFormatAsDocumented(t *testing.T) {
	kek, ad, secret := pattern(KeySize, 1), []byte("ad"), []byte("key material")
	blob := mustWrap(t, kek, secret, ad)
	block, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(block)
	got, err := gcm.Open(nil, blob[1:13], blob[13:], append([]byte{0x01}, ad...))
	if blob[0] != 0x01 || err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("AES-256-GCM(kek, blob[1:13], 0x01||ad) open = %q, %v", got, err)
	}
}

func TestWrapNoncesAreUnique(t *testing.T) {
	const n = 10000
	kek := pattern(KeySize, 1)
	seen := make(map[string]struct{}, n)
	for i := 0; i < n; i++ {
		blob := mustWrap(t, kek, []byte("same key material"), nil)
		seen[string(blob[1:13])] = struct{}{}
	}
	if len(seen) != n {
		t.Fatalf("%d wraps gave %d distinct nonces", n, len(seen))
	}
}

// TestHKDFPrimitive checks crypto/hkdf, which DeriveClientKEK uses, against RFC 5869 Appendix A.1
// (the basic SHA-256 case).
func TestHKDFPrimitive(t *testing.T) {
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt := mustHex(t, "000102030405060708090a0b0c")
	info := string(mustHex(t, "f0f1f2f3f4f5f6f7f8f9"))
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil || hex.EncodeToString(prk) != "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5" {
		t.Fatalf("Extract = %x, %v", prk, err)
	}
	okm, err := hkdf.Expand(sha256.New, prk, info, 42)
	const want = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
	if err != nil || hex.EncodeToString(okm) != want {
		t.Fatalf("Expand = %x, %v; want %s", okm, err, want)
	}
	if okm, err := hkdf.Key(sha256.New, ikm, salt, info, 42); err != nil || hex.EncodeToString(okm) != want {
		t.Fatalf("Key = %x, %v; want %s", okm, err, want)
	}
}

func TestDeriveClientKEK(t *testing.T) {
	const tenant, context = "3b0d6a62-5e5d-4f0c-9a43-2f1b7a3c2a10", "0f5f1b8e-9d3a-4c55-8f6e-7b2a61c4d9e0"
	master := pattern(KeySize, 0) // 00 01 … 1f

	// Computed independently (Python's hmac/hashlib HKDF, itself checked against RFC 5869 A.1)
	// from the construction in the package documentation; clients that derive KEKs must match it.
	for _, tc := range []struct{ tenant, context, want string }{
		{tenant, context, "448ce0c7e40dea35b960357219c7f93d23c0c9cda12f756bbc0aff4d2cb35d68"},
		{"", "", "1cbb0d4d55ae8c13ba520706f1b97354b5fe8d268aedc2bcb7899e9ac991e354"},
	} {
		got, err := DeriveClientKEK(master, tc.tenant, tc.context)
		if err != nil || hex.EncodeToString(got) != tc.want {
			t.Fatalf("DeriveClientKEK(%q, %q) = %x, %v; want %s", tc.tenant, tc.context, got, err, tc.want)
		}
	}

	base, _ := DeriveClientKEK(master, tenant, context)
	seen := map[string]string{hex.EncodeToString(base): "base"}
	for name, kek := range map[string]func() ([]byte, error){
		"other tenant":  func() ([]byte, error) { return DeriveClientKEK(master, "other", context) },
		"other context": func() ([]byte, error) { return DeriveClientKEK(master, tenant, "other") },
		"swapped":       func() ([]byte, error) { return DeriveClientKEK(master, context, tenant) },
		"split ab|c":    func() ([]byte, error) { return DeriveClientKEK(master, "ab", "c") },
		"split a|bc":    func() ([]byte, error) { return DeriveClientKEK(master, "a", "bc") },
		"other master":  func() ([]byte, error) { return DeriveClientKEK(flipBit(master, 255), tenant, context) },
		"zero master":   func() ([]byte, error) { return DeriveClientKEK(make([]byte, KeySize), tenant, context) },
	} {
		k, err := kek()
		if err != nil || len(k) != KeySize {
			t.Fatalf("%s: DeriveClientKEK = %x, %v", name, k, err)
		}
		if prev, dup := seen[hex.EncodeToString(k)]; dup {
			t.Fatalf("%s gives the same KEK as %s", name, prev)
		}
		seen[hex.EncodeToString(k)] = name
	}

	for _, n := range []int{0, 1, 16, 31, 33, 64} {
		if k, err := DeriveClientKEK(pattern(n, 0), tenant, context); !errors.Is(err, ErrInvalidMasterKey) || k != nil {
			t.Errorf("DeriveClientKEK(%d-byte master key) = %x, %v; want ErrInvalidMasterKey", n, k, err)
		}
	}
	long := strings.Repeat("x", 1<<16)
	if _, err := DeriveClientKEK(master, long, context); err == nil {
		t.Error("DeriveClientKEK(65,536-byte tenant) succeeded")
	}
	if _, err := DeriveClientKEK(master, tenant, long[1:]); err != nil {
		t.Errorf("DeriveClientKEK(65,535-byte context) = %v", err)
	}

	// A KEK derived for one context cannot unwrap another's blob.
	blob := mustWrap(t, base, []byte("sealing private key"), []byte("ad"))
	other, _ := DeriveClientKEK(master, "other", context)
	got, err := Unwrap(other, blob, []byte("ad"))
	wantUnwrap(t, "Unwrap under another context's KEK", got, err)
}

func TestParseMasterKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xFB, 0xEF, 0xBE}, 11)[:KeySize] // base64 full of + and / (or - and _)
	for _, tc := range []struct {
		name string
		in   string
		want string // an error fragment; "" means it parses to key (or to zeros for the zero cases)
	}{
		{"standard, padded", base64.StdEncoding.EncodeToString(key), ""},
		{"standard, unpadded", base64.RawStdEncoding.EncodeToString(key), ""},
		{"URL-safe, padded", base64.URLEncoding.EncodeToString(key), ""},
		{"URL-safe, unpadded", base64.RawURLEncoding.EncodeToString(key), ""},

		{"empty", "", "empty"},
		{"too long", strings.Repeat("A", 65), "longer than 64 characters"},
		{"very long", strings.Repeat("A", 1<<20), "longer than 64 characters"},
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31]), "decodes to 31 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1)), "decodes to 33 bytes"},
		{"16 bytes", base64.RawURLEncoding.EncodeToString(key[:16]), "decodes to 16 bytes"},
		{"64 bytes", base64.RawStdEncoding.EncodeToString(bytes.Repeat(key, 2)), "longer than 64 characters"},
		{"hex instead of base64", hex.EncodeToString(key), "decodes to 48 bytes"},
		{"mixed alphabets", "+" + base64.RawURLEncoding.EncodeToString(key)[1:], "mixes the standard"},
		{"space", " " + base64.RawStdEncoding.EncodeToString(key), "character 1 is not in the base64 alphabet"},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n", "character 45 is not in the base64 alphabet"},
		{"inner newline", base64.StdEncoding.EncodeToString(key)[:20] + "\n" + base64.StdEncoding.EncodeToString(key)[20:], "character 21"},
		{"dot", strings.Repeat("A", 42) + ".=", "character 43"},
		{"non-ASCII", strings.Repeat("A", 42) + "é", "character 43"},
		{"padding inside", strings.Repeat("A", 20) + "=" + strings.Repeat("A", 22), "only at the end"},
		{"too much padding", strings.Repeat("A", 43) + "==", "not canonical"},
		{"padding on an unpadded length", strings.Repeat("A", 44) + "=", "not canonical"},
		{"non-zero trailing bits, padded", strings.Repeat("A", 42) + "B=", "not canonical"},
		{"non-zero trailing bits, unpadded", strings.Repeat("A", 42) + "B", "not canonical"},
		{"only padding", "====", "not canonical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMasterKey(tc.in)
			if tc.want == "" {
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("ParseMasterKey = %x, %v; want %x", got, err, key)
				}
				return
			}
			if !errors.Is(err, ErrInvalidMasterKey) || got != nil {
				t.Fatalf("ParseMasterKey = %x, %v; want ErrInvalidMasterKey", got, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseMasterKey error = %q, want it to say %q", err, tc.want)
			}
			if len(tc.in) >= 8 && strings.Contains(err.Error(), tc.in[:8]) {
				t.Fatalf("ParseMasterKey error %q echoes the input", err)
			}
		})
	}
	if got, err := ParseMasterKey(strings.Repeat("A", 43) + "="); err != nil || !bytes.Equal(got, make([]byte, KeySize)) {
		t.Fatalf("ParseMasterKey(zero key) = %x, %v", got, err)
	}
}
