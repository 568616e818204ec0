package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// mustPool opens url for looking at rows directly.
func mustPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func countRows(tb testing.TB, pool *pgxpool.Pool, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// decryptBody is the decrypt (or rewrap) request for an encrypt response.
func decryptBody(id string, enc map[string]any) map[string]any {
	return map[string]any{"encryptionId": id, "cipherText": enc["cipherText"], "encryptionVersionId": enc["encryptionVersionId"], "metadata": enc["metadata"]}
}

// wantError fails unless an API answer is the HTTP status and gRPC code given, with a message
// mentioning mention.
func wantError(tb testing.TB, call string, status int, got map[string]any, wantStatus int, code codes.Code, mention string) {
	tb.Helper()
	msg, _ := got["message"].(string)
	if status != wantStatus || got["code"] != float64(code) || !strings.Contains(msg, mention) {
		tb.Errorf("%s = %d %v, want %d %v mentioning %q", call, status, got, wantStatus, code, mention)
	}
}

// eventually retries check every 20ms for up to 5s, for changes that reach another instance
// through the database's notifications.
func eventually(tb testing.TB, what string, check func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var encryptKeys = []string{"algorithm", "cipherText", "encryptionId", "encryptionVersionId", "metadata"}

func TestRewrapAndBatchesOverREST(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstanceWith(t, testdb.New(t), certs, map[string]string{"ES_MAX_BATCH_ITEMS": "12"}))
	ten := r.newTenant("acme")
	withKey := ten.with("X-Master-Key", clientKey)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	client := r.must(200, "POST", "/v1/encryptions", withKey, `{"keyMode":"CLIENT","algorithm":"XCHACHA20-POLY1305"}`)["encryptionId"].(string)
	old := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": platform, "data": "rewrap me"})
	oldClient := r.must(200, "POST", "/v1/encrypt", withKey, map[string]any{"encryptionId": client, "data": "zero knowledge"})
	v2 := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": platform})["newVersionId"]
	r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": client})

	t.Run("rewrap", func(t *testing.T) {
		got := r.must(200, "POST", "/v1/rewrap", ten, decryptBody(platform, old))
		if keys := keysOf(got); !slices.Equal(keys, encryptKeys) || got["encryptionVersionId"] != v2 || got["cipherText"] == old["cipherText"] {
			t.Fatalf("POST /v1/rewrap = %v, want Encrypt's fields under version %v", got, v2)
		}
		if dec := r.must(200, "POST", "/v1/decrypt", ten, decryptBody(platform, got)); dec["data"] != "rewrap me" {
			t.Errorf("decrypt of the rewrapped ciphertext = %v", dec)
		}
		code, body := r.call("POST", "/v1/rewrap", ten, mustJSON(t, decryptBody(client, oldClient)))
		wantError(t, "rewrap CLIENT without key", code, body, 401, codes.Unauthenticated, "X-Master-Key")
		got = r.must(200, "POST", "/v1/rewrap", withKey, decryptBody(client, oldClient))
		if dec := r.must(200, "POST", "/v1/decrypt", withKey, decryptBody(client, got)); dec["data"] != "zero knowledge" || got["encryptionVersionId"] == oldClient["encryptionVersionId"] {
			t.Errorf("CLIENT rewrap then decrypt = %v, %v", got, dec)
		}
		code, body = r.call("POST", "/v1/rewrap", ten, `{"encryptionId":"`+platform+`","cipherText":"@@","encryptionVersionId":"`+old["encryptionVersionId"].(string)+`","metadata":{}}`)
		wantError(t, "rewrap bad base64", code, body, 400, codes.InvalidArgument, "cipherText")
	})

	t.Run("mixed batches", func(t *testing.T) {
		items := []map[string]any{
			{"encryptionId": platform, "data": "first"},
			{"encryptionId": "not-a-uuid", "data": "x"},
			{"encryptionId": platform, "data": ""},
			{"encryptionId": "123e4567-e89b-12d3-a456-426614174000", "data": "x"},
			{"encryptionId": platform, "data": "x", "encryptionVersionId": old["encryptionVersionId"]},
			{"encryptionId": client, "data": "needs a key"},
			{"encryptionId": platform, "data": "last"},
		}
		got := r.must(200, "POST", "/v1/encrypt:batch", ten, map[string]any{"items": items})
		if keys := keysOf(got); !slices.Equal(keys, []string{"results"}) {
			t.Fatalf("encrypt:batch keys = %v, want [results]", keys)
		}
		results := got["results"].([]any)
		if len(results) != len(items) {
			t.Fatalf("encrypt:batch = %d results for %d items", len(results), len(items))
		}
		wantErrs := map[int]struct {
			code    codes.Code
			mention string
		}{
			1: {codes.InvalidArgument, "encryptionId"},
			3: {codes.NotFound, "not found"},
			4: {codes.FailedPrecondition, "no longer encrypts"},
			5: {codes.Unauthenticated, "X-Master-Key"},
		}
		for i, res := range results {
			res := res.(map[string]any)
			if w, bad := wantErrs[i]; bad {
				e, _ := res["error"].(map[string]any)
				if keys := keysOf(res); !slices.Equal(keys, []string{"error"}) || !slices.Equal(keysOf(e), []string{"code", "message"}) ||
					e["code"] != float64(w.code) || !strings.Contains(e["message"].(string), w.mention) {
					t.Errorf("encrypt:batch result %d = %v, want only an error %v mentioning %q", i, res, w.code, w.mention)
				}
				continue
			}
			if keys := keysOf(res); !slices.Equal(keys, encryptKeys) || res["encryptionVersionId"] != v2 {
				t.Errorf("encrypt:batch result %d = %v, want exactly Encrypt's fields under %v", i, res, v2)
			}
		}

		// Decrypt the good ones, with a tampered one, an unknown version and a PLATFORM item sent a master key.
		good := []int{0, 2, 6}
		var decItems []map[string]any
		for _, i := range good {
			decItems = append(decItems, decryptBody(platform, results[i].(map[string]any)))
		}
		tampered := decryptBody(platform, results[0].(map[string]any))
		tampered["cipherText"] = old["cipherText"]
		unknownVersion := decryptBody(platform, results[0].(map[string]any))
		unknownVersion["encryptionVersionId"] = "123e4567-e89b-12d3-a456-426614174000"
		decItems = append(decItems, tampered, unknownVersion)
		dec := r.must(200, "POST", "/v1/decrypt:batch", ten, map[string]any{"items": decItems})["results"].([]any)
		for j, want := range []string{"first", "", "last"} {
			res := dec[j].(map[string]any)
			if keys := keysOf(res); !slices.Equal(keys, []string{"data"}) || res["data"] != want {
				t.Errorf("decrypt:batch result %d = %v, want exactly {data: %q}", j, res, want)
			}
		}
		for j, w := range []struct {
			code    codes.Code
			mention string
		}{{codes.InvalidArgument, "does not authenticate"}, {codes.NotFound, "not found"}} {
			e := dec[3+j].(map[string]any)["error"].(map[string]any)
			if e["code"] != float64(w.code) || !strings.Contains(e["message"].(string), w.mention) || len(dec[3+j].(map[string]any)) != 1 {
				t.Errorf("decrypt:batch result %d = %v, want only an error %v", 3+j, dec[3+j], w.code)
			}
		}

		// Rewrap after another rotation: good items move to the new version, bad ones fail alone.
		v3 := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": platform})["newVersionId"]
		rew := r.must(200, "POST", "/v1/rewrap:batch", ten, map[string]any{"items": decItems})["results"].([]any)
		var back []map[string]any
		for j := range good {
			res := rew[j].(map[string]any)
			if !slices.Equal(keysOf(res), encryptKeys) || res["encryptionVersionId"] != v3 {
				t.Fatalf("rewrap:batch result %d = %v, want Encrypt's fields under %v", j, res, v3)
			}
			back = append(back, decryptBody(platform, res))
		}
		if e, _ := rew[3].(map[string]any)["error"].(map[string]any); e["code"] != float64(codes.InvalidArgument) {
			t.Errorf("rewrap:batch of a tampered item = %v, want INVALID_ARGUMENT", rew[3])
		}
		dec = r.must(200, "POST", "/v1/decrypt:batch", ten, map[string]any{"items": back})["results"].([]any)
		for j, want := range []string{"first", "", "last"} {
			if dec[j].(map[string]any)["data"] != want {
				t.Errorf("decrypt of rewrapped item %d = %v, want %q", j, dec[j], want)
			}
		}
	})

	t.Run("limits", func(t *testing.T) {
		var items []string
		for range 13 {
			items = append(items, `{"encryptionId":"`+platform+`","data":"x"}`)
		}
		for _, path := range []string{"/v1/encrypt:batch", "/v1/decrypt:batch", "/v1/rewrap:batch"} {
			body := `{"items":[` + strings.Join(items, ",") + `]}`
			if path != "/v1/encrypt:batch" {
				body = `{"items":[` + strings.Repeat(`{},`, 12) + `{}]}`
			}
			code, got := r.call("POST", path, ten, body)
			wantError(t, path+" over the limit", code, got, http.StatusTooManyRequests, codes.ResourceExhausted, "batch limit of 12")
		}
		got := r.must(200, "POST", "/v1/encrypt:batch", ten, `{"items":[]}`)
		if res, _ := got["results"].([]any); len(res) != 0 {
			t.Errorf("empty batch = %v, want no results", got)
		}
		code, got := r.call("POST", "/v1/encrypt:batch", ten, `{"items":[{"encryptionId":"`+platform+`","plaintext":"x"}]}`)
		wantError(t, "batch with an unknown field", code, got, 400, codes.InvalidArgument, "plaintext")
	})

	t.Run("over gRPC", func(t *testing.T) {
		es := encryptionv1.NewEncryptionServiceClient(r.inst.grpcConn(t, certs.ClientConfig()))
		ctx := grpcTenant(ten, "")
		resp, err := es.EncryptBatch(ctx, &encryptionv1.EncryptBatchRequest{Items: []*encryptionv1.EncryptRequest{
			{EncryptionId: platform, Data: "a"}, {EncryptionId: "nope", Data: "b"},
		}})
		if err != nil || len(resp.Results) != 2 {
			t.Fatalf("EncryptBatch() = %v, %v", resp, err)
		}
		if ok, bad := resp.Results[0], resp.Results[1]; ok.Error != nil || ok.CipherText == nil || bad.CipherText != nil || bad.EncryptionId != nil ||
			bad.Metadata != nil || bad.GetError().GetCode() != int32(codes.InvalidArgument) {
			t.Errorf("EncryptBatch() = %v, want one ciphertext and one error alone", resp.Results)
		}
		r0 := resp.Results[0]
		dec, err := es.DecryptBatch(ctx, &encryptionv1.DecryptBatchRequest{Items: []*encryptionv1.DecryptRequest{{
			EncryptionId: r0.GetEncryptionId(), CipherText: r0.GetCipherText(), EncryptionVersionId: r0.GetEncryptionVersionId(), Metadata: r0.Metadata,
		}}})
		if err != nil || dec.Results[0].GetData() != "a" {
			t.Errorf("DecryptBatch() = %v, %v", dec, err)
		}
	})
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestVersionLifecycle(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	a := startInstance(t, url, certs)
	b := startInstance(t, url, certs)
	r, rb := newREST(t, a), newREST(t, b)
	pool := mustPool(t, url)
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "one"})
	v1 := enc["encryptionVersionId"].(string)
	v2 := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})["newVersionId"].(string)
	decrypt := mustJSON(t, decryptBody(id, enc))
	// Instance b caches the context with version 1 usable.
	rb.must(200, "POST", "/v1/decrypt", ten, decrypt)

	base := "/v1/encryptions/" + id + "/versions/"
	steps := []struct {
		name, method, path, body string
		status                   int
		code                     codes.Code // of an error
		want                     string     // the state, or the error's mention
	}{
		{"disable the active version", "POST", base + v2 + ":disable", `{}`, 400, codes.FailedPrecondition, "rotate first"},
		{"destroy a decrypt-only version", "POST", base + v1 + ":destroy", `{}`, 400, codes.FailedPrecondition, "disable it first"},
		{"disable an unknown version", "POST", base + "123e4567-e89b-12d3-a456-426614174000:disable", `{}`, 404, codes.NotFound, "not found"},
		{"disable a malformed version id", "POST", base + "v1:disable", `{}`, 400, codes.InvalidArgument, "versionId"},
		{"disable", "POST", base + v1 + ":disable", `{}`, 200, 0, "DISABLED"},
		{"decrypt with a disabled version", "POST", "/v1/decrypt", decrypt, 400, codes.FailedPrecondition, "disabled"},
		{"rewrap from a disabled version", "POST", "/v1/rewrap", decrypt, 400, codes.FailedPrecondition, "disabled"},
		{"enable", "POST", base + v1 + ":enable", `{}`, 200, 0, "DECRYPT_ONLY"},
		{"decrypt again", "POST", "/v1/decrypt", decrypt, 200, 0, ""},
		{"disable again", "POST", base + v1 + ":disable", `{}`, 200, 0, "DISABLED"},
		{"destroy", "POST", base + v1 + ":destroy", `{}`, 200, 0, "DESTROYED"},
		{"decrypt with a destroyed version", "POST", "/v1/decrypt", decrypt, 400, codes.FailedPrecondition, "unrecoverable"},
		{"rewrap from a destroyed version", "POST", "/v1/rewrap", decrypt, 400, codes.FailedPrecondition, "unrecoverable"},
		{"enable a destroyed version", "POST", base + v1 + ":enable", `{}`, 400, codes.FailedPrecondition, "unrecoverable"},
	}
	for _, st := range steps {
		code, got := r.call(st.method, st.path, ten, st.body)
		switch {
		case st.status != 200:
			wantError(t, st.name, code, got, st.status, st.code, st.want)
		case st.want != "" && (code != 200 || got["state"] != st.want || got["versionId"] != v1):
			t.Errorf("%s = %d %v, want 200 with version %s %s", st.name, code, got, v1, st.want)
		case code != 200:
			t.Errorf("%s = %d %v, want 200", st.name, code, got)
		}
		if st.name == "disable" {
			// The change reaches instance b, which had the version cached as usable.
			eventually(t, "disabled version refused on the other instance", func() bool {
				code, _ := rb.call("POST", "/v1/decrypt", ten, decrypt)
				return code == http.StatusBadRequest
			})
		}
	}

	// Crypto-shredding: the row keeps no key material and no master key id.
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions
		 WHERE id = $1 AND state = 'DESTROYED' AND key_material IS NULL AND master_key_id IS NULL`, v1); n != 1 {
		t.Errorf("destroyed version's row still holds key material")
	}
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions WHERE id = $1 AND key_material IS NOT NULL`, v2); n != 1 {
		t.Errorf("the active version lost its key material")
	}
	desc := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
	if vs := desc["versions"].([]any); vs[0].(map[string]any)["state"] != "DESTROYED" || vs[1].(map[string]any)["state"] != "ACTIVE" {
		t.Errorf("GET after destroy = %v, want DESTROYED and ACTIVE", desc)
	}
	audit := r.must(200, "GET", "/v1/admin/audit?encryptionId="+id, r.admin(), nil)["events"].([]any)
	var actions []string
	for _, e := range audit {
		ev := e.(map[string]any)
		actions = append(actions, ev["action"].(string))
		// The tenant's calls are audited under the secret they authenticated with.
		actor, _ := ev["actor"].(string)
		if secretID, ok := strings.CutPrefix(actor, "tenant:"); !ok || uuid.Validate(secretID) != nil {
			t.Errorf("audit event %v: actor %q, want tenant:<secret id>", ev["action"], actor)
		}
	}
	for _, want := range []string{"encryption.version.disable", "encryption.version.enable", "encryption.version.destroy"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit of the context = %v, want %s", actions, want)
		}
	}
}

