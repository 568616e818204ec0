package app

import (
	"strings"
	"testing"
	"time"
)

// TestDeletingAUserErasesTheirKeys deletes people of a PLATFORM tenant: their key context is
// destroyed on the encryption service (crypto-shredding), at once when it answers, and by the
// erasure worker once it is back when it does not. Their ciphertext, exported copies included,
// can then never be decrypted again.
func TestDeletingAUserErasesTheirKeys(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("erase", "PLATFORM")
	coreDB, esDB := p.core.env["CORE_DATABASE_URL"], p.es.DatabaseURL

	// keysOf returns a user's encryption id once they have written an item.
	keysOf := func(c cred, userID string) string {
		t.Helper()
		p.must(200, "POST", "/v1/items", c, map[string]any{"name": "n", "data": marker(t)})
		return p.contextOf(f.admin, userID)["encryptionId"].(string)
	}
	live := func(enc string) int { // versions of enc on the encryption service that still have key material
		return countRows(t, esDB, "SELECT count(*) FROM encryption.encryption_key_versions WHERE encryption_id = $1 AND key_material IS NOT NULL", enc)
	}
	destroyed := func(enc string) bool {
		return live(enc) == 0 &&
			countRows(t, esDB, "SELECT count(*) FROM encryption.encryptions WHERE id = $1 AND destroyed_at IS NOT NULL", enc) == 1
	}

	// With the encryption service up: erased before the answer.
	memberEnc := keysOf(f.member, f.memberID)
	if live(memberEnc) != 1 {
		t.Fatalf("the member's context has %d live versions before deletion, want 1", live(memberEnc))
	}
	got := p.must(200, "DELETE", "/v1/users/"+f.memberID, f.admin, nil)
	if got["keyErasure"] != "done" {
		t.Errorf("DELETE /v1/users/{member} = %v, want keyErasure done", got)
	}
	if !destroyed(memberEnc) {
		t.Errorf("the deleted member's key context %s still has key material on the encryption service", memberEnc)
	}
	if n := countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures"); n != 0 {
		t.Errorf("pending erasures after a deletion the encryption service answered = %d, want 0", n)
	}

	// Another member, to delete while the encryption service is down.
	root, _ := p.login(rootName, rootPass)
	u := p.must(200, "POST", "/v1/tenants/"+f.id+"/users", bearer(root), map[string]any{
		"username": "erase-late", "password": "password-of-late", "role": "member",
	})
	lateID := u["userId"].(string)
	tok, _ := p.login("erase-late", "password-of-late")
	lateEnc := keysOf(bearer(tok), lateID)

	// With the encryption service down, the deletion still succeeds and the erasure is queued.
	p.es.Stop()
	got = p.must(200, "DELETE", "/v1/users/"+lateID, f.admin, nil)
	if got["keyErasure"] != "pending" {
		t.Errorf("DELETE /v1/users/{user} with the encryption service down = %v, want keyErasure pending", got)
	}
	if code, _ := p.call("GET", "/v1/items", bearer(tok), nil); code != 401 {
		t.Errorf("the deleted user's session answers %d, want 401", code)
	}
	if n := countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures WHERE encryption_id = $1 AND attempts >= 1 AND last_error LIKE 'unavailable: %'", lateEnc); n != 1 {
		t.Errorf("queued erasure of %s with its failed attempt = %d rows, want 1", lateEnc, n)
	}
	p.es.Restart(t)
	deadline := time.Now().Add(60 * time.Second)
	for countRows(t, coreDB, "SELECT count(*) FROM core.key_erasures") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the erasure worker did not destroy %s within 60 s of the encryption service's return", lateEnc)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !destroyed(lateEnc) {
		t.Errorf("after the worker: key context %s still has key material", lateEnc)
	}

	// The tenant's admins see both erasures in the audit trail.
	audit := p.must(200, "GET", "/v1/audit?action=keys.erase", f.admin, nil)
	var targets []string
	for _, e := range audit["events"].([]any) {
		targets = append(targets, e.(map[string]any)["target"].(string))
	}
	if len(targets) != 2 || !strings.Contains(strings.Join(targets, " "), memberEnc) || !strings.Contains(strings.Join(targets, " "), lateEnc) {
		t.Errorf("keys.erase audit events name %v, want the two contexts %s and %s", targets, memberEnc, lateEnc)
	}
	if code, _ := p.call("GET", "/v1/users/"+lateID, f.admin, nil); code != 404 {
		t.Errorf("GET the deleted user = %d, want 404", code)
	}
}
