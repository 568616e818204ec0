package conformance

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// contexts checks POST /v1/encryptions and GET /v1/encryptions/{id}.
func (s *suite) contexts(t *testing.T) {
	if ok, why := s.canCreate(t); !ok {
		s.skipOrFail(t, Contexts, why)
	}
	ten := s.c.tenant()
	created := s.c.do(t, "POST", "/v1/encryptions", ten, map[string]any{})
	created.mustStatus(t, http.StatusOK)
	id := created.mustStr(t, "encryptionId")
	version, _ := created.str("encryptionVersionId")

	t.Run("create/fields", func(t *testing.T) {
		want := []string{"algorithm", "encryptionId", "encryptionVersionId", "keyMode"}
		if ks := keysOf(created.resp.obj); !slices.Equal(ks, want) || !isUUID(id) || !isUUID(version) {
			created.fail(t, "exactly the fields %q, the two ids UUIDs", want)
		}
	})
	t.Run("create/defaults_AES-256-GCM_PLATFORM", func(t *testing.T) {
		if a, _ := created.str("algorithm"); a != "AES-256-GCM" {
			created.fail(t, `"algorithm": "AES-256-GCM", the default`)
		}
		if m, _ := created.str("keyMode"); m != "PLATFORM" {
			created.fail(t, `"keyMode": "PLATFORM", the default`)
		}
	})
	t.Run("create/first_version_encrypts", func(t *testing.T) {
		it := s.encrypt(t, ten, id, "first version")
		if !strings.EqualFold(it.versionID, version) {
			it.answer.fail(t, `"encryptionVersionId": %q, the version the context was created with`, version)
		}
	})

	// The Custos contract's algorithms; AES-256-GCM is the default and must be offered.
	for _, alg := range []string{"AES-256-GCM", "XCHACHA20-POLY1305", "RSA-OAEP-3072-SHA256"} {
		t.Run("algorithm/"+alg, func(t *testing.T) {
			x := s.c.do(t, "POST", "/v1/encryptions", ten, map[string]any{"algorithm": alg, "keyMode": "PLATFORM"})
			if x.resp.status == http.StatusBadRequest && alg != "AES-256-GCM" {
				t.Skipf("the target does not offer %s: %s", alg, x.received())
			}
			x.mustStatus(t, http.StatusOK)
			aid := x.mustStr(t, "encryptionId")
			if a, _ := x.str("algorithm"); a != alg {
				x.fail(t, `"algorithm": %q`, alg)
			}
			// Short data, and data longer than one RSA block.
			datas := []string{"algorithm check ü🔐", strings.Repeat("0123456789abcdef", 6<<10)}
			var items []item
			for _, d := range datas {
				it := s.encrypt(t, ten, aid, d)
				if a, _ := it.answer.str("algorithm"); a != alg {
					it.answer.fail(t, `"algorithm": %q, the context's`, alg)
				}
				items = append(items, it)
			}
			s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": aid}).mustStatus(t, http.StatusOK)
			items = append(items, s.encrypt(t, ten, aid, "after rotation"))
			for _, it := range items {
				checkDecrypted(t, s.decrypt(t, ten, it), it.data)
			}
		})
	}

	bad := []struct {
		name string
		body any
	}{
		{"unknown_algorithm_400", map[string]any{"algorithm": "ROT13"}},
		{"unknown_key_mode_400", map[string]any{"keyMode": "BOTH"}},
		{"unknown_field_400", map[string]any{"algorithm": "AES-256-GCM", "keySize": 256}},
	}
	for _, b := range bad {
		t.Run("create/"+b.name, func(t *testing.T) {
			s.c.do(t, "POST", "/v1/encryptions", ten, b.body).status(t, http.StatusBadRequest)
		})
	}

	t.Run("get/fields", func(t *testing.T) {
		x := s.c.do(t, "GET", "/v1/encryptions/"+id, ten, nil)
		x.mustStatus(t, http.StatusOK)
		versions := checkDescription(t, x, id, version, 1)
		if len(versions) == 1 && versions[0]["state"] != "ACTIVE" {
			x.fail(t, `versions[0].state "ACTIVE"`)
		}
	})
	t.Run("get/after_rotate", func(t *testing.T) {
		rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		rot.mustStatus(t, http.StatusOK)
		v2 := rot.mustStr(t, "newVersionId")
		x := s.c.do(t, "GET", "/v1/encryptions/"+id, ten, nil)
		x.mustStatus(t, http.StatusOK)
		versions := checkDescription(t, x, id, v2, 2)
		if len(versions) == 2 && (versions[0]["state"] != "DECRYPT_ONLY" || versions[1]["state"] != "ACTIVE" ||
			!strings.EqualFold(fmt.Sprint(versions[1]["versionId"]), v2)) {
			x.fail(t, `versions oldest first: the first "DECRYPT_ONLY", the second %q "ACTIVE"`, v2)
		}
	})
	t.Run("get/unknown_404", func(t *testing.T) {
		s.c.do(t, "GET", "/v1/encryptions/"+newUUID(), ten, nil).status(t, http.StatusNotFound)
	})
	t.Run("get/malformed_id_400", func(t *testing.T) {
		s.c.do(t, "GET", "/v1/encryptions/not-a-uuid", ten, nil).status(t, http.StatusBadRequest)
	})
}

