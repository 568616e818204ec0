package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// rest is a raw HTTPS JSON client of one instance: requests and responses are plain maps, so the
// tests see the exact wire names.
type rest struct {
	tb     testing.TB
	inst   *instance
	client *http.Client
}

func newREST(tb testing.TB, inst *instance) *rest {
	return &rest{tb: tb, inst: inst, client: inst.httpClient(inst.certs.ClientConfig())}
}

// call sends body (a JSON string, or "" for none) with headers and returns the status and the
// decoded JSON object.
func (r *rest) call(method, path string, headers map[string]string, body string) (int, map[string]any) {
	r.tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+r.inst.httpAddr+path, rd)
	if err != nil {
		r.tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.tb.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		r.tb.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
	}
	return resp.StatusCode, got
}

// must is call that fails the test unless the status is want.
func (r *rest) must(want int, method, path string, headers map[string]string, body any) map[string]any {
	r.tb.Helper()
	var s string
	switch b := body.(type) {
	case nil:
	case string:
		s = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			r.tb.Fatal(err)
		}
		s = string(raw)
	}
	code, got := r.call(method, path, headers, s)
	if code != want {
		r.tb.Fatalf("%s %s = %d %v, want %d", method, path, code, got, want)
	}
	return got
}

// tenant is a tenant's credential as headers.
type tenant map[string]string

func (t tenant) with(k, v string) map[string]string {
	h := map[string]string{}
	for kk, vv := range t {
		h[kk] = vv
	}
	h[k] = v
	return h
}

func (r *rest) admin() map[string]string { return map[string]string{"X-Admin-Token": testAdminToken} }

// newTenant creates a tenant through the admin plane.
func (r *rest) newTenant(name string) tenant {
	r.tb.Helper()
	got := r.must(200, "POST", "/v1/admin/tenants", r.admin(), map[string]string{"name": name})
	return tenant{"X-Tenant-Id": got["tenantId"].(string), "X-Tenant-Secret": got["secret"].(string)}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// A client master key, as a zero-knowledge client would send it.
var (
	clientKey      = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	otherClientKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{8}, 32))
)

func TestSeedContractOverRawHTTPS(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")

	created := r.must(200, "POST", "/v1/encryptions", ten, `{"algorithm":"AES-256-GCM","keyMode":"PLATFORM"}`)
	if got, want := keysOf(created), []string{"algorithm", "encryptionId", "encryptionVersionId", "keyMode"}; !slices.Equal(got, want) {
		t.Errorf("POST /v1/encryptions keys = %v, want %v", got, want)
	}
	id := created["encryptionId"].(string)

	data := "héllo, wörld — \u00a0exactly these bytes\n\t"
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data})
	if got, want := keysOf(enc), []string{"algorithm", "cipherText", "encryptionId", "encryptionVersionId", "metadata"}; !slices.Equal(got, want) {
		t.Fatalf("POST /v1/encrypt keys = %v, want the seed's %v", got, want)
	}
	if _, ok := enc["metadata"].(map[string]any); !ok {
		t.Errorf("metadata = %#v, want a JSON object", enc["metadata"])
	}
	if _, err := base64.StdEncoding.DecodeString(enc["cipherText"].(string)); err != nil {
		t.Errorf("cipherText is not base64: %v", err)
	}
	if enc["algorithm"] != "AES-256-GCM" || enc["encryptionId"] != id || enc["encryptionVersionId"] != created["encryptionVersionId"] {
		t.Errorf("POST /v1/encrypt = %v, want algorithm AES-256-GCM and the context's ids", enc)
	}
	if strings.Contains(enc["cipherText"].(string), base64.StdEncoding.EncodeToString([]byte(data))) {
		t.Errorf("cipherText contains the plaintext")
	}

	dec := r.must(200, "POST", "/v1/decrypt", ten, map[string]any{
		"encryptionId": id, "cipherText": enc["cipherText"], "encryptionVersionId": enc["encryptionVersionId"], "metadata": enc["metadata"],
	})
	if got := keysOf(dec); !slices.Equal(got, []string{"data"}) || dec["data"] != data {
		t.Errorf("POST /v1/decrypt = %v, want exactly {data: %q}", dec, data)
	}

	rot := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
	if got := keysOf(rot); !slices.Equal(got, []string{"newVersionId"}) || rot["newVersionId"] == enc["encryptionVersionId"] {
		t.Errorf("POST /v1/rotate = %v, want exactly a new {newVersionId}", rot)
	}

	// Encrypt now uses the new version; the old ciphertext still decrypts.
	enc2 := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data})
	if enc2["encryptionVersionId"] != rot["newVersionId"] {
		t.Errorf("encrypt after rotate used version %v, want %v", enc2["encryptionVersionId"], rot["newVersionId"])
	}
	r.must(200, "POST", "/v1/decrypt", ten, map[string]any{
		"encryptionId": id, "cipherText": enc["cipherText"], "encryptionVersionId": enc["encryptionVersionId"], "metadata": enc["metadata"],
	})
	// The old version no longer encrypts when named explicitly.
	code, got := r.call("POST", "/v1/encrypt", ten, `{"encryptionId":"`+id+`","data":"x","encryptionVersionId":"`+enc["encryptionVersionId"].(string)+`"}`)
	if code != http.StatusBadRequest || !strings.Contains(got["message"].(string), "DECRYPT_ONLY") {
		t.Errorf("encrypt with the old version = %d %v, want 400 saying it is DECRYPT_ONLY", code, got)
	}

	// The context describes its versions.
	desc := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
	versions := desc["versions"].([]any)
	if len(versions) != 2 || desc["activeVersionId"] != rot["newVersionId"] ||
		versions[0].(map[string]any)["state"] != "DECRYPT_ONLY" || versions[1].(map[string]any)["state"] != "ACTIVE" {
		t.Errorf("GET /v1/encryptions/%s = %v, want two versions, the second active", id, desc)
	}
	// Each version counts what it encrypted (64-bit counts are JSON strings).
	for i, v := range versions {
		if got := v.(map[string]any)["encryptions"]; got != "1" {
			t.Errorf("versions[%d].encryptions = %v, want \"1\"", i, got)
		}
	}
}

