package conformance_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
)

// fakeES is an in-memory encryption service speaking the REST contract, correct unless one of its
// defects is switched on. With full it also offers key contexts, rewrap, batches and the version
// lifecycle (AES-256-GCM, PLATFORM mode only); without, only the seed's three endpoints and one
// key context made in advance.
type fakeES struct {
	tenantID, secret string
	full             bool
	defect           string // one of the defect* constants, or ""

	mu        sync.Mutex
	ctxs      map[string]*fakeContext
	destroyed map[string]bool // contexts DELETE erased
}

// Defects of fakeES: each is a realistic way to get the contract wrong.
const (
	defectWrongFieldName      = "wrong_field_name"       // encrypt answers "cipher_text"
	defectAlteredData         = "altered_data"           // decrypt turns non-ASCII characters into '?'
	defectRotateKeepsVersion  = "rotate_keeps_version"   // rotate answers the current version, makes none
	defectAcceptsTampered     = "accepts_tampered"       // a ciphertext that does not authenticate decrypts to ""
	defectNoAuth              = "no_auth"                // the tenant secret is not checked
	defectLaxJSON             = "lax_json"               // unknown JSON fields are ignored
	defectUnknownIs400        = "unknown_is_400"         // an unknown context answers 400, not 404
	defectBatchFailsAll       = "batch_fails_all"        // one bad item fails the whole batch
	defectDisableIgnored      = "disable_ignored"        // a disabled version still decrypts
	defectRewrapKeepsVersion  = "rewrap_keeps_version"   // rewrap re-encrypts under the same version
	defectTLS12               = "tls12"                  // the listener also speaks TLS 1.2 (set on the server)
	defectNoClientCert        = "no_client_certificate"  // the listener does not require a client certificate (ditto)
	defectTLS12Only           = "tls12_only"             // the listener speaks TLS 1.2 at most (ditto)
	defectTenantOracle        = "tenant_oracle"          // 401 bodies tell an unknown tenant from a wrong secret
	defectDestroyedIs400      = "destroyed_is_400"       // a destroyed context answers 400 "destroyed", not 404
	defectDestroyedToldApart  = "destroyed_told_apart"   // a destroyed context answers 404, saying it was destroyed
	defectUnknownVersionIs400 = "unknown_version_is_400" // encrypt naming an unknown version answers 400, not 404
)

type fakeContext struct {
	id       string
	versions []*fakeVersion // oldest first; the last non-retired one is active
}

type fakeVersion struct {
	id, state string // ACTIVE, DECRYPT_ONLY, DISABLED, DESTROYED
	aead      cipher.AEAD
}

func (c *fakeContext) active() *fakeVersion {
	for _, v := range c.versions {
		if v.state == "ACTIVE" {
			return v
		}
	}
	return nil
}

func (c *fakeContext) version(id string) *fakeVersion {
	for _, v := range c.versions {
		if v.id == id {
			return v
		}
	}
	return nil
}

// apiError is an answer other than success, with its gRPC code for batch results.
type apiError struct {
	status, code int
	msg          string
}

func invalid(msg string) *apiError      { return &apiError{400, 3, msg} }
func precondition(msg string) *apiError { return &apiError{400, 9, msg} }

var fakeUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func newFakeES(tenantID, secret string, full bool, defect string) *fakeES {
	return &fakeES{tenantID: tenantID, secret: secret, full: full, defect: defect, ctxs: map[string]*fakeContext{}, destroyed: map[string]bool{}}
}

// newContext makes a key context with one active version and returns its id.
func (f *fakeES) newContext() (id, version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &fakeContext{id: fakeID()}
	c.versions = append(c.versions, newFakeVersion())
	f.ctxs[c.id] = c
	return c.id, c.versions[0].id
}

func newFakeVersion() *fakeVersion {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	return &fakeVersion{id: fakeID(), state: "ACTIVE", aead: aead}
}