// checkDescription checks a GetEncryption answer and returns its versions.
func checkDescription(t *testing.T, x *exchange, id, active string, n int) []map[string]any {
	t.Helper()
	for _, f := range []string{"encryptionId", "algorithm", "keyMode", "activeVersionId"} {
		if _, ok := x.str(f); !ok {
			x.fail(t, "a string field %q", f)
		}
	}
	if got, _ := x.str("encryptionId"); !strings.EqualFold(got, id) {
		x.fail(t, `"encryptionId": %q`, id)
	}
	if got, _ := x.str("activeVersionId"); !strings.EqualFold(got, active) {
		x.fail(t, `"activeVersionId": %q`, active)
	}
	raw, ok := x.resp.obj["versions"].([]any)
	if !ok || len(raw) != n {
		x.fail(t, `"versions": an array of %d versions`, n)
		return nil
	}
	var versions []map[string]any
	for i, v := range raw {
		m, ok := v.(map[string]any)
		if !ok {
			x.fail(t, "versions[%d]: an object", i)
			return nil
		}
		if id, _ := m["versionId"].(string); !isUUID(id) {
			x.fail(t, `versions[%d].versionId: a UUID string`, i)
		}
		versions = append(versions, m)
	}
	return versions
}

// rewrap checks POST /v1/rewrap: a ciphertext of an old version comes back under the active one.
func (s *suite) rewrap(t *testing.T) {
	ten := s.c.tenant()
	id := s.context(t)
	old := s.encrypt(t, ten, id, "conformance: rewrap me")
	probe := s.c.do(t, "POST", "/v1/rewrap", ten, old.decryptBody())
	if !probe.offered() {
		s.skipOrFail(t, Rewrap, "the target does not rewrap: "+probe.why())
	}
	rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
	rot.mustStatus(t, http.StatusOK)
	active := rot.mustStr(t, "newVersionId")

	x := s.c.do(t, "POST", "/v1/rewrap", ten, old.decryptBody())
	t.Run("answer", func(t *testing.T) { checkEncryptAnswer(t, x, id, active, old.data) })
	t.Run("decrypts_to_the_original", func(t *testing.T) {
		checkDecrypted(t, s.decrypt(t, ten, mustItem(t, x, old.data)), old.data)
	})
	t.Run("active_version_ciphertext", func(t *testing.T) {
		cur := s.encrypt(t, ten, id, "already current")
		y := s.c.do(t, "POST", "/v1/rewrap", ten, cur.decryptBody())
		checkEncryptAnswer(t, y, id, active, cur.data)
	})
	cases := []struct {
		name string
		body any
		want int // 0: any 4xx
	}{
		{"tampered_refused", old.with("cipherText", mustFlip(old.cipherText)), 0},
		{"wrong_version_refused", old.with("encryptionVersionId", active), 0},
		{"unknown_context_404", old.with("encryptionId", newUUID()), http.StatusNotFound},
		{"unknown_field_400", old.with("targetVersionId", active), http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := s.c.do(t, "POST", "/v1/rewrap", ten, tc.body)
			if tc.want == 0 {
				y.refused(t, "the ciphertext does not authenticate under the version named")
			} else {
				y.status(t, tc.want)
			}
			checkNoLeak(t, y, "data", old.data)
		})
	}
	t.Run("wrong_credential_401", func(t *testing.T) {
		y := s.c.do(t, "POST", "/v1/rewrap", map[string]string{hdrTenantID: s.target.TenantID, hdrTenantSecret: "cts_wrong"}, old.decryptBody())
		y.status(t, http.StatusUnauthorized)
	})
}

