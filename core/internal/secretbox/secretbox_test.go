package secretbox_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/custos-platform/custos/core/internal/secretbox"
)

func keyBytes(fill byte) []byte { return bytes.Repeat([]byte{fill}, secretbox.KeySize) }

func mustBox(tb testing.TB, active string, keys ...secretbox.Key) *secretbox.Box {
	tb.Helper()
	b, err := secretbox.NewBox(keys, active)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustSeal(tb testing.TB, b *secretbox.Box, pt, ad []byte) []byte {
	tb.Helper()
	blob, err := b.Seal(pt, ad)
	if err != nil {
		tb.Fatal(err)
	}
	return blob
}

// leaks reports whether s holds b in a usual printable form.
func leaks(s string, b []byte) bool {
	for _, form := range []string{string(b), hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b), strings.Trim(fmt.Sprint([]byte(b)), "[]")} { //nolint:staticcheck // QF1010 would print the raw string; fmt's decimal byte list is the leak form checked here
		if strings.Contains(s, form) {
			return true
		}
	}
	return false
}

var (
	k1 = secretbox.Key{ID: "k1", Bytes: keyBytes(0x11)}
	k2 = secretbox.Key{ID: "k2", Bytes: keyBytes(0x22)}
)

func TestSealOpen(t *testing.T) {
	b := mustBox(t, "k1", k1)
	for _, tc := range []struct {
		name   string
		pt, ad []byte
	}{
		{"small", []byte("JBSWY3DPEHPK3PXP"), []byte("totp-secret/user-1")},
		{"empty plaintext", []byte{}, []byte("ad")},
		{"nil plaintext", nil, nil},
		{"no ad", []byte("secret"), nil},
		{"binary", bytes.Repeat([]byte{0, 0xff}, 100), []byte{0}},
		{"64 KiB", bytes.Repeat([]byte("x"), 64<<10), []byte("big")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := mustSeal(t, b, tc.pt, tc.ad)
			if want := 2 + 2 + 12 + len(tc.pt) + 16; len(blob) != want {
				t.Errorf("len(blob) = %d, want %d", len(blob), want)
			}
			if blob[0] != 1 || blob[1] != 2 || string(blob[2:4]) != "k1" {
				t.Errorf("header = %x, want 01 02 'k1'", blob[:4])
			}
			if len(tc.pt) >= 4 && bytes.Contains(blob, tc.pt) {
				t.Error("blob holds the plaintext")
			}
			pt, err := b.Open(blob, tc.ad)
			if err != nil || !bytes.Equal(pt, tc.pt) {
				t.Fatalf("Open = %q, %v", pt, err)
			}
		})
	}
	// A nil and an empty ad are the same (zero bytes).
	blob := mustSeal(t, b, []byte("x"), nil)
	if _, err := b.Open(blob, []byte{}); err != nil {
		t.Errorf("Open(nil-ad blob, empty ad) = %v", err)
	}
}

func TestNoncesUnique(t *testing.T) {
	b := mustBox(t, "k1", k1)
	seen := map[string]bool{}
	for range 10000 {
		blob := mustSeal(t, b, []byte("same"), []byte("same"))
		nonce := string(blob[4:16])
		if seen[nonce] {
			t.Fatal("repeated nonce")
		}
		seen[nonce] = true
	}
}

func TestTamper(t *testing.T) {
	b := mustBox(t, "k1", k1)
	pt, ad := []byte("tenant secret 0123456789"), []byte("tenant-secret/t-1")
	blob := mustSeal(t, b, pt, ad)

	t.Run("every bit of the blob", func(t *testing.T) {
		for i := range len(blob) * 8 {
			bad := bytes.Clone(blob)
			bad[i/8] ^= 1 << (i % 8)
			if got, err := b.Open(bad, ad); !errors.Is(err, secretbox.ErrOpen) || got != nil {
				t.Fatalf("Open(bit %d flipped) = %q, %v, want ErrOpen", i, got, err)
			}
		}
	})
	t.Run("every bit of the ad", func(t *testing.T) {
		for i := range len(ad) * 8 {
			bad := bytes.Clone(ad)
			bad[i/8] ^= 1 << (i % 8)
			if _, err := b.Open(blob, bad); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open(ad bit %d flipped) = %v, want ErrOpen", i, err)
			}
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(blob) {
			if _, err := b.Open(blob[:n], ad); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open(first %d bytes) = %v, want ErrOpen", n, err)
			}
		}
	})
	for _, tc := range []struct {
		name     string
		blob, ad []byte
	}{
		{"nil blob", nil, ad},
		{"appended byte", append(bytes.Clone(blob), 0), ad},
		{"no ad", blob, nil},
		{"ad extended", blob, append(bytes.Clone(ad), 'x')},
		{"ad truncated", blob, ad[:len(ad)-1]},
		{"other row's ad", blob, []byte("tenant-secret/t-2")},
		{"version 0", append([]byte{0}, blob[1:]...), ad},
		{"version 2", append([]byte{2}, blob[1:]...), ad},
		{"id length 0", append([]byte{1, 0}, blob[2:]...), ad},
		{"id length 255", append([]byte{1, 255}, blob[2:]...), ad},
		{"id moved into ad", append([]byte{1, 1, 'k'}, blob[4:]...), append([]byte("1"), ad...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.Open(tc.blob, tc.ad); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open(%s) = %v, want ErrOpen", tc.name, err)
			}
		})
	}
	// A key of the same id but other bytes cannot open it.
	impostor := mustBox(t, "k1", secretbox.Key{ID: "k1", Bytes: keyBytes(0x99)})
	if _, err := impostor.Open(blob, ad); !errors.Is(err, secretbox.ErrOpen) || errors.Is(err, secretbox.ErrUnknownKey) {
		t.Fatalf("Open(other key, same id) = %v, want ErrOpen (not ErrUnknownKey)", err)
	}
}

