package esclient

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/testcerts"
)

// seedES is a minimal encryption service that implements only the seed's REST contract —
// POST /v1/encrypt, /v1/decrypt and /v1/rotate with camelCase JSON and the X-Tenant-Id,
// X-Tenant-Secret headers — as a tenant might host one. Its contexts exist beforehand (the seed
// has no way to create one). Everything else answers Go's plain 404.
type seedES struct {
	tenantID, secret string
	// override, when it returns a status, answers the nth request (from 1) to path with it.
	override func(path string, n int) (status int, body string)

	mu       sync.Mutex
	versions map[string][][]byte // encryptionId → keys, the last active
	calls    map[string]int
	headers  map[string]http.Header // of the last request to each path
}

func newSeedES(tenantID, secret string, contexts ...string) *seedES {
	s := &seedES{tenantID: tenantID, secret: secret, versions: map[string][][]byte{}, calls: map[string]int{},
		headers: map[string]http.Header{}}
	for _, id := range contexts {
		s.versions[id] = [][]byte{newAESKey()}
	}
	return s
}

func newAESKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func (s *seedES) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[path]
}

func (s *seedES) lastHeaders(path string) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers[path]
}

func (s *seedES) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/encrypt", s.guard(s.encrypt))
	mux.HandleFunc("POST /v1/decrypt", s.guard(s.decrypt))
	mux.HandleFunc("POST /v1/rotate", s.guard(s.rotate))
	return mux
}

func (s *seedES) guard(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.URL.Path]++
		n := s.calls[r.URL.Path]
		s.headers[r.URL.Path] = r.Header.Clone()
		s.mu.Unlock()
		if s.override != nil {
			if status, body := s.override(r.URL.Path, n); status != 0 {
				if status >= 300 && status < 400 {
					w.Header().Set("Location", "https://elsewhere.invalid/steal")
				}
				w.WriteHeader(status)
				fmt.Fprint(w, body)
				return
			}
		}
		if r.Header.Get("X-Tenant-Id") != s.tenantID || r.Header.Get("X-Tenant-Secret") != s.secret {
			writeSeed(w, 401, map[string]string{"error": "unauthorized"})
			return
		}
		h(w, r)
	}
}

func writeSeed(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the headers are sent; a failed write shows as a bad body in the test
}

func (s *seedES) key(w http.ResponseWriter, id string, version int) ([]byte, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, ok := s.versions[id]
	if !ok {
		writeSeed(w, 404, map[string]string{"error": "unknown encryptionId"})
		return nil, 0, false
	}
	if version < 0 {
		version = len(keys) - 1
	}
	if version >= len(keys) {
		writeSeed(w, 404, map[string]string{"error": "unknown encryptionVersionId"})
		return nil, 0, false
	}
	return keys[version], version, true
}

func (s *seedES) encrypt(w http.ResponseWriter, r *http.Request) {
	var in struct{ EncryptionID, Data string }
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeSeed(w, 400, map[string]string{"error": "malformed body"})
		return
	}
	key, v, ok := s.key(w, in.EncryptionID, -1)
	if !ok {
		return
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	writeSeed(w, 200, map[string]any{
		"cipherText":          base64.StdEncoding.EncodeToString(aead.Seal(nil, nonce, []byte(in.Data), []byte(in.EncryptionID))),
		"encryptionId":        in.EncryptionID,
		"encryptionVersionId": fmt.Sprint(v + 1),
		"algorithm":           "AES-256-GCM",
		"metadata":            map[string]any{"nonce": base64.StdEncoding.EncodeToString(nonce)},
	})
}

