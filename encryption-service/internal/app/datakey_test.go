package app

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// TestGenerateDataKey: POST /v1/datakey answers a fresh key of the asked length and its encrypted
// copy, which /v1/decrypt turns back into the key; wrappedOnly leaves the key out; a CLIENT context
// needs the client master key; bad lengths and ids are refused naming the field.
func TestGenerateDataKey(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	for _, mode := range []string{"PLATFORM", "CLIENT"} {
		t.Run(mode, func(t *testing.T) {
			h := map[string]string(ten)
			if mode == "CLIENT" {
				h = ten.with("X-Master-Key", clientKey)
			}
			id := r.must(200, "POST", "/v1/encryptions", h, map[string]string{"keyMode": mode})["encryptionId"].(string)
			seen := map[string]bool{}
			for _, n := range []int{0, 16, 24, 32} {
				got := r.must(200, "POST", "/v1/datakey", h, map[string]any{"encryptionId": id, "keyBytes": n})
				key, _ := got["dataKey"].(string)
				raw, err := base64.StdEncoding.DecodeString(key)
				want := n
				if n == 0 {
					want = 32
				}
				if err != nil || len(raw) != want {
					t.Fatalf("keyBytes %d: dataKey %q decodes to %d bytes (%v), want %d", n, key, len(raw), err, want)
				}
				if seen[key] {
					t.Fatalf("keyBytes %d: the same key twice", n)
				}
				seen[key] = true
				if got["encryptionId"] != id || got["algorithm"] != "AES-256-GCM" || got["cipherText"] == "" {
					t.Errorf("datakey answer = %v, want the context, its algorithm and a cipherText", got)
				}
				if strings.Contains(got["cipherText"].(string), key) {
					t.Errorf("the encrypted copy contains the key")
				}
				dec := r.must(200, "POST", "/v1/decrypt", h, map[string]any{
					"encryptionId": id, "cipherText": got["cipherText"], "encryptionVersionId": got["encryptionVersionId"], "metadata": got["metadata"],
				})
				if dec["data"] != key {
					t.Errorf("keyBytes %d: decrypt of the copy = %q, want the key", n, dec["data"])
				}
			}

			wrapped := r.must(200, "POST", "/v1/datakey", h, map[string]any{"encryptionId": id, "wrappedOnly": true})
			if k, _ := wrapped["dataKey"].(string); k != "" {
				t.Errorf("wrappedOnly answer carries the key")
			}
			dec := r.must(200, "POST", "/v1/decrypt", h, map[string]any{
				"encryptionId": id, "cipherText": wrapped["cipherText"], "encryptionVersionId": wrapped["encryptionVersionId"], "metadata": wrapped["metadata"],
			})
			if raw, err := base64.StdEncoding.DecodeString(dec["data"].(string)); err != nil || len(raw) != 32 {
				t.Errorf("decrypt of a wrapped-only copy = %q, want base64 of a 32-byte key", dec["data"])
			}

			for _, tt := range []struct {
				name    string
				headers map[string]string
				body    string
				code    int
				mention string
			}{
				{"bad length", h, `{"encryptionId":"` + id + `","keyBytes":20}`, 400, "keyBytes"},
				{"bad id", h, `{"encryptionId":"nope"}`, 400, "encryptionId"},
				{"no tenant", nil, `{"encryptionId":"` + id + `"}`, 401, ""},
			} {
				code, got := r.call("POST", "/v1/datakey", tt.headers, tt.body)
				if msg, _ := got["message"].(string); code != tt.code || !strings.Contains(msg, tt.mention) {
					t.Errorf("%s: POST /v1/datakey = %d %v, want %d mentioning %q", tt.name, code, got, tt.code, tt.mention)
				}
			}
			if mode == "CLIENT" {
				code, got := r.call("POST", "/v1/datakey", ten, `{"encryptionId":"`+id+`"}`)
				if msg, _ := got["message"].(string); code != 401 || !strings.Contains(msg, "X-Master-Key") {
					t.Errorf("CLIENT context without the master key = %d %v, want 401 asking for it", code, got)
				}
			}
		})
	}
}

// TestDataKeyIgnoresTheDataLimit: ES_MAX_DATA_BYTES bounds what callers encrypt, not the data keys
// the service makes: with a limit below a key's 44 bytes of base64, /v1/datakey still answers,
// while /v1/encrypt refuses data over the limit, naming it.
func TestDataKeyIgnoresTheDataLimit(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstanceWith(t, testdb.New(t), certs, map[string]string{"ES_MAX_DATA_BYTES": "16"}))
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	got := r.must(200, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id})
	dec := r.must(200, "POST", "/v1/decrypt", ten, decryptBody(id, got))
	if dec["data"] != got["dataKey"] {
		t.Errorf("decrypt of the data key's copy = %q, want the key", dec["data"])
	}
	code, refused := r.call("POST", "/v1/encrypt", ten, `{"encryptionId":"`+id+`","data":"`+strings.Repeat("x", 17)+`"}`)
	if msg, _ := refused["message"].(string); code != 400 || msg != "data: 17 bytes is over the limit of 16 bytes" {
		t.Errorf("POST /v1/encrypt of 17 bytes = %d %v, want 400 naming data and the limit", code, refused)
	}
}