func TestRotation(t *testing.T) {
	old := mustBox(t, "k1", k1)
	ad := []byte("signing-key/1")
	blob := mustSeal(t, old, []byte("old secret"), ad)
	if old.NeedsRewrap(blob) {
		t.Error("NeedsRewrap(blob of the active key) = true")
	}

	// Rotate: k2 seals, k1 still opens.
	both := mustBox(t, "k2", k1, k2)
	if pt, err := both.Open(blob, ad); err != nil || string(pt) != "old secret" {
		t.Fatalf("Open(old blob after rotation) = %q, %v", pt, err)
	}
	if !both.NeedsRewrap(blob) {
		t.Error("NeedsRewrap(blob of the previous key) = false")
	}
	fresh := mustSeal(t, both, []byte("new secret"), ad)
	if id, err := secretbox.KeyID(fresh); err != nil || id != "k2" || both.NeedsRewrap(fresh) {
		t.Errorf("new blob: KeyID = %q, %v; NeedsRewrap = %v", id, err, both.NeedsRewrap(fresh))
	}
	moved, err := both.Rewrap(blob, ad)
	if err != nil || both.NeedsRewrap(moved) {
		t.Fatalf("Rewrap = %v, NeedsRewrap after = %v", err, both.NeedsRewrap(moved))
	}
	if _, err := both.Rewrap(blob, []byte("wrong ad")); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("Rewrap(wrong ad) = %v, want ErrOpen", err)
	}

	// Retire k1: what it sealed no longer opens, and the error names it.
	newOnly := mustBox(t, "k2", k2)
	_, err = newOnly.Open(blob, ad)
	if !errors.Is(err, secretbox.ErrUnknownKey) || !errors.Is(err, secretbox.ErrOpen) || !strings.Contains(err.Error(), `"k1"`) {
		t.Fatalf("Open(blob of a retired key) = %v, want ErrUnknownKey naming k1", err)
	}
	if pt, err := newOnly.Open(moved, ad); err != nil || string(pt) != "old secret" {
		t.Fatalf("Open(rewrapped blob) = %q, %v", pt, err)
	}
	if newOnly.NeedsRewrap([]byte{1}) || newOnly.NeedsRewrap(nil) {
		t.Error("NeedsRewrap(malformed) = true, want false")
	}
}

