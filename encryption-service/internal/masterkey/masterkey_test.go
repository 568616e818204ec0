package masterkey_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
)

// testKey returns a recognizable, non-zero 32-byte key.
func testKey(fill byte) []byte { return bytes.Repeat([]byte{fill}, masterkey.KeySize) }

// keyLeaks reports whether s holds b in any of the usual printable forms:
// raw, hex, base64 or fmt's decimal list.
func keyLeaks(s string, b []byte) bool {
	forms := []string{
		string(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.RawStdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		strings.Trim(fmt.Sprint(b), "[]"), //nolint:staticcheck // QF1010 would print the raw string; fmt's decimal byte list is the leak form checked here
	}
	for _, f := range forms {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"kek-2026.01_A", true},
		{strings.Repeat("k", 64), true},
		{"", false},
		{strings.Repeat("k", 65), false},
		{"has space", false},
		{"colon:", false},
		{"comma,", false},
		{"slash/", false},
		{"é", false},
		{"plus+", false},
	}
	for _, tt := range tests {
		if got := masterkey.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestNewKeyring(t *testing.T) {
	t.Parallel()
	k1 := masterkey.Key{ID: "k1", Bytes: testKey(0xa1)}
	k2 := masterkey.Key{ID: "k2", Bytes: testKey(0xb2)}

	kr, err := masterkey.NewKeyring([]masterkey.Key{k1, k2}, "k2")
	if err != nil {
		t.Fatalf("NewKeyring(k1, k2; active k2) = %v", err)
	}
	if a := kr.Active(); a.ID != "k2" || !bytes.Equal(a.Bytes, k2.Bytes) {
		t.Errorf("Active() = %s, want k2", a.ID)
	}
	if kr.ActiveID() != "k2" {
		t.Errorf("ActiveID() = %q, want k2", kr.ActiveID())
	}
	if got, ok := kr.Get("k1"); !ok || !bytes.Equal(got.Bytes, k1.Bytes) {
		t.Errorf("Get(k1) = %v, %v, want k1's bytes", got, ok)
	}
	if _, ok := kr.Get("k3"); ok {
		t.Error("Get(k3) found a key, want none")
	}
	if ids := kr.IDs(); !slices.Equal(ids, []string{"k1", "k2"}) {
		t.Errorf("IDs() = %v, want [k1 k2]", ids)
	}

	// Immutable: neither the caller's slices nor returned copies reach the keyring.
	k1.Bytes[0] = 0
	got, _ := kr.Get("k1")
	clear(got.Bytes)
	kr.IDs()[0] = "changed"
	if again, _ := kr.Get("k1"); !bytes.Equal(again.Bytes, testKey(0xa1)) || kr.IDs()[0] != "k1" {
		t.Error("changing the input or a returned key changed the keyring")
	}

	single, err := masterkey.NewKeyring([]masterkey.Key{k2}, "")
	if err != nil || single.Active().ID != "k2" {
		t.Errorf("NewKeyring(k2; active \"\") = %v, want k2 active", err)
	}
}

func TestNewKeyringErrors(t *testing.T) {
	t.Parallel()
	good := func(id string, fill byte) masterkey.Key { return masterkey.Key{ID: id, Bytes: testKey(fill)} }
	pasted := base64.StdEncoding.EncodeToString(testKey(0xcd)) // a key pasted as an id
	tests := []struct {
		name     string
		keys     []masterkey.Key
		active   string
		wantIn   []string
		wantNot  []string
		leakable []byte
	}{
		{name: "no keys", wantIn: []string{"no master keys"}},
		{name: "empty id", keys: []masterkey.Key{good("k1", 1), good("", 2)}, active: "k1", wantIn: []string{"#2", "malformed id"}},
		{name: "key as id", keys: []masterkey.Key{{ID: pasted, Bytes: testKey(3)}}, wantIn: []string{"#1", "malformed id"},
			wantNot: []string{pasted}},
		{name: "long id", keys: []masterkey.Key{good(strings.Repeat("x", 65), 1)}, wantIn: []string{"#1", "1–64"}},
		{name: "short key", keys: []masterkey.Key{{ID: "k1", Bytes: testKey(5)[:16]}}, wantIn: []string{`"k1"`, "want 32 bytes, got 16"},
			leakable: testKey(5)[:16]},
		{name: "long key", keys: []masterkey.Key{{ID: "k1", Bytes: append(testKey(6), 6)}}, wantIn: []string{`"k1"`, "got 33"}},
		{name: "zero key", keys: []masterkey.Key{{ID: "k1", Bytes: make([]byte, 32)}}, wantIn: []string{`"k1"`, "all zeros"}},
		{name: "duplicate", keys: []masterkey.Key{good("k1", 1), good("k1", 2)}, active: "k1", wantIn: []string{`"k1"`, "more than once"},
			leakable: testKey(2)},
		{name: "no active among several", keys: []masterkey.Key{good("k1", 1), good("k2", 2)}, wantIn: []string{"k1, k2", "no active key id"}},
		{name: "unknown active", keys: []masterkey.Key{good("k1", 1)}, active: "k9", wantIn: []string{`"k9"`, "not among"}},
		{name: "malformed active", keys: []masterkey.Key{good("k1", 1)}, active: pasted, wantIn: []string{"malformed"},
			wantNot: []string{pasted}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, err := masterkey.NewKeyring(tt.keys, tt.active)
			if err == nil {
				t.Fatalf("NewKeyring() = %v, nil; want an error", kr)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("NewKeyring() = %q, want it to mention %q", err, s)
				}
			}
			for _, s := range tt.wantNot {
				if strings.Contains(err.Error(), s) {
					t.Errorf("NewKeyring() = %q, must not contain %q", err, s)
				}
			}
			for _, k := range tt.keys {
				if len(k.Bytes) > 0 && keyLeaks(err.Error(), k.Bytes) {
					t.Errorf("NewKeyring() = %q leaks key %s", err, k.ID)
				}
			}
			if tt.leakable != nil && keyLeaks(err.Error(), tt.leakable) {
				t.Errorf("NewKeyring() = %q leaks key bytes", err)
			}
		})
	}
}