func TestDestroyContextAndTenant(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	a := startInstance(t, url, certs)
	r, rb := newREST(t, a), newREST(t, startInstance(t, url, certs))
	pool := mustPool(t, url)
	ten := r.newTenant("acme")
	neighbour := r.newTenant("neighbour")
	withKey := ten.with("X-Master-Key", clientKey)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": platform})
	client := r.must(200, "POST", "/v1/encryptions", withKey, `{"keyMode":"CLIENT"}`)["encryptionId"].(string)
	kept := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	other := r.must(200, "POST", "/v1/encryptions", neighbour, `{}`)["encryptionId"].(string)
	enc := rb.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": platform, "data": "forget me"}) // b caches it

	code, got := r.call("DELETE", "/v1/encryptions/"+platform, neighbour, "")
	wantError(t, "DELETE another tenant's context", code, got, 404, codes.NotFound, "not found")
	got = r.must(200, "DELETE", "/v1/encryptions/"+platform, ten, nil)
	if got["encryptionId"] != platform || got["versionsDestroyed"] != float64(2) {
		t.Errorf("DELETE /v1/encryptions/{id} = %v, want 2 versions destroyed", got)
	}
	// A CLIENT context is destroyed without its client master key.
	if got := r.must(200, "DELETE", "/v1/encryptions/"+client, ten, nil); got["versionsDestroyed"] != float64(1) {
		t.Errorf("DELETE CLIENT context = %v, want 1 version destroyed", got)
	}
	unknown := "123e4567-e89b-12d3-a456-426614174000"
	_, gotUnknown := r.call("GET", "/v1/encryptions/"+unknown, ten, "")
	for _, probe := range []struct{ method, path, body string }{
		{"GET", "/v1/encryptions/" + platform, ""},
		{"DELETE", "/v1/encryptions/" + platform, ""},
		{"POST", "/v1/encrypt", `{"encryptionId":"` + platform + `","data":"x"}`},
		{"POST", "/v1/decrypt", mustJSON(t, decryptBody(platform, enc))},
		{"POST", "/v1/rotate", `{"encryptionId":"` + platform + `"}`},
	} {
		want := strings.ReplaceAll(gotUnknown["message"].(string), unknown, platform)
		code, got := r.call(probe.method, probe.path, ten, probe.body)
		if code != 404 || got["message"] != want {
			t.Errorf("%s %s after destroy = %d %v, want 404 %q as for an unknown context", probe.method, probe.path, code, got, want)
		}
	}
	eventually(t, "destroyed context unknown on the other instance", func() bool {
		code, _ := rb.call("POST", "/v1/decrypt", ten, mustJSON(t, decryptBody(platform, enc)))
		return code == 404
	})
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions
		 WHERE encryption_id = ANY($1::uuid[]) AND (key_material IS NOT NULL OR master_key_id IS NOT NULL)`, []string{platform, client}); n != 0 {
		t.Errorf("%d versions of destroyed contexts keep key material", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.encryptions WHERE id = $1 AND sealing_private_key IS NULL AND destroyed_at IS NOT NULL`, client); n != 1 {
		t.Errorf("destroyed CLIENT context keeps its wrapped private key")
	}

	// The whole tenant.
	rb.must(200, "GET", "/v1/encryptions/"+kept, ten, nil) // b caches the tenant's secret
	got = r.must(200, "DELETE", "/v1/admin/tenants/"+ten["X-Tenant-Id"], r.admin(), nil)
	if got["tenantId"] != ten["X-Tenant-Id"] || got["encryptionsDestroyed"] != float64(1) {
		t.Errorf("DELETE /v1/admin/tenants/{id} = %v, want 1 context destroyed", got)
	}
	for name, rr := range map[string]*rest{"this instance": r, "the other instance": rb} {
		eventually(t, "destroyed tenant refused on "+name, func() bool {
			code, _ := rr.call("GET", "/v1/encryptions/"+kept, ten, "")
			return code == http.StatusUnauthorized
		})
	}
	code, got = r.call("DELETE", "/v1/admin/tenants/"+ten["X-Tenant-Id"], r.admin(), "")
	wantError(t, "DELETE a destroyed tenant", code, got, 404, codes.NotFound, "not found")
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions v JOIN encryption.encryptions e ON e.id = v.encryption_id
		 WHERE e.tenant_id = $1 AND v.key_material IS NOT NULL`, ten["X-Tenant-Id"]); n != 0 {
		t.Errorf("destroyed tenant keeps %d versions' key material", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM encryption.tenants WHERE id = $1 AND destroyed_at IS NOT NULL`, ten["X-Tenant-Id"]); n != 1 {
		t.Errorf("tenant not marked destroyed")
	}
	r.must(200, "GET", "/v1/encryptions/"+other, neighbour, nil)
	list := r.must(200, "GET", "/v1/admin/tenants", r.admin(), nil)["tenants"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["tenantId"] != neighbour["X-Tenant-Id"] {
		t.Errorf("tenants after destroy = %v, want only the neighbour", list)
	}
}

