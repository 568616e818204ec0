package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
	"github.com/custos-platform/custos/core/internal/vault"
)

// marker returns a plaintext that cannot occur by chance, to search the database for.
func marker(tb testing.TB) string {
	b := make([]byte, 12)
	rand.Read(b)
	return "PLAINTEXT-MARKER-" + base64.RawURLEncoding.EncodeToString(b)
}

// assertNotStored searches every column of every table of the core schema, as text and as bytes,
// for each of the needles.
func assertNotStored(tb testing.TB, databaseURL string, needles ...string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = 'core' ORDER BY table_name, column_name`)
	if err != nil {
		tb.Fatal(err)
	}
	type col struct{ table, column, typ string }
	var cols []col
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.table, &c.column, &c.typ); err != nil {
			tb.Fatal(err)
		}
		cols = append(cols, c)
	}
	if len(cols) < 20 {
		tb.Fatalf("found only %d columns in schema core", len(cols))
	}
	for _, c := range cols {
		expr := pgx.Identifier{c.column}.Sanitize() + "::text"
		if c.typ == "bytea" {
			expr = "encode(" + pgx.Identifier{c.column}.Sanitize() + ", 'escape')"
		}
		for _, n := range needles {
			var count int
			q := fmt.Sprintf("SELECT count(*) FROM %s WHERE strpos(%s, $1) > 0", pgx.Identifier{"core", c.table}.Sanitize(), expr)
			if err := conn.QueryRow(ctx, q, n).Scan(&count); err != nil {
				tb.Fatalf("search core.%s.%s: %v", c.table, c.column, err)
			}
			if count > 0 {
				tb.Errorf("core.%s.%s holds the plaintext %q in %d rows", c.table, c.column, n, count)
			}
		}
	}
}

// TestSeedSequenceDiagram is the seed's write and read over REST: the client sends plaintext, core
// stores only ciphertext from the encryption service, and reads it back through it.
func TestSeedSequenceDiagram(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	name, data := marker(t), marker(t)

	created := p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": name, "data": data})
	for _, k := range []string{"id", "name", "data", "revision", "createdAt", "updatedAt"} {
		if _, ok := created[k]; !ok {
			t.Errorf("POST /v1/items answer lacks %q: %v", k, created)
		}
	}
	id := created["id"].(string)
	got := p.must(200, "GET", "/v1/items/"+id, f.member, nil)
	if got["name"] != name || got["data"] != data || got["revision"] != float64(1) {
		t.Errorf("GET /v1/items/%s = %v, want the item as written at revision 1", id, got)
	}
	list := p.must(200, "GET", "/v1/items", f.member, nil)
	if items := list["items"].([]any); len(items) != 1 || items[0].(map[string]any)["data"] != data {
		t.Errorf("GET /v1/items = %v, want the one item", list)
	}

	newData := marker(t)
	updated := p.must(200, "PUT", "/v1/items/"+id, f.member, map[string]any{"name": name, "data": newData, "revision": 1})
	if updated["revision"] != float64(2) || updated["data"] != newData {
		t.Errorf("PUT = %v, want revision 2 with the new data", updated)
	}
	// A stale revision changes nothing.
	if code, got := p.call("PUT", "/v1/items/"+id, f.member, map[string]any{"name": name, "data": "lost update", "revision": 1}); code != http.StatusConflict {
		t.Errorf("PUT with a stale revision = %d %v, want 409", code, got)
	}
	if got := p.must(200, "GET", "/v1/items/"+id, f.member, nil); got["data"] != newData {
		t.Errorf("after a stale PUT the item holds %v, want the last good write", got["data"])
	}
	// Another person's items are not there for them, not even for an admin.
	if code, _ := p.call("GET", "/v1/items/"+id, f.admin, nil); code != 404 {
		t.Errorf("admin reading the member's item = %d, want 404", code)
	}
	for name, body := range map[string]map[string]any{
		"empty name":    {"name": "", "data": "x"},
		"unknown field": {"name": "n", "data": "x", "secret": "y"},
	} {
		if code, _ := p.call("POST", "/v1/items", f.member, body); code != 400 {
			t.Errorf("POST /v1/items with %s = %d, want 400", name, code)
		}
	}
	if code, _ := p.call("GET", "/v1/items/not-a-uuid", f.member, nil); code != 400 {
		t.Errorf("GET /v1/items/not-a-uuid = %d, want 400", code)
	}

	assertNotStored(t, p.core.env["CORE_DATABASE_URL"], name, data, newData)

	p.must(200, "DELETE", "/v1/items/"+id, f.member, nil)
	if code, _ := p.call("GET", "/v1/items/"+id, f.member, nil); code != 404 {
		t.Errorf("GET after DELETE = %d, want 404", code)
	}
}

func TestZeroKnowledgeTenant(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("zk", "CLIENT")
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	wrong := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32)))
	secret := marker(t)
	if code, got := p.call("POST", "/v1/items", f.member, map[string]string{"name": "n", "data": secret}); code != 401 || !strings.Contains(got["message"].(string), "X-Master-Key") {
		t.Errorf("create without X-Master-Key = %d %v, want 401 asking for it", code, got)
	}
	created := p.must(200, "POST", "/v1/items", withMasterKey(f.member, key), map[string]string{"name": "n", "data": secret})
	id := created["id"].(string)
	if got := p.must(200, "GET", "/v1/items/"+id, withMasterKey(f.member, key), nil); got["data"] != secret {
		t.Errorf("read with the key = %v", got)
	}
	if code, _ := p.call("GET", "/v1/items/"+id, f.member, nil); code != 401 {
		t.Errorf("read without X-Master-Key = %d, want 401", code)
	}
	if code, got := p.call("GET", "/v1/items/"+id, withMasterKey(f.member, wrong), nil); code != 403 {
		t.Errorf("read with a wrong X-Master-Key = %d %v, want 403", code, got)
	}
	if code, _ := p.call("GET", "/v1/items/"+id, withMasterKey(f.member, "bm90LTMyLWJ5dGVz"), nil); code != 400 {
		t.Errorf("read with a malformed X-Master-Key = %d, want 400", code)
	}

	// A password change moves the keys to the new password's master key: every item stays
	// readable, with the new key only.
	newKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))
	if code, got := p.call("POST", "/v1/auth/password", f.member, map[string]string{
		"currentPassword": "password-of-member", "newPassword": "new-password-of-member",
	}); code != 400 || !strings.Contains(got["message"].(string), "X-New-Master-Key") {
		t.Errorf("password change without the master keys = %d %v, want 400 asking for them", code, got)
	}
	changed := p.must(200, "POST", "/v1/auth/password", cred{
		"Authorization": f.member["Authorization"], "X-Master-Key": key, "X-New-Master-Key": newKey,
	}, map[string]string{"currentPassword": "password-of-member", "newPassword": "new-password-of-member"})
	member := bearer(changed["tokens"].(map[string]any)["accessToken"].(string))
	if got := p.must(200, "GET", "/v1/items/"+id, withMasterKey(member, newKey), nil); got["data"] != secret {
		t.Errorf("read with the new key after the password change = %v", got)
	}
	if code, _ := p.call("GET", "/v1/items/"+id, withMasterKey(member, key), nil); code != 403 {
		t.Errorf("read with the old key after the password change = %d, want 403", code)
	}
	assertNotStored(t, p.core.env["CORE_DATABASE_URL"], secret, key, newKey)
}

// TestTenantsOnSeparateEncryptionServices runs one tenant on the platform's encryption service and
// one on a second, separately keyed instance (its own database and master key) that it hosts.
func TestTenantsOnSeparateEncryptionServices(t *testing.T) {
	p := startPlatform(t, nil)
	platformTenant := p.newTenant("on-platform", "PLATFORM")

	certs := testcerts.New(t)
	hosted := estest.Start(t, testdb.NewEmpty(t), certs)
	remoteID, remoteSecret := hosted.CreateTenant(t, "sovereign")
	root, _ := p.login(rootName, rootPass)
	ep := map[string]any{
		"kind": "hosted", "url": hosted.GRPCAddr, "protocol": "grpc",
		"caBundlePem": readFile(t, certs.CAFile), "clientCertificatePem": readFile(t, certs.ClientCertFile),
		"clientKeyPem": readFile(t, certs.ClientKeyFile), "remoteTenantId": remoteID, "remoteTenantSecret": remoteSecret,
	}
	hostedTenant := p.must(200, "POST", "/v1/tenants", bearer(root), map[string]any{"name": "sovereign", "encryptionEndpoint": ep})
	if got := hostedTenant["encryptionEndpoint"].(map[string]any); got["clientKeyPem"] != "" || got["remoteTenantSecret"] != "" {
		t.Errorf("tenant answer shows its endpoint's key or secret: %v", got)
	}
	hid := hostedTenant["tenantId"].(string)
	p.must(200, "POST", "/v1/tenants/"+hid+"/users", bearer(root), map[string]any{"username": "sov-member", "password": "password-of-sov"})
	tok, _ := p.login("sov-member", "password-of-sov")
	sov := bearer(tok)

	a := p.must(200, "POST", "/v1/items", platformTenant.member, map[string]string{"name": "a", "data": "on the platform"})
	b := p.must(200, "POST", "/v1/items", sov, map[string]string{"name": "b", "data": "on the tenant's own service"})
	if got := p.must(200, "GET", "/v1/items/"+b["id"].(string), sov, nil); got["data"] != "on the tenant's own service" {
		t.Errorf("hosted tenant reads %v", got)
	}
	if got := p.must(200, "GET", "/v1/items/"+a["id"].(string), platformTenant.member, nil); got["data"] != "on the platform" {
		t.Errorf("platform tenant reads %v", got)
	}
	for who, c := range map[string]cred{"platform tenant": platformTenant.member, "hosted tenant": sov} {
		other := b["id"].(string)
		if who == "hosted tenant" {
			other = a["id"].(string)
		}
		if code, _ := p.call("GET", "/v1/items/"+other, c, nil); code != 404 {
			t.Errorf("%s reading the other tenant's item = %d, want 404", who, code)
		}
	}
	// The hosted tenant's data key lives only on its own service: stopping it stops its reads,
	// with a clear 503, and leaves the platform tenant untouched.
	hosted.Stop()
	if code, got := p.call("GET", "/v1/items/"+b["id"].(string), sov, nil); code != 503 {
		t.Errorf("hosted tenant with its service down = %d %v, want 503", code, got)
	}
	p.must(200, "GET", "/v1/items/"+a["id"].(string), platformTenant.member, nil)
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// TestClientUserGetsKeyContextWithTheAccount: a person created in a zero-knowledge tenant by a
// request carrying their master key has their key context bound to that key from the start: a
// first vault request with another key is refused instead of creating a context under it. In a
// PLATFORM tenant the header is refused and no user is created.
func TestClientUserGetsKeyContextWithTheAccount(t *testing.T) {
	p := startPlatform(t, nil)
	zk := p.newTenant("zk-new", "CLIENT")
	plain := p.newTenant("plain-new", "PLATFORM")
	root, _ := p.login(rootName, rootPass)
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("c", 32)))
	wrong := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32)))

	p.must(200, "POST", "/v1/tenants/"+zk.id+"/users", withMasterKey(bearer(root), key), map[string]any{
		"username": "zk-new-carol", "password": "password-of-carol", "role": "member",
	})
	tok, _ := p.login("zk-new-carol", "password-of-carol")
	carol := bearer(tok)
	if code, got := p.call("POST", "/v1/items", withMasterKey(carol, wrong), map[string]string{"name": "n", "data": "d"}); code != 403 {
		t.Errorf("first item with another key = %d %v, want 403: the context was made with the account", code, got)
	}
	p.must(200, "POST", "/v1/items", withMasterKey(carol, key), map[string]string{"name": "n", "data": "d"})

	code, got := p.call("POST", "/v1/tenants/"+plain.id+"/users", withMasterKey(bearer(root), key), map[string]any{
		"username": "plain-new-dave", "password": "password-of-dave", "role": "member",
	})
	if msg, _ := got["message"].(string); code != 400 || !strings.Contains(msg, "X-Master-Key") {
		t.Errorf("create in a PLATFORM tenant with X-Master-Key = %d %v, want 400 naming the header", code, got)
	}
	p.must(200, "POST", "/v1/tenants/"+plain.id+"/users", bearer(root), map[string]any{
		"username": "plain-new-dave", "password": "password-of-dave", "role": "member",
	})
	assertNotStored(t, p.core.env["CORE_DATABASE_URL"], key)
}

// withMasterKey is c with X-Master-Key k.
func withMasterKey(c cred, k string) cred {
	out := cred{"X-Master-Key": k}
	for kk, v := range c {
		out[kk] = v
	}
	return out
}

// Every item core accepts, the encryption service (ES_MAX_DATA_BYTES at its default, 1 MiB)
// accepts too, HTML included; core refuses the rest itself, naming the field and its limit. A
// listing goes on past items deleted meanwhile, and a page token core did not make is a 400
// naming pageToken.
func TestItemLimitsAndPages(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	for _, c := range []struct {
		what, name, data string
		code             int
		msg              string
	}{
		{"the largest data, with the largest name", strings.Repeat("n", 1<<10), strings.Repeat("a", vault.DefaultMaxDataBytes), 200, ""},
		{"300 KiB of HTML", "n", strings.Repeat("<b>&</b>", 300<<10/8), 200, ""},
		{"data over the limit", "n", strings.Repeat("a", vault.DefaultMaxDataBytes+1), 400, "data: 1040385 bytes is over the limit of 1040384 bytes"},
		{"data escaped beyond the limit", "n", strings.Repeat(`\`, 600<<10), 400, "over the limit of 1048576 bytes"},
	} {
		code, got := p.call("POST", "/v1/items", f.member, map[string]string{"name": c.name, "data": c.data})
		if code != c.code || (c.msg != "" && !strings.Contains(fmt.Sprint(got["message"]), c.msg)) {
			t.Errorf("POST /v1/items with %s = %d %.200v, want %d %q", c.what, code, got, c.code, c.msg)
			continue
		}
		if code == 200 {
			if back := p.must(200, "GET", "/v1/items/"+got["id"].(string), f.member, nil); back["data"] != c.data {
				t.Errorf("GET the item with %s: not the data stored", c.what)
			}
			p.must(200, "DELETE", "/v1/items/"+got["id"].(string), f.member, nil)
		}
	}

	ids := make([]string, 5)
	for i := range ids {
		ids[i] = p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": strconv.Itoa(i)})["id"].(string)
	}
	page := p.must(200, "GET", "/v1/items?pageSize=2", f.member, nil)
	token, _ := page["nextPageToken"].(string)
	for _, it := range page["items"].([]any) { // newest first: the last two created
		p.must(200, "DELETE", "/v1/items/"+it.(map[string]any)["id"].(string), f.member, nil)
	}
	var rest []string
	for token != "" {
		page = p.must(200, "GET", "/v1/items?pageSize=2&pageToken="+url.QueryEscape(token), f.member, nil)
		for _, it := range page["items"].([]any) {
			rest = append(rest, it.(map[string]any)["data"].(string))
		}
		token, _ = page["nextPageToken"].(string)
	}
	if strings.Join(rest, ",") != "2,1,0" {
		t.Errorf("GET /v1/items after deleting the first page = data %v, want 2,1,0", rest)
	}
	if code, got := p.call("GET", "/v1/items?pageToken="+ids[0], f.member, nil); code != 400 || !strings.Contains(fmt.Sprint(got["message"]), "pageToken") {
		t.Errorf("GET /v1/items?pageToken=<an item id> = %d %v, want 400 naming pageToken", code, got)
	}
}
