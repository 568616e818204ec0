package conformance

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// suite is one run of the checks against one target.
type suite struct {
	target Target
	c      *client
	report *Report

	createOnce sync.Once
	createErr  string // why no context can be created; empty when POST /v1/encryptions works
	// createNoAnswer is set when POST /v1/encryptions got no answer at all.
	createNoAnswer string
}

// skipOrFail skips the section, recording why, or fails it when the target requires it.
func (s *suite) skipOrFail(t *testing.T, sec Section, why string) {
	t.Helper()
	if slices.Contains(s.target.Require, sec) {
		t.Fatalf("section %s is required but cannot run: %s", sec, why)
	}
	s.report.skip(sec, why)
	t.Skip(why)
}

// canCreate says whether the target creates key contexts (POST /v1/encryptions); when not, why.
func (s *suite) canCreate(t *testing.T) (bool, string) {
	t.Helper()
	s.createOnce.Do(func() {
		req := request{method: "POST", path: "/v1/encryptions", header: s.c.tenant(), body: []byte("{}")}
		resp, err := s.c.send(s.c.http, req)
		x := &exchange{c: s.c, req: req, resp: resp}
		switch {
		case err != nil:
			s.createNoAnswer = "POST /v1/encryptions got no answer: " + s.c.redact(err.Error())
			s.createErr = s.createNoAnswer
		case !x.offered():
			s.createErr = "the target does not create key contexts: " + x.why()
		case resp.status != http.StatusOK:
			s.createErr = "POST /v1/encryptions with {} did not answer 200: " + x.received()
		}
	})
	if s.createNoAnswer != "" {
		t.Fatal(s.createNoAnswer) // a broken connection, not a missing feature
	}
	return s.createErr == "", s.createErr
}

// context returns a PLATFORM key context to check with: a new one when the target creates them,
// else Target.EncryptionID. It stops the test when there is neither.
func (s *suite) context(t *testing.T) string {
	t.Helper()
	ok, why := s.canCreate(t)
	if !ok && s.target.EncryptionID != "" {
		return s.target.EncryptionID
	}
	if !ok {
		t.Fatalf("no key context to check with: %s, and no existing context is configured "+
			"(Target.EncryptionID, %s)", why, EnvEncryptionID)
	}
	x := s.c.do(t, "POST", "/v1/encryptions", s.c.tenant(), map[string]any{})
	x.mustStatus(t, http.StatusOK)
	return x.mustStr(t, "encryptionId")
}

// item is a successful encryption: what decrypt and rewrap need, and the data it holds.
type item struct {
	encryptionID, versionID, cipherText string
	metadata                            any
	data                                string
	answer                              *exchange
}

// decryptBody is the decrypt (or rewrap) request for it.
func (it item) decryptBody() map[string]any {
	return map[string]any{
		"encryptionId": it.encryptionID, "cipherText": it.cipherText,
		"encryptionVersionId": it.versionID, "metadata": it.metadata,
	}
}

// with returns the decrypt request with fields replaced (nil deletes a field).
func (it item) with(kv ...any) map[string]any {
	b := it.decryptBody()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(b, kv[i].(string))
		} else {
			b[kv[i].(string)] = kv[i+1]
		}
	}
	return b
}

// encrypt encrypts data under context id and stops the test unless it gets a usable answer.
func (s *suite) encrypt(t *testing.T, header map[string]string, id, data string) item {
	t.Helper()
	x := s.c.do(t, "POST", "/v1/encrypt", header, map[string]any{"encryptionId": id, "data": data})
	return mustItem(t, x, data)
}

// mustItem reads an encrypt-shaped answer (encrypt, rewrap) into an item.
func mustItem(t *testing.T, x *exchange, data string) item {
	t.Helper()
	x.mustStatus(t, http.StatusOK)
	it := item{data: data, answer: x}
	it.cipherText = x.mustStr(t, "cipherText")
	it.encryptionID = x.mustStr(t, "encryptionId")
	it.versionID = x.mustStr(t, "encryptionVersionId")
	meta, ok := x.resp.obj["metadata"]
	if !ok {
		x.fatal(t, "a JSON object with a field %q", "metadata")
	}
	it.metadata = meta
	return it
}

// decrypt sends the decrypt request of it with header.
func (s *suite) decrypt(t *testing.T, header map[string]string, it item) *exchange {
	t.Helper()
	return s.c.do(t, "POST", "/v1/decrypt", header, it.decryptBody())
}

// checkDecrypted checks that a decrypt answer is exactly {"data": want}.
func checkDecrypted(t *testing.T, x *exchange, want string) {
	t.Helper()
	if !x.status(t, http.StatusOK) {
		return
	}
	got, ok := x.str("data")
	if !ok {
		x.fail(t, `a JSON object with a string field "data"`)
		return
	}
	if ks := keysOf(x.resp.obj); !slices.Equal(ks, []string{"data"}) {
		x.fail(t, `exactly the seed's field "data", not %q`, ks)
	}
	if got != want {
		x.fail(t, "data byte-for-byte as encrypted: %s", firstDifference(got, want))
	}
}

// firstDifference describes where got and want part.
func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	window := func(s string) string {
		lo, hi := max(0, i-8), min(len(s), i+24)
		return fmt.Sprintf("%q", s[lo:hi])
	}
	return fmt.Sprintf("%d bytes, got %d; they differ from byte %d on: want …%s…, got …%s…",
		len(want), len(got), i, window(want), window(got))
}