func (s *seedES) decrypt(w http.ResponseWriter, r *http.Request) {
	var in struct {
		EncryptionID, CipherText, EncryptionVersionID string
		Metadata                                      struct{ Nonce string }
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeSeed(w, 400, map[string]string{"error": "malformed body"})
		return
	}
	var v int
	if _, err := fmt.Sscan(in.EncryptionVersionID, &v); err != nil || v < 1 {
		writeSeed(w, 400, map[string]string{"error": "bad encryptionVersionId"})
		return
	}
	key, _, ok := s.key(w, in.EncryptionID, v-1)
	if !ok {
		return
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce, _ := base64.StdEncoding.DecodeString(in.Metadata.Nonce)
	ct, _ := base64.StdEncoding.DecodeString(in.CipherText)
	if len(nonce) != aead.NonceSize() {
		writeSeed(w, 400, map[string]string{"error": "bad nonce"})
		return
	}
	pt, err := aead.Open(nil, nonce, ct, []byte(in.EncryptionID))
	if err != nil {
		writeSeed(w, 400, map[string]string{"error": "cipherText does not authenticate"})
		return
	}
	writeSeed(w, 200, map[string]string{"data": string(pt)})
}

func (s *seedES) rotate(w http.ResponseWriter, r *http.Request) {
	var in struct{ EncryptionID string }
	if json.NewDecoder(r.Body).Decode(&in) != nil {
		writeSeed(w, 400, map[string]string{"error": "malformed body"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.versions[in.EncryptionID]; !ok {
		writeSeed(w, 404, map[string]string{"error": "unknown encryptionId"})
		return
	}
	s.versions[in.EncryptionID] = append(s.versions[in.EncryptionID], newAESKey())
	writeSeed(w, 200, map[string]string{"newVersionId": fmt.Sprint(len(s.versions[in.EncryptionID]))})
}

const seedTenant = "5d7f6c1e-3b0a-4c55-9d4e-1f2a3b4c5d6e"

// startSeed serves es over mutual TLS 1.3 (client certificates from certs' CA required) and
// returns its URL.
func startSeed(t *testing.T, es *seedES, certs *testcerts.Set) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(es.handler())
	srv.TLS = certs.ServerConfig()
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// seedClient returns a Client of a hosted https tenant on a new seed-only service.
func seedClient(t *testing.T, es *seedES, opts RouterOptions) Client {
	t.Helper()
	certs := testcerts.New(t)
	url := startSeed(t, es, certs)
	box := mustBox(t)
	tenant := hostedTenant(t, box, "https", url+"/", certs, seedTenant, "cts_seed-secret")
	r := NewRouter(nil, tenants(tenant), box, opts)
	t.Cleanup(func() { r.Close() })
	return mustFor(t, r, tenant.ID)
}

func TestHTTPSSeedOnlyService(t *testing.T) {
	es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	c := seedClient(t, es, RouterOptions{})
	ctx := context.Background()

	ct1, err := c.Encrypt(ctx, "ctx-1", "héllo, wörld", nil)
	if err != nil {
		t.Fatalf("Encrypt = %v", err)
	}
	if ct1.EncryptionID != "ctx-1" || ct1.VersionID != "1" || ct1.Algorithm != "AES-256-GCM" || ct1.CipherText == "" {
		t.Errorf("Encrypt = %+v", ct1)
	}
	var meta map[string]string
	if err := json.Unmarshal(ct1.Metadata, &meta); err != nil || meta["nonce"] == "" {
		t.Errorf("Encrypt metadata = %s, want the service's object", ct1.Metadata)
	}
	if got, err := c.Decrypt(ctx, ct1, nil); err != nil || got != "héllo, wörld" {
		t.Errorf("Decrypt = %q, %v", got, err)
	}
	v2, err := c.Rotate(ctx, "ctx-1")
	if err != nil || v2 != "2" {
		t.Fatalf("Rotate = %q, %v, want 2", v2, err)
	}
	ct2, err := c.Encrypt(ctx, "ctx-1", "second", nil)
	if err != nil || ct2.VersionID != "2" {
		t.Fatalf("Encrypt after Rotate = %+v, %v, want version 2", ct2, err)
	}
	if got, err := c.Decrypt(ctx, ct1, nil); err != nil || got != "héllo, wörld" {
		t.Errorf("Decrypt of the old version after Rotate = %q, %v", got, err)
	}
	tampered := ct1
	tampered.CipherText = base64.StdEncoding.EncodeToString([]byte("not the ciphertext at all"))
	_, err = c.Decrypt(ctx, tampered, nil)
	wantKind(t, "Decrypt(tampered)", err, errs.Invalid, "does not authenticate")
	_, err = c.Encrypt(ctx, "ctx-unknown", "x", nil)
	wantKind(t, "Encrypt(unknown context)", err, errs.NotFound, "unknown encryptionId")

	// The methods beyond the seed: a clear FailedPrecondition each.
	_, err = c.CreateContext(ctx, "PLATFORM", nil)
	wantKind(t, "CreateContext", err, errs.FailedPrecondition, "the hosted encryption service must support key contexts")
	_, err = c.GetContext(ctx, "ctx-1")
	wantKind(t, "GetContext", err, errs.FailedPrecondition, "cannot describe key contexts")
	_, err = c.RewrapBatch(ctx, []Ciphertext{ct1}, nil)
	wantKind(t, "RewrapBatch", err, errs.FailedPrecondition, "the encryption service cannot rewrap")
	err = c.DisableVersion(ctx, "ctx-1", "1")
	wantKind(t, "DisableVersion", err, errs.FailedPrecondition, "cannot disable key versions")
	err = c.EnableVersion(ctx, "ctx-1", "1")
	wantKind(t, "EnableVersion", err, errs.FailedPrecondition, "cannot enable key versions")
	err = c.ChangeMasterKey(ctx, "ctx-1", randomKey(), make([]byte, 32))
	wantKind(t, "ChangeMasterKey", err, errs.FailedPrecondition, "cannot change a client master key")
	// A plain 404 on DELETE is a missing route, not a destroyed context: a caller that wants the
	// context gone must not take it for done.
	err = c.DestroyContext(ctx, "ctx-1")
	wantKind(t, "DestroyContext", err, errs.FailedPrecondition, "cannot destroy key contexts")
	for _, p := range []string{"/v1/encrypt", "/v1/decrypt", "/v1/rotate"} {
		if h := es.lastHeaders(p); h.Get("X-Master-Key") != "" {
			t.Errorf("%s got X-Master-Key without a master key", p)
		}
	}
}

func TestHTTPSHeaders(t *testing.T) {
	es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	c := seedClient(t, es, RouterOptions{RequestID: func(context.Context) string { return "core-req-7" }})
	mk := randomBytes(t, 32)
	if _, err := c.Encrypt(context.Background(), "ctx-1", "x", mk); err != nil {
		t.Fatalf("Encrypt = %v", err)
	}
	h := es.lastHeaders("/v1/encrypt")
	for name, want := range map[string]string{
		"X-Tenant-Id":     seedTenant,
		"X-Tenant-Secret": "cts_seed-secret",
		"X-Master-Key":    base64.StdEncoding.EncodeToString(mk),
		"Content-Type":    "application/json",
		"X-Request-Id":    "core-req-7",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestHTTPSRetries(t *testing.T) {
	es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	es.override = func(path string, n int) (int, string) {
		if n <= 2 {
			return http.StatusServiceUnavailable, "down for a moment"
		}
		return 0, ""
	}
	c := seedClient(t, es, RouterOptions{BreakerFailures: 100})
	if _, err := c.Encrypt(context.Background(), "ctx-1", "x", nil); err != nil {
		t.Errorf("Encrypt after two 503 = %v, want success on the third attempt", err)
	}
	if got := es.count("/v1/encrypt"); got != 3 {
		t.Errorf("Encrypt attempts = %d, want 3", got)
	}
	_, err := c.Rotate(context.Background(), "ctx-1")
	wantKind(t, "Rotate after a 503", err, errs.Unavailable, msgUnavailable)
	if got := es.count("/v1/rotate"); got != 1 {
		t.Errorf("Rotate attempts = %d, want 1", got)
	}
}

func TestHTTPSRefusals(t *testing.T) {
	t.Run("wrong tenant secret", func(t *testing.T) {
		es := newSeedES(seedTenant, "cts_another-secret", "ctx-1")
		c := seedClient(t, es, RouterOptions{})
		_, err := c.Encrypt(context.Background(), "ctx-1", "x", nil)
		wantKind(t, "Encrypt", err, errs.Internal, "rejected core's credential for this tenant")
		wantNoLeak(t, "Encrypt", err, []byte("cts_seed-secret"), []byte("cts_another-secret"))
	})
	t.Run("redirect not followed", func(t *testing.T) {
		es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
		es.override = func(string, int) (int, string) { return http.StatusTemporaryRedirect, "" }
		c := seedClient(t, es, RouterOptions{})
		_, err := c.Encrypt(context.Background(), "ctx-1", "x", nil)
		wantKind(t, "Encrypt answered by a redirect", err, errs.Internal, "redirect")
	})
	t.Run("answer over the limit", func(t *testing.T) {
		es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
		c := seedClient(t, es, RouterOptions{MaxResponseBytes: 64})
		_, err := c.Encrypt(context.Background(), "ctx-1", "x", nil)
		wantKind(t, "Encrypt with a large answer", err, errs.Internal, "over core's limit")
	})
	t.Run("malformed answer", func(t *testing.T) {
		es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
		es.override = func(string, int) (int, string) { return 200, `{"cipherText": 12` }
		c := seedClient(t, es, RouterOptions{})
		_, err := c.Encrypt(context.Background(), "ctx-1", "x", nil)
		wantKind(t, "Encrypt with malformed JSON", err, errs.Internal, "malformed JSON")
	})
	t.Run("server not trusted", func(t *testing.T) {
		es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
		certs := testcerts.New(t)
		url := startSeed(t, es, certs)
		box := mustBox(t)
		tenant := hostedTenant(t, box, "https", url, certs.Unrelated(t), seedTenant, "cts_seed-secret")
		r := NewRouter(nil, tenants(tenant), box, RouterOptions{BreakerFailures: 1, BreakerCooldown: 1 << 62})
		defer r.Close()
		c := mustFor(t, r, tenant.ID)
		for range 2 { // a configuration fault neither retries nor opens the breaker
			_, err := c.Encrypt(context.Background(), "ctx-1", "x", nil)
			wantKind(t, "Encrypt to an untrusted server", err, errs.Internal, "trusted TLS 1.3 connection")
		}
	})
}
