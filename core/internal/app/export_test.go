package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

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

// TestStalledImportsHoldNoConnection checks that gRPC imports whose client stops sending hold no
// database connection (nor the locks of a transaction): core receives an import in full before
// storing it. A tenant runs at most two imports at once.
func TestStalledImportsHoldNoConnection(t *testing.T) {
	p := startPlatform(t, map[string]string{"CORE_DB_MAX_CONNS": "2"})
	f := p.newTenant("acme", "PLATFORM")
	p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": "d"})
	_, records := p.exportLines(f.admin, "")
	rec := &corev1.ExportRecord{}
	raw, err := json.Marshal(records[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(raw, rec); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	md, _ := metadata.FromOutgoingContext(grpcCtx(f.admin))
	stalled := func() corev1.ExportService_ImportClient {
		imp, err := corev1.NewExportServiceClient(p.conn).Import(metadata.NewOutgoingContext(ctx, md))
		if err != nil {
			t.Fatal(err)
		}
		if err := imp.Send(&corev1.ImportRequest{Record: rec}); err != nil {
			t.Fatal(err)
		}
		return imp // never closed: the import waits for more
	}
	// As many as the pool has connections (before, each held one in its transaction), and one
	// more, which is refused: whichever the server sees last.
	ended := make(chan error, 3)
	for range 3 {
		imp := stalled()
		go func() { ended <- imp.RecvMsg(&corev1.ImportResponse{}) }()
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("one of three concurrent imports of a tenant = %v, want ResourceExhausted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("three concurrent imports of a tenant all run, want one refused")
	}
	c := &http.Client{Transport: p.client.Transport, Timeout: 10 * time.Second}
	q := *p
	q.client = c
	if code, body := q.raw("GET", "/v1/items", f.member, ""); code != 200 {
		t.Errorf("GET /v1/items while two imports stall = %d %s, want 200", code, body)
	}
	if code, body := q.raw("GET", "/readyz", nil, ""); code != 200 {
		t.Errorf("GET /readyz while two imports stall = %d %s, want 200", code, body)
	}
	// Once their clients leave, the tenant imports again.
	cancel()
	eventually(t, "an import after the stalled ones left", func() error {
		imp, err := corev1.NewExportServiceClient(p.conn).Import(grpcCtx(f.admin))
		if err != nil {
			return err
		}
		if err := imp.Send(&corev1.ImportRequest{Record: rec}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		res, err := imp.CloseAndRecv()
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if res.GetUnchanged() != 1 {
			return fmt.Errorf("import = %v, want 1 unchanged", res)
		}
		return nil
	})
}

// eventually retries check until it returns nil or 10 seconds pass.
func eventually(tb testing.TB, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImportErrorsQuoteNothing checks that a refused import names the record and the field but
// never quotes what was sent: an import file carries ciphertext, and a malformed one anything.
func TestImportErrorsQuoteNothing(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	tests := []struct{ name, body, want string }{
		{"not JSON", `{"record":{"id":SECRET-1}}`, "record 1: not JSON (at byte "},
		{"bad escape", "{}\n" + `{"id":"SECRET-2\u00"}`, "record 2: not JSON"},
		{"wrong type", `{"id":"x","revision":"SECRET-3"}`, "record 1: not an export record: revision: invalid value"},
		{"unknown field", `{"result":{"record":{"SECRET-4":1}}}`, `record 1: not an export record: unknown field "SECRET-4"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got := p.raw("POST", "/v1/import", f.admin, tt.body)
			var answer struct{ Message string }
			_ = json.Unmarshal(got, &answer)
			if code != 400 || !strings.Contains(answer.Message, tt.want) {
				t.Errorf("import of %s = %d %s; want 400 %q", tt.body, code, got, tt.want)
			}
			if tt.name != "unknown field" && strings.Contains(string(got), "SECRET") {
				t.Errorf("import of %s quotes it: %s", tt.body, got)
			}
		})
	}
}

// TestExportIsInTheTenantsAuditTrail: whoever takes a copy of the tenant's ciphertext — a
// machine with the export scope, or a member taking their own items — shows in the tenant's own
// audit trail, naming what was exported.
func TestExportIsInTheTenantsAuditTrail(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	p.newTenant("globex", "PLATFORM")
	p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": "d"})
	for _, c := range []cred{f.export, f.member} {
		if code, _ := p.raw("GET", "/v1/export", c, ""); code != 200 {
			t.Fatalf("export = %d", code)
		}
	}
	own := p.must(200, "GET", "/v1/audit?action=vault.export", f.owner, nil)["events"].([]any)
	targets := map[string]bool{}
	for _, e := range own {
		ev := e.(map[string]any)
		if ev["tenantId"] != f.id {
			t.Errorf("vault.export event %v names tenant %v, want %s", ev, ev["tenantId"], f.id)
		}
		targets[ev["target"].(string)] = true
	}
	if len(own) != 2 || !targets["tenant:"+f.id] || !targets["user:"+f.memberID] {
		t.Errorf("acme's owner sees vault.export events %v, want the machine's of tenant:%s and the member's of user:%s", own, f.id, f.memberID)
	}
	root, _ := p.login(rootName, rootPass)
	other := p.must(200, "GET", "/v1/audit?action=vault.export&tenantId="+f.id, bearer(root), nil)["events"].([]any)
	if len(other) != 2 {
		t.Errorf("the platform admin sees %d of acme's exports, want 2", len(other))
	}
}
