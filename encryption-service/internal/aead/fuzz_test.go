package aead

import (
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

// fuzzPlaintext is what every genuine seed ciphertext decrypts to: any other successful
// decryption found by the fuzzer is a forgery.
const fuzzPlaintext = "fuzz seed plaintext"

func fuzzAlg(i uint8) string { return Algorithms()[int(i)%len(Algorithms())] }

// FuzzMetadataCheck feeds arbitrary metadata to Check: it must never panic, must refuse with
// ErrMetadata, must accept exactly the algorithm's layout, and what it refuses Decrypt must refuse
// with the same error.
func FuzzMetadataCheck(f *testing.F) {
	for i, alg := range Algorithms() {
		_, meta := mustEncrypt(f, mustNew(f, alg, testKey(f, alg)), nil, nil)
		f.Add(uint8(i), meta.FormatVersion, meta.Nonce, meta.EncryptedKey)
	}
	f.Add(uint8(0), int32(0), []byte{}, []byte{})
	f.Add(uint8(1), int32(2), make([]byte, 24), []byte(nil))
	f.Add(uint8(2), int32(1), make([]byte, 12), make([]byte, 383))
	f.Add(uint8(0), int32(1), make([]byte, 12), make([]byte, 1))
	f.Fuzz(func(t *testing.T, algIndex uint8, version int32, nonce, key []byte) {
		alg := fuzzAlg(algIndex)
		meta := Metadata{FormatVersion: version, Nonce: nonce, EncryptedKey: key}
		nonceSize, hasKey, _ := layout(alg)
		wantOK := version == 1 && len(nonce) == nonceSize && (hasKey && len(key) == rsaSize || !hasKey && len(key) == 0)
		err := meta.Check(alg)
		if (err == nil) != wantOK {
			t.Fatalf("Check(%s, version %d, nonce %d bytes, key %d bytes) = %v; want ok %v", alg, version, len(nonce), len(key), err, wantOK)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, ErrMetadata) {
			t.Fatalf("Check = %v; want ErrMetadata", err)
		}
		_, derr := mustNew(t, alg, testKey(t, alg)).Decrypt(make([]byte, 32), meta, nil)
		if derr == nil || derr.Error() != err.Error() {
			t.Fatalf("Decrypt = %v; want Check's error %v", derr, err)
		}
	})
}

// FuzzDecrypt opens arbitrary ciphertext, nonce, encrypted key and associated data under fixed
// keys: it must never panic, must fail with ErrMetadata or ErrDecrypt, and may succeed only on a
// genuine seed.
func FuzzDecrypt(f *testing.F) {
	var ciphers []Cipher
	for _, alg := range Algorithms() {
		ciphers = append(ciphers, mustNew(f, alg, testKey(f, alg)))
	}
	for i, c := range ciphers {
		ad := AssociatedData("tenant", "context", "version", c.Algorithm())
		ct, meta := mustEncrypt(f, c, []byte(fuzzPlaintext), ad)
		f.Add(uint8(i), ct, meta.Nonce, meta.EncryptedKey, ad)
		f.Add(uint8(i), ct[:tagSize-1], meta.Nonce, meta.EncryptedKey, ad)
		f.Add(uint8(i), []byte{}, []byte{}, []byte{}, []byte{})
	}
	f.Fuzz(func(t *testing.T, algIndex uint8, ciphertext, nonce, encryptedKey, ad []byte) {
		c := ciphers[int(algIndex)%len(ciphers)]
		meta := Metadata{FormatVersion: 1, Nonce: nonce, EncryptedKey: encryptedKey}
		got, err := c.Decrypt(ciphertext, meta, ad)
		switch {
		case err == nil:
			if string(got) != fuzzPlaintext {
				t.Fatalf("%s Decrypt accepted a forgery: %q", c.Algorithm(), got)
			}
		case errors.Is(err, ErrMetadata), errors.Is(err, ErrDecrypt):
			if got != nil {
				t.Fatalf("%s Decrypt returned %d bytes with its error", c.Algorithm(), len(got))
			}
		default:
			t.Fatalf("%s Decrypt = %v; want ErrMetadata or ErrDecrypt", c.Algorithm(), err)
		}
	})
}

// TestFuzzSeedCorpus keeps the committed seeds meaningful: each "genuine" FuzzDecrypt seed must
// still decrypt under the fixed test keys, so the fuzzer starts from real ciphertexts.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecrypt")
	if *writeFuzzSeeds {
		writeDecryptSeeds(t, dir)
	}
	genuine := 0
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read seed corpus: %v", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "genuine-") {
			continue
		}
		vals := readCorpusFile(t, filepath.Join(dir, e.Name()))
		alg := fuzzAlg(vals[0].(byte))
		ct, nonce, ek, ad := vals[1].([]byte), vals[2].([]byte), vals[3].([]byte), vals[4].([]byte)
		got, err := mustNew(t, alg, testKey(t, alg)).Decrypt(ct, Metadata{FormatVersion: 1, Nonce: nonce, EncryptedKey: ek}, ad)
		if err != nil || string(got) != fuzzPlaintext {
			t.Errorf("seed %s: Decrypt = %q, %v", e.Name(), got, err)
		}
		genuine++
	}
	if genuine != len(Algorithms()) {
		t.Errorf("%d genuine FuzzDecrypt seeds, want one per algorithm", genuine)
	}
}

func writeDecryptSeeds(t *testing.T, dir string) {
	for i, alg := range Algorithms() {
		c := mustNew(t, alg, testKey(t, alg))
		ad := AssociatedData("tenant", "context", "version", alg)
		ct, meta := mustEncrypt(t, c, []byte(fuzzPlaintext), ad)
		name := strings.ToLower(alg)
		ek := meta.EncryptedKey
		if ek == nil {
			ek = []byte{}
		}
		writeCorpusFile(t, dir, "genuine-"+name, byte(i), ct, meta.Nonce, ek, ad)
		writeCorpusFile(t, dir, "flipped-tag-"+name, byte(i), flipBit(ct, len(ct)*8-1), meta.Nonce, ek, ad)
		writeCorpusFile(t, dir, "short-nonce-"+name, byte(i), ct, meta.Nonce[:len(meta.Nonce)-1], ek, ad)
		writeCorpusFile(t, dir, "tag-only-"+name, byte(i), ct[len(ct)-tagSize:], meta.Nonce, ek, ad)
		if alg == RSAOAEP3072SHA256 {
			writeCorpusFile(t, dir, "short-key-"+name, byte(i), ct, meta.Nonce, ek[1:], ad)
			writeCorpusFile(t, dir, "other-ad-"+name, byte(i), ct, meta.Nonce, ek, ad[:len(ad)-1])
		}
	}
}

// writeCorpusFile writes vals in the "go test fuzz v1" encoding the fuzzer reads.
func writeCorpusFile(tb testing.TB, dir, name string, vals ...any) {
	tb.Helper()
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
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

// readCorpusFile reads the byte, []byte and string values of a "go test fuzz v1" file.
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
		case "byte":
			r := []rune(s)
			if len(r) != 1 || r[0] > 0xFF {
				tb.Fatalf("%s: bad byte %q", path, lit)
			}
			out = append(out, byte(r[0]))
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
