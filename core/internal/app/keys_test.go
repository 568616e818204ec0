package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// seedItems stores n items of ownerID, each encrypted through the tenant's encryption service as
// the vault encrypts them (several at a time) and inserted with COPY: through the API it would
// take far longer. It returns each item's data by id.
func seedItems(tb testing.TB, p *platform, tenantID, ownerID string, n int) map[string]string {
	tb.Helper()
	ctx := context.Background()
	pool, err := postgres.Open(ctx, p.core.env["CORE_DATABASE_URL"])
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool)
	box, err := secretBox(testSecretKeys, "")
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := esclient.Dial(esclient.Options{Addr: p.es.GRPCAddr, ServerName: "localhost", CAFile: p.core.env["CORE_ES_CA_FILE"],
		ClientCertFile: p.core.env["CORE_ES_CLIENT_CERT_FILE"], ClientKeyFile: p.core.env["CORE_ES_CLIENT_KEY_FILE"]})
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	router := esclient.NewRouter(conn, store, box, esclient.RouterOptions{})
	defer router.Close()
	es, err := router.For(ctx, uuid.MustParse(tenantID))
	if err != nil {
		tb.Fatal(err)
	}
	kc, err := store.GetKeyContext(ctx, uuid.MustParse(ownerID))
	if err != nil {
		tb.Fatal(err)
	}

	rows := make([][]any, n)
	want := make(map[string]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				data := fmt.Sprintf("data of item %d", i)
				plain, _ := json.Marshal(map[string]string{"name": fmt.Sprintf("item %d", i), "data": data})
				ct, err := es.Encrypt(ctx, kc.EncryptionID.String(), string(plain), nil)
				if err != nil {
					errs <- err
					return
				}
				id := uuid.New()
				rows[i] = []any{id, uuid.MustParse(tenantID), uuid.MustParse(ownerID), ct.CipherText, kc.EncryptionID,
					uuid.MustParse(ct.VersionID), ct.Algorithm, []byte(ct.Metadata)}
				rows[i] = append(rows[i], data)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatalf("encrypt: %v", err)
	}
	for i := range rows {
		want[rows[i][0].(uuid.UUID).String()] = rows[i][8].(string)
		rows[i] = rows[i][:8]
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"core", "items"},
		[]string{"id", "tenant_id", "owner_id", "cipher_text", "encryption_id", "encryption_version_id", "algorithm", "metadata"},
		pgx.CopyFromRows(rows))
	if err != nil {
		tb.Fatalf("insert items: %v", err)
	}
	return want
}

// num reads a protojson uint64 (a string) or number.
func num(tb testing.TB, v any) int {
	tb.Helper()
	switch x := v.(type) {
	case string:
		n, err := strconv.Atoi(x)
		if err != nil {
			tb.Fatalf("%q is not a number", x)
		}
		return n
	case float64:
		return int(x)
	}
	tb.Fatalf("%v (%T) is not a number", v, v)
	return 0
}

// readAll lists every item of c through GET /v1/items and returns their data by id.
func (p *platform) readAll(c cred) map[string]string {
	p.tb.Helper()
	got := map[string]string{}
	token := ""
	for {
		path := "/v1/items?pageSize=500"
		if token != "" {
			path += "&pageToken=" + url.QueryEscape(token)
		}
		page := p.must(200, "GET", path, c, nil)
		items, _ := page["items"].([]any)
		for _, it := range items {
			m := it.(map[string]any)
			got[m["id"].(string)] = m["data"].(string)
		}
		token, _ = page["nextPageToken"].(string)
		if token == "" {
			return got
		}
	}
}

