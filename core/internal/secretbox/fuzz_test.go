package secretbox

import (
	"bytes"
	"testing"
)

// FuzzOpen: Open never panics on any blob or ad, and opens nothing but the
// blobs Seal made, with their own ad (no forgery, no other context).
// go test -run=^$ -fuzz=FuzzOpen ./internal/secretbox/
//
// It lives in the package so that the seeds can be sealed with fixed nonces:
// fuzz workers rebuild them and must get the same bytes.
func FuzzOpen(f *testing.F) {
	k1 := Key{ID: "k1", Bytes: bytes.Repeat([]byte{0x11}, KeySize)}
	k2 := Key{ID: "k2", Bytes: bytes.Repeat([]byte{0x22}, KeySize)}
	mk := func(active string) *Box {
		b, err := NewBox([]Key{k1, k2}, active)
		if err != nil {
			f.Fatal(err)
		}
		b.rand = bytes.NewReader(bytes.Repeat([]byte{0x5a}, 1<<10)) // fixed nonces, for reproducible seeds only
		return b
	}
	type sealed struct{ blob, ad, pt []byte }
	var genuine []sealed
	for _, box := range []*Box{mk("k1"), mk("k2")} {
		for _, s := range []sealed{
			{ad: []byte("totp-secret/u-1"), pt: []byte("JBSWY3DPEHPK3PXP")},
			{ad: nil, pt: nil},
			{ad: []byte("x"), pt: bytes.Repeat([]byte{0xff}, 40)},
		} {
			blob, err := box.Seal(s.pt, s.ad)
			if err != nil {
				f.Fatal(err)
			}
			s.blob = blob
			genuine = append(genuine, s)
			f.Add(s.blob, s.ad)
		}
	}
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1}, []byte{})
	f.Add([]byte{1, 2, 'k', '1'}, []byte{})
	f.Add([]byte{1, 64}, []byte{})
	b := mk("k2")
	f.Fuzz(func(t *testing.T, blob, ad []byte) {
		pt, err := b.Open(blob, ad)
		_ = b.NeedsRewrap(blob)
		_, _ = KeyID(blob)
		if err != nil {
			if pt != nil {
				t.Fatal("Open returned plaintext with an error")
			}
			return
		}
		for _, g := range genuine {
			if bytes.Equal(blob, g.blob) && bytes.Equal(ad, g.ad) && bytes.Equal(pt, g.pt) {
				return
			}
		}
		t.Fatalf("Open accepted a blob Seal never made: %x (ad %x)", blob, ad)
	})
}
