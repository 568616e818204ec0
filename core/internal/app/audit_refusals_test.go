package app

import (
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// auditCounts counts the audit events c may read, by "action/outcome", with query appended.
func auditCounts(p *platform, c cred, query string) map[string]int {
	p.tb.Helper()
	got := map[string]int{}
	for _, e := range p.must(200, "GET", "/v1/audit?pageSize=1000"+query, c, nil)["events"].([]any) {
		ev := e.(map[string]any)
		got[ev["action"].(string)+"/"+ev["outcome"].(string)]++
	}
	return got
}

// TestRefusalsInsideServicesAreAudited: every authorization refusal is in the audit trail — the
// policy table's, and those a service decides from the request (another tenant's audit trail, an
// admin making an owner, an owner renaming the tenant).
func TestRefusalsInsideServicesAreAudited(t *testing.T) {
	p := startPlatform(t, nil)
	a := p.newTenant("acme", "PLATFORM")
	b := p.newTenant("other", "PLATFORM")
	root, _ := p.login(rootName, rootPass)
	before := auditCounts(p, bearer(root), "&tenantId="+a.id)["authz.denied/PERMISSION_DENIED"]
	if code, _ := p.call("GET", "/v1/audit?tenantId="+b.id, a.admin, nil); code != 403 {
		t.Fatalf("a tenant admin reading another tenant's audit trail = %d, want 403", code)
	}
	if code, _ := p.call("POST", "/v1/tenants/"+a.id+"/users", a.admin, map[string]any{
		"username": "would-be-owner", "password": "password-of-would-be", "role": "owner"}); code != 403 {
		t.Fatalf("an admin creating an owner = %d, want 403", code)
	}
	if code, _ := p.call("PATCH", "/v1/tenants/"+a.id, a.owner, map[string]any{"name": "renamed"}); code != 403 {
		t.Fatalf("an owner renaming the tenant = %d, want 403", code)
	}
	if after := auditCounts(p, bearer(root), "&tenantId="+a.id)["authz.denied/PERMISSION_DENIED"]; after-before != 3 {
		t.Errorf("3 refusals answered, %d authz.denied events of the tenant written", after-before)
	}
}

// TestFailedSecondChecksAreAudited: a wrong password where a change asks for it again (password
// change, TOTP enrolment) and a wrong code confirming TOTP are recorded, as failed logins are.
func TestFailedSecondChecksAreAudited(t *testing.T) {
	p := startPlatform(t, nil)
	a := p.newTenant("acme", "PLATFORM")
	if code, _ := p.call("POST", "/v1/auth/password", a.member, map[string]string{
		"currentPassword": "a-wrong-guess-1", "newPassword": "new-password-long"}); code != 401 {
		t.Fatalf("password change with a wrong password = %d, want 401", code)
	}
	if code, _ := p.call("POST", "/v1/auth/totp/enroll", a.member, map[string]string{"password": "a-wrong-guess-2"}); code != 401 {
		t.Fatalf("TOTP enrolment with a wrong password = %d, want 401", code)
	}
	secret := p.must(200, "POST", "/v1/auth/totp/enroll", a.member, map[string]string{"password": "password-of-member"})["secret"].(string)
	wrong, err := totp.GenerateCode(secret, time.Now().Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := p.call("POST", "/v1/auth/totp/confirm", a.member, map[string]string{"code": wrong}); code != 400 {
		t.Fatalf("TOTP confirmation with a stale code = %d, want 400", code)
	}
	got := auditCounts(p, a.owner, "&actorId="+a.memberID)
	if got["auth.reauth/UNAUTHENTICATED"] != 2 || got["auth.totp.enable/INVALID_ARGUMENT"] != 1 {
		t.Errorf("member's audit events %v, want 2 auth.reauth/UNAUTHENTICATED and 1 auth.totp.enable/INVALID_ARGUMENT", got)
	}
}