// TestTenantDestroyAuditsEachContext: destroying a tenant records the erasure of each of its key
// contexts in the context's own trail (GET /v1/admin/audit?encryptionId=…), by the tenant
// destroy's actor, so that no context looks alive in its trail after its tenant is gone.
func TestTenantDestroyAuditsEachContext(t *testing.T) {
	r := newREST(t, startInstance(t, testdb.New(t), testcerts.New(t)))
	ten := r.newTenant("acme")
	ids := []string{
		r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string),
		r.must(200, "POST", "/v1/encryptions", ten.with("X-Master-Key", clientKey), `{"keyMode":"CLIENT"}`)["encryptionId"].(string),
	}
	r.must(200, "DELETE", "/v1/admin/tenants/"+ten["X-Tenant-Id"], r.admin(), nil)
	events := r.must(200, "GET", "/v1/admin/audit?tenantId="+ten["X-Tenant-Id"], r.admin(), nil)["events"].([]any)
	destroy := events[0].(map[string]any)
	if destroy["action"] != "tenant.destroy" {
		t.Fatalf("latest audit event of the tenant = %v, want tenant.destroy", destroy)
	}
	for _, id := range ids {
		var actions []string
		for _, e := range r.must(200, "GET", "/v1/admin/audit?encryptionId="+id, r.admin(), nil)["events"].([]any) {
			actions = append(actions, e.(map[string]any)["action"].(string))
		}
		if !slices.Equal(actions, []string{"encryption.destroy", "encryption.create"}) {
			t.Errorf("audit of context %s after its tenant was destroyed = %v, want its erasure and its creation", id, actions)
			continue
		}
		erased := r.must(200, "GET", "/v1/admin/audit?encryptionId="+id, r.admin(), nil)["events"].([]any)[0].(map[string]any)
		for _, k := range []string{"actor", "tenantId", "time", "requestId"} {
			if erased[k] != destroy[k] {
				t.Errorf("erasure of context %s: %s = %v, want the tenant destroy's, %v", id, k, erased[k], destroy[k])
			}
		}
	}
}

