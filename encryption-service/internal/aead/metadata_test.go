package aead

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

func b64(n int, fill byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, n))
}

func TestParseMetadata(t *testing.T) {
	nonce12, nonce24, key384 := b64(12, 0xFB), b64(24, 0xFB), b64(384, 0xFB) // 0xFB encodes to "+/"-rich base64
	valid := map[string]map[string]any{
		AES256GCM:         {"formatVersion": 1.0, "nonce": nonce12},
		XChaCha20Poly1305: {"formatVersion": 1.0, "nonce": nonce24},
		RSAOAEP3072SHA256: {"formatVersion": 1.0, "nonce": nonce12, "encryptedKey": key384},
	}
	with := func(alg string, k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range valid[alg] {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	without := func(alg string, k string) map[string]any {
		m := with(alg, k, nil)
		delete(m, k)
		return m
	}

	for _, tc := range []struct {
		name  string
		alg   string
		in    map[string]any
		field string // named in the error; "" means the input is valid
	}{
		{"AES valid", AES256GCM, valid[AES256GCM], ""},
		{"XChaCha valid", XChaCha20Poly1305, valid[XChaCha20Poly1305], ""},
		{"RSA valid", RSAOAEP3072SHA256, valid[RSAOAEP3072SHA256], ""},
		{"formatVersion int", AES256GCM, with(AES256GCM, "formatVersion", 1), ""},
		{"formatVersion int64", AES256GCM, with(AES256GCM, "formatVersion", int64(1)), ""},
		{"formatVersion json.Number", AES256GCM, with(AES256GCM, "formatVersion", json.Number("1")), ""},

		{"nil map", AES256GCM, nil, "formatVersion: missing"},
		{"empty map", AES256GCM, map[string]any{}, "formatVersion: missing"},
		{"formatVersion missing", AES256GCM, without(AES256GCM, "formatVersion"), "formatVersion: missing"},
		{"formatVersion string", AES256GCM, with(AES256GCM, "formatVersion", "1"), "formatVersion"},
		{"formatVersion 2", AES256GCM, with(AES256GCM, "formatVersion", 2.0), "formatVersion"},
		{"formatVersion 0", AES256GCM, with(AES256GCM, "formatVersion", 0.0), "formatVersion"},
		{"formatVersion 1.5", AES256GCM, with(AES256GCM, "formatVersion", 1.5), "formatVersion"},
		{"formatVersion -1", AES256GCM, with(AES256GCM, "formatVersion", -1), "formatVersion"},
		{"formatVersion true", AES256GCM, with(AES256GCM, "formatVersion", true), "formatVersion"},
		{"formatVersion null", AES256GCM, with(AES256GCM, "formatVersion", nil), "formatVersion"},
		{"formatVersion json.Number 2", AES256GCM, with(AES256GCM, "formatVersion", json.Number("2")), "formatVersion"},
		{"formatVersion json.Number junk", AES256GCM, with(AES256GCM, "formatVersion", json.Number("1x")), "formatVersion"},

		{"nonce missing", AES256GCM, without(AES256GCM, "nonce"), "nonce: missing"},
		{"nonce null", AES256GCM, with(AES256GCM, "nonce", nil), "nonce: want a base64 string"},
		{"nonce number", AES256GCM, with(AES256GCM, "nonce", 12.0), "nonce: want a base64 string"},
		{"nonce bytes", AES256GCM, with(AES256GCM, "nonce", make([]byte, 12)), "nonce: want a base64 string"},
		{"nonce list", AES256GCM, with(AES256GCM, "nonce", []any{"a"}), "nonce: want a base64 string"},
		{"nonce object", AES256GCM, with(AES256GCM, "nonce", map[string]any{}), "nonce: want a base64 string"},
		{"nonce empty", AES256GCM, with(AES256GCM, "nonce", ""), "nonce: want 12 bytes"},
		{"nonce 11 bytes", AES256GCM, with(AES256GCM, "nonce", b64(11, 1)), "nonce: want 12 bytes"},
		{"nonce 13 bytes", AES256GCM, with(AES256GCM, "nonce", b64(13, 1)), "nonce: want 12 bytes"},
		{"nonce 24 bytes for AES", AES256GCM, with(AES256GCM, "nonce", nonce24), "nonce: want 12 bytes"},
		{"nonce 12 bytes for XChaCha", XChaCha20Poly1305, with(XChaCha20Poly1305, "nonce", nonce12), "nonce: want 24 bytes"},
		{"nonce 23 bytes for XChaCha", XChaCha20Poly1305, with(XChaCha20Poly1305, "nonce", b64(23, 1)), "nonce: want 24 bytes"},
		{"nonce huge", AES256GCM, with(AES256GCM, "nonce", strings.Repeat("A", 1<<20)), "nonce: want 12 bytes"},
		{"nonce URL alphabet", AES256GCM, with(AES256GCM, "nonce", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xFB}, 12))), "nonce: not canonical"},
		{"nonce unpadded 10 bytes", AES256GCM, with(AES256GCM, "nonce", base64.RawStdEncoding.EncodeToString(make([]byte, 10))), "nonce: want 12 bytes"},
		{"nonce non-zero trailing bits", AES256GCM, with(AES256GCM, "nonce", "AAAAAAAAAAAAAAB="), "nonce: not canonical"},
		{"nonce padding inside", AES256GCM, with(AES256GCM, "nonce", "AAAA=AAAAAAAAAAA"), "nonce: not canonical"},
		{"nonce with newline", AES256GCM, with(AES256GCM, "nonce", "AAAAAAAA\nAAAAAAA"), "nonce: not canonical"},
		{"nonce with CR LF", AES256GCM, with(AES256GCM, "nonce", "AAAAAAAAAAAAAA\r\n"), "nonce: not canonical"},
		{"nonce with space", AES256GCM, with(AES256GCM, "nonce", " AAAAAAAAAAAAAAA"), "nonce: not canonical"},
		{"nonce with junk", AES256GCM, with(AES256GCM, "nonce", "AAAAAAAAAAAAAAA*"), "nonce: not canonical"},
		{"nonce 23 bytes, padded", XChaCha20Poly1305, with(XChaCha20Poly1305, "nonce", strings.Repeat("A", 31)+"="), "nonce: want 24 bytes"},

		{"encryptedKey missing", RSAOAEP3072SHA256, without(RSAOAEP3072SHA256, "encryptedKey"), "encryptedKey: missing"},
		{"encryptedKey null", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, "encryptedKey", nil), "encryptedKey: want a base64 string"},
		{"encryptedKey 383 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, "encryptedKey", b64(383, 1)), "encryptedKey: want 384 bytes"},
		{"encryptedKey 385 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, "encryptedKey", b64(385, 1)), "encryptedKey: want 384 bytes"},
		{"encryptedKey 512 bytes", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, "encryptedKey", b64(512, 1)), "encryptedKey: want 384 bytes"},
		{"encryptedKey URL alphabet", RSAOAEP3072SHA256, with(RSAOAEP3072SHA256, "encryptedKey", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xFB}, 384))), "encryptedKey: not canonical"},
		{"encryptedKey for AES", AES256GCM, with(AES256GCM, "encryptedKey", key384), "encryptedKey: not used by AES-256-GCM"},
		{"encryptedKey null for XChaCha", XChaCha20Poly1305, with(XChaCha20Poly1305, "encryptedKey", nil), "encryptedKey: not used by XCHACHA20-POLY1305"},
		{"encryptedKey empty for AES", AES256GCM, with(AES256GCM, "encryptedKey", ""), "encryptedKey: not used"},

		{"unknown field", AES256GCM, with(AES256GCM, "iv", nonce12), `unknown field "iv"`},
		{"field name case", AES256GCM, with(AES256GCM, "Nonce", nonce12), `unknown field "Nonce"`},
		{"empty field name", AES256GCM, with(AES256GCM, "", 1), `unknown field ""`},
		{"two unknown fields name the first in order", AES256GCM, map[string]any{"formatVersion": 1, "nonce": nonce12, "zz": 1, "aa": 1}, `unknown field "aa"`},
		{"unknown beats missing", AES256GCM, map[string]any{"x": 1}, `unknown field "x"`},
		{"long unknown field is shortened", AES256GCM, with(AES256GCM, strings.Repeat("k", 5000), 1), `unknown field "kkkk`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMetadata(tc.alg, tc.in)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ParseMetadata = %v, want success", err)
				}
				nonceSize, hasKey, _ := layout(tc.alg)
				if got.FormatVersion != 1 || len(got.Nonce) != nonceSize || (len(got.EncryptedKey) == rsaSize) != hasKey {
					t.Fatalf("ParseMetadata = {%d, %d, %d}", got.FormatVersion, len(got.Nonce), len(got.EncryptedKey))
				}
				return
			}
			if !errors.Is(err, ErrMetadata) {
				t.Fatalf("ParseMetadata = %+v, %v; want ErrMetadata", got, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("ParseMetadata error = %q, want it to mention %q", err, tc.field)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("ParseMetadata error is %d characters long", len(err.Error()))
			}
			for _, v := range tc.in {
				if s, ok := v.(string); ok && len(s) >= 8 && strings.Contains(err.Error(), s) {
					t.Fatalf("ParseMetadata error %q echoes a value", err)
				}
			}
			if !reflect.DeepEqual(got, Metadata{}) {
				t.Fatalf("ParseMetadata returned %+v with its error", got)
			}
		})
	}

	if _, err := ParseMetadata("AES-128-GCM", valid[AES256GCM]); !errors.Is(err, ErrUnknownAlgorithm) {
		t.Fatalf("ParseMetadata(unknown algorithm) = %v; want ErrUnknownAlgorithm", err)
	}
}

