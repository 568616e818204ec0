package client_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/custos-platform/custos/core/client"
)

// adminStub answers the administration calls over REST as grpc-gateway maps them, and records
// what each received.
type adminStub struct {
	mu       sync.Mutex
	requests []string         // "VERB path?query"
	agents   []string         // the User-Agent of each request
	bodies   []map[string]any // the JSON body of each request that had one
}

func (s *adminStub) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := r.Method + " " + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	s.requests = append(s.requests, line)
	s.agents = append(s.agents, r.UserAgent())
	var body map[string]any
	if json.NewDecoder(r.Body).Decode(&body) == nil {
		s.bodies = append(s.bodies, body)
	}
}

// newAdminClient starts the stub and returns a machine client of it.
func newAdminClient(t *testing.T, opts ...client.Option) (*client.Client, *adminStub) {
	t.Helper()
	stub := &adminStub{}
	mux := http.NewServeMux()
	mux.HandleFunc("PATCH /v1/tenants/{id}", func(w http.ResponseWriter, r *http.Request) {
		stub.record(r)
		answer(w, 200, map[string]any{"tenantId": r.PathValue("id"), "name": "renamed", "keyMode": "PLATFORM", "passwordHintsEnabled": false})
	})
	mux.HandleFunc("POST /v1/users/{action}", func(w http.ResponseWriter, r *http.Request) {
		stub.record(r)
		id, ok := strings.CutSuffix(r.PathValue("action"), ":setRole")
		if !ok {
			answer(w, 404, map[string]any{"code": 5, "message": "no such method"})
			return
		}
		answer(w, 200, map[string]any{"userId": id, "username": "bob", "role": "admin"})
	})
	mux.HandleFunc("GET /v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		stub.record(r)
		answer(w, 200, map[string]any{"userId": r.PathValue("id"), "username": "bob", "role": "member"})
	})
	mux.HandleFunc("DELETE /v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		stub.record(r)
		answer(w, 200, map[string]any{"keyErasure": "pending"})
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		stub.record(r)
		// Two pages of one event each.
		if r.URL.Query().Get("pageToken") == "" {
			answer(w, 200, map[string]any{"events": []any{map[string]any{"eventId": "e-2", "time": "2026-01-02T03:04:06Z", "actorType": "user",
				"actorId": "u-1", "action": "user.disable", "target": "user:u-2", "outcome": "ok"}}, "nextPageToken": "next"})
			return
		}
		answer(w, 200, map[string]any{"events": []any{map[string]any{"eventId": "e-1", "time": "2026-01-02T03:04:05Z", "actorType": "user",
			"actorId": "u-1", "action": "user.disable", "target": "user:u-3", "outcome": "PERMISSION_DENIED", "remoteAddr": "192.0.2.1",
			"requestId": "r-1"}}})
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	opts = append([]client.Option{client.WithCAFile(ca), client.WithAPIKey("key", "secret")}, opts...)
	c, err := client.New(srv.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, stub
}

// The administration calls use grpc-gateway's REST mapping: their verbs and paths, camelCase
// query parameters, only the fields set in a PATCH body, and the answers read back.
func TestAdminCallsREST(t *testing.T) {
	ctx := context.Background()
	c, stub := newAdminClient(t)
	const uid, tid = "3f2b6c1e-0000-4000-8000-000000000001", "7e1a0c5d-0000-4000-8000-000000000001"

	u, err := c.SetUserRole(ctx, uid, "admin")
	if err != nil || u.ID != uid || u.Role != "admin" {
		t.Errorf("SetUserRole = %+v, %v", u, err)
	}
	if u, err = c.GetUser(ctx, uid); err != nil || u.Username != "bob" {
		t.Errorf("GetUser = %+v, %v", u, err)
	}
	d, err := c.DeleteUser(ctx, uid)
	if err != nil || d != (client.DeletedUser{UserID: uid, KeyErasure: client.KeyErasurePending}) {
		t.Errorf("DeleteUser = %+v, %v; want the id and keyErasure pending", d, err)
	}
	off := false
	tn, err := c.UpdateTenant(ctx, tid, client.TenantUpdate{PasswordHints: &off})
	if err != nil || tn.Name != "renamed" || tn.PasswordHintsEnabled {
		t.Errorf("UpdateTenant = %+v, %v", tn, err)
	}
	events, err := client.Collect(c.AuditEvents(ctx, client.AuditFilter{ActorID: "u-1", Action: "user.disable", PageSize: 5000}))
	if err != nil || len(events) != 2 || events[0].ID != "e-2" || events[1].Outcome != "PERMISSION_DENIED" ||
		events[1].RemoteAddr != "192.0.2.1" || events[1].RequestID != "r-1" || events[1].Time.Second() != 5 {
		t.Errorf("AuditEvents = %+v, %v; want both pages' events, newest first", events, err)
	}

	want := []string{
		"POST /v1/users/" + uid + ":setRole",
		"GET /v1/users/" + uid,
		"DELETE /v1/users/" + uid,
		"PATCH /v1/tenants/" + tid,
		"GET /v1/audit?action=user.disable&actorId=u-1&pageSize=1000",
		"GET /v1/audit?action=user.disable&actorId=u-1&pageSize=1000&pageToken=next",
	}
	if fmt.Sprint(stub.requests) != fmt.Sprint(want) {
		t.Errorf("requests:\n got %q\nwant %q", stub.requests, want)
	}
	if len(stub.bodies) != 2 || stub.bodies[0]["role"] != "admin" {
		t.Fatalf("bodies = %v, want setRole's and PATCH's", stub.bodies)
	}
	if patch := stub.bodies[1]; patch["passwordHintsEnabled"] != false || patch["name"] != nil {
		t.Errorf("PATCH body = %v, want passwordHintsEnabled false and no name", patch)
	}
}

// An update that changes nothing is refused before anything is sent.
func TestUpdateTenantRefusesNoChange(t *testing.T) {
	c, stub := newAdminClient(t)
	_, err := c.UpdateTenant(context.Background(), "7e1a0c5d-0000-4000-8000-000000000001", client.TenantUpdate{})
	if err == nil || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("UpdateTenant with nothing set = %v, want a refusal", err)
	}
	if len(stub.requests) != 0 {
		t.Errorf("UpdateTenant with nothing set sent %q", stub.requests)
	}
}

// The client names itself to core (which records it with each login's session): the SDK's name
// by default, the caller's with WithUserAgent, which takes printable ASCII only.
func TestUserAgent(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		opts []client.Option
		want string
	}{
		{nil, client.DefaultUserAgent},
		{[]client.Option{client.WithUserAgent("backup-tool/2.1 (nightly)")}, "backup-tool/2.1 (nightly)"},
	} {
		c, stub := newAdminClient(t, tt.opts...)
		if _, err := c.GetUser(ctx, "0193a1b2-0000-7000-8000-000000000009"); err != nil {
			t.Fatal(err)
		}
		if len(stub.agents) != 1 || stub.agents[0] != tt.want {
			t.Errorf("User-Agent sent = %v, want %q", stub.agents, tt.want)
		}
	}
	for _, bad := range []string{"", "caf\u00e9/1", "tab\there", strings.Repeat("x", 201)} {
		if _, err := client.New("https://core.example:8443", client.WithUserAgent(bad)); err == nil || !strings.Contains(err.Error(), "WithUserAgent") {
			t.Errorf("WithUserAgent(%q) = %v, want it refused", bad, err)
		}
	}
}