// dataKey checks POST /v1/datakey: a fresh key, and its encrypted copy, which /v1/decrypt turns
// back into the key (its base64 text).
func (s *suite) dataKey(t *testing.T) {
	ten := s.c.tenant()
	id := s.context(t)
	x := s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id})
	if !x.offered() {
		s.skipOrFail(t, DataKey, "the target does not generate data keys: "+x.why())
	}
	x.mustStatus(t, http.StatusOK)
	key := x.mustStr(t, "dataKey")
	t.Run("key_is_32_bytes", func(t *testing.T) {
		if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 32 {
			x.fail(t, `"dataKey": standard base64 of 32 bytes, the default length`)
		}
	})
	t.Run("copy_decrypts_to_the_key", func(t *testing.T) {
		checkDecrypted(t, s.decrypt(t, ten, mustItem(t, x, key)), key)
	})
	t.Run("fresh_every_time", func(t *testing.T) {
		y := s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id})
		y.mustStatus(t, http.StatusOK)
		if k, _ := y.str("dataKey"); k == key {
			y.fail(t, "a key other than the previous answer's")
		}
	})
	t.Run("keyBytes_16", func(t *testing.T) {
		y := s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id, "keyBytes": 16})
		y.mustStatus(t, http.StatusOK)
		k, _ := y.str("dataKey")
		if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) != 16 {
			y.fail(t, `"dataKey": base64 of 16 bytes`)
		}
	})
	t.Run("wrappedOnly_leaves_the_key_out", func(t *testing.T) {
		y := s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id, "wrappedOnly": true})
		y.mustStatus(t, http.StatusOK)
		if k, _ := y.str("dataKey"); k != "" {
			y.fail(t, `no "dataKey" (or an empty one)`)
		}
		got := s.decrypt(t, ten, mustItem(t, y, ""))
		got.mustStatus(t, http.StatusOK)
		if d, _ := got.str("data"); len(d) != base64.StdEncoding.EncodedLen(32) {
			got.fail(t, `"data": the base64 text of the 32-byte key`)
		}
	})
	t.Run("bad_length_400", func(t *testing.T) {
		s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": id, "keyBytes": 20}).status(t, http.StatusBadRequest)
	})
	t.Run("unknown_context_404", func(t *testing.T) {
		s.c.do(t, "POST", "/v1/datakey", ten, map[string]any{"encryptionId": newUUID()}).status(t, http.StatusNotFound)
	})
}

func mustFlip(b64 string) string {
	f, ok := flipBit(b64, 0)
	if !ok {
		return "AAAA"
	}
	return f
}

// batchResult is one entry of "results".
type batchResult struct {
	obj  map[string]any
	code int64 // error.code, 0 when no error
	msg  string
}

// batchResults reads {"results": [...]} with want entries, stopping the test when it cannot.
func batchResults(t *testing.T, x *exchange, want int) []batchResult {
	t.Helper()
	raw, ok := x.resp.obj["results"].([]any)
	if x.resp.status != http.StatusOK || !ok || len(raw) != want {
		x.fatal(t, `status 200 and {"results": [...]} with %d results, one per item, in order: a bad item fails alone`, want)
	}
	out := make([]batchResult, len(raw))
	for i, r := range raw {
		obj, ok := r.(map[string]any)
		if !ok {
			x.fatal(t, "results[%d]: a JSON object", i)
		}
		out[i].obj = obj
		if e, ok := obj["error"].(map[string]any); ok {
			n, _ := e["code"].(json.Number)
			out[i].code, _ = n.Int64()
			out[i].msg, _ = e["message"].(string)
			if out[i].code == 0 || out[i].msg == "" {
				x.fail(t, `results[%d].error: {"code": <gRPC code, not 0>, "message": "<why>"}`, i)
			}
		}
	}
	return out
}