func TestBadRequestsNameTheField(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})

	tests := []struct {
		name, path, body string
		code             int
		mention          string
	}{
		{"unknown field", "/v1/encrypt", `{"encryptionId":"` + id + `","plaintext":"x"}`, 400, "plaintext"},
		{"bad uuid", "/v1/encrypt", `{"encryptionId":"not-a-uuid","data":"x"}`, 400, "encryptionId"},
		{"missing id", "/v1/rotate", `{}`, 400, "encryptionId"},
		{"bad version uuid", "/v1/encrypt", `{"encryptionId":"` + id + `","data":"x","encryptionVersionId":"v2"}`, 400, "encryptionVersionId"},
		// Only an absent (or empty) encryptionVersionId means the active version; the nil UUID names
		// a version that does not exist.
		{"nil version uuid", "/v1/encrypt", `{"encryptionId":"` + id + `","data":"x","encryptionVersionId":"00000000-0000-0000-0000-000000000000"}`, 404, "version 00000000-0000-0000-0000-000000000000 of key context " + id + " not found"},
		{"bad base64", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"@@@","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":{}}`, 400, "cipherText: invalid value (want standard base64)"},
		{"empty cipherText", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":{}}`, 400, "cipherText: required"},
		{"missing nonce", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":{"formatVersion":1}}`, 400, "nonce"},
		{"no metadata", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `"}`, 400, "metadata.formatVersion: missing"},
		{"formatVersion 2", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":2,"nonce":"AAAAAAAAAAAAAAAA"}}`, 400, "metadata.formatVersion: want 1"},
		{"formatVersion not a number", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":"one","nonce":"AAAAAAAAAAAAAAAA"}}`, 400, "formatVersion: invalid value (want a number)"},
		{"nonce not base64", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":1,"nonce":"*secret-ish*"}}`, 400, "nonce: invalid value (want standard base64)"},
		{"nonce 11 bytes", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":1,"nonce":"AAAAAAAAAAAAAAA="}}`, 400, "metadata.nonce: want 12 bytes, got 11"},
		{"encryptedKey on AES", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":1,"nonce":"AAAAAAAAAAAAAAAA","encryptedKey":"AAAA"}}`, 400, "metadata.encryptedKey: not used by AES-256-GCM"},
		{"unknown metadata field", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `{"formatVersion":1,"nonce":"AAAAAAAAAAAAAAAA","iv":"x"}}`, 400, "iv"},
		{"metadata not an object", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":` + `[1]}`, 400, "syntax error"},
		{"unknown algorithm", "/v1/encryptions", `{"algorithm":"ROT13"}`, 400, "algorithm"},
		{"unknown key mode", "/v1/encryptions", `{"keyMode":"BOTH"}`, 400, "keyMode"},
		{"unknown context", "/v1/rotate", `{"encryptionId":"123e4567-e89b-12d3-a456-426614174000"}`, 404, "not found"},
		{"data over the limit", "/v1/encrypt", `{"encryptionId":"` + id + `","data":"` + strings.Repeat("a", 1<<20+1) + `"}`, 400, "over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got := r.call("POST", tt.path, ten, tt.body)
			msg, _ := got["message"].(string)
			if code != tt.code || !strings.Contains(msg, tt.mention) {
				t.Errorf("POST %s %s = %d %v, want %d mentioning %q", tt.path, tt.name, code, got, tt.code, tt.mention)
			}
			if strings.Contains(msg, "secret-ish") {
				t.Errorf("POST %s %s: message %q repeats the value sent", tt.path, tt.name, msg)
			}
		})
	}
	// Malformed JSON is refused without the token it broke at, which may be the caller's data.
	for _, body := range []string{`{"encryptionId":"` + id + `","data": hunter2}`, `{"encryptionId":"` + id + `","data": 42}`} {
		code, got := r.call("POST", "/v1/encrypt", ten, body)
		if msg, _ := got["message"].(string); code != 400 || strings.Contains(msg, "hunter2") || strings.Contains(msg, "42") || msg == "" {
			t.Errorf("POST /v1/encrypt %s = %d %v, want 400 that does not repeat the value", body, code, got)
		}
	}
}

func TestRoundTripsEveryAlgorithmAndMode(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	for _, alg := range []string{"AES-256-GCM", "XCHACHA20-POLY1305", "RSA-OAEP-3072-SHA256"} {
		for _, mode := range []string{"PLATFORM", "CLIENT"} {
			t.Run(alg+"/"+mode, func(t *testing.T) {
				h := map[string]string(ten)
				if mode == "CLIENT" {
					h = ten.with("X-Master-Key", clientKey)
				}
				id := r.must(200, "POST", "/v1/encryptions", h, map[string]string{"algorithm": alg, "keyMode": mode})["encryptionId"].(string)
				var written []map[string]any
				for i, data := range []string{"", "x", strings.Repeat("0123456789abcdef", 4096)} {
					written = append(written, r.must(200, "POST", "/v1/encrypt", h, map[string]any{"encryptionId": id, "data": data}))
					if i == 1 {
						// Rotation needs no client master key, even for CLIENT contexts.
						r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
					}
				}
				for i, data := range []string{"", "x", strings.Repeat("0123456789abcdef", 4096)} {
					w := written[i]
					dec := r.must(200, "POST", "/v1/decrypt", h, map[string]any{
						"encryptionId": id, "cipherText": w["cipherText"], "encryptionVersionId": w["encryptionVersionId"], "metadata": w["metadata"],
					})
					if dec["data"] != data {
						t.Errorf("round trip %d: data = %.40q, want %.40q", i, dec["data"], data)
					}
				}
				if written[0]["encryptionVersionId"] == written[2]["encryptionVersionId"] {
					t.Errorf("writes before and after the rotation used the same version")
				}
				if alg == "RSA-OAEP-3072-SHA256" {
					desc := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
					pem, _ := desc["versions"].([]any)[0].(map[string]any)["publicKeyPem"].(string)
					if !strings.HasPrefix(pem, "-----BEGIN PUBLIC KEY-----") {
						t.Errorf("RSA version publicKeyPem = %.60q, want a PEM public key", pem)
					}
				}
			})
		}
	}
}

func TestTenantsAreIsolated(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	a, b := r.newTenant("a"), r.newTenant("b")
	id := r.must(200, "POST", "/v1/encryptions", a, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", a, map[string]any{"encryptionId": id, "data": "a's secret"})
	unknown := "123e4567-e89b-12d3-a456-426614174000"

	_, gotUnknown := r.call("GET", "/v1/encryptions/"+unknown, b, "")
	for _, probe := range []struct{ method, path, body string }{
		{"GET", "/v1/encryptions/" + id, ""},
		{"POST", "/v1/encrypt", `{"encryptionId":"` + id + `","data":"x"}`},
		{"POST", "/v1/rotate", `{"encryptionId":"` + id + `"}`},
		{"POST", "/v1/decrypt", `{"encryptionId":"` + id + `","cipherText":"` + enc["cipherText"].(string) + `","encryptionVersionId":"` + enc["encryptionVersionId"].(string) + `","metadata":{"formatVersion":1,"nonce":"` + enc["metadata"].(map[string]any)["nonce"].(string) + `"}}`},
	} {
		code, got := r.call(probe.method, probe.path, b, probe.body)
		want := strings.ReplaceAll(gotUnknown["message"].(string), unknown, id)
		if code != http.StatusNotFound || got["message"] != want {
			t.Errorf("tenant b: %s %s = %d %v, want 404 %q, as for an unknown id", probe.method, probe.path, code, got, want)
		}
	}
}

func TestCiphertextIsBoundToItsContextAndVersion(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	x := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	y := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": x, "data": "bound"})
	v2 := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": x})["newVersionId"].(string)
	yVersion := r.must(200, "GET", "/v1/encryptions/"+y, ten, nil)["activeVersionId"].(string)

	for name, body := range map[string]map[string]any{
		"other context":               {"encryptionId": y, "encryptionVersionId": yVersion},
		"other version, same context": {"encryptionId": x, "encryptionVersionId": v2},
	} {
		body["cipherText"], body["metadata"] = enc["cipherText"], enc["metadata"]
		raw, _ := json.Marshal(body)
		code, got := r.call("POST", "/v1/decrypt", ten, string(raw))
		if code != http.StatusBadRequest || !strings.Contains(got["message"].(string), "does not authenticate") {
			t.Errorf("decrypt under %s = %d %v, want 400 saying the ciphertext does not authenticate", name, code, got)
		}
	}
}

func TestMasterKeyHeader(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	withKey := ten.with("X-Master-Key", clientKey)
	client := r.must(200, "POST", "/v1/encryptions", withKey, `{"keyMode":"CLIENT"}`)["encryptionId"].(string)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", withKey, map[string]any{"encryptionId": client, "data": "zero knowledge"})
	decBody, _ := json.Marshal(map[string]any{"encryptionId": client, "cipherText": enc["cipherText"], "encryptionVersionId": enc["encryptionVersionId"], "metadata": enc["metadata"]})

	tests := []struct {
		name    string
		headers map[string]string
		path    string
		body    string
		code    int
		mention string
	}{
		{"CLIENT without key: encrypt", ten, "/v1/encrypt", `{"encryptionId":"` + client + `","data":"x"}`, 401, "X-Master-Key"},
		{"CLIENT without key: decrypt", ten, "/v1/decrypt", string(decBody), 401, "X-Master-Key"},
		{"CLIENT without key: create", ten, "/v1/encryptions", `{"keyMode":"CLIENT"}`, 401, "X-Master-Key"},
		{"CLIENT with wrong key: decrypt", ten.with("X-Master-Key", otherClientKey), "/v1/decrypt", string(decBody), 403, "wrong client master key"},
		{"CLIENT with wrong key: encrypt", ten.with("X-Master-Key", otherClientKey), "/v1/encrypt", `{"encryptionId":"` + client + `","data":"x"}`, 403, "wrong client master key"},
		{"PLATFORM with a key", withKey, "/v1/encrypt", `{"encryptionId":"` + platform + `","data":"x"}`, 400, "must not be sent"},
		{"malformed key", ten.with("X-Master-Key", "c2hvcnQ="), "/v1/encrypt", `{"encryptionId":"` + client + `","data":"x"}`, 400, "X-Master-Key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got := r.call("POST", tt.path, tt.headers, tt.body)
			msg, _ := got["message"].(string)
			if code != tt.code || !strings.Contains(msg, tt.mention) {
				t.Errorf("POST %s = %d %v, want %d mentioning %q", tt.path, code, got, tt.code, tt.mention)
			}
			if strings.Contains(msg, clientKey) || strings.Contains(msg, otherClientKey) {
				t.Errorf("error %q echoes the master key", msg)
			}
		})
	}
	if got := r.must(200, "POST", "/v1/decrypt", withKey, string(decBody)); got["data"] != "zero knowledge" {
		t.Errorf("decrypt with the right key = %v", got)
	}
	// A refused creation names no key context: none was created.
	code, got := r.call("POST", "/v1/encryptions", withKey, `{"keyMode":"PLATFORM"}`)
	msg, _ := got["message"].(string)
	if code != 400 || !strings.Contains(msg, "X-Master-Key must not be sent to create a PLATFORM key context") {
		t.Errorf("POST /v1/encryptions PLATFORM with a key = %d %v, want 400 saying the header must not be sent", code, got)
	}
	if named := uuidText.FindString(msg); named != "" {
		t.Errorf("refusal %q names key context %s, which was never created", msg, named)
	}
}

var uuidText = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

func TestTenantCredentials(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	tenantID := ten["X-Tenant-Id"]

	// A missing credential is told as missing; every wrong one gets one and the same message, so
	// that nothing tells an unknown tenant from a wrong secret or a malformed id.
	wrongMessages := map[string]bool{}
	for _, tt := range []struct {
		name    string
		headers map[string]string
		missing bool
	}{
		{"none", map[string]string{}, true},
		{"id only", map[string]string{"X-Tenant-Id": tenantID}, true},
		{"wrong secret", map[string]string{"X-Tenant-Id": tenantID, "X-Tenant-Secret": "cts_" + strings.Repeat("A", 43)}, false},
		{"malformed secret", map[string]string{"X-Tenant-Id": tenantID, "X-Tenant-Secret": "nope"}, false},
		{"other tenant", map[string]string{"X-Tenant-Id": "123e4567-e89b-12d3-a456-426614174000", "X-Tenant-Secret": ten["X-Tenant-Secret"]}, false},
		{"not a uuid", map[string]string{"X-Tenant-Id": "acme", "X-Tenant-Secret": ten["X-Tenant-Secret"]}, false},
	} {
		code, got := r.call("POST", "/v1/encryptions", tt.headers, `{}`)
		msg, _ := got["message"].(string)
		if code != http.StatusUnauthorized {
			t.Errorf("credential %s: POST /v1/encryptions = %d %v, want 401", tt.name, code, got)
		}
		if tt.missing {
			if !strings.Contains(msg, "missing") {
				t.Errorf("credential %s: message %q, want it to say the credential is missing", tt.name, msg)
			}
			continue
		}
		wrongMessages[msg] = true
	}
	if len(wrongMessages) != 1 {
		t.Errorf("wrong credentials got %d different messages %q, want one", len(wrongMessages), slices.Sorted(maps.Keys(wrongMessages)))
	}

	// Rotation: both secrets work until the old one is revoked, then only the new one.
	rotated := r.must(200, "POST", "/v1/admin/tenants/"+tenantID+"/secrets:rotate", r.admin(), `{}`)
	newCred := tenant{"X-Tenant-Id": tenantID, "X-Tenant-Secret": rotated["secret"].(string)}
	r.must(200, "POST", "/v1/encryptions", ten, `{}`)
	r.must(200, "POST", "/v1/encryptions", newCred, `{}`)
	list := r.must(200, "GET", "/v1/admin/tenants", r.admin(), nil)
	var oldSecretID string
	for _, tt := range list["tenants"].([]any) {
		for _, s := range tt.(map[string]any)["secrets"].([]any) {
			if id := s.(map[string]any)["secretId"].(string); id != rotated["secretId"] {
				oldSecretID = id
			}
		}
	}
	r.must(200, "POST", "/v1/admin/tenants/"+tenantID+"/secrets/"+oldSecretID+":revoke", r.admin(), `{}`)
	if code, got := r.call("POST", "/v1/encryptions", ten, `{}`); code != http.StatusUnauthorized {
		t.Errorf("revoked secret: POST /v1/encryptions = %d %v, want 401", code, got)
	}
	r.must(200, "POST", "/v1/encryptions", newCred, `{}`)
	// The last active secret cannot be revoked.
	if code, got := r.call("POST", "/v1/admin/tenants/"+tenantID+"/secrets/"+rotated["secretId"].(string)+":revoke", r.admin(), `{}`); code != http.StatusBadRequest {
		t.Errorf("revoking the last secret = %d %v, want 400 (FAILED_PRECONDITION)", code, got)
	}
}

// TestListTenantsPagesAtTheLargestPageSize: a full page at the largest page size (1000) carries a
// nextPageToken when more tenants follow, so that paging lists every tenant; the last page has none.
func TestListTenantsPagesAtTheLargestPageSize(t *testing.T) {
	url := testdb.New(t)
	if _, err := mustPool(t, url).Exec(context.Background(),
		`INSERT INTO encryption.tenants (id, name) SELECT gen_random_uuid(), 'bulk-' || g FROM generate_series(1, 1005) g`); err != nil {
		t.Fatal(err)
	}
	r := newREST(t, startInstance(t, url, testcerts.New(t)))
	seen := map[string]bool{}
	var sizes []int
	token := ""
	for range 3 {
		got := r.must(200, "GET", "/v1/admin/tenants?pageSize=1000&pageToken="+token, r.admin(), nil)
		page := got["tenants"].([]any)
		sizes = append(sizes, len(page))
		for _, x := range page {
			seen[x.(map[string]any)["tenantId"].(string)] = true
		}
		if token, _ = got["nextPageToken"].(string); token == "" {
			break
		}
	}
	if len(seen) != 1005 || !slices.Equal(sizes, []int{1000, 5}) {
		t.Errorf("paging GET /v1/admin/tenants?pageSize=1000 over 1005 tenants: pages of %v, %d tenants; want pages of [1000 5], 1005 tenants",
			sizes, len(seen))
	}
}

func TestAdminPlaneNeedsTheToken(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	for name, h := range map[string]map[string]string{
		"no token":    {},
		"wrong token": {"X-Admin-Token": "cat_guess"},
	} {
		if code, got := r.call("POST", "/v1/admin/tenants", h, `{"name":"x"}`); code != http.StatusUnauthorized {
			t.Errorf("%s: POST /v1/admin/tenants = %d %v, want 401", name, code, got)
		}
	}
	// A tenant's credential is not an admin credential.
	ten := r.newTenant("acme")
	if code, _ := r.call("GET", "/v1/admin/tenants", ten, ""); code != http.StatusUnauthorized {
		t.Errorf("tenant credential on the admin plane = %d, want 401", code)
	}
	if code, got := r.call("POST", "/v1/admin/tenants", r.admin(), `{"name":"acme"}`); code != http.StatusConflict {
		t.Errorf("duplicate tenant name = %d %v, want 409", code, got)
	}
	audit := r.must(200, "GET", "/v1/admin/audit?tenantId="+ten["X-Tenant-Id"], r.admin(), nil)
	if events, _ := audit["events"].([]any); len(events) == 0 || events[0].(map[string]any)["action"] != "tenant.create" {
		t.Errorf("GET /v1/admin/audit = %v, want the tenant's creation", audit)
	}
}

// TestUnknownFieldsJSONRefusedProtobufIgnored pins the documented difference: a JSON body with a
// key the contract does not have is refused with 400 naming it, metadata included, while over
// gRPC unknown protobuf fields are ignored as protobuf does, for forward compatibility.
func TestUnknownFieldsJSONRefusedProtobufIgnored(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs)
	r := newREST(t, inst)
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
	body := decryptBody(id, enc)
	body["metadata"].(map[string]any)["keyId"] = 1
	code, got := r.call("POST", "/v1/decrypt", ten, mustJSON(t, body))
	wantError(t, "REST decrypt with metadata.keyId", code, got, 400, codes.InvalidArgument, "keyId")

	es := encryptionv1.NewEncryptionServiceClient(inst.grpcConn(t, certs.ClientConfig()))
	ctx := grpcTenant(ten, "")
	req := &encryptionv1.EncryptRequest{EncryptionId: id, Data: "forward compatible"}
	req.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	res, err := es.Encrypt(ctx, req)
	if err != nil {
		t.Fatalf("gRPC Encrypt with an unknown field = %v, want it ignored", err)
	}
	res.Metadata.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 15, protowire.VarintType), 1))
	dec, err := es.Decrypt(ctx, &encryptionv1.DecryptRequest{EncryptionId: id, EncryptionVersionId: res.EncryptionVersionId,
		CipherText: res.CipherText, Metadata: res.Metadata})
	if err != nil || dec.GetData() != "forward compatible" {
		t.Errorf("gRPC Decrypt with an unknown CipherMetadata field = %v, %v; want the data, the field ignored", dec, err)
	}
}