func TestAutoRotation(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	small := map[string]string{"ES_MAX_ENCRYPTIONS_PER_VERSION": "5"}
	r, rb := newREST(t, startInstanceWith(t, url, certs, small)), newREST(t, startInstanceWith(t, url, certs, small))
	ten := r.newTenant("acme")

	versionsOf := func(id string, n int) []any {
		t.Helper()
		var vs []any
		for range n {
			vs = append(vs, r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})["encryptionVersionId"])
		}
		return vs
	}
	t.Run("service bound", func(t *testing.T) {
		id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
		vs := versionsOf(id, 6)
		if vs[0] != vs[4] || vs[5] == vs[4] {
			t.Errorf("versions of 6 encryptions with a bound of 5 = %v, want a rotation before the 6th", vs)
		}
	})
	t.Run("context policy", func(t *testing.T) {
		created := r.must(200, "POST", "/v1/encryptions", ten, `{"rotationPolicy":{"maxEncryptions":"2","maxAge":"7200s"}}`)
		id := created["encryptionId"].(string)
		vs := versionsOf(id, 3)
		if vs[0] != vs[1] || vs[2] == vs[1] || vs[0] != created["encryptionVersionId"] {
			t.Errorf("versions of 3 encryptions with maxEncryptions 2 = %v, want a rotation before the 3rd", vs)
		}
		desc := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
		if p, _ := desc["rotationPolicy"].(map[string]any); p["maxAge"] != "7200s" || p["maxEncryptions"] != "2" {
			t.Errorf("GET rotationPolicy = %v, want 7200s and 2", desc["rotationPolicy"])
		}
		got := r.must(200, "POST", "/v1/encryptions/"+id+":setRotationPolicy", ten, `{"rotationPolicy":{"maxEncryptions":"4"}}`)
		if keysOf(got)[0] != "maxEncryptions" || len(got) != 1 || got["maxEncryptions"] != "4" {
			t.Errorf("setRotationPolicy = %v, want exactly {maxEncryptions: \"4\"}", got)
		}
		if got := r.must(200, "POST", "/v1/encryptions/"+id+":setRotationPolicy", ten, `{}`); got["maxEncryptions"] != "0" {
			t.Errorf("setRotationPolicy without a policy = %v, want it cleared", got)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
		for _, tt := range []struct {
			name, path, body string
			status           int
			code             codes.Code
			mention          string
		}{
			{"maxAge under an hour", "/v1/encryptions", `{"rotationPolicy":{"maxAge":"1800s"}}`, 400, codes.InvalidArgument, "rotationPolicy.maxAge"},
			{"maxEncryptions over the bound", "/v1/encryptions", `{"rotationPolicy":{"maxEncryptions":"6"}}`, 400, codes.InvalidArgument, "rotationPolicy.maxEncryptions"},
			{"malformed maxAge", "/v1/encryptions/" + id + ":setRotationPolicy", `{"rotationPolicy":{"maxAge":"soon"}}`, 400, codes.InvalidArgument, "Duration"},
			{"unknown context", "/v1/encryptions/123e4567-e89b-12d3-a456-426614174000:setRotationPolicy", `{}`, 404, codes.NotFound, "not found"},
		} {
			code, got := r.call("POST", tt.path, ten, tt.body)
			wantError(t, tt.name, code, got, tt.status, tt.code, tt.mention)
		}
	})
	t.Run("once across instances", func(t *testing.T) {
		id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
		for range 3 {
			r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
			rb.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
		}
		// Neither instance reached 5 on its own; their counts together show the version due.
		eventually(t, "rotation once the counts reach the bound", func() bool {
			return len(r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)["versions"].([]any)) == 2
		})
		time.Sleep(1500 * time.Millisecond) // more flushes from both instances
		if vs := r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)["versions"].([]any); len(vs) != 2 {
			t.Errorf("%d versions, want 2: the version was rotated more than once", len(vs))
		}
		events := r.must(200, "GET", "/v1/admin/audit?encryptionId="+id, r.admin(), nil)["events"].([]any)
		auto := 0
		for _, e := range events {
			if e.(map[string]any)["action"] == "encryption.rotate.auto" {
				auto++
			}
		}
		if auto != 1 {
			t.Errorf("%d automatic rotations audited, want 1", auto)
		}
	})
}