// encryptFields are the seed's encrypt output, sorted.
var encryptFields = []string{"algorithm", "cipherText", "encryptionId", "encryptionVersionId", "metadata"}

// checkEncryptAnswer checks an encrypt-shaped answer (encrypt, rewrap) field by field, each as a
// subtest: the seed's names and types, the context and version it should name, and that the
// ciphertext does not show the data.
func checkEncryptAnswer(t *testing.T, x *exchange, wantID, wantVersion, data string) {
	t.Helper()
	if !x.status(t, http.StatusOK) {
		return
	}
	checks := []struct {
		name  string
		check func() (ok bool, expected string)
	}{
		{"exactly_the_seed_fields", func() (bool, string) {
			return slices.Equal(keysOf(x.resp.obj), encryptFields), fmt.Sprintf("exactly the fields %q (got %q)", encryptFields, keysOf(x.resp.obj))
		}},
		{"cipherText_is_base64", func() (bool, string) {
			ct, ok := x.str("cipherText")
			raw, err := base64.StdEncoding.DecodeString(ct)
			return ok && err == nil && len(raw) > 0, `"cipherText": a non-empty string of standard, padded base64`
		}},
		{"encryptionId_is_the_context", func() (bool, string) {
			id, ok := x.str("encryptionId")
			return ok && strings.EqualFold(id, wantID), fmt.Sprintf(`"encryptionId": the string %q`, wantID)
		}},
		{"encryptionVersionId_is_the_version", func() (bool, string) {
			v, ok := x.str("encryptionVersionId")
			if wantVersion == "" {
				return ok && isUUID(v), `"encryptionVersionId": a UUID string`
			}
			return ok && strings.EqualFold(v, wantVersion), fmt.Sprintf(`"encryptionVersionId": the version %q`, wantVersion)
		}},
		{"algorithm_is_named", func() (bool, string) {
			a, ok := x.str("algorithm")
			return ok && a != "", `"algorithm": a non-empty string such as "AES-256-GCM"`
		}},
		{"metadata_is_an_object", func() (bool, string) {
			_, ok := x.resp.obj["metadata"].(map[string]any)
			return ok, `"metadata": a JSON object`
		}},
		{"cipherText_hides_the_data", func() (bool, string) {
			ct, _ := x.str("cipherText")
			raw, _ := base64.StdEncoding.DecodeString(ct)
			leak := len(data) >= 8 && (strings.Contains(string(x.resp.body), data) ||
				strings.Contains(string(raw), data) ||
				strings.Contains(ct, base64.StdEncoding.EncodeToString([]byte(data))))
			return !leak, "no trace of the data in the answer, nor in the decoded cipherText"
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if ok, expected := c.check(); !ok {
				x.fail(t, "%s", expected)
			}
		})
	}
}

// checkNoLeak fails when an answer holds any of the values, which must never be echoed.
func checkNoLeak(t *testing.T, x *exchange, what string, values ...string) {
	t.Helper()
	for _, v := range values {
		if len(v) >= 4 && strings.Contains(string(x.resp.body), v) {
			t.Errorf("the answer to %s %s echoes the %s (not shown here); it must never", x.req.method, x.req.path, what)
		}
	}
}

// flipBit returns b64 (standard base64) with one bit of its decoded bytes flipped, at byte i
// (negative counts from the end); ok is false when b64 is not base64 or is empty.
func flipBit(b64 string, i int) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		return "", false
	}
	if i < 0 {
		i += len(raw)
	}
	raw[i] ^= 0x01
	return base64.StdEncoding.EncodeToString(raw), true
}

// alterBase64 returns b64 changed by f on its decoded bytes.
func alterBase64(b64 string, f func([]byte) []byte) string {
	raw, _ := base64.StdEncoding.DecodeString(b64)
	return base64.StdEncoding.EncodeToString(f(raw))
}

// variesPerCall are the names, lower-cased without '_' and '-', of answer fields that differ on
// every call and so are left out when two answers are compared: the request's own identifiers and
// the time.
var variesPerCall = []string{"requestid", "traceid", "spanid", "correlationid", "timestamp"}

// sameAnswer reports whether a and b got the same answer: the same status and the same body, once
// each id of ids (pairs: an id in a's request, its counterpart in b's) is replaced in a's body by
// its counterpart, and the fields that vary per call (variesPerCall) are left out, at any depth.
// Bodies that are not JSON are compared byte for byte.
func sameAnswer(a, b *exchange, ids ...string) bool {
	if a.resp.status != b.resp.status {
		return false
	}
	body := string(a.resp.body)
	for i := 0; i+1 < len(ids); i += 2 {
		for _, form := range []string{ids[i], strings.ToLower(ids[i]), strings.ToUpper(ids[i])} {
			body = strings.ReplaceAll(body, form, ids[i+1])
		}
	}
	ja, okA := normalized(body)
	jb, okB := normalized(string(b.resp.body))
	if !okA || !okB {
		return body == string(b.resp.body)
	}
	return ja == jb
}

// normalized is a JSON body re-encoded without the fields that vary per call; ok is false for a
// body that is not JSON.
func normalized(body string) (string, bool) {
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return "", false
	}
	out, err := json.Marshal(withoutPerCall(v))
	return string(out), err == nil
}

func withoutPerCall(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, vv := range x {
			name := strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(k))
			if !slices.Contains(variesPerCall, name) {
				out[k] = withoutPerCall(vv)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, vv := range x {
			out[i] = withoutPerCall(vv)
		}
		return out
	}
	return v
}