// batch checks the batch endpoints: one result per item, in order, a bad item failing alone.
func (s *suite) batch(t *testing.T) {
	ten := s.c.tenant()
	id := s.context(t)
	probe := s.c.do(t, "POST", "/v1/encrypt:batch", ten, map[string]any{"items": []any{map[string]any{"encryptionId": id, "data": "probe"}}})
	if !probe.offered() {
		s.skipOrFail(t, Batch, "the target has no batch endpoints: "+probe.why())
	}

	var datas []string
	var items []any
	for i := range 5 {
		d := fmt.Sprintf("batch item %d ü🔐", i)
		datas = append(datas, d)
		items = append(items, map[string]any{"encryptionId": id, "data": d})
	}
	enc := s.c.do(t, "POST", "/v1/encrypt:batch", ten, map[string]any{"items": items})
	encrypted := batchResults(t, enc, len(items))
	var decItems []any
	var good []item
	t.Run("encrypt/every_result_has_the_encrypt_fields", func(t *testing.T) {
		for i, r := range encrypted {
			if ks := keysOf(r.obj); !slices.Equal(ks, encryptFields) {
				enc.fail(t, "results[%d]: exactly %q (null fields aside), got %q", i, encryptFields, ks)
			}
		}
	})
	for i, r := range encrypted {
		ct, _ := r.obj["cipherText"].(string)
		v, _ := r.obj["encryptionVersionId"].(string)
		it := item{encryptionID: id, versionID: v, cipherText: ct, metadata: r.obj["metadata"], data: datas[i], answer: enc}
		good = append(good, it)
		decItems = append(decItems, it.decryptBody())
	}
	t.Run("decrypt/in_order", func(t *testing.T) {
		dec := s.c.do(t, "POST", "/v1/decrypt:batch", ten, map[string]any{"items": decItems})
		for i, r := range batchResults(t, dec, len(decItems)) {
			if got, _ := r.obj["data"].(string); got != datas[i] || r.code != 0 {
				dec.fail(t, "results[%d]: {\"data\": %q}", i, datas[i])
			}
		}
	})
	t.Run("encrypt/bad_item_fails_alone", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/encrypt:batch", ten, map[string]any{"items": []any{
			map[string]any{"encryptionId": id, "data": "good 0"},
			map[string]any{"encryptionId": newUUID(), "data": "unknown context"},
			map[string]any{"encryptionId": id, "data": "good 2"},
			map[string]any{"encryptionId": "not-a-uuid", "data": "malformed id"},
		}})
		checkMixed(t, x, 4, map[int]int64{1: 5, 3: 3}, "cipherText")
	})
	t.Run("decrypt/bad_item_fails_alone", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/decrypt:batch", ten, map[string]any{"items": []any{
			good[0].decryptBody(),
			good[1].with("cipherText", mustFlip(good[1].cipherText)),
			good[2].decryptBody(),
			good[3].with("encryptionId", newUUID()),
		}})
		checkMixed(t, x, 4, map[int]int64{1: 3, 3: 5}, "data")
		checkNoLeak(t, x, "data", datas[1], datas[3])
	})
	t.Run("rewrap/bad_item_fails_alone", func(t *testing.T) {
		first := s.c.do(t, "POST", "/v1/rewrap:batch", ten, map[string]any{"items": []any{good[0].decryptBody()}})
		if !first.offered() {
			t.Skip("the target has no POST /v1/rewrap:batch: " + first.why())
		}
		rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		rot.mustStatus(t, http.StatusOK)
		active := rot.mustStr(t, "newVersionId")
		x := s.c.do(t, "POST", "/v1/rewrap:batch", ten, map[string]any{"items": []any{
			good[0].decryptBody(),
			good[1].with("cipherText", mustFlip(good[1].cipherText)),
			good[2].decryptBody(),
		}})
		results := checkMixed(t, x, 3, map[int]int64{1: 3}, "cipherText")
		for _, i := range []int{0, 2} {
			if i >= len(results) {
				break
			}
			r := results[i].obj
			if v, _ := r["encryptionVersionId"].(string); !strings.EqualFold(v, active) {
				x.fail(t, "results[%d].encryptionVersionId: %q, the active version", i, active)
				continue
			}
			ct, _ := r["cipherText"].(string)
			it := item{encryptionID: id, versionID: active, cipherText: ct, metadata: r["metadata"], data: good[i].data}
			checkDecrypted(t, s.decrypt(t, ten, it), it.data)
		}
	})
	t.Run("unknown_field_400", func(t *testing.T) {
		s.c.do(t, "POST", "/v1/encrypt:batch", ten, map[string]any{"items": []any{}, "parallel": true}).status(t, http.StatusBadRequest)
	})
	t.Run("wrong_credential_401", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/decrypt:batch", map[string]string{hdrTenantID: s.target.TenantID, hdrTenantSecret: "cts_wrong"},
			map[string]any{"items": decItems})
		x.status(t, http.StatusUnauthorized)
		checkNoLeak(t, x, "data", datas...)
	})
}