// TestRefusedEncryptionRotatesNothing: a context whose active version is due by age (maxAge) is
// rotated by the next encryption, but a request refused for what the caller sent — the client
// master key, the version named — changes nothing, through /v1/encrypt, /v1/datakey and
// /v1/encrypt:batch alike.
func TestRefusedEncryptionRotatesNothing(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	r := newREST(t, startInstance(t, url, certs))
	pool := mustPool(t, url)
	ten := r.newTenant("acme")
	withKey, wrongKey := ten.with("X-Master-Key", clientKey), ten.with("X-Master-Key", otherClientKey)
	dueContext := func(t *testing.T, mode string) string {
		t.Helper()
		h := map[string]string(ten)
		if mode == "CLIENT" {
			h = withKey
		}
		id := r.must(200, "POST", "/v1/encryptions", h, `{"keyMode":"`+mode+`","rotationPolicy":{"maxAge":"3600s"}}`)["encryptionId"].(string)
		if _, err := pool.Exec(context.Background(),
			`UPDATE encryption.encryption_key_versions SET created_at = now() - interval '2 hours' WHERE encryption_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	versions := func(t *testing.T, id string) int {
		t.Helper()
		return len(r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)["versions"].([]any))
	}

	for _, tt := range []struct {
		name, mode string
		headers    map[string]string
		version    string // encryptionVersionId sent, "" for none
		status     int
		code       codes.Code
		mention    string
	}{
		{"PLATFORM with X-Master-Key", "PLATFORM", withKey, "", 400, codes.InvalidArgument, "X-Master-Key must not be sent"},
		{"PLATFORM unknown encryptionVersionId", "PLATFORM", ten, "123e4567-e89b-12d3-a456-426614174000", 404, codes.NotFound, "not found"},
		{"PLATFORM nil encryptionVersionId", "PLATFORM", ten, "00000000-0000-0000-0000-000000000000", 404, codes.NotFound, "not found"},
		{"CLIENT without X-Master-Key", "CLIENT", ten, "", 401, codes.Unauthenticated, "X-Master-Key"},
		{"CLIENT wrong X-Master-Key", "CLIENT", wrongKey, "", 403, codes.PermissionDenied, "wrong client master key"},
		{"CLIENT unknown encryptionVersionId", "CLIENT", withKey, "123e4567-e89b-12d3-a456-426614174000", 404, codes.NotFound, "not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := dueContext(t, tt.mode)
			item := map[string]any{"encryptionId": id, "data": "x"}
			if tt.version != "" {
				item["encryptionVersionId"] = tt.version
			}
			code, got := r.call("POST", "/v1/encrypt", tt.headers, mustJSON(t, item))
			wantError(t, "POST /v1/encrypt", code, got, tt.status, tt.code, tt.mention)

			batch := r.must(200, "POST", "/v1/encrypt:batch", tt.headers, map[string]any{"items": []any{item}})
			res := batch["results"].([]any)[0].(map[string]any)
			if e, _ := res["error"].(map[string]any); e == nil || e["code"] != float64(tt.code) || !strings.Contains(e["message"].(string), tt.mention) {
				t.Errorf("POST /v1/encrypt:batch item = %v, want error code %d mentioning %q", res, tt.code, tt.mention)
			}
			if tt.version == "" {
				code, got := r.call("POST", "/v1/datakey", tt.headers, `{"encryptionId":"`+id+`"}`)
				wantError(t, "POST /v1/datakey", code, got, tt.status, tt.code, tt.mention)
			}
			if n := versions(t, id); n != 1 {
				t.Errorf("refused with %d, yet the context now has %d versions: the refused calls rotated it", tt.status, n)
			}
		})
	}
	t.Run("accepted encryption rotates", func(t *testing.T) {
		id := dueContext(t, "PLATFORM")
		r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
		if n := versions(t, id); n != 2 {
			t.Errorf("versions after an encryption of a context due by age = %d, want 2", n)
		}
	})
}

func TestChangeMasterKey(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	withOld, withNew := tenant(ten.with("X-Master-Key", clientKey)), tenant(ten.with("X-Master-Key", otherClientKey))
	id := r.must(200, "POST", "/v1/encryptions", withOld, `{"keyMode":"CLIENT"}`)["encryptionId"].(string)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	var written []map[string]any
	for i, data := range []string{"one", "two"} {
		written = append(written, r.must(200, "POST", "/v1/encrypt", withOld, map[string]any{"encryptionId": id, "data": data}))
		if i == 0 {
			r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		}
	}
	path := "/v1/encryptions/" + id + ":changeMasterKey"
	change := withOld.with("X-New-Master-Key", otherClientKey)

	refusals := []struct {
		name    string
		path    string
		headers map[string]string
		status  int
		code    codes.Code
		mention string
	}{
		{"wrong old key", path, withNew.with("X-New-Master-Key", clientKey), 403, codes.PermissionDenied, "wrong client master key"},
		{"no old key", path, ten.with("X-New-Master-Key", otherClientKey), 401, codes.Unauthenticated, "X-Master-Key"},
		{"no new key", path, map[string]string(withOld), 400, codes.InvalidArgument, "X-New-Master-Key"},
		{"malformed new key", path, withOld.with("X-New-Master-Key", "c2hvcnQ="), 400, codes.InvalidArgument, "X-New-Master-Key"},
		{"same key", path, withOld.with("X-New-Master-Key", clientKey), 400, codes.InvalidArgument, "the same"},
		{"PLATFORM context", "/v1/encryptions/" + platform + ":changeMasterKey", ten.with("X-New-Master-Key", otherClientKey), 400, codes.InvalidArgument, "PLATFORM"},
		{"new key on another method", "/v1/encrypt", change, 400, codes.InvalidArgument, "only for ChangeMasterKey"},
	}
	for _, tt := range refusals {
		body := `{}`
		if tt.path == "/v1/encrypt" {
			body = `{"encryptionId":"` + id + `","data":"x"}`
		}
		code, got := r.call("POST", tt.path, tt.headers, body)
		wantError(t, tt.name, code, got, tt.status, tt.code, tt.mention)
		if msg, _ := got["message"].(string); strings.Contains(msg, clientKey) || strings.Contains(msg, otherClientKey) {
			t.Errorf("%s: error %q echoes a master key", tt.name, msg)
		}
	}
	for _, w := range written { // nothing changed
		r.must(200, "POST", "/v1/decrypt", withOld, decryptBody(id, w))
	}

	got := r.must(200, "POST", path, change, `{}`)
	if got["encryptionId"] != id || got["versionsRewrapped"] != float64(2) {
		t.Errorf("changeMasterKey = %v, want 2 versions rewrapped", got)
	}
	for i, w := range written {
		code, body := r.call("POST", "/v1/decrypt", withOld, mustJSON(t, decryptBody(id, w)))
		wantError(t, fmt.Sprintf("decrypt %d with the old key", i), code, body, 403, codes.PermissionDenied, "wrong client master key")
		if dec := r.must(200, "POST", "/v1/decrypt", withNew, decryptBody(id, w)); dec["data"] != []string{"one", "two"}[i] {
			t.Errorf("decrypt %d with the new key = %v", i, dec)
		}
	}
	r.must(200, "POST", "/v1/encrypt", withNew, map[string]any{"encryptionId": id, "data": "three"})
	events := r.must(200, "GET", "/v1/admin/audit?encryptionId="+id, r.admin(), nil)["events"].([]any)
	if events[0].(map[string]any)["action"] != "encryption.master-key.change" {
		t.Errorf("latest audit event = %v, want the master-key change", events[0])
	}
}

// TestMasterKeyOnPlatformContexts sends X-Master-Key with every method that addresses a PLATFORM
// context: each answers 400 naming the header and changes nothing; a CLIENT context takes the
// header on the same methods.
func TestMasterKeyOnPlatformContexts(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	withKey := ten.with("X-Master-Key", clientKey)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{"keyMode":"PLATFORM"}`)["encryptionId"].(string)
	client := r.must(200, "POST", "/v1/encryptions", withKey, `{"keyMode":"CLIENT"}`)["encryptionId"].(string)
	version := func(id string) string {
		return r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)["versions"].([]any)[0].(map[string]any)["versionId"].(string)
	}
	for _, id := range []string{platform, client} {
		r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		r.must(200, "POST", "/v1/encryptions/"+id+"/versions/"+version(id)+":disable", ten, `{}`)
	}
	calls := []struct {
		name, method, path, body string
	}{
		{"encrypt", "POST", "/v1/encrypt", `{"encryptionId":"ID","data":"x"}`},
		{"datakey", "POST", "/v1/datakey", `{"encryptionId":"ID"}`},
		{"rotate", "POST", "/v1/rotate", `{"encryptionId":"ID"}`},
		{"get", "GET", "/v1/encryptions/ID", ""},
		{"setRotationPolicy", "POST", "/v1/encryptions/ID:setRotationPolicy", `{}`},
		{"enable", "POST", "/v1/encryptions/ID/versions/VERSION:enable", `{}`},
		{"disable", "POST", "/v1/encryptions/ID/versions/VERSION:disable", `{}`},
		{"destroy version", "POST", "/v1/encryptions/ID/versions/VERSION:destroy", `{}`},
		{"destroy", "DELETE", "/v1/encryptions/ID", ""},
	}
	fill := func(s, id string) string {
		return strings.NewReplacer("ID", id, "VERSION", version(id)).Replace(s)
	}
	for _, c := range calls {
		before := r.must(200, "GET", "/v1/encryptions/"+platform, ten, nil)
		code, got := r.call(c.method, fill(c.path, platform), withKey, fill(c.body, platform))
		wantError(t, c.name+" on PLATFORM with X-Master-Key", code, got, 400, codes.InvalidArgument, "X-Master-Key must not be sent")
		after := r.must(200, "GET", "/v1/encryptions/"+platform, ten, nil)
		if fmt.Sprint(before["encryption"]) != fmt.Sprint(after["encryption"]) {
			t.Errorf("%s on PLATFORM with X-Master-Key changed the context", c.name)
		}
		if code, got := r.call(c.method, fill(c.path, client), withKey, fill(c.body, client)); code != 200 {
			t.Errorf("%s on CLIENT with X-Master-Key = %d %v, want 200", c.name, code, got)
		}
	}
}

