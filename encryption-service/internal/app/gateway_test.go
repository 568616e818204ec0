package app

import (
	"strings"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// TestGatewayRefusesWhatItWouldIgnore checks that the REST gateway refuses, with a 400 naming it,
// a query parameter its route does not take (the gateway would ignore it, and the caller get an
// answer computed without it) and a second value after the JSON body, while the documented query
// parameters work; and that its 400s never quote what was sent.
func TestGatewayRefusesWhatItWouldIgnore(t *testing.T) {
	inst := startInstance(t, testdb.New(t), testcerts.New(t))
	r := newREST(t, inst)
	waitReady(t, inst)
	ten := r.newTenant("acme")
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	encrypt := `{"encryptionId":"` + id + `","data":"aGVsbG8="}`
	tests := []struct {
		name, method, path string
		headers            map[string]string
		body               string
		want               int
		wantMessage        string
	}{
		{"every documented parameter", "GET", "/v1/admin/audit?tenantId=" + ten["X-Tenant-Id"] + "&encryptionId=" + id + "&pageSize=1&pageToken=", r.admin(), "", 200, ""},
		{"one unknown among them", "GET", "/v1/admin/audit?pageSize=1&pageSise=2", r.admin(), "", 400, `query parameter "pageSise"`},
		{"page size", "GET", "/v1/admin/audit?pageSize=1", r.admin(), "", 200, ""},
		{"page size by its proto name", "GET", "/v1/admin/audit?page_size=1", r.admin(), "", 200, ""},
		{"unknown parameter", "GET", "/v1/encryptions/" + id + "?bogus=1", ten, "", 400, `query parameter "bogus": not a parameter of this request`},
		{"path parameter again", "GET", "/v1/encryptions/" + id + "?encryptionId=" + id, ten, "", 400, `query parameter "encryptionId"`},
		{"parameter of a body-only route", "POST", "/v1/encrypt?data=SECRET-1", ten, encrypt, 400, `query parameter "data"`},
		{"malformed value", "GET", "/v1/admin/audit?pageSize=SECRET-2", r.admin(), "", 400, "query parameter pageSize: invalid value"},
		{"malformed timeout", "GET", "/v1/encryptions/" + id, ten.with("Grpc-Timeout", "SECRET-3"), "", 400, "Grpc-Timeout header: invalid value"},
		{"second body value", "POST", "/v1/encrypt", ten, encrypt + ` {"SECRET-4":1}`, 400, "only whitespace may follow the JSON value"},
		{"garbage after the body", "POST", "/v1/encrypt", ten, encrypt + ` SECRET-5`, 400, "only whitespace may follow the JSON value"},
		{"malformed escape", "POST", "/v1/encrypt", ten, `{"encryptionId":"` + id + `","data":"SECRET-6\u00"}`, 400, "request body: not valid JSON"},
		{"whitespace after the body", "POST", "/v1/encrypt", ten, encrypt + " \n\t", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got := r.call(tt.method, tt.path, tt.headers, tt.body)
			msg, _ := got["message"].(string)
			if code != tt.want || !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("%s %s = %d %v, want %d %q", tt.method, tt.path, code, got, tt.want, tt.wantMessage)
			}
			if strings.Contains(msg, "SECRET") {
				t.Errorf("%s %s quotes the request: %q", tt.method, tt.path, msg)
			}
		})
	}
}
