package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"
)

// TestConfirmEnablesOnlyTheSecretItChecked: a second enrolment landing while a confirmation is
// under way (after it checked the code against the first secret) is not switched on unchecked:
// the confirmation is refused, MFA stays off, and the newer enrolment is confirmed with its own
// code.
func TestConfirmEnablesOnlyTheSecretItChecked(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	ctx := context.Background()
	a := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})["secret"].(string)

	// Hold the row the confirmation's TOTP throttle needs, so that it waits after reading secret A.
	conn, err := pgx.Connect(ctx, p.core.env["CORE_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO core.throttle (scope, key, failures, expires_at) VALUES ('totp:account', $1, 0, now() + interval '1 hour')`, f.memberID); err != nil {
		t.Fatal(err)
	}
	codeA, err := totp.GenerateCode(a, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		body map[string]any
	}
	done := make(chan answer, 1)
	go func() {
		c, got := p.call("POST", "/v1/auth/totp/confirm", f.member, map[string]string{"code": codeA})
		done <- answer{c, got}
	}()
	waitForBackend(t, p.core.env["CORE_DATABASE_URL"], "wait_event_type = 'Lock'")
	b := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})["secret"].(string)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got.code != 400 || !strings.Contains(got.body["message"].(string), "replaced") {
		t.Fatalf("confirming A after B replaced it = %d %v, want 400 saying the enrolment was replaced", got.code, got.body)
	}
	if me := p.must(200, "GET", "/v1/me", f.member, nil); me["mfaEnabled"] != false {
		t.Fatalf("MFA on after a refused confirmation: %v", me)
	}
	codeB, err := totp.GenerateCode(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.must(200, "POST", "/v1/auth/totp/confirm", f.member, map[string]string{"code": codeB})
}

// waitForBackend waits until a statement on the database at url is in the state where names, a
// pg_stat_activity condition: a test holding a lock or a sleeping trigger knows its request got there.
func waitForBackend(t *testing.T, url, where string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatalf("no statement came to %s", where)
}

// TestPasswordChangeDropsAPendingEnrolment: an enrolment started under the old password (by
// whoever knew it) cannot be confirmed after the password changed: enrol again.
func TestPasswordChangeDropsAPendingEnrolment(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	a := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})["secret"].(string)
	got := p.must(200, "POST", "/v1/auth/password", f.member, map[string]string{
		"currentPassword": "password-of-member", "newPassword": "a-brand-new-password",
	})
	fresh := bearer(got["tokens"].(map[string]any)["accessToken"].(string))
	code, err := totp.GenerateCode(a, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c, body := p.call("POST", "/v1/auth/totp/confirm", fresh, map[string]string{"code": code}); c != 400 || !strings.Contains(body["message"].(string), "no enrolment pending") {
		t.Errorf("confirming an enrolment started before the password change = %d %v, want 400: none pending", c, body)
	}
}

// TestMFATokenOpensOneSession: one password check opens one session; the MFA token, kept or
// seen, opens no other — also after the person logged out everywhere.
func TestMFATokenOpensOneSession(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	secret := p.must(200, "POST", "/v1/auth/totp/enroll", f.member, map[string]string{"password": "password-of-member"})["secret"].(string)
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc := p.must(200, "POST", "/v1/auth/totp/confirm", f.member, map[string]string{"code": code})["recoveryCodes"].([]any)
	mfa := p.must(200, "POST", "/v1/auth/login", nil, map[string]string{"username": "acme-member", "password": "password-of-member"})["mfaToken"].(string)
	// A wrong code does not use the token up.
	if c, _ := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": mfa, "code": "000000"}); c != 401 {
		t.Fatalf("wrong code = %d, want 401", c)
	}
	first := p.must(200, "POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": mfa, "code": rc[0].(string)})
	if c, body := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": mfa, "code": rc[1].(string)}); c != 401 || !strings.Contains(body["message"].(string), "already used") {
		t.Errorf("the MFA token used a second time = %d %v, want 401 saying it was used", c, body)
	}
	p.must(200, "POST", "/v1/auth/logout", nil, map[string]any{"refreshToken": first["refreshToken"], "allSessions": true})
	if c, _ := p.call("POST", "/v1/auth/mfa/verify", nil, map[string]string{"mfaToken": mfa, "code": rc[2].(string)}); c != 401 {
		t.Errorf("the MFA token after logging out everywhere = %d, want 401", c)
	}
}

// TestEndedSessionsTokenDoesNotLogOutEverywhere: the refresh token of a session that has ended —
// here by the password change meant to shut its thief out — proves nothing any more: it cannot end
// the owner's new sessions.
func TestEndedSessionsTokenDoesNotLogOutEverywhere(t *testing.T) {
	p := startPlatform(t, nil)
	p.newTenant("acme", "PLATFORM")
	a1, stolen := p.login("acme-member", "password-of-member")
	got := p.must(200, "POST", "/v1/auth/password", bearer(a1), map[string]string{
		"currentPassword": "password-of-member", "newPassword": "a-brand-new-password",
	})
	fresh := bearer(got["tokens"].(map[string]any)["accessToken"].(string))
	if c, _ := p.call("POST", "/v1/auth/refresh", nil, map[string]string{"refreshToken": stolen}); c != 401 {
		t.Fatalf("refresh with the revoked token = %d, want 401", c)
	}
	c, body := p.call("POST", "/v1/auth/logout", nil, map[string]any{"refreshToken": stolen, "allSessions": true})
	if c != 401 || !strings.Contains(body["message"].(string), "session has ended") {
		t.Errorf("logout everywhere with an ended session's refresh token = %d %v, want 401 saying nothing was ended", c, body)
	}
	p.must(200, "GET", "/v1/me", fresh, nil)
}