func TestParseKeys(t *testing.T) {
	raw1, raw2 := keyBytes(0x11), bytes.Repeat([]byte{0xfb, 0xff}, 16) // 0xfb 0xff exercises + / vs - _
	std1, std2 := base64.StdEncoding.EncodeToString(raw1), base64.StdEncoding.EncodeToString(raw2)
	url2 := base64.RawURLEncoding.EncodeToString(raw2)
	tests := []struct {
		name  string
		value string
		want  []secretbox.Key
	}{
		{"one", "k1:" + std1, []secretbox.Key{{ID: "k1", Bytes: raw1}}},
		{"two", "k1:" + std1 + ",k2:" + std2, []secretbox.Key{{ID: "k1", Bytes: raw1}, {ID: "k2", Bytes: raw2}}},
		{"url-safe unpadded", "2026-01.a_b:" + url2, []secretbox.Key{{ID: "2026-01.a_b", Bytes: raw2}}},
		{"whitespace and trailing newline", " k1 : " + std1 + " ,\n", []secretbox.Key{{ID: "k1", Bytes: raw1}}},
		{"empty entries", ",,k1:" + std1 + ",,", []secretbox.Key{{ID: "k1", Bytes: raw1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := secretbox.ParseKeys(tc.value)
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("ParseKeys = %v, %v, want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i].ID != tc.want[i].ID || !bytes.Equal(got[i].Bytes, tc.want[i].Bytes) {
					t.Errorf("key %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
	short := base64.StdEncoding.EncodeToString(raw1[:31])
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	bad := []struct {
		name, value, mention string
	}{
		{"empty", "", "no keys"},
		{"only commas", " , ,", "no keys"},
		{"bare key", std1, "#1"},
		{"bad id", "k 1:" + std1, "#1"},
		{"id too long", strings.Repeat("a", 65) + ":" + std1, "#1"},
		{"empty id", ":" + std1, "#1"},
		{"second entry bad", "k1:" + std1 + ",k2", "#2"},
		{"duplicate", "k1:" + std1 + ",k1:" + std2, `"k1"`},
		{"short key", "k1:" + short, `"k1"`},
		{"long key", "k1:" + base64.StdEncoding.EncodeToString(append(raw1, 1)), `"k1"`},
		{"zero key", "k1:" + zero, "zeros"},
		{"not base64", "k1:" + strings.Repeat("!", 44), "not base64"},
		{"hex", "k1:" + hex.EncodeToString(raw1), `"k1"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := secretbox.ParseKeys(tc.value)
			if !errors.Is(err, secretbox.ErrInvalidKeys) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("ParseKeys(%s) = %v, want ErrInvalidKeys mentioning %s", tc.name, err, tc.mention)
			}
			for _, k := range [][]byte{raw1, raw2, raw1[:31]} {
				if leaks(err.Error(), k) {
					t.Errorf("error %q holds key material", err)
				}
			}
			if strings.Contains(err.Error(), std1) || strings.Contains(err.Error(), short) {
				t.Errorf("error %q quotes the encoded key", err)
			}
		})
	}
}

func TestNewBox(t *testing.T) {
	tests := []struct {
		name   string
		keys   []secretbox.Key
		active string
	}{
		{"no keys", nil, ""},
		{"two keys, no active", []secretbox.Key{k1, k2}, ""},
		{"unknown active", []secretbox.Key{k1, k2}, "k3"},
		{"malformed active", []secretbox.Key{k1}, "k 1"},
		{"bad id", []secretbox.Key{{ID: "", Bytes: keyBytes(1)}}, ""},
		{"short key", []secretbox.Key{{ID: "k1", Bytes: keyBytes(1)[:16]}}, ""},
		{"zero key", []secretbox.Key{{ID: "k1", Bytes: make([]byte, 32)}}, ""},
		{"duplicate", []secretbox.Key{k1, {ID: "k1", Bytes: keyBytes(3)}}, "k1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := secretbox.NewBox(tc.keys, tc.active)
			if !errors.Is(err, secretbox.ErrInvalidKeys) {
				t.Fatalf("NewBox(%s) = %v, want ErrInvalidKeys", tc.name, err)
			}
			for _, k := range tc.keys {
				if len(k.Bytes) > 0 && leaks(err.Error(), k.Bytes) {
					t.Errorf("error %q holds key material", err)
				}
			}
		})
	}
	b := mustBox(t, "k2", k1, k2)
	if b.ActiveID() != "k2" || strings.Join(b.IDs(), ",") != "k1,k2" {
		t.Errorf("ActiveID, IDs = %s, %v", b.ActiveID(), b.IDs())
	}
	// The box keeps no reference to the caller's key bytes.
	mine := secretbox.Key{ID: "m", Bytes: keyBytes(0x33)}
	mb := mustBox(t, "", mine)
	blob := mustSeal(t, mb, []byte("x"), nil)
	clear(mine.Bytes)
	if _, err := mb.Open(blob, nil); err != nil {
		t.Errorf("Open after the caller cleared its key: %v", err)
	}
}

func TestNoKeyMaterialInOutput(t *testing.T) {
	b := mustBox(t, "k2", k1, k2)
	for _, v := range []any{k1, &k1, []secretbox.Key{k1, k2}, b, *b} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d", "%q"} {
			out := fmt.Sprintf(verb, v)
			if leaks(out, k1.Bytes) || leaks(out, k2.Bytes) {
				t.Errorf("Sprintf(%s, %T) = %q leaks", verb, v, out)
			}
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("keys", "k", k1)
	if leaks(buf.String(), k1.Bytes) {
		t.Errorf("slog output %q leaks", buf.String())
	}
}

func TestConcurrentUse(t *testing.T) {
	b := mustBox(t, "k2", k1, k2)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ad := []byte{byte(g)}
			for range 200 {
				blob, err := b.Seal([]byte("concurrent"), ad)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := b.Open(blob, ad); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