// checkMixed checks a batch answer of n results where the items in bad failed with the given gRPC
// codes and the others succeeded with field set.
func checkMixed(t *testing.T, x *exchange, n int, bad map[int]int64, field string) []batchResult {
	t.Helper()
	results := batchResults(t, x, n)
	for i, r := range results {
		if code, isBad := bad[i]; isBad {
			if r.code != code {
				x.fail(t, "results[%d]: an error with code %d (%s), the others unaffected", i, code, grpcCodeName(code))
			}
			if r.obj[field] != nil {
				x.fail(t, "results[%d]: only the error, no %q", i, field)
			}
		} else if r.code != 0 || r.obj[field] == nil {
			x.fail(t, "results[%d]: a success with %q, whatever the other items", i, field)
		}
	}
	return results
}

func grpcCodeName(code int64) string {
	switch code {
	case 3:
		return "INVALID_ARGUMENT"
	case 5:
		return "NOT_FOUND"
	case 9:
		return "FAILED_PRECONDITION"
	}
	return fmt.Sprint("code ", code)
}

// versionPath is the REST path of a version transition.
func versionPath(id, version, verb string) string {
	return "/v1/encryptions/" + id + "/versions/" + version + ":" + verb
}

// lifecycle checks disable, enable and destroy of a version and destroy of a context. It needs
// contexts of its own, since it destroys them.
func (s *suite) lifecycle(t *testing.T) {
	if ok, why := s.canCreate(t); !ok {
		s.skipOrFail(t, Lifecycle, "needs key contexts of its own, which it destroys: "+why)
	}
	ten := s.c.tenant()
	id := s.context(t)
	d1 := s.encrypt(t, ten, id, "lifecycle: version 1")
	rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
	rot.mustStatus(t, http.StatusOK)
	v2 := rot.mustStr(t, "newVersionId")
	d2 := s.encrypt(t, ten, id, "lifecycle: version 2")

	disable := s.c.do(t, "POST", versionPath(id, d1.versionID, "disable"), ten, map[string]any{})
	if !disable.offered() {
		s.skipOrFail(t, Lifecycle, "the target has no version lifecycle: "+disable.why())
	}
	checkState := func(t *testing.T, x *exchange, version, state string) {
		t.Helper()
		if !x.status(t, http.StatusOK) {
			return
		}
		if v, _ := x.str("versionId"); !strings.EqualFold(v, version) {
			x.fail(t, `the version: "versionId": %q`, version)
		}
		if st, _ := x.str("state"); st != state {
			x.fail(t, `"state": %q`, state)
		}
	}
	t.Run("disable/answer", func(t *testing.T) { checkState(t, disable, d1.versionID, "DISABLED") })
	t.Run("disable/refuses_decrypt", func(t *testing.T) {
		x := s.decrypt(t, ten, d1)
		x.status(t, http.StatusBadRequest) // FAILED_PRECONDITION
		checkNoLeak(t, x, "data", d1.data)
	})
	t.Run("disable/other_versions_unaffected", func(t *testing.T) {
		checkDecrypted(t, s.decrypt(t, ten, d2), d2.data)
	})
	t.Run("disable/active_version_refused", func(t *testing.T) {
		s.c.do(t, "POST", versionPath(id, v2, "disable"), ten, map[string]any{}).refused(t, "the active version cannot be disabled: rotate first")
	})
	t.Run("enable/answer_and_decrypts_again", func(t *testing.T) {
		x := s.c.do(t, "POST", versionPath(id, d1.versionID, "enable"), ten, map[string]any{})
		checkState(t, x, d1.versionID, "DECRYPT_ONLY")
		checkDecrypted(t, s.decrypt(t, ten, d1), d1.data)
	})
	t.Run("destroy/answer", func(t *testing.T) {
		s.c.do(t, "POST", versionPath(id, d1.versionID, "disable"), ten, map[string]any{}).mustStatus(t, http.StatusOK)
		x := s.c.do(t, "POST", versionPath(id, d1.versionID, "destroy"), ten, map[string]any{})
		checkState(t, x, d1.versionID, "DESTROYED")
	})
	t.Run("destroy/data_unrecoverable", func(t *testing.T) {
		x := s.decrypt(t, ten, d1)
		x.refused(t, "the version's key material was destroyed")
		checkNoLeak(t, x, "data", d1.data)
	})
	t.Run("destroy/cannot_be_enabled", func(t *testing.T) {
		s.c.do(t, "POST", versionPath(id, d1.versionID, "enable"), ten, map[string]any{}).refused(t, "destroying cannot be undone")
	})
	t.Run("unknown_version_404", func(t *testing.T) {
		s.c.do(t, "POST", versionPath(id, newUUID(), "disable"), ten, map[string]any{}).status(t, http.StatusNotFound)
	})

	t.Run("destroy_context", func(t *testing.T) {
		x := s.c.do(t, "DELETE", "/v1/encryptions/"+id, ten, nil)
		if !x.offered() {
			t.Skip("the target does not destroy contexts: " + x.why())
		}
		if x.status(t, http.StatusOK) {
			if got, _ := x.str("encryptionId"); !strings.EqualFold(got, id) {
				x.fail(t, `"encryptionId": %q`, id)
			}
		}
		// A destroyed context answers exactly as one that never existed.
		unknown := newUUID()
		for _, use := range []struct {
			path string
			body func(id string) any
		}{
			{"/v1/decrypt", func(id string) any { return d2.with("encryptionId", id) }},
			{"/v1/encrypt", func(id string) any { return map[string]any{"encryptionId": id, "data": "x"} }},
		} {
			y := s.c.do(t, "POST", use.path, ten, use.body(id))
			y.status(t, http.StatusNotFound)
			checkNoLeak(t, y, "data", d2.data)
			u := s.c.do(t, "POST", use.path, ten, use.body(unknown))
			if !sameAnswer(y, u, id, unknown) {
				t.Errorf("\n  sent:     %s\n  received: %s\n  and sent: %s\n  received: %s\n"+
					"  expected: the same answer (ids aside) for the destroyed context as for one that never existed",
					y.sent(), y.received(), u.sent(), u.received())
			}
		}
	})
}