// TestMetadataWireForms checks Map against the decoders the API layer uses: encoding/json (with
// and without UseNumber) and protobuf's Struct.
func TestMetadataWireForms(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(alg, func(t *testing.T) {
			_, meta := mustEncrypt(t, mustNew(t, alg, testKey(t, alg)), []byte("x"), nil)

			js, err := json.Marshal(meta.Map())
			if err != nil {
				t.Fatal(err)
			}
			var plain map[string]any
			if err := json.Unmarshal(js, &plain); err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.UseNumber()
			var numbers map[string]any
			if err := dec.Decode(&numbers); err != nil {
				t.Fatal(err)
			}
			st, err := structpb.NewStruct(meta.Map())
			if err != nil {
				t.Fatalf("structpb.NewStruct(meta.Map()) = %v", err)
			}
			for name, m := range map[string]map[string]any{"Map": meta.Map(), "json": plain, "json UseNumber": numbers, "structpb": st.AsMap()} {
				got, err := ParseMetadata(alg, m)
				if err != nil || !reflect.DeepEqual(got, meta) {
					t.Errorf("ParseMetadata(%s form) = %+v, %v; want %+v", name, got, err, meta)
				}
			}
			if !strings.Contains(string(js), `"formatVersion":1,"nonce":"`) {
				t.Errorf(`JSON = %s, want "formatVersion":1 and a nonce`, js)
			}
			if strings.Contains(string(js), "encryptedKey") != (alg == RSAOAEP3072SHA256) {
				t.Errorf("JSON = %s: encryptedKey must appear for RSA only", js)
			}
		})
	}
}