func fakeID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// handler routes the contract's paths; the mux answers 404 and 405 for the others.
func (f *fakeES) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/encrypt", f.single(func(body []byte) (any, *apiError) {
		var req encryptReq
		if e := f.decode(body, &req); e != nil {
			return nil, e
		}
		return f.encrypt(req)
	}))
	mux.HandleFunc("POST /v1/decrypt", f.single(func(body []byte) (any, *apiError) {
		var req decryptReq
		if e := f.decode(body, &req); e != nil {
			return nil, e
		}
		data, e := f.decrypt(req)
		return map[string]any{"data": data}, e
	}))
	mux.HandleFunc("POST /v1/rotate", f.single(f.rotate))
	if !f.full {
		return f.authenticate(mux)
	}
	mux.HandleFunc("POST /v1/encryptions", f.single(f.create))
	mux.HandleFunc("GET /v1/encryptions/{id}", f.describe)
	mux.HandleFunc("DELETE /v1/encryptions/{id}", f.destroyContext)
	mux.HandleFunc("POST /v1/encryptions/{id}/versions/{transition}", f.transition)
	mux.HandleFunc("POST /v1/rewrap", f.single(func(body []byte) (any, *apiError) {
		var req decryptReq
		if e := f.decode(body, &req); e != nil {
			return nil, e
		}
		return f.rewrap(req)
	}))
	mux.HandleFunc("POST /v1/encrypt:batch", f.batch(func(raw json.RawMessage) (any, *apiError) {
		var req encryptReq
		if e := f.decode(raw, &req); e != nil {
			return nil, e
		}
		return f.encrypt(req)
	}))
	mux.HandleFunc("POST /v1/decrypt:batch", f.batch(func(raw json.RawMessage) (any, *apiError) {
		var req decryptReq
		if e := f.decode(raw, &req); e != nil {
			return nil, e
		}
		data, e := f.decrypt(req)
		return map[string]any{"data": data}, e
	}))
	mux.HandleFunc("POST /v1/rewrap:batch", f.batch(func(raw json.RawMessage) (any, *apiError) {
		var req decryptReq
		if e := f.decode(raw, &req); e != nil {
			return nil, e
		}
		return f.rewrap(req)
	}))
	return f.authenticate(mux)
}

