package app

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func execSQL(tb testing.TB, url, sql string) {
	tb.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql); err != nil {
		tb.Fatal(err)
	}
}

// TestKeyContextCreationRacingPasswordChange: a zero-knowledge user's first vault request (made
// with the old password's master key) racing their password change must not leave the new key
// context bound to the old password. Whichever commits first, the other notices: here the context
// is recorded first, the change is refused (409, change it again), and after the change the new
// password's key opens everything.
func TestKeyContextCreationRacingPasswordChange(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("zkrace", "CLIENT")
	oldKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("o", 32)))
	newKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))
	db := p.core.env["CORE_DATABASE_URL"]
	// Hold the first request between the encryption service creating the context and core
	// recording it.
	execSQL(t, db, `CREATE FUNCTION core.slow_key_context() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
		CREATE TRIGGER slow_key_context BEFORE INSERT ON core.key_contexts FOR EACH ROW EXECUTE FUNCTION core.slow_key_context();`)
	type answer struct {
		code int
		body map[string]any
	}
	done := make(chan answer, 1)
	go func() {
		c, got := p.call("POST", "/v1/items", withMasterKey(f.member, oldKey), map[string]string{"name": "n", "data": "precious"})
		done <- answer{c, got}
	}()
	waitForBackend(t, db, "wait_event = 'PgSleep'")
	change := func() (int, map[string]any) {
		return p.call("POST", "/v1/auth/password", cred{
			"Authorization": f.member["Authorization"], "X-Master-Key": oldKey, "X-New-Master-Key": newKey,
		}, map[string]string{"currentPassword": "password-of-member", "newPassword": "new-password-of-member"})
	}
	code, got := change()
	created := <-done
	execSQL(t, db, `DROP TRIGGER slow_key_context ON core.key_contexts`)
	if created.code != 200 {
		t.Fatalf("the racing first request = %d %v, want 200 (recorded before the change)", created.code, created.body)
	}
	if code != 409 || !strings.Contains(got["message"].(string), "change the password again") {
		t.Fatalf("the racing password change = %d %v, want 409 asking to change it again", code, got)
	}
	p.must(200, "POST", "/v1/auth/password", cred{
		"Authorization": f.member["Authorization"], "X-Master-Key": oldKey, "X-New-Master-Key": newKey,
	}, map[string]string{"currentPassword": "password-of-member", "newPassword": "new-password-of-member"})
	tok, _ := p.login("zkrace-member", "new-password-of-member")
	fresh := withMasterKey(bearer(tok), newKey)
	if got := p.must(200, "GET", "/v1/items/"+created.body["id"].(string), fresh, nil); got["data"] != "precious" {
		t.Errorf("item made during the race, read with the new password's key = %v", got)
	}
	p.must(200, "POST", "/v1/items", fresh, map[string]string{"name": "n2", "data": "x"})
}

// TestPasswordChangeCutShortIsFinishedByRetrying: a password change that moved the keys to the new
// password's master key, then could neither store the new password nor move the keys back, leaves
// the keys following a password not in force. Retrying the same change finishes it: the keys
// already follow the new password, which is then stored.
func TestPasswordChangeCutShortIsFinishedByRetrying(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("zkcut", "CLIENT")
	oldKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("o", 32)))
	newKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32)))
	item := p.must(200, "POST", "/v1/items", withMasterKey(f.member, oldKey), map[string]string{"name": "n", "data": "precious"})
	coreDB := p.core.env["CORE_DATABASE_URL"]
	// Storing the new password fails, and so does moving the keys back: the encryption service
	// accepts one master-key change of the context, then refuses.
	execSQL(t, coreDB, `CREATE FUNCTION core.refuse_password() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
		IF NEW.password_hash <> OLD.password_hash THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse_password BEFORE UPDATE ON core.users FOR EACH ROW EXECUTE FUNCTION core.refuse_password();`)
	execSQL(t, p.es.DatabaseURL, `CREATE TABLE encryption.test_moves (n int);
		CREATE FUNCTION encryption.one_move() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
		  IF NEW.sealing_public_key IS DISTINCT FROM OLD.sealing_public_key THEN
		    IF EXISTS (SELECT FROM encryption.test_moves) THEN RAISE EXCEPTION 'injected failure'; END IF;
		    INSERT INTO encryption.test_moves VALUES (1);
		  END IF;
		  RETURN NEW; END $$;
		CREATE TRIGGER one_move BEFORE UPDATE ON encryption.encryptions FOR EACH ROW EXECUTE FUNCTION encryption.one_move();`)
	change := func(c cred) (int, map[string]any) {
		return p.call("POST", "/v1/auth/password", cred{
			"Authorization": c["Authorization"], "X-Master-Key": oldKey, "X-New-Master-Key": newKey,
		}, map[string]string{"currentPassword": "password-of-member", "newPassword": "new-password-of-member"})
	}
	if code, got := change(f.member); code == 200 {
		t.Fatalf("the change with storing refused = %d %v, want a failure", code, got)
	}
	execSQL(t, coreDB, `DROP TRIGGER refuse_password ON core.users`)
	execSQL(t, p.es.DatabaseURL, `DROP TRIGGER one_move ON encryption.encryptions`)
	// The old password is still in force, but its key no longer opens the items.
	tok, _ := p.login("zkcut-member", "password-of-member")
	if code, _ := p.call("GET", "/v1/items/"+item["id"].(string), withMasterKey(bearer(tok), oldKey), nil); code != 403 {
		t.Fatalf("old key after the cut-short change = %d, want 403 (the keys moved): the test did not cut the change short", code)
	}
	code, got := change(bearer(tok))
	if code != 200 {
		t.Fatalf("retrying the same change = %d %v, want 200: it finishes the change", code, got)
	}
	fresh, _ := p.login("zkcut-member", "new-password-of-member")
	if got := p.must(200, "GET", "/v1/items/"+item["id"].(string), withMasterKey(bearer(fresh), newKey), nil); got["data"] != "precious" {
		t.Errorf("item with the new password's key = %v", got)
	}
}