// waitJob polls a job until it ends.
func (p *platform) waitJob(c cred, id string, timeout time.Duration) map[string]any {
	p.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := p.must(200, "GET", "/v1/keys/jobs/"+id, c, nil)
		switch j["state"] {
		case "SUCCEEDED", "FAILED", "WAITING_FOR_KEY":
			return j
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("job %s still %v after %s: %v", id, j["state"], timeout, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// contextOf returns the key status of ownerID's context.
func (p *platform) contextOf(c cred, ownerID string) map[string]any {
	p.tb.Helper()
	st := p.must(200, "GET", "/v1/keys/status", c, nil)
	for _, cs := range st["contexts"].([]any) {
		if m := cs.(map[string]any); m["ownerId"] == ownerID {
			return m
		}
	}
	p.tb.Fatalf("GET /v1/keys/status has no context of %s: %v", ownerID, st)
	return nil
}

func wantSameItems(tb testing.TB, got, want map[string]string) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("read %d items, want %d", len(got), len(want))
	}
	bad := 0
	for id, data := range want {
		if got[id] != data {
			if bad++; bad <= 5 {
				tb.Errorf("item %s reads %q, want %q", id, got[id], data)
			}
		}
	}
	if bad > 5 {
		tb.Errorf("... and %d more items read wrong", bad-5)
	}
}

// TestRotationWith5000Items rotates a tenant with 5,000 items: the job moves them all by batch
// rewrap, items edited during the job keep their edits, the encryption service killed mid-job and
// restarted leaves nothing lost, and the old versions are then disabled with every item readable.
func TestRotationWith5000Items(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("rot", "PLATFORM")
	want := seedItems(t, p, f.id, f.memberID, 5000)

	before := p.contextOf(f.rotate, f.memberID)
	versions := before["versions"].([]any)
	if len(versions) != 1 || num(t, versions[0].(map[string]any)["itemCount"]) != 5000 {
		t.Fatalf("key status before rotation = %v, want one version with 5000 items", before)
	}
	enc := before["encryptionId"].(string)
	v1 := versions[0].(map[string]any)["versionId"].(string)
	if code, _ := p.call("POST", "/v1/keys/rotate", f.member, map[string]any{}); code != 403 {
		t.Errorf("member rotating = %d, want 403", code)
	}

	// Rotate; edit some items while the job runs; kill the encryption service once the job has
	// made progress. Should the job win the race and finish first, rotate again.
	var jobID string
	killed := false
	for attempt := 1; attempt <= 3 && !killed; attempt++ {
		rot := p.must(200, "POST", "/v1/keys/rotate", f.admin, map[string]any{})
		if num(t, rot["rotatedContexts"]) != 3 {
			t.Errorf("rotatedContexts = %v, want 3 (owner, admin, member)", rot["rotatedContexts"])
		}
		jobID = rot["job"].(map[string]any)["jobId"].(string)
		if attempt == 1 {
			if code, got := p.call("POST", "/v1/keys/"+enc+"/versions/"+v1+":disable", f.admin, map[string]any{}); code != 400 ||
				!strings.Contains(fmt.Sprint(got["message"]), "items still use") {
				t.Errorf("disabling the old version while items use it = %d %v, want 400", code, got)
			}
			if code, _ := p.call("POST", "/v1/keys/rotate", f.admin, map[string]any{}); code != 400 {
				t.Errorf("rotating again while the job runs = %d, want 400", code)
			}
			n := 0
			for id := range want {
				if n++; n > 25 {
					break
				}
				data := "edited during the job " + id
				p.must(200, "PUT", "/v1/items/"+id, f.member, map[string]any{"name": "edited", "data": data, "revision": 1})
				want[id] = data
			}
		}
		for {
			j := p.must(200, "GET", "/v1/keys/jobs/"+jobID, f.rotate, nil)
			if j["state"] != "PENDING" && j["state"] != "RUNNING" {
				t.Logf("attempt %d: the job ended (%v) before the encryption service could be killed", attempt, j["state"])
				break
			}
			if num(t, j["done"]) > 0 {
				p.es.Kill()
				killed = true
				t.Logf("encryption service killed with %v of %v items done", j["done"], j["total"])
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if !killed {
		t.Fatal("could not kill the encryption service during a job")
	}
	time.Sleep(2 * time.Second)
	if j := p.must(200, "GET", "/v1/keys/jobs/"+jobID, f.admin, nil); j["state"] != "RUNNING" {
		t.Errorf("job while the encryption service is down = %v, want RUNNING (retrying)", j)
	}
	p.es.Restart(t)
	end := p.waitJob(f.admin, jobID, 60*time.Second)
	total, done, skipped := num(t, end["total"]), num(t, end["done"]), num(t, end["skipped"])
	if end["state"] != "SUCCEEDED" || num(t, end["failed"]) != 0 || done+skipped != total || total < 4975 || end["finishedAt"] == nil {
		t.Errorf("job = %v; want SUCCEEDED, every item moved or skipped", end)
	}
	wantSameItems(t, p.readAll(f.member), want)

	// Every item is on the active version: the others can be disabled, and everything still reads.
	after := p.contextOf(f.admin, f.memberID)
	var active string
	for _, v := range after["versions"].([]any) {
		v := v.(map[string]any)
		if v["state"] == "ACTIVE" {
			active = v["versionId"].(string)
			if num(t, v["itemCount"]) != 5000 {
				t.Errorf("active version holds %v items, want 5000", v["itemCount"])
			}
			continue
		}
		if num(t, v["itemCount"]) != 0 {
			t.Errorf("old version %v still holds %v items", v["version"], v["itemCount"])
		}
		got := p.must(200, "POST", "/v1/keys/"+enc+"/versions/"+v["versionId"].(string)+":disable", f.rotate, map[string]any{})
		if ver := got["version"].(map[string]any); ver["state"] != "DISABLED" || ver["versionId"] != v["versionId"] {
			t.Errorf("disable version %v = %v, want it DISABLED", v["version"], got)
		}
	}
	if code, _ := p.call("POST", "/v1/keys/"+enc+"/versions/"+active+":disable", f.admin, map[string]any{}); code != 400 {
		t.Errorf("disabling the active version = %d, want 400", code)
	}
	wantSameItems(t, p.readAll(f.member), want)
	if list := p.must(200, "GET", "/v1/keys/jobs", f.admin, nil); len(list["jobs"].([]any)) < 1 || list["jobs"].([]any)[0].(map[string]any)["jobId"] != jobID {
		t.Errorf("GET /v1/keys/jobs = %v, want the last job first", list)
	}
}

// TestZeroKnowledgeReencryption rotates a zero-knowledge tenant: the admin's job cannot move the
// member's items and says so; the member's own job with X-Master-Key moves them.
func TestZeroKnowledgeReencryption(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("zk", "CLIENT")
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	withKey := cred{"X-Master-Key": key}
	for k, v := range f.member {
		withKey[k] = v
	}
	want := map[string]string{}
	for i := range 30 {
		data := marker(t)
		it := p.must(200, "POST", "/v1/items", withKey, map[string]string{"name": fmt.Sprint("n", i), "data": data})
		want[it["id"].(string)] = data
	}
	rot := p.must(200, "POST", "/v1/keys/rotate", f.rotate, map[string]any{})
	end := p.waitJob(f.admin, rot["job"].(map[string]any)["jobId"].(string), 30*time.Second)
	if end["state"] != "WAITING_FOR_KEY" || !strings.Contains(end["message"].(string), "30 items") || !strings.Contains(end["message"].(string), "X-Master-Key") {
		t.Errorf("admin's job in a zero-knowledge tenant = %v; want WAITING_FOR_KEY for 30 items", end)
	}
	if code, _ := p.call("POST", "/v1/keys/jobs", f.member, map[string]any{}); code != 403 {
		t.Errorf("member starting a job without X-Master-Key = %d, want 403", code)
	}
	wrong := cred{"X-Master-Key": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32)))}
	for k, v := range f.member {
		wrong[k] = v
	}
	if code, _ := p.call("POST", "/v1/keys/jobs", wrong, map[string]any{}); code != 403 {
		t.Errorf("member starting a job with a wrong key = %d, want 403", code)
	}
	job := p.must(200, "POST", "/v1/keys/jobs", withKey, map[string]any{})
	end = p.waitJob(f.member, job["jobId"].(string), 30*time.Second)
	if end["state"] != "SUCCEEDED" || num(t, end["done"]) != 30 {
		t.Errorf("member's job = %v; want SUCCEEDED with 30 moved", end)
	}
	if code, _ := p.call("GET", "/v1/keys/jobs/"+job["jobId"].(string), f.admin, nil); code != 200 {
		t.Errorf("admin reading the member's job = %d, want 200", code)
	}
	cs := p.contextOf(f.admin, f.memberID)
	for _, v := range cs["versions"].([]any) {
		if v := v.(map[string]any); v["state"] != "ACTIVE" {
			p.must(200, "POST", "/v1/keys/"+cs["encryptionId"].(string)+"/versions/"+v["versionId"].(string)+":disable", f.admin, map[string]any{})
		}
	}
	wantSameItems(t, p.readAll(withKey), want)
	assertNotStored(t, p.core.env["CORE_DATABASE_URL"], key)
}

// TestRestoringABackupAfterDisable restores an export made before a rotation whose old version was
// then disabled: the restored items cannot be read until a tenant admin enables the version again
// through core, and a re-encryption job then moves them to the active version.
func TestRestoringABackupAfterDisable(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("restore", "PLATFORM")
	data := marker(t)
	it := p.must(200, "POST", "/v1/items", f.member, map[string]any{"name": "n", "data": data})
	id := it["id"].(string)
	lines, _ := p.exportLines(f.export, "")
	backup := strings.Join(lines, "\n") + "\n"

	rot := p.must(200, "POST", "/v1/keys/rotate", f.admin, map[string]any{})
	p.waitJob(f.admin, rot["job"].(map[string]any)["jobId"].(string), 30*time.Second)
	kc := p.contextOf(f.admin, f.memberID)
	enc := kc["encryptionId"].(string)
	var v1 string
	for _, v := range kc["versions"].([]any) {
		if v := v.(map[string]any); num(t, v["version"]) == 1 {
			v1 = v["versionId"].(string)
		}
	}
	disable := "/v1/keys/" + enc + "/versions/" + v1 + ":disable"
	enable := "/v1/keys/" + enc + "/versions/" + v1 + ":enable"
	p.must(200, "POST", disable, f.admin, map[string]any{})
	p.must(200, "DELETE", "/v1/items/"+id, f.member, nil)

	// The backup comes back onto version 1, which decrypts nothing while disabled.
	if code, got := p.raw("POST", "/v1/import", f.admin, backup); code != 200 {
		t.Fatalf("import = %d %s", code, got)
	}
	if code, got := p.call("GET", "/v1/items/"+id, f.member, nil); code != 400 || !strings.Contains(fmt.Sprint(got["message"]), "disabled") {
		t.Errorf("reading a restored item under the disabled version = %d %v, want 400 naming the disabled version", code, got)
	}

	// Enabling: admins and keys:rotate machines only; then it reads, and core no longer refuses
	// writes under the version.
	if code, _ := p.call("POST", enable, f.member, map[string]any{}); code != 403 {
		t.Errorf("member enabling a version = %d, want 403", code)
	}
	if code, _ := p.call("POST", "/v1/keys/"+enc+"/versions/not-a-uuid:enable", f.admin, map[string]any{}); code != 400 {
		t.Errorf("enabling a malformed version id = %d, want 400", code)
	}
	other := p.newTenant("other", "PLATFORM")
	if code, _ := p.call("POST", enable, other.admin, map[string]any{}); code != 404 {
		t.Errorf("another tenant's admin enabling the version = %d, want 404", code)
	}
	got := p.must(200, "POST", enable, f.rotate, map[string]any{})
	if v := got["version"].(map[string]any); v["state"] != "DECRYPT_ONLY" || num(t, v["version"]) != 1 {
		t.Errorf("enable = %v, want version 1 DECRYPT_ONLY", got)
	}
	if n := countRows(t, p.core.env["CORE_DATABASE_URL"], "SELECT count(*) FROM core.disabled_key_versions WHERE encryption_version_id = $1", v1); n != 0 {
		t.Errorf("core still records version 1 as disabled (%d rows)", n)
	}
	if got := p.must(200, "GET", "/v1/items/"+id, f.member, nil); got["data"] != data {
		t.Errorf("restored item after enabling = %v, want its data back", got)
	}
	p.must(200, "POST", enable, f.admin, map[string]any{}) // again: nothing changes
	audit := p.must(200, "GET", "/v1/audit?action=keys.version.enable", f.admin, nil)
	if n := len(audit["events"].([]any)); n != 2 {
		t.Errorf("keys.version.enable audit events = %d, want 2", n)
	}

	// Re-encryption moves the restored item to the active version; version 1 can go again.
	job := p.must(200, "POST", "/v1/keys/jobs", f.admin, map[string]any{})
	if end := p.waitJob(f.admin, job["jobId"].(string), 30*time.Second); end["state"] != "SUCCEEDED" {
		t.Fatalf("re-encryption after the restore = %v", end)
	}
	p.must(200, "POST", disable, f.admin, map[string]any{})
	if got := p.must(200, "GET", "/v1/items/"+id, f.member, nil); got["data"] != data {
		t.Errorf("restored item after re-encryption and disable = %v, want its data", got)
	}

	// The same backup again: the item is the same (same revision), only on another version now,
	// so it is unchanged and stays on the active version.
	code, raw := p.raw("POST", "/v1/import", f.admin, backup)
	var res map[string]any
	if code != 200 || json.Unmarshal(raw, &res) != nil || num(t, res["unchanged"]) != 1 {
		t.Errorf("importing the backup again after re-encryption = %d %s, want 200 with 1 unchanged", code, raw)
	}
	if got := p.must(200, "GET", "/v1/items/"+id, f.member, nil); got["data"] != data {
		t.Errorf("item after importing the backup again = %v, want its data, on the active version", got)
	}
}