// clientMode checks CLIENT key contexts: every use needs the client master key, a wrong one is
// refused with 403, rotation needs none, and no answer ever holds the key.
func (s *suite) clientMode(t *testing.T) {
	if s.target.MasterKey == "" {
		s.skipOrFail(t, ClientMode, "no client master key configured (Target.MasterKey, "+EnvMasterKey+")")
	}
	if ok, why := s.canCreate(t); !ok {
		s.skipOrFail(t, ClientMode, "needs CLIENT key contexts: "+why)
	}
	key := s.target.MasterKey
	wrongKey := alterBase64(key, func(b []byte) []byte { b[0] ^= 0xff; return b })
	ten, withKey := s.c.tenant(), s.c.tenant(hdrMasterKey, key)
	created := s.c.do(t, "POST", "/v1/encryptions", withKey, map[string]any{"keyMode": "CLIENT"})
	if !created.offered() || created.resp.status == http.StatusBadRequest {
		s.skipOrFail(t, ClientMode, "the target does not create CLIENT contexts: "+created.why())
	}
	created.mustStatus(t, http.StatusOK)
	id := created.mustStr(t, "encryptionId")
	if m, _ := created.str("keyMode"); m != "CLIENT" {
		created.fail(t, `"keyMode": "CLIENT"`)
	}
	v1 := s.encrypt(t, withKey, id, "conformance: zero knowledge")
	leak := func(t *testing.T, x *exchange) {
		t.Helper()
		checkNoLeak(t, x, "client master key", key, wrongKey)
		checkNoLeak(t, x, "data", v1.data)
	}

	t.Run("round_trip", func(t *testing.T) {
		checkDecrypted(t, s.decrypt(t, withKey, v1), v1.data)
	})
	cases := []struct {
		name   string
		header map[string]string
		path   string
		body   any
		want   int
	}{
		{"create_without_key_401", ten, "/v1/encryptions", map[string]any{"keyMode": "CLIENT"}, 401},
		{"encrypt_without_key_401", ten, "/v1/encrypt", map[string]any{"encryptionId": id, "data": "x"}, 401},
		{"decrypt_without_key_401", ten, "/v1/decrypt", v1.decryptBody(), 401},
		{"encrypt_with_wrong_key_403", s.c.tenant(hdrMasterKey, wrongKey), "/v1/encrypt", map[string]any{"encryptionId": id, "data": "x"}, 403},
		{"decrypt_with_wrong_key_403", s.c.tenant(hdrMasterKey, wrongKey), "/v1/decrypt", v1.decryptBody(), 403},
		{"malformed_key_400", s.c.tenant(hdrMasterKey, "c2hvcnQ="), "/v1/decrypt", v1.decryptBody(), 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := s.c.do(t, "POST", tc.path, tc.header, tc.body)
			x.status(t, tc.want)
			leak(t, x)
		})
	}
	t.Run("platform_context_refuses_key_400", func(t *testing.T) {
		// The contract refuses the header for a PLATFORM context on every method; the seed's
		// encrypt and rotate stand for them all.
		platform := s.context(t)
		x := s.c.do(t, "POST", "/v1/encrypt", withKey, map[string]any{"encryptionId": platform, "data": "x"})
		x.status(t, http.StatusBadRequest)
		leak(t, x)
		x = s.c.do(t, "POST", "/v1/rotate", withKey, map[string]any{"encryptionId": platform})
		x.status(t, http.StatusBadRequest)
		leak(t, x)
	})
	t.Run("rotate_without_key", func(t *testing.T) {
		rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		rot.mustStatus(t, http.StatusOK)
		v2 := rot.mustStr(t, "newVersionId")
		it := s.encrypt(t, withKey, id, "after a rotation without the key")
		if !strings.EqualFold(it.versionID, v2) {
			it.answer.fail(t, `"encryptionVersionId": %q, the version the rotation made`, v2)
		}
		checkDecrypted(t, s.decrypt(t, withKey, it), it.data)
		checkDecrypted(t, s.decrypt(t, withKey, v1), v1.data)
	})

	t.Run("change_master_key", func(t *testing.T) {
		newKey := make([]byte, 32)
		rand.Read(newKey)
		newB64 := base64.StdEncoding.EncodeToString(newKey)
		x := s.c.do(t, "POST", "/v1/encryptions/"+id+":changeMasterKey", s.c.tenant(hdrMasterKey, key, hdrNewMasterKey, newB64), map[string]any{})
		if !x.offered() {
			t.Skip("the target does not change client master keys: " + x.why())
		}
		checkNoLeak(t, x, "new client master key", newB64)
		if !x.status(t, http.StatusOK) {
			return
		}
		if got, _ := x.str("encryptionId"); !strings.EqualFold(got, id) {
			x.fail(t, `"encryptionId": %q`, id)
		}
		old := s.decrypt(t, withKey, v1)
		old.status(t, http.StatusForbidden)
		leak(t, old)
		checkDecrypted(t, s.decrypt(t, s.c.tenant(hdrMasterKey, newB64), v1), v1.data)
	})
}

