package keywrap

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// writeFuzzSeeds regenerates the committed seed corpora under testdata/fuzz (after a format
// change): go test -run TestFuzzSeedCorpus -write-fuzz-seeds
var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite the committed fuzz seed corpora")

// The fixed keys of the fuzz targets, and what every genuine seed holds.
var (
	fuzzKEK     = pattern(KeySize, 0x40)
	fuzzPrivate = pattern(KeySize, 0x60)
)

const fuzzSecret = "fuzz seed key material"

func fuzzPublic(tb testing.TB) []byte {
	tb.Helper()
	_, pub, err := NewSealingKey(bytes.NewReader(fuzzPrivate))
	if err != nil {
		tb.Fatal(err)
	}
	return pub
}

// FuzzUnwrap: arbitrary blobs and associated data must give ErrUnwrap, never a panic, and may
// succeed only on a genuine seed.
func FuzzUnwrap(f *testing.F) {
	ad := []byte("fuzz ad")
	blob := mustWrap(f, fuzzKEK, []byte(fuzzSecret), ad)
	f.Add(blob, ad)
	f.Add(blob[:wrapOverhead-1], ad)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, blob, ad []byte) {
		got, err := Unwrap(fuzzKEK, blob, ad)
		checkOpened(t, "Unwrap", got, err)
	})
}

// FuzzOpen: arbitrary blobs and info must give ErrUnwrap, never a panic, and may succeed only on a
// genuine seed.
func FuzzOpen(f *testing.F) {
	info := []byte("fuzz info")
	blob := mustSeal(f, fuzzPublic(f), []byte(fuzzSecret), info)
	f.Add(blob, info)
	f.Add(blob[:sealOverhead-1], info)
	f.Add(append([]byte{1}, make([]byte, sealOverhead)...), info) // low-order enc
	f.Fuzz(func(t *testing.T, blob, info []byte) {
		got, err := Open(fuzzPrivate, blob, info)
		checkOpened(t, "Open", got, err)
	})
}

func checkOpened(t *testing.T, what string, got []byte, err error) {
	t.Helper()
	switch {
	case err == nil:
		if string(got) != fuzzSecret {
			t.Fatalf("%s accepted a forgery: %x", what, got)
		}
	case !errors.Is(err, ErrUnwrap) || got != nil:
		t.Fatalf("%s = %x, %v; want nil, ErrUnwrap", what, got, err)
	}
}

// FuzzParseMasterKey: any string either parses to 32 bytes whose base64, in one of the four
// spellings, is the input, or fails with ErrInvalidMasterKey without echoing the input.
func FuzzParseMasterKey(f *testing.F) {
	key := bytes.Repeat([]byte{0xFB, 0xEF, 0xBE}, 11)[:KeySize]
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		f.Add(enc.EncodeToString(key))
	}
	f.Add("")
	f.Add(strings.Repeat("A", 42) + "B=")
	f.Add("+" + base64.RawURLEncoding.EncodeToString(key)[1:])
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseMasterKey(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidMasterKey) || got != nil {
				t.Fatalf("ParseMasterKey = %x, %v; want nil, ErrInvalidMasterKey", got, err)
			}
			// Every message is fixed text plus numbers: a 12-character run of base64 (no space)
			// cannot appear in it unless it was copied from the input.
			if len(s) >= 12 && !strings.ContainsAny(s, " ") && strings.Contains(err.Error(), s) {
				t.Fatalf("ParseMasterKey error %q echoes the input", err)
			}
			return
		}
		if len(got) != KeySize {
			t.Fatalf("ParseMasterKey = %d bytes", len(got))
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if enc.EncodeToString(got) == s {
				return
			}
		}
		t.Fatalf("ParseMasterKey accepted a non-canonical spelling of %x", got)
	})
}