// grpcTenant returns a context carrying ten's credential (and the master key, if given) as gRPC metadata.
func grpcTenant(ten tenant, masterKey string) context.Context {
	md := metadata.Pairs("x-tenant-id", ten["X-Tenant-Id"], "x-tenant-secret", ten["X-Tenant-Secret"])
	if masterKey != "" {
		md.Append("x-master-key", masterKey)
	}
	return metadata.NewOutgoingContext(context.Background(), md)
}

func TestEveryBitFlipAndTruncationFails(t *testing.T) {
	certs := testcerts.New(t)
	inst := startInstance(t, testdb.New(t), certs)
	r := newREST(t, inst)
	ten := r.newTenant("acme")
	es := encryptionv1.NewEncryptionServiceClient(inst.grpcConn(t, certs.ClientConfig()))

	for _, alg := range []string{"AES-256-GCM", "XCHACHA20-POLY1305", "RSA-OAEP-3072-SHA256"} {
		t.Run(alg, func(t *testing.T) {
			ctx := grpcTenant(ten, "")
			created, err := es.CreateEncryption(ctx, &encryptionv1.CreateEncryptionRequest{Algorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			enc, err := es.Encrypt(ctx, &encryptionv1.EncryptRequest{EncryptionId: created.EncryptionId, Data: "flip me"})
			if err != nil {
				t.Fatal(err)
			}
			ct := enc.CipherText
			decrypt := func(ct []byte, meta *encryptionv1.CipherMetadata) error {
				_, err := es.Decrypt(ctx, &encryptionv1.DecryptRequest{
					EncryptionId: created.EncryptionId, EncryptionVersionId: enc.EncryptionVersionId,
					CipherText: ct, Metadata: meta,
				})
				return err
			}
			if err := decrypt(ct, enc.Metadata); err != nil {
				t.Fatalf("unaltered decrypt = %v", err)
			}
			for i := range len(ct) * 8 {
				flipped := bytes.Clone(ct)
				flipped[i/8] ^= 1 << (i % 8)
				if err := decrypt(flipped, enc.Metadata); status.Code(err) != codes.InvalidArgument {
					t.Fatalf("ciphertext bit %d flipped: Decrypt = %v, want InvalidArgument", i, err)
				}
			}
			for n := range len(ct) {
				if err := decrypt(ct[:n], enc.Metadata); status.Code(err) != codes.InvalidArgument {
					t.Fatalf("ciphertext truncated to %d bytes: Decrypt = %v, want InvalidArgument", n, err)
				}
			}
			// Every bit of every binary metadata field (nonce, encrypted key).
			fields := map[string]func(*encryptionv1.CipherMetadata) *[]byte{
				"nonce":        func(m *encryptionv1.CipherMetadata) *[]byte { return &m.Nonce },
				"encryptedKey": func(m *encryptionv1.CipherMetadata) *[]byte { return &m.EncryptedKey },
			}
			for field, at := range fields {
				raw := *at(enc.Metadata)
				if raw == nil {
					continue
				}
				step := 1
				if len(raw) > 64 {
					step = 7 // the RSA-encrypted key: a spread of bits keeps the test fast
				}
				for i := 0; i < len(raw)*8; i += step {
					meta := proto.Clone(enc.Metadata).(*encryptionv1.CipherMetadata)
					flipped := at(meta)
					*flipped = bytes.Clone(raw)
					(*flipped)[i/8] ^= 1 << (i % 8)
					if err := decrypt(ct, meta); status.Code(err) != codes.InvalidArgument {
						t.Fatalf("metadata %s bit %d flipped: Decrypt = %v, want InvalidArgument", field, i, err)
					}
				}
				meta := proto.Clone(enc.Metadata).(*encryptionv1.CipherMetadata)
				*at(meta) = raw[:len(raw)-1]
				if err := decrypt(ct, meta); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), field) {
					t.Fatalf("metadata %s truncated: Decrypt = %v, want InvalidArgument naming the field", field, err)
				}
			}
		})
	}
}