func (f *fakeES) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Tenant-Id")), []byte(f.tenantID)) == 1 &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Tenant-Secret")), []byte(f.secret)) == 1
		switch {
		case !ok && f.defect == defectTenantOracle:
			// The same message, yet another body: enough to tell tenants apart.
			reason := "no such tenant"
			if r.Header.Get("X-Tenant-Id") == f.tenantID {
				reason = "wrong secret for this tenant"
			}
			writeFake(w, 401, map[string]any{"message": "missing or wrong tenant credential", "reason": reason})
			return
		case !ok && f.defect != defectNoAuth:
			writeFake(w, 401, map[string]any{"message": "missing or wrong tenant credential"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeFake(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client sees a cut answer if this fails
}

func writeFakeError(w http.ResponseWriter, e *apiError) {
	writeFake(w, e.status, map[string]any{"code": e.code, "message": e.msg})
}

// single serves a one-item endpoint.
func (f *fakeES) single(op func([]byte) (any, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		if _, err := body.ReadFrom(r.Body); err != nil {
			writeFakeError(w, invalid("cannot read request body"))
			return
		}
		f.mu.Lock()
		resp, e := op(body.Bytes())
		f.mu.Unlock()
		if e != nil {
			writeFakeError(w, e)
			return
		}
		writeFake(w, 200, resp)
	}
}

// batch serves {"items": [...]} → {"results": [...]}.
func (f *fakeES) batch(op func(json.RawMessage) (any, *apiError)) http.HandlerFunc {
	return f.single(func(body []byte) (any, *apiError) {
		var req struct {
			Items []json.RawMessage `json:"items"`
		}
		if e := f.decode(body, &req); e != nil {
			return nil, e
		}
		results := []any{}
		for _, item := range req.Items {
			resp, e := op(item)
			if e != nil && f.defect == defectBatchFailsAll {
				return nil, e
			}
			if e != nil {
				resp = map[string]any{"error": map[string]any{"code": e.code, "message": e.msg}}
			}
			results = append(results, resp)
		}
		return map[string]any{"results": results}, nil
	})
}

// decode reads one JSON object strictly (unless the lax_json defect is on).
func (f *fakeES) decode(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	if f.defect != defectLaxJSON {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return invalid("malformed request body: " + err.Error())
	}
	if dec.More() {
		return invalid("malformed request body: data after the object")
	}
	return nil
}

// lookup finds a context, answering 404 (or 400 with the unknown_is_400 defect).
func (f *fakeES) lookup(id string) (*fakeContext, *apiError) {
	if !fakeUUID.MatchString(id) {
		return nil, invalid("encryptionId: not a UUID")
	}
	c, ok := f.ctxs[id]
	switch {
	case !ok && f.destroyed[id] && f.defect == defectDestroyedIs400:
		return nil, precondition("key context " + id + " was destroyed")
	case !ok && f.destroyed[id] && f.defect == defectDestroyedToldApart:
		return nil, &apiError{404, 5, "key context " + id + " was destroyed"}
	}
	if !ok {
		if f.defect == defectUnknownIs400 {
			return nil, invalid("bad encryptionId")
		}
		return nil, &apiError{404, 5, "key context " + id + " not found"}
	}
	return c, nil
}

type encryptReq struct {
	EncryptionID        string  `json:"encryptionId"`
	Data                *string `json:"data"`
	EncryptionVersionID string  `json:"encryptionVersionId"`
}

type decryptReq struct {
	EncryptionID        string          `json:"encryptionId"`
	CipherText          string          `json:"cipherText"`
	EncryptionVersionID string          `json:"encryptionVersionId"`
	Metadata            json.RawMessage `json:"metadata"`
}

func ad(c *fakeContext, v *fakeVersion) []byte { return []byte(c.id + "|" + v.id) }

func (f *fakeES) encrypt(req encryptReq) (any, *apiError) {
	c, e := f.lookup(req.EncryptionID)
	if e != nil {
		return nil, e
	}
	v := c.active()
	if req.EncryptionVersionID != "" {
		if !fakeUUID.MatchString(req.EncryptionVersionID) {
			return nil, invalid("encryptionVersionId: not a UUID")
		}
		if v = c.version(req.EncryptionVersionID); v == nil && f.defect == defectUnknownVersionIs400 {
			return nil, invalid("encryptionVersionId: no such version")
		}
		if v == nil {
			return nil, &apiError{404, 5, "version not found"}
		}
	}
	if v == nil || v.state != "ACTIVE" {
		return nil, precondition("the version no longer encrypts")
	}
	data := ""
	if req.Data != nil {
		data = *req.Data
	}
	return f.seal(c, v, data), nil
}

func (f *fakeES) seal(c *fakeContext, v *fakeVersion, data string) map[string]any {
	nonce := make([]byte, 12)
	rand.Read(nonce)
	ct := v.aead.Seal(nil, nonce, []byte(data), ad(c, v))
	name := "cipherText"
	if f.defect == defectWrongFieldName {
		name = "cipher_text"
	}
	return map[string]any{
		name: base64.StdEncoding.EncodeToString(ct), "encryptionId": c.id, "encryptionVersionId": v.id,
		"algorithm": "AES-256-GCM", "metadata": map[string]any{"formatVersion": 1, "nonce": base64.StdEncoding.EncodeToString(nonce)},
	}
}

func (f *fakeES) decrypt(req decryptReq) (string, *apiError) {
	c, e := f.lookup(req.EncryptionID)
	if e != nil {
		return "", e
	}
	if !fakeUUID.MatchString(req.EncryptionVersionID) {
		return "", invalid("encryptionVersionId: not a UUID")
	}
	v := c.version(req.EncryptionVersionID)
	switch {
	case v == nil:
		return "", &apiError{404, 5, "version not found"}
	case v.state == "DESTROYED", v.state == "DISABLED" && f.defect != defectDisableIgnored:
		return "", precondition("the version is " + v.state)
	}
	ct, err := base64.StdEncoding.DecodeString(req.CipherText)
	if err != nil || len(req.CipherText) == 0 {
		return "", invalid("cipherText: not base64")
	}
	var meta struct {
		FormatVersion int    `json:"formatVersion"`
		Nonce         string `json:"nonce"`
	}
	if err := json.Unmarshal(req.Metadata, &meta); err != nil || meta.FormatVersion != 1 {
		return "", invalid("metadata: want {formatVersion: 1, nonce}")
	}
	nonce, err := base64.StdEncoding.DecodeString(meta.Nonce)
	if err != nil || len(nonce) != 12 {
		return "", invalid("metadata.nonce: want base64 of 12 bytes")
	}
	plain, err := v.aead.Open(nil, nonce, ct, ad(c, v))
	if err != nil {
		if f.defect == defectAcceptsTampered {
			return "", nil
		}
		return "", invalid("cipherText does not authenticate")
	}
	data := string(plain)
	if f.defect == defectAlteredData {
		data = strings.Map(func(r rune) rune {
			if r > 127 {
				return '?'
			}
			return r
		}, data)
	}
	return data, nil
}

func (f *fakeES) rewrap(req decryptReq) (any, *apiError) {
	data, e := f.decrypt(req)
	if e != nil {
		return nil, e
	}
	c := f.ctxs[req.EncryptionID]
	v := c.active()
	if f.defect == defectRewrapKeepsVersion {
		v = c.version(req.EncryptionVersionID)
	}
	return f.seal(c, v, data), nil
}

func (f *fakeES) rotate(body []byte) (any, *apiError) {
	var req struct {
		EncryptionID string `json:"encryptionId"`
	}
	if e := f.decode(body, &req); e != nil {
		return nil, e
	}
	c, e := f.lookup(req.EncryptionID)
	if e != nil {
		return nil, e
	}
	if f.defect == defectRotateKeepsVersion {
		return map[string]any{"newVersionId": c.active().id}, nil
	}
	c.active().state = "DECRYPT_ONLY"
	v := newFakeVersion()
	c.versions = append(c.versions, v)
	return map[string]any{"newVersionId": v.id}, nil
}

func (f *fakeES) create(body []byte) (any, *apiError) {
	var req struct {
		Algorithm string `json:"algorithm"`
		KeyMode   string `json:"keyMode"`
	}
	if e := f.decode(body, &req); e != nil {
		return nil, e
	}
	if req.Algorithm != "" && req.Algorithm != "AES-256-GCM" {
		return nil, invalid("algorithm: only AES-256-GCM is offered")
	}
	if req.KeyMode != "" && req.KeyMode != "PLATFORM" {
		return nil, invalid("keyMode: only PLATFORM is offered")
	}
	c := &fakeContext{id: fakeID(), versions: []*fakeVersion{newFakeVersion()}}
	f.ctxs[c.id] = c
	return map[string]any{"encryptionId": c.id, "encryptionVersionId": c.versions[0].id, "algorithm": "AES-256-GCM", "keyMode": "PLATFORM"}, nil
}

func versionJSON(i int, v *fakeVersion) map[string]any {
	return map[string]any{"versionId": v.id, "version": i + 1, "state": v.state}
}

func (f *fakeES) describe(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, e := f.lookup(r.PathValue("id"))
	if e != nil {
		writeFakeError(w, e)
		return
	}
	var versions []any
	for i, v := range c.versions {
		versions = append(versions, versionJSON(i, v))
	}
	writeFake(w, 200, map[string]any{"encryptionId": c.id, "algorithm": "AES-256-GCM", "keyMode": "PLATFORM",
		"activeVersionId": c.active().id, "versions": versions})
}

func (f *fakeES) destroyContext(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, e := f.lookup(r.PathValue("id"))
	if e != nil {
		writeFakeError(w, e)
		return
	}
	delete(f.ctxs, c.id)
	f.destroyed[c.id] = true
	writeFake(w, 200, map[string]any{"encryptionId": c.id, "versionsDestroyed": len(c.versions)})
}

// transition serves {id}/versions/{version}:disable, :enable and :destroy.
func (f *fakeES) transition(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, e := f.lookup(r.PathValue("id"))
	if e != nil {
		writeFakeError(w, e)
		return
	}
	versionID, verb, _ := strings.Cut(r.PathValue("transition"), ":")
	i := -1
	for j, v := range c.versions {
		if v.id == versionID {
			i = j
		}
	}
	if i < 0 {
		writeFakeError(w, &apiError{404, 5, "version not found"})
		return
	}
	v := c.versions[i]
	from, to := map[string]string{"disable": "DECRYPT_ONLY", "enable": "DISABLED", "destroy": "DISABLED"}[verb],
		map[string]string{"disable": "DISABLED", "enable": "DECRYPT_ONLY", "destroy": "DESTROYED"}[verb]
	switch {
	case to == "":
		writeFakeError(w, &apiError{404, 5, "no such transition"})
		return
	case v.state != from:
		writeFakeError(w, precondition("the version is "+v.state))
		return
	}
	v.state = to
	if to == "DESTROYED" {
		v.aead = nil
	}
	writeFake(w, 200, versionJSON(i, v))
}
