package app

import (
	"fmt"
	"strings"
	"testing"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// TestSessions: a person sees their open sessions, one per login, with the current one marked, and
// ends another at once: its access token and its refresh token stop working. Nobody else's
// session can be ended, and machines have none.
func TestSessions(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("sess", "PLATFORM")
	laptop, _ := p.login("sess-member", "password-of-member")
	phone, phoneRefresh := p.login("sess-member", "password-of-member")

	got := p.must(200, "GET", "/v1/auth/sessions", bearer(laptop), nil)
	list := got["sessions"].([]any)
	if len(list) != 3 { // newTenant's login, and the two above
		t.Fatalf("GET /v1/auth/sessions = %v, want 3 sessions", got)
	}
	newest, current := list[0].(map[string]any), 0
	for _, s := range list {
		s := s.(map[string]any)
		if s["current"] == true {
			current++
		}
		if s["remoteAddr"] != "127.0.0.1" || !strings.HasPrefix(fmt.Sprint(s["userAgent"]), "Go-http-client/") || s["createdAt"] == nil || s["lastRefreshedAt"] == nil {
			t.Errorf("session %v: want the login's address, client software and times", s)
		}
	}
	if current != 1 || list[1].(map[string]any)["current"] != true {
		t.Errorf("sessions %v: want exactly the laptop's (the second newest) marked current", list)
	}

	// The laptop ends the phone's session (the newest): the phone is out at once.
	phoneID := newest["sessionId"].(string)
	p.must(200, "POST", "/v1/auth/sessions/"+phoneID+":revoke", bearer(laptop), map[string]any{})
	if code, _ := p.call("GET", "/v1/me", bearer(phone), nil); code != 401 {
		t.Errorf("the revoked session's access token = %d, want 401", code)
	}
	if code, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": phoneRefresh}); code != 401 {
		t.Errorf("the revoked session's refresh token = %d, want 401", code)
	}
	if code, _ := p.call("POST", "/v1/auth/sessions/"+phoneID+":revoke", bearer(laptop), map[string]any{}); code != 404 {
		t.Errorf("revoking it again = %d, want 404", code)
	}
	if got := p.must(200, "GET", "/v1/auth/sessions", bearer(laptop), nil); len(got["sessions"].([]any)) != 2 {
		t.Errorf("sessions after the revoke = %v, want 2", got)
	}

	// Someone else's session is not found; machines have no sessions; bad ids are named.
	laptopID := list[1].(map[string]any)["sessionId"].(string)
	if code, _ := p.call("POST", "/v1/auth/sessions/"+laptopID+":revoke", f.owner, map[string]any{}); code != 404 {
		t.Errorf("the owner revoking the member's session = %d, want 404", code)
	}
	if code, _ := p.call("GET", "/v1/auth/sessions", f.export, nil); code != 403 {
		t.Errorf("a machine listing sessions = %d, want 403", code)
	}
	if code, got := p.call("POST", "/v1/auth/sessions/nope:revoke", bearer(laptop), map[string]any{}); code != 400 ||
		!strings.HasPrefix(fmt.Sprint(got["message"]), "sessionId: want a UUID") {
		t.Errorf("revoking a malformed session id = %d %v, want 400 naming sessionId", code, got)
	}

	// Over gRPC: the laptop ends its own session, which is a logout.
	auth := corev1.NewAuthServiceClient(p.conn)
	if _, err := auth.RevokeSession(grpcCtx(bearer(laptop)), &corev1.RevokeSessionRequest{SessionId: laptopID}); err != nil {
		t.Fatalf("RevokeSession(own, over gRPC) = %v", err)
	}
	if code, _ := p.call("GET", "/v1/me", bearer(laptop), nil); code != 401 {
		t.Errorf("after revoking its own session, the laptop's token = %d, want 401", code)
	}
}