func TestRotationReachesOtherInstances(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	a := startInstance(t, url, certs)
	b := startInstance(t, url, certs)
	ra, rb := newREST(t, a), newREST(t, b)
	ten := ra.newTenant("acme")
	id := ra.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	// b caches the context's first version.
	v1 := rb.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})["encryptionVersionId"]

	v2 := ra.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})["newVersionId"]
	// The change reaches b through the database's notification, normally within milliseconds.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := rb.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})["encryptionVersionId"]
		if got == v2 {
			break
		}
		if got != v1 || time.Now().After(deadline) {
			t.Fatalf("instance b encrypts with version %v after a rotation through a, want %v", got, v2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A revoked tenant secret stops working on b as well, b having cached it a moment ago.
	rotated := ra.must(200, "POST", "/v1/admin/tenants/"+ten["X-Tenant-Id"]+"/secrets:rotate", ra.admin(), `{}`)
	var oldID string
	for _, tt := range ra.must(200, "GET", "/v1/admin/tenants", ra.admin(), nil)["tenants"].([]any) {
		for _, sec := range tt.(map[string]any)["secrets"].([]any) {
			if sid := sec.(map[string]any)["secretId"].(string); sid != rotated["secretId"] {
				oldID = sid
			}
		}
	}
	ra.must(200, "POST", "/v1/admin/tenants/"+ten["X-Tenant-Id"]+"/secrets/"+oldID+":revoke", ra.admin(), `{}`)
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, _ := rb.call("GET", "/v1/encryptions/"+id, ten, "")
		if code == http.StatusUnauthorized {
			break
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("instance b after the secret was revoked through a: GET = %d, want 401", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConcurrentRotationsAreConsecutive(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten.with("X-Master-Key", clientKey), `{"keyMode":"CLIENT"}`)["encryptionId"].(string)

	const n = 12
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, got := r.call("POST", "/v1/rotate", ten, `{"encryptionId":"`+id+`"}`); code != 200 {
				t.Errorf("concurrent rotate = %d %v", code, got)
			}
		}()
	}
	wg.Wait()
	desc := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
	versions := desc["versions"].([]any)
	if len(versions) != n+1 {
		t.Fatalf("after %d rotations: %d versions, want %d", n, len(versions), n+1)
	}
	active := 0
	for i, v := range versions {
		v := v.(map[string]any)
		if v["version"] != float64(i+1) {
			t.Errorf("versions[%d].version = %v, want %d (consecutive)", i, v["version"], i+1)
		}
		if v["state"] == "ACTIVE" {
			active++
			if i != n || v["versionId"] != desc["activeVersionId"] {
				t.Errorf("active version is #%d, want the last one", i+1)
			}
		}
	}
	if active != 1 {
		t.Errorf("%d active versions, want exactly 1", active)
	}
}

func TestMetricsOverTLS(t *testing.T) {
	certs := testcerts.New(t)
	// Pick a free port for the metrics listener: the service reports it only in its log.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	inst := startInstanceWith(t, testdb.New(t), certs, map[string]string{"ES_METRICS_ADDR": addr})
	r := newREST(t, inst)
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	for range 3 {
		r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
	}
	get := func(cfg *tls.Config) (int, string, error) {
		resp, err := inst.httpClient(cfg).Get("https://" + addr + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	code, body, err := get(certs.ClientConfig())
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics = %d, %v", code, err)
	}
	for _, series := range []string{
		`custos_rpc_requests_total{code="OK",method="/custos.encryption.v1.EncryptionService/Encrypt",via="gateway"} 3`,
		`custos_key_cache_lookups_total{result="hit"}`,
		`custos_rpc_duration_seconds_bucket`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	if _, _, err := get(certs.ClientConfigNoCert()); err == nil {
		t.Errorf("GET /metrics without a client certificate succeeded, want a refused handshake")
	}
}