// TestMixedBatch sends one batch over a PLATFORM and a CLIENT context: with X-Master-Key the
// PLATFORM item fails alone (400), without it the CLIENT item fails alone (401).
func TestMixedBatch(t *testing.T) {
	certs := testcerts.New(t)
	r := newREST(t, startInstance(t, testdb.New(t), certs))
	ten := r.newTenant("acme")
	withKey := ten.with("X-Master-Key", clientKey)
	platform := r.must(200, "POST", "/v1/encryptions", ten, `{"keyMode":"PLATFORM"}`)["encryptionId"].(string)
	client := r.must(200, "POST", "/v1/encryptions", withKey, `{"keyMode":"CLIENT"}`)["encryptionId"].(string)
	body := `{"items":[{"encryptionId":"` + platform + `","data":"a"},{"encryptionId":"` + client + `","data":"b"}]}`
	for _, tt := range []struct {
		name    string
		headers map[string]string
		failing int
		code    codes.Code
		mention string
	}{
		{"with X-Master-Key", withKey, 0, codes.InvalidArgument, "X-Master-Key must not be sent"},
		{"without X-Master-Key", ten, 1, codes.Unauthenticated, "X-Master-Key"},
	} {
		results := r.must(200, "POST", "/v1/encrypt:batch", tt.headers, body)["results"].([]any)
		for i, res := range results {
			item := res.(map[string]any)
			itemErr, failed := item["error"].(map[string]any)
			switch {
			case i == tt.failing && (!failed || itemErr["code"] != float64(tt.code) || !strings.Contains(itemErr["message"].(string), tt.mention)):
				t.Errorf("%s: item %d = %v, want error %v mentioning %q", tt.name, i, item, tt.code, tt.mention)
			case i != tt.failing && failed:
				t.Errorf("%s: item %d = %v, want a ciphertext", tt.name, i, item)
			}
		}
	}
}
