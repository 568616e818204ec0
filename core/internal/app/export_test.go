package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/testdb"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// raw sends a REST request with a raw body and returns the status and the raw answer.
func (p *platform) raw(method, path string, c cred, body string) (int, []byte) {
	p.tb.Helper()
	req, err := http.NewRequest(method, "https://"+p.core.httpAddr+path, strings.NewReader(body))
	if err != nil {
		p.tb.Fatal(err)
	}
	for k, v := range c {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.tb.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		p.tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// exportLines runs GET /v1/export (after cursor, if any) as c and returns its lines and records.
func (p *platform) exportLines(c cred, cursor string) ([]string, []map[string]any) {
	p.tb.Helper()
	path := "/v1/export"
	if cursor != "" {
		path += "?cursor=" + cursor
	}
	code, body := p.raw("GET", path, c, "")
	if code != 200 {
		p.tb.Fatalf("GET %s = %d %s", path, code, body)
	}
	var lines []string
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if line == "" {
			continue
		}
		var l struct {
			Result struct {
				Record map[string]any `json:"record"`
			} `json:"result"`
			Error any `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Error != nil || l.Result.Record == nil {
			p.tb.Fatalf("GET %s: line %q is not {\"result\":{\"record\":…}}", path, line)
		}
		lines = append(lines, line)
		records = append(records, l.Result.Record)
	}
	return lines, records
}

// copyRows copies the rows of core.table that where selects from one database to another.
func copyRows(tb testing.TB, fromURL, toURL, table, where string) {
	tb.Helper()
	ctx := context.Background()
	from, err := pgx.Connect(ctx, fromURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer from.Close(ctx)
	to, err := pgx.Connect(ctx, toURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer to.Close(ctx)
	var buf bytes.Buffer
	if _, err := from.PgConn().CopyTo(ctx, &buf, "COPY (SELECT * FROM core."+table+" WHERE "+where+") TO STDOUT"); err != nil {
		tb.Fatalf("copy %s out: %v", table, err)
	}
	if _, err := to.PgConn().CopyFrom(ctx, &buf, "COPY core."+table+" FROM STDIN"); err != nil {
		tb.Fatalf("copy %s in: %v", table, err)
	}
}

func countRows(tb testing.TB, databaseURL, query string, args ...any) int {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestExportImport exports a tenant's items, restores them into a second core on a fresh database
// (the tenant, its people and their key contexts copied over, as an identity restore would), and
// reads them there; altered records are refused without storing anything.
func TestExportImport(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	plain := map[string]string{} // item id → data
	var names []string
	for _, who := range []cred{f.member, f.member, f.admin, f.member, f.admin} {
		name, data := marker(t), marker(t)
		it := p.must(200, "POST", "/v1/items", who, map[string]string{"name": name, "data": data})
		plain[it["id"].(string)] = data
		names = append(names, name)
	}

	// A machine with scope export exports every item of the tenant, oldest first, and no plaintext.
	lines, records := p.exportLines(f.export, "")
	if len(records) != 5 {
		t.Fatalf("export as machine = %d records, want the tenant's 5", len(records))
	}
	// ownedBy picks, of a member's and an admin's credential, the one of record i's owner.
	ownedBy := func(i int, member, admin cred) cred {
		if records[i]["ownerId"] == f.memberID {
			return member
		}
		return admin
	}
	all := strings.Join(lines, "\n")
	for id, data := range plain {
		if strings.Contains(all, data) {
			t.Errorf("the export holds the plaintext of item %s", id)
		}
	}
	for _, n := range names {
		if strings.Contains(all, n) {
			t.Error("the export holds an item's plaintext name")
		}
	}
	for _, k := range []string{"id", "ownerId", "revision", "cipherText", "encryptionId", "encryptionVersionId", "algorithm",
		"metadata", "createdAt", "updatedAt", "cursor", "integrity"} {
		if _, ok := records[0][k]; !ok {
			t.Errorf("export record lacks %q: %v", k, records[0])
		}
	}
	// ... but cannot read them.
	if code, _ := p.call("GET", "/v1/items/"+records[0]["id"].(string), f.export, nil); code != 403 {
		t.Errorf("machine with scope export reading an item = %d, want 403", code)
	}
	if code, _ := p.call("GET", "/v1/export", f.rotate, nil); code != 403 {
		t.Errorf("machine without scope export exporting = %d, want 403", code)
	}
	// A member exports their own items only.
	if _, own := p.exportLines(f.member, ""); len(own) != 3 {
		t.Errorf("export as member = %d records, want their 3", len(own))
	}
	// Resume after the second record.
	if _, rest := p.exportLines(f.admin, records[1]["cursor"].(string)); len(rest) != 3 || rest[0]["id"] != records[2]["id"] {
		t.Errorf("export after record 2's cursor = %d records, want records 3 to 5", len(rest))
	}
	if code, _ := p.raw("GET", "/v1/export?cursor=bogus", f.admin, ""); code != 400 {
		t.Errorf("export with a bogus cursor = %d, want 400", code)
	}
	// gRPC streams the same records.
	stream, err := corev1.NewExportServiceClient(p.conn).Export(grpcCtx(f.export), &corev1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var viaGRPC int
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("gRPC Export: %v", err)
		}
		if resp.GetRecord().GetIntegrity() != records[viaGRPC]["integrity"] {
			t.Errorf("gRPC record %d differs from the REST one", viaGRPC+1)
		}
		viaGRPC++
	}
	if viaGRPC != 5 {
		t.Errorf("gRPC Export = %d records, want 5", viaGRPC)
	}

	// A second core on a fresh database, with the tenant's identity restored.
	coreDB, freshDB := p.core.env["CORE_DATABASE_URL"], testdb.New(t)
	env := map[string]string{}
	for k, v := range p.core.env {
		env[k] = v
	}
	env["CORE_DATABASE_URL"] = freshDB
	inst := startWithEnv(t, env, p.core.certs)
	waitReady(t, inst)
	q := &platform{tb: t, core: inst, es: p.es, client: inst.httpClient(p.core.certs.ClientConfigNoCert())}
	q.conn = inst.grpcConn(t, p.core.certs.ClientConfigNoCert())
	copyRows(t, coreDB, freshDB, "tenants", "id = '"+f.id+"'")
	copyRows(t, coreDB, freshDB, "users", "tenant_id = '"+f.id+"'")
	copyRows(t, coreDB, freshDB, "key_contexts", "tenant_id = '"+f.id+"'")
	adminTok, _ := q.login("acme-admin", "password-of-admin")
	memberTok, _ := q.login("acme-member", "password-of-member")
	admin, member := bearer(adminTok), bearer(memberTok)
	itemsIn := func() int {
		return countRows(t, freshDB, "SELECT count(*) FROM core.items WHERE tenant_id = $1", f.id)
	}

	// Altered records are refused, naming the record, and nothing is stored.
	flip := func(s string) string {
		b := []byte(s)
		if b[5] == 'A' {
			b[5] = 'B'
		} else {
			b[5] = 'A'
		}
		return string(b)
	}
	alter := []struct {
		name   string
		change func(map[string]any)
	}{
		{"cipherText byte", func(r map[string]any) { r["cipherText"] = flip(r["cipherText"].(string)) }},
		{"revision", func(r map[string]any) { r["revision"] = r["revision"].(float64) + 1 }},
		{"owner", func(r map[string]any) { r["ownerId"] = records[0]["ownerId"] }},
	}
	for _, a := range alter {
		t.Run(a.name, func(t *testing.T) {
			var body strings.Builder
			for i, r := range records {
				if i == 2 {
					changed := map[string]any{}
					for k, v := range r {
						changed[k] = v
					}
					a.change(changed)
					r = changed
				}
				line, _ := json.Marshal(map[string]any{"result": map[string]any{"record": r}})
				body.Write(append(line, '\n'))
			}
			code, got := q.raw("POST", "/v1/import", admin, body.String())
			if code != 400 || !strings.Contains(string(got), "record 3 (item "+records[2]["id"].(string)+")") || !strings.Contains(string(got), "integrity") {
				t.Errorf("import with record 3's %s altered = %d %s; want 400 naming record 3's integrity", a.name, code, got)
			}
			if n := itemsIn(); n != 0 {
				t.Errorf("after a refused import the fresh database holds %d items, want none", n)
			}
		})
	}
	// An export that ended in an error is incomplete: refused once the first record was already sent.
	truncated := lines[0] + "\n" + `{"error":{"code":14,"message":"database unavailable","details":[]}}` + "\n"
	if code, got := q.raw("POST", "/v1/import", admin, truncated); code != 400 || !strings.Contains(string(got), "record 2: the export ended with an error") {
		t.Errorf("import of an export ending in an error = %d %s; want 400 naming record 2", code, got)
	}
	if n := itemsIn(); n != 0 {
		t.Errorf("after a refused import the fresh database holds %d items, want none", n)
	}
	// Only a tenant admin imports.
	if code, _ := q.raw("POST", "/v1/import", member, lines[0]+"\n"); code != 403 {
		t.Errorf("import as member = %d, want 403", code)
	}

	// The export as it was streamed, in the three accepted shapes: an export line, an import
	// request, a bare record.
	var body strings.Builder
	for i, line := range lines {
		r, _ := json.Marshal(records[i])
		switch i % 3 {
		case 0:
			body.WriteString(line)
		case 1:
			body.WriteString(`{"record":` + string(r) + `}`)
		case 2:
			body.Write(r)
		}
		body.WriteString("\n")
	}
	code, got := q.raw("POST", "/v1/import", admin, body.String())
	if code != 200 || !strings.Contains(string(got), `"imported":5`) {
		t.Fatalf("import of the export = %d %s; want 5 imported", code, got)
	}
	for i, r := range records {
		id := r["id"].(string)
		if it := q.must(200, "GET", "/v1/items/"+id, ownedBy(i, member, admin), nil); it["data"] != plain[id] {
			t.Errorf("restored item %s reads %v, want its data", id, it["data"])
		}
	}
	// Again: everything is already there.
	if code, got := q.raw("POST", "/v1/import", admin, strings.Join(lines, "\n")); code != 200 || !strings.Contains(string(got), `"unchanged":5`) {
		t.Errorf("import of the export again = %d %s; want 5 unchanged", code, got)
	}
	// An item changed since the export conflicts; nothing of the request is stored.
	p.must(200, "PUT", "/v1/items/"+records[4]["id"].(string), ownedBy(4, f.member, f.admin), map[string]any{"name": "n", "data": "changed", "revision": 1})
	p.must(200, "DELETE", "/v1/items/"+records[0]["id"].(string), ownedBy(0, f.member, f.admin), nil)
	code, got = p.raw("POST", "/v1/import", f.admin, strings.Join(lines, "\n"))
	if code != 409 || !strings.Contains(string(got), "record 5") {
		t.Errorf("import over a changed item = %d %s; want 409 naming record 5", code, got)
	}
	if _, left := p.exportLines(f.admin, ""); len(left) != 4 {
		t.Errorf("after the refused import the tenant has %d items, want 4 (the deleted one not restored)", len(left))
	}
	// gRPC import of a malformed stream: nothing stored.
	imp, err := corev1.NewExportServiceClient(p.conn).Import(grpcCtx(f.admin))
	if err != nil {
		t.Fatal(err)
	}
	// io.EOF means the server ended the stream; CloseAndRecv reports its status.
	if err := imp.Send(&corev1.ImportRequest{}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if _, err := imp.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC import of an empty request = %v, want InvalidArgument", err)
	}
}