// tenants checks isolation between tenants and the admin plane's credential, with a second tenant
// made through POST /v1/admin/tenants.
func (s *suite) tenants(t *testing.T) {
	if s.target.AdminToken == "" {
		s.skipOrFail(t, Tenants, "no admin token configured (Target.AdminToken, "+EnvAdminToken+")")
	}
	admin := map[string]string{hdrAdminToken: s.target.AdminToken}
	name := "conformance-" + strings.ToLower(rand.Text()[:10])
	created := s.c.do(t, "POST", "/v1/admin/tenants", admin, map[string]any{"name": name})
	if !created.offered() {
		s.skipOrFail(t, Tenants, "the target has no admin plane for tenants: "+created.why())
	}
	created.mustStatus(t, http.StatusOK)
	otherID := created.mustStr(t, "tenantId")
	otherSecret := created.mustStr(t, "secret")
	t.Cleanup(func() {
		// Best effort: a target that cannot destroy tenants keeps this empty one.
		req := request{method: "DELETE", path: "/v1/admin/tenants/" + otherID, header: admin}
		if _, err := s.c.send(s.c.http, req); err != nil {
			t.Logf("could not destroy tenant %s made for the checks: %s", name, s.c.redact(err.Error()))
		}
	})
	other := map[string]string{hdrTenantID: otherID, hdrTenantSecret: otherSecret}

	id := s.context(t)
	it := s.encrypt(t, s.c.tenant(), id, "conformance: tenant A's data")
	unknown := newUUID()
	probes := []struct {
		name, method, path string
		body               func(id string) any
	}{
		{"encrypt", "POST", "/v1/encrypt", func(id string) any { return map[string]any{"encryptionId": id, "data": "x"} }},
		{"decrypt", "POST", "/v1/decrypt", func(id string) any { return it.with("encryptionId", id) }},
		{"rotate", "POST", "/v1/rotate", func(id string) any { return map[string]any{"encryptionId": id} }},
	}
	if ok, _ := s.canCreate(t); ok {
		probes = append(probes, struct {
			name, method, path string
			body               func(id string) any
		}{"get", "GET", "/v1/encryptions/", nil})
	}
	for _, p := range probes {
		t.Run("other_tenant_gets_404/"+p.name, func(t *testing.T) {
			send := func(id string) *exchange {
				if p.body == nil {
					return s.c.do(t, p.method, p.path+id, other, nil)
				}
				return s.c.do(t, p.method, p.path, other, p.body(id))
			}
			x := send(id)
			x.status(t, http.StatusNotFound)
			checkNoLeak(t, x, "data", it.data)
			// Never revealing which: the answer is the one for an id that does not exist.
			u := send(unknown)
			if !sameAnswer(x, u, id, unknown) {
				t.Errorf("\n  sent:     %s\n  received: %s\n  and sent: %s\n  received: %s\n"+
					"  expected: the same answer (ids aside) for another tenant's context as for one that does not exist",
					x.sent(), x.received(), u.sent(), u.received())
			}
		})
	}
	t.Run("admin_wrong_token_401", func(t *testing.T) {
		x := s.c.do(t, "GET", "/v1/admin/tenants", map[string]string{hdrAdminToken: "cat_wrong"}, nil)
		x.status(t, http.StatusUnauthorized)
	})
	t.Run("admin_tenant_credential_401", func(t *testing.T) {
		s.c.do(t, "GET", "/v1/admin/tenants", s.c.tenant(), nil).status(t, http.StatusUnauthorized)
	})
}