// TestFuzzSeedCorpus keeps the committed seeds meaningful: the "genuine" seeds must still unwrap
// and open under the fixed keys, so the fuzzer starts from real blobs.
func TestFuzzSeedCorpus(t *testing.T) {
	if *writeFuzzSeeds {
		writeSeeds(t)
	}
	for target, open := range map[string]func(blob, ad []byte) ([]byte, error){
		"FuzzUnwrap": func(blob, ad []byte) ([]byte, error) { return Unwrap(fuzzKEK, blob, ad) },
		"FuzzOpen":   func(blob, info []byte) ([]byte, error) { return Open(fuzzPrivate, blob, info) },
	} {
		vals := readCorpusFile(t, filepath.Join("testdata", "fuzz", target, "genuine"))
		got, err := open(vals[0].([]byte), vals[1].([]byte))
		if err != nil || string(got) != fuzzSecret {
			t.Errorf("%s genuine seed: %q, %v", target, got, err)
		}
	}
}

func writeSeeds(t *testing.T) {
	dir := func(target string) string { return filepath.Join("testdata", "fuzz", target) }
	ad := []byte("fuzz ad")
	blob := mustWrap(t, fuzzKEK, []byte(fuzzSecret), ad)
	writeCorpusFile(t, dir("FuzzUnwrap"), "genuine", blob, ad)
	writeCorpusFile(t, dir("FuzzUnwrap"), "flipped-tag", flipBit(blob, len(blob)*8-1), ad)
	writeCorpusFile(t, dir("FuzzUnwrap"), "version-2", append([]byte{2}, blob[1:]...), ad)
	writeCorpusFile(t, dir("FuzzUnwrap"), "one-short", blob[:wrapOverhead-1], ad)
	writeCorpusFile(t, dir("FuzzUnwrap"), "empty-ad", mustWrap(t, fuzzKEK, []byte(fuzzSecret), nil), []byte{})

	info := []byte("fuzz info")
	sealed := mustSeal(t, fuzzPublic(t), []byte(fuzzSecret), info)
	writeCorpusFile(t, dir("FuzzOpen"), "genuine", sealed, info)
	writeCorpusFile(t, dir("FuzzOpen"), "flipped-enc", flipBit(sealed, 8), info)
	writeCorpusFile(t, dir("FuzzOpen"), "low-order-enc", append(append([]byte{1}, make([]byte, encSize)...), sealed[1+encSize:]...), info)
	writeCorpusFile(t, dir("FuzzOpen"), "one-short", sealed[:sealOverhead-1], info)
	writeCorpusFile(t, dir("FuzzOpen"), "wrap-blob", blob, info)

	key := bytes.Repeat([]byte{0xFB, 0xEF, 0xBE}, 11)[:KeySize]
	for name, s := range map[string]string{
		"std-padded":       base64.StdEncoding.EncodeToString(key),
		"url-raw":          base64.RawURLEncoding.EncodeToString(key),
		"mixed-alphabets":  "+" + base64.RawURLEncoding.EncodeToString(key)[1:],
		"trailing-bits":    strings.Repeat("A", 42) + "B=",
		"inner-padding":    strings.Repeat("A", 20) + "=" + strings.Repeat("A", 22),
		"too-much-padding": strings.Repeat("A", 43) + "==",
		"hex":              fmt.Sprintf("%x", key),
		"newline":          base64.StdEncoding.EncodeToString(key) + "\n",
		"non-ascii":        strings.Repeat("A", 42) + "é",
	} {
		writeCorpusFile(t, dir("FuzzParseMasterKey"), name, s)
	}
}

// writeCorpusFile writes vals in the "go test fuzz v1" encoding the fuzzer reads.
func writeCorpusFile(tb testing.TB, dir, name string, vals ...any) {
	tb.Helper()
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		default:
			tb.Fatalf("writeCorpusFile: unsupported %T", v)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// readCorpusFile reads the []byte and string values of a "go test fuzz v1" file.
func readCorpusFile(tb testing.TB, path string) []any {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		tb.Fatalf("%s: not a fuzz corpus file", path)
	}
	var out []any
	for _, line := range lines[1:] {
		typ, lit, ok := strings.Cut(strings.TrimSuffix(line, ")"), "(")
		if !ok {
			tb.Fatalf("%s: bad line %q", path, line)
		}
		s, err := strconv.Unquote(lit)
		if err != nil {
			tb.Fatalf("%s: bad literal %q: %v", path, lit, err)
		}
		switch typ {
		case "[]byte":
			out = append(out, []byte(s))
		case "string":
			out = append(out, s)
		default:
			tb.Fatalf("%s: unsupported type %q", path, typ)
		}
	}
	return out
}