// TestKeysNeverPrint formats keys and keyrings every usual way: no output may
// hold key bytes.
func TestKeysNeverPrint(t *testing.T) {
	t.Parallel()
	b := testKey(0xab)
	k := masterkey.Key{ID: "k1", Bytes: b}
	kr, err := masterkey.NewKeyring([]masterkey.Key{k}, "")
	if err != nil {
		t.Fatal(err)
	}
	env := masterkey.EnvProvider{Value: "k1:" + base64.StdEncoding.EncodeToString(b)}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		for _, v := range []any{k, &k, []masterkey.Key{k}, kr, *kr, env, map[string]masterkey.Key{"k": k}} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		slog.New(h).Info("keys", "key", k, "keyring", kr, "keys", []masterkey.Key{k})
	}
	for _, v := range []any{k, []masterkey.Key{k}, struct{ Keys []masterkey.Key }{[]masterkey.Key{k}}, env} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T) = %v", v, err)
		}
		outputs = append(outputs, string(j))
	}
	// A configuration logged whole goes through json.Marshal.
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "config", struct{ MasterKeys []masterkey.Key }{[]masterkey.Key{k}})
	outputs = append(outputs, logs.String())
	for _, out := range outputs {
		if keyLeaks(out, b) {
			t.Errorf("formatted output %q holds the key bytes", out)
		}
	}
	if !strings.Contains(fmt.Sprint(k), "k1") || !strings.Contains(logs.String(), "k1") {
		t.Errorf("fmt.Sprint(key) = %q, logs %q: want the id shown", fmt.Sprint(k), logs.String())
	}
}
