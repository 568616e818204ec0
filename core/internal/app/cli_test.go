package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"

	"github.com/custos-platform/custos/core/client"
	"github.com/custos-platform/custos/core/internal/cli"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// cliRunner runs the custos command in-process, as a script would: no terminal, configuration
// from the environment given.
type cliRunner struct {
	tb  testing.TB
	env map[string]string
}

// with returns r with more environment variables ("NAME", "value", …); "" unsets one.
func (r cliRunner) with(kv ...string) cliRunner {
	env := map[string]string{}
	for k, v := range r.env {
		env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return cliRunner{tb: r.tb, env: env}
}

// run runs custos args with stdin and returns its exit code and outputs.
func (r cliRunner) run(stdin string, args ...string) (int, string, string) {
	r.tb.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := cli.Run(ctx, "test", args, func(k string) string { return r.env[k] }, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// ok runs custos args and fails the test unless it exits 0; it returns stdout.
func (r cliRunner) ok(stdin string, args ...string) string {
	r.tb.Helper()
	code, out, errOut := r.run(stdin, args...)
	if code != 0 {
		r.tb.Fatalf("custos %s = exit %d, stderr %q; want 0", strings.Join(args, " "), code, errOut)
	}
	return out
}

// json runs custos --output json args, requires exit 0 and decodes stdout into v.
func (r cliRunner) json(v any, stdin string, args ...string) {
	r.tb.Helper()
	out := r.ok(stdin, append([]string{"--output", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		r.tb.Fatalf("custos -o json %s: stdout %q is not the JSON expected: %v", strings.Join(args, " "), out, err)
	}
}

// fails runs custos --output json args and requires exit code want; it returns the error object
// printed on stderr.
func (r cliRunner) fails(want int, stdin string, args ...string) map[string]any {
	r.tb.Helper()
	code, out, errOut := r.run(stdin, append([]string{"--output", "json"}, args...)...)
	if code != want {
		r.tb.Fatalf("custos %s = exit %d (stdout %q, stderr %q), want %d", strings.Join(args, " "), code, out, errOut, want)
	}
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(errOut)), &e); err != nil || e.Error == nil {
		r.tb.Fatalf("custos %s: stderr %q is not {\"error\":…}", strings.Join(args, " "), errOut)
	}
	if e.Error["exitCode"] != float64(want) {
		r.tb.Errorf("custos %s: error %v, want exitCode %d", strings.Join(args, " "), e.Error, want)
	}
	return e.Error
}

// TestCLI drives the custos command against core and a real encryption service the way a person
// and a script would: the platform admin makes a zero-knowledge tenant and its owner, who logs in
// with TOTP, keeps items, exports them and restores them into a fresh core, rotates the keys and
// disables a version no longer used, gives a machine an export key, manages her users (disable,
// role, enable, delete) and reads the audit trail; the platform admin renames the tenant. Every
// answer is read from --output json.
func TestCLI(t *testing.T) {
	p := startPlatform(t, nil)
	ctx := context.Background()
	config := t.TempDir()
	base := cliRunner{tb: t, env: map[string]string{
		"XDG_CONFIG_HOME": config,
		"CUSTOS_URL":      "https://" + p.core.httpAddr,
		"CUSTOS_CA_FILE":  p.core.certs.CAFile,
	}}
	const alicePass, bobPass = "alice's long passphrase", "bob's long passphrase"

	// The platform admin creates a zero-knowledge tenant and its owner.
	root := base.with("CUSTOS_PROFILE", "root", "CUSTOS_PASSWORD", rootPass)
	var me client.Me
	root.json(&me, "", "login", "--platform-admin", "--username", rootName)
	if !me.PlatformAdmin {
		t.Fatalf("login --platform-admin = %+v, want the platform admin", me)
	}
	var tenant client.Tenant
	root.json(&tenant, "", "tenants", "create", "zk-corp", "--key-mode", "CLIENT")
	if tenant.KeyMode != "CLIENT" || tenant.ID == "" {
		t.Fatalf("tenants create = %+v, want a CLIENT tenant", tenant)
	}
	var alice client.User
	root.with("CUSTOS_NEW_PASSWORD", alicePass).json(&alice, "", "users", "create", "alice", "--tenant", tenant.ID, "--role", "owner")
	root.with("CUSTOS_NEW_PASSWORD", bobPass).json(&client.User{}, "", "users", "create", "bob", "--tenant", tenant.ID, "--role", "member")
	// In a zero-knowledge tenant the SDK sends the person's derived master key with the creation,
	// so their key context exists from the start.
	if n := countRows(t, p.core.env["CORE_DATABASE_URL"], "SELECT count(*) FROM core.key_contexts WHERE tenant_id = $1", tenant.ID); n != 2 {
		t.Errorf("key contexts of the new CLIENT tenant's two users = %d, want 2, made with their accounts", n)
	}
	root.with("CUSTOS_NEW_PASSWORD", "too short").fails(cli.ExitInvalid, "", "users", "create", "carol", "--tenant", tenant.ID)
	root.fails(cli.ExitAuth, "", "users", "create", "carol", "--tenant", tenant.ID) // no password, no terminal
	if e := root.with("CUSTOS_NEW_PASSWORD", "carol's long passphrase").fails(cli.ExitUsage, "", "users", "create", "carol", "--tenant", tenant.ID, "--role", "boss"); !strings.Contains(e["message"].(string), `"boss"`) {
		t.Errorf("users create --role boss: %v, want a usage error naming the role", e)
	}

	// Users are created with the derived password (DESIGN.md §4): core accepts it, not the password.
	sdk, err := client.New("https://"+p.core.httpAddr, client.WithCAFile(p.core.certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	bobSecrets, err := sdk.Derive(ctx, "bob", bobPass)
	if err != nil {
		t.Fatal(err)
	}
	p.login("bob", bobSecrets.AuthPassword)
	if code, _ := p.call("POST", "/v1/auth/login", nil, map[string]string{"username": "bob", "password": bobPass}); code != 401 {
		t.Errorf("login with bob's underived password = %d, want 401", code)
	}

	// Alice logs in (username from the environment); her profile keeps tokens only.
	al := base.with("CUSTOS_PROFILE", "alice", "CUSTOS_PASSWORD", alicePass)
	al.with("CUSTOS_USERNAME", "alice").json(&me, "", "login")
	if me.Username != "alice" || me.KeyMode != "CLIENT" || me.Role != "owner" {
		t.Fatalf("login = %+v, want alice, owner of a CLIENT tenant", me)
	}
	aliceSecrets, err := sdk.Derive(ctx, "alice", alicePass)
	if err != nil {
		t.Fatal(err)
	}
	assertProfileSafe(t, config, "alice", alicePass, aliceSecrets.MasterKey, aliceSecrets.AuthPassword)
	// The session names the core it was opened at: the profile's tokens go nowhere else.
	var saved client.Session
	if raw, err := os.ReadFile(filepath.Join(config, "custos", "tokens", "alice.json")); err != nil || json.Unmarshal(raw, &saved) != nil ||
		saved.URL != base.env["CUSTOS_URL"] {
		t.Errorf("alice's session names core %q (%v), want %q", saved.URL, err, base.env["CUSTOS_URL"])
	}

	// TOTP: enrol, confirm (which ends the session), log in again with a code.
	var enrolled struct {
		Secret, OtpauthURI string
	}
	al.json(&enrolled, "", "totp", "enroll")
	if enrolled.Secret == "" || !strings.HasPrefix(enrolled.OtpauthURI, "otpauth://totp/") {
		t.Fatalf("totp enroll = %+v", enrolled)
	}
	code, err := totp.GenerateCode(enrolled.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var confirmed struct{ RecoveryCodes []string }
	al.json(&confirmed, "", "totp", "confirm", code)
	if len(confirmed.RecoveryCodes) != 10 {
		t.Fatalf("totp confirm gave %d recovery codes, want 10", len(confirmed.RecoveryCodes))
	}
	al.fails(cli.ExitAuth, "", "items", "list")
	if e := al.fails(cli.ExitAuth, "", "login"); !strings.Contains(e["message"].(string), "CUSTOS_TOTP_CODE") {
		t.Errorf("login without a TOTP code: %v, want it to name CUSTOS_TOTP_CODE", e)
	}
	next, _ := totp.GenerateCode(enrolled.Secret, time.Now().Add(30*time.Second))
	al.with("CUSTOS_TOTP_CODE", next).json(&me, "", "login")
	if !me.MFAEnabled {
		t.Errorf("after TOTP login: %+v, want mfaEnabled", me)
	}
	assertProfileSafe(t, config, "alice", alicePass, aliceSecrets.MasterKey, aliceSecrets.AuthPassword)

	// Items: put (flag and stdin), get, list, edit, rm. The master key is derived again from
	// CUSTOS_PASSWORD for each run.
	first, second := marker(t), marker(t)
	id1 := strings.TrimSpace(al.ok("", "items", "put", "--name", "first", "--data", first))
	var it client.Item
	al.json(&it, second, "items", "put", "--name", "second")
	id2 := it.ID
	if got := al.ok("", "items", "get", id1); got != first {
		t.Errorf("items get = %q, want %q", got, first)
	}
	var items []client.Item
	al.json(&items, "", "items", "list")
	if len(items) != 2 || items[0].ID != id2 || items[1].Data != first {
		t.Errorf("items list = %+v, want the two items, newest first", items)
	}
	edited := marker(t)
	al.json(&it, edited, "items", "edit", id1)
	if it.Revision != 2 || it.Data != edited || it.Name != "first" {
		t.Errorf("items edit from stdin = %+v, want revision 2 with the new data", it)
	}
	al.json(&it, "", "items", "edit", id1, "--name", "renamed")
	if it.Revision != 3 || it.Data != edited || it.Name != "renamed" {
		t.Errorf("items edit --name = %+v, want revision 3, data kept", it)
	}
	if e := al.with("CUSTOS_PASSWORD", "").fails(cli.ExitAuth, "", "items", "get", id1); !strings.Contains(e["message"].(string), "CUSTOS_PASSWORD") {
		t.Errorf("items get without a password, no terminal: %v, want it to name CUSTOS_PASSWORD", e)
	}
	al.with("CUSTOS_PASSWORD", "not alice's password").fails(cli.ExitPermission, "", "items", "get", id1)
	al.json(&map[string]string{}, "", "items", "rm", id2)
	if e := al.fails(cli.ExitNotFound, "", "items", "get", id2); e["code"] != "NOT_FOUND" || e["httpStatus"] != float64(404) {
		t.Errorf("items get of a deleted item: %v, want NOT_FOUND 404", e)
	}
	third := marker(t)
	id3 := strings.TrimSpace(al.ok("", "items", "put", "--name", "third", "--data", third))
	assertNotStored(t, p.core.env["CORE_DATABASE_URL"], first, second, edited, third, aliceSecrets.MasterKey)

	// The same over gRPC, in another profile, logging in with a recovery code.
	ag := base.with("CUSTOS_PROFILE", "alice-grpc", "CUSTOS_PASSWORD", alicePass, "CUSTOS_GRPC", p.core.grpcAddr)
	ag.with("CUSTOS_TOTP_CODE", confirmed.RecoveryCodes[0]).json(&me, "", "login", "-u", "alice")
	var viaGRPC []client.Item
	ag.json(&viaGRPC, "", "items", "list")
	if len(viaGRPC) != 2 || viaGRPC[0].ID != id3 {
		t.Errorf("items list over gRPC = %+v, want the 2 items", viaGRPC)
	}
	if got := ag.ok("", "items", "get", id1); got != edited {
		t.Errorf("items get over gRPC = %q, want %q", got, edited)
	}

	// Usage errors.
	al.fails(cli.ExitUsage, "", "items", "put", "--data", "x")
	al.fails(cli.ExitUsage, "", "frobnicate")
	if code, _, _ := al.run("", "--output", "yaml", "items", "list"); code != cli.ExitUsage {
		t.Errorf("--output yaml = exit %d, want %d", code, cli.ExitUsage)
	}

	// A machine key with scope export; it may not read items.
	var key client.APIKeyCredential
	al.json(&key, "", "apikeys", "create", "--name", "backup", "--scope", "export")
	machine := base.with("CUSTOS_PROFILE", "machine", "CUSTOS_API_KEY", key.APIKey, "CUSTOS_API_SECRET", key.APISecret)
	machine.json(&me, "", "whoami")
	if me.PrincipalType != "apikey" || len(me.Scopes) != 1 || me.Scopes[0] != "export" {
		t.Errorf("whoami as the machine = %+v", me)
	}
	if e := machine.fails(cli.ExitPermission, "", "items", "list"); !strings.Contains(e["message"].(string), "machine") {
		t.Errorf("items list as a machine: %v, want a refusal naming machines", e)
	}
	var keys []client.APIKey
	al.json(&keys, "", "apikeys", "list")
	if len(keys) != 1 || keys[0].ID != key.Key.ID || strings.Contains(al.ok("", "apikeys", "list", "-o", "json"), key.APISecret) {
		t.Errorf("apikeys list = %+v, want the one key and never its secret", keys)
	}

	// Export (the owner's, then the machine's) and import into a fresh core.
	t.Run("export and import", func(t *testing.T) {
		code, _, errOut := al.run("", "export")
		if code != 0 {
			t.Fatalf("export = exit %d, %s", code, strings.TrimSpace(errOut))
		}
		file := filepath.Join(t.TempDir(), "backup.ndjson")
		var sum struct {
			Records    int
			LastCursor string
		}
		al.json(&sum, "", "export", "--file", file)
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Records != 2 || strings.Count(string(raw), "\n") != 2 {
			t.Fatalf("export = %+v, %d lines; want 2 records", sum, strings.Count(string(raw), "\n"))
		}
		for _, m := range []string{first, edited, third} {
			if strings.Contains(string(raw), m) {
				t.Error("the export holds plaintext")
			}
		}
		if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
			t.Errorf("export file mode %v, want 0600", st.Mode().Perm())
		}
		// An export that broke off after the first record resumes with --after, appending to
		// the file: the file then holds every record once.
		first, _, _ := strings.Cut(string(raw), "\n")
		var rec struct{ Cursor string }
		if err := json.Unmarshal([]byte(first), &rec); err != nil || rec.Cursor == "" {
			t.Fatalf("export record %q has no cursor: %v", first, err)
		}
		if err := os.WriteFile(file, []byte(first+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		al.json(&sum, "", "export", "--file", file, "--after", rec.Cursor)
		if resumed, _ := os.ReadFile(file); sum.Records != 1 || string(resumed) != string(raw) {
			t.Errorf("export --after = %+v, file of %d lines; want the second record appended to the first", sum, strings.Count(string(resumed), "\n"))
		}
		// The machine exports the tenant's records to standard output, summary on stderr.
		code, out, errOut := machine.run("", "export", "-o", "json")
		if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(errOut, `"records":2`) {
			t.Errorf("machine export = exit %d, %d lines, stderr %q; want 2 records", code, strings.Count(out, "\n"), errOut)
		}

		// Over gRPC, the same records.
		var viaGRPC bytes.Buffer
		if code, out, errOut := ag.run("", "export"); code != 0 || out != string(raw) {
			viaGRPC.WriteString(out)
			t.Errorf("export over gRPC = exit %d (%s), %d bytes; want the same %d bytes as over REST", code, errOut, viaGRPC.Len(), len(raw))
		}

		// A second core on a fresh database, with the tenant's identity restored.
		fresh := testdb.New(t)
		env := map[string]string{}
		for k, v := range p.core.env {
			env[k] = v
		}
		env["CORE_DATABASE_URL"] = fresh
		inst := startWithEnv(t, env, p.core.certs)
		waitReady(t, inst)
		coreDB := p.core.env["CORE_DATABASE_URL"]
		copyRows(t, coreDB, fresh, "tenants", "id = '"+tenant.ID+"'")
		copyRows(t, coreDB, fresh, "users", "tenant_id = '"+tenant.ID+"'")
		copyRows(t, coreDB, fresh, "recovery_codes", "user_id = '"+alice.ID+"'")
		copyRows(t, coreDB, fresh, "key_contexts", "tenant_id = '"+tenant.ID+"'")
		restored := base.with("CUSTOS_PROFILE", "restored", "CUSTOS_URL", "https://"+inst.httpAddr, "CUSTOS_PASSWORD", alicePass,
			"CUSTOS_USERNAME", "alice", "CUSTOS_TOTP_CODE", confirmed.RecoveryCodes[1])
		restored.json(&me, "", "login")
		// Alice's profile belongs to the first core: pointed at the second, it refuses to send
		// her tokens there (log in with another profile, as restored did).
		if e := al.with("CUSTOS_URL", "https://"+inst.httpAddr).fails(cli.ExitUsage, "", "whoami"); !strings.Contains(e["hint"].(string), "--profile") {
			t.Errorf("alice's profile used with the second core: %v, want a refusal naming --profile", e)
		}
		var res client.ImportResult
		restored.json(&res, string(raw), "import")
		if res.Imported != 2 {
			t.Fatalf("import = %+v, want 2 imported", res)
		}
		restored.with("CUSTOS_GRPC", inst.grpcAddr).json(&res, "", "import", "--file", file)
		if res.Unchanged != 2 {
			t.Errorf("import again, over gRPC = %+v, want 2 unchanged", res)
		}
		if got := restored.ok("", "items", "get", id1); got != edited {
			t.Errorf("restored item = %q, want %q", got, edited)
		}
		// An altered file is refused, naming the record.
		altered := strings.Replace(string(raw), `"revision":3`, `"revision":4`, 1)
		if e := al.fails(cli.ExitInvalid, altered, "import"); !strings.Contains(e["message"].(string), "integrity") {
			t.Errorf("import of an altered export: %v, want a refusal naming the integrity", e)
		}
		// A file that is not an export is invalid input (exit 7) over both APIs: over gRPC the
		// client reads the records and refuses it as core does over REST.
		for name, r := range map[string]cliRunner{"REST": al, "gRPC": ag} {
			if e := r.fails(cli.ExitInvalid, "not an export\n", "import"); e["code"] != "INVALID_ARGUMENT" {
				t.Errorf("import of a file that is not an export over %s: %v, want INVALID_ARGUMENT", name, e)
			}
		}
	})

	// Key rotation: the owner rotates and waits; zero-knowledge items wait for her key, which
	// she supplies with keys reencrypt.
	t.Run("rotate", func(t *testing.T) {
		code, _, errOut := al.run("", "keys", "rotate", "--wait")
		if code != 0 {
			t.Fatalf("keys rotate --wait = exit %d, %s", code, errOut)
		}
		var rot client.Rotation
		al.json(&rot, "", "keys", "rotate", "--wait", "--interval", "100ms")
		if rot.RotatedContexts < 1 || !rot.Job.Finished() || rot.Job.State == client.JobFailed {
			t.Fatalf("keys rotate --wait = %+v, want a finished job", rot)
		}
		var job client.Job
		al.json(&job, "", "keys", "reencrypt", "--wait", "--interval", "100ms")
		if job.State != client.JobSucceeded {
			t.Fatalf("keys reencrypt --wait = %+v, want SUCCEEDED", job)
		}
		var status []client.KeyContextStatus
		al.json(&status, "", "keys", "status")
		for _, kc := range status {
			for _, v := range kc.Versions {
				if v.State != "ACTIVE" && v.ItemCount != 0 {
					t.Errorf("after re-encryption, version %d (%s) of %s still has %d items", v.Version, v.State, kc.EncryptionID, v.ItemCount)
				}
			}
		}
		if got := al.ok("", "items", "get", id1); got != edited {
			t.Errorf("item after rotation = %q, want %q", got, edited)
		}
	})

	// A version no item uses any more can be disabled (by its number, as keys status prints it);
	// the active version cannot, even without items (by its id); unknown ones are not found.
	t.Run("disable key versions", func(t *testing.T) {
		var status []client.KeyContextStatus
		al.json(&status, "", "keys", "status")
		type found struct {
			enc string
			v   client.KeyVersionStatus
		}
		var unused, active found
		for _, kc := range status {
			for _, v := range kc.Versions {
				switch {
				case v.ItemCount != 0:
				case v.State == "ACTIVE" && active.enc == "":
					active = found{kc.EncryptionID, v}
				case v.State == "DECRYPT_ONLY" && unused.enc == "":
					unused = found{kc.EncryptionID, v}
				}
			}
		}
		if unused.enc == "" || active.enc == "" {
			t.Fatalf("keys status = %+v, want a DECRYPT_ONLY and an ACTIVE version without items after the rotations", status)
		}
		var got client.KeyVersionStatus
		al.json(&got, "", "keys", "disable", unused.enc, strconv.Itoa(unused.v.Version))
		if got.State != "DISABLED" || got.VersionID != unused.v.VersionID || got.Version != unused.v.Version {
			t.Errorf("keys disable %s %d = %+v, want that version DISABLED", unused.enc, unused.v.Version, got)
		}
		al.json(&status, "", "keys", "status")
		if v := versionOf(status, unused.enc, unused.v.VersionID); v.State != "DISABLED" {
			t.Errorf("keys status after the disable shows %+v, want DISABLED", v)
		}
		if e := al.fails(cli.ExitInvalid, "", "keys", "disable", active.enc, active.v.VersionID); e["code"] != "FAILED_PRECONDITION" {
			t.Errorf("keys disable of the active version: %v, want FAILED_PRECONDITION", e)
		}
		al.json(&status, "", "keys", "status")
		if v := versionOf(status, active.enc, active.v.VersionID); v.State != "ACTIVE" {
			t.Errorf("after the refused disable the active version is %+v, want ACTIVE", v)
		}
		al.fails(cli.ExitNotFound, "", "keys", "disable", unused.enc, "99")
		al.fails(cli.ExitNotFound, "", "keys", "disable", uuid.NewString(), "1")
		al.fails(cli.ExitUsage, "", "keys", "disable", unused.enc, "latest")

		// keys enable undoes it (by version id, over gRPC too), and may be repeated.
		al.json(&got, "", "keys", "enable", unused.enc, unused.v.VersionID)
		if got.State != "DECRYPT_ONLY" || got.Version != unused.v.Version {
			t.Errorf("keys enable = %+v, want version %d DECRYPT_ONLY", got, unused.v.Version)
		}
		ag.json(&got, "", "keys", "enable", unused.enc, strconv.Itoa(unused.v.Version))
		if got.State != "DECRYPT_ONLY" {
			t.Errorf("keys enable again, over gRPC = %+v, want it still DECRYPT_ONLY", got)
		}
		al.json(&status, "", "keys", "status")
		if v := versionOf(status, unused.enc, unused.v.VersionID); v.State != "DECRYPT_ONLY" {
			t.Errorf("keys status after the enable shows %+v, want DECRYPT_ONLY", v)
		}
		al.fails(cli.ExitNotFound, "", "keys", "enable", unused.enc, "99")
	})

	// A password change moves the zero-knowledge keys to the new password's master key.
	const newPass = "alice's brand-new passphrase"
	al.with("CUSTOS_NEW_PASSWORD", "short").fails(cli.ExitInvalid, "", "password")
	al.with("CUSTOS_NEW_PASSWORD", newPass).json(&map[string]bool{}, "", "password", "--hint", "the new one")
	al = al.with("CUSTOS_PASSWORD", newPass)
	if got := al.ok("", "items", "get", id1); got != edited {
		t.Errorf("item after the password change = %q, want %q", got, edited)
	}
	al.with("CUSTOS_PASSWORD", alicePass).fails(cli.ExitPermission, "", "items", "get", id1)
	ag.fails(cli.ExitAuth, "", "items", "list") // the other session ended

	// Managing users and keys; the end of sessions.
	var users []client.User
	al.json(&users, "", "users", "list")
	if len(users) != 2 {
		t.Errorf("users list = %+v, want alice and bob", users)
	}
	var disabled client.User
	al.json(&disabled, "", "users", "disable", "bob")
	if !disabled.Disabled || disabled.Username != "bob" {
		t.Errorf("users disable bob = %+v", disabled)
	}
	bob := base.with("CUSTOS_PROFILE", "bob", "CUSTOS_PASSWORD", bobPass)
	bob.fails(cli.ExitAuth, "", "login", "-u", "bob")

	// The audit trail has the disable, by alice, over REST and (in a new session) over gRPC.
	var events []client.AuditEvent
	al.json(&events, "", "audit", "--action", "user.disable")
	if len(events) != 1 || events[0].Target != "user:"+disabled.ID || events[0].ActorID != alice.ID || events[0].Outcome != "ok" {
		t.Errorf("audit --action user.disable = %+v, want alice's disable of bob, outcome ok", events)
	}
	var byAlice []client.AuditEvent
	al.json(&byAlice, "", "audit", "--actor", "alice", "--limit", "3")
	if len(byAlice) != 3 {
		t.Errorf("audit --actor alice --limit 3 = %+v, want 3 events", byAlice)
	}
	for i, ev := range byAlice {
		if ev.ActorID != alice.ID || (i > 0 && ev.Time.After(byAlice[i-1].Time)) {
			t.Errorf("audit --actor alice = %+v, want only alice's events, newest first", byAlice)
			break
		}
	}
	ag = ag.with("CUSTOS_PASSWORD", newPass)
	ag.with("CUSTOS_TOTP_CODE", confirmed.RecoveryCodes[2]).json(&me, "", "login", "-u", "alice")
	var overGRPC []client.AuditEvent
	ag.json(&overGRPC, "", "audit", "--action", "user.disable")
	if len(overGRPC) != 1 || overGRPC[0] != events[0] {
		t.Errorf("audit over gRPC = %+v, want the same event as over REST: %+v", overGRPC, events)
	}

	// Roles: bob becomes an admin; the last owner cannot step down; then bob is enabled again.
	var changed client.User
	al.json(&changed, "", "users", "set-role", "bob", "admin")
	if changed.Role != "admin" || changed.ID != disabled.ID {
		t.Errorf("users set-role bob admin = %+v", changed)
	}
	al.fails(cli.ExitUsage, "", "users", "set-role", "bob", "superuser")
	if e := al.fails(cli.ExitInvalid, "", "users", "set-role", alice.ID, "member"); e["code"] != "FAILED_PRECONDITION" {
		t.Errorf("users set-role of the last owner: %v, want FAILED_PRECONDITION", e)
	}
	al.json(&changed, "", "users", "enable", "bob")
	if changed.Disabled || changed.Username != "bob" {
		t.Errorf("users enable bob = %+v", changed)
	}
	ag.json(&changed, "", "users", "set-role", "bob", "admin") // the same over gRPC: nothing changes
	if changed.Role != "admin" || changed.Disabled {
		t.Errorf("users set-role over gRPC = %+v, want bob, admin, enabled", changed)
	}
	ag.json(&changed, "", "users", "enable", disabled.ID)
	if changed.Disabled || changed.Username != "bob" {
		t.Errorf("users enable over gRPC = %+v", changed)
	}
	bob.json(&me, "", "login", "-u", "bob")
	if me.Username != "bob" || me.Role != "admin" {
		t.Errorf("bob's login after enable = %+v, want bob, admin", me)
	}

	// The platform admin reads and renames the tenant; its members see the change.
	var got client.Tenant
	root.json(&got, "", "tenants", "get", tenant.ID)
	if got.ID != tenant.ID || got.Name != "zk-corp" || !got.PasswordHintsEnabled {
		t.Errorf("tenants get = %+v, want zk-corp with hints on", got)
	}
	root.fails(cli.ExitUsage, "", "tenants", "get") // the platform admin has no tenant of their own
	root.json(&got, "", "tenants", "update", tenant.ID, "--name", "zk-corp-renamed", "--password-hints", "off")
	if got.Name != "zk-corp-renamed" || got.PasswordHintsEnabled {
		t.Errorf("tenants update = %+v, want renamed with hints off", got)
	}
	al.json(&got, "", "tenants", "get")
	if got.ID != tenant.ID || got.Name != "zk-corp-renamed" || got.PasswordHintsEnabled {
		t.Errorf("tenants get as alice = %+v, want her tenant, renamed, hints off", got)
	}
	root.with("CUSTOS_GRPC", p.core.grpcAddr).json(&got, "", "tenants", "update", tenant.ID, "--password-hints", "on")
	if got.Name != "zk-corp-renamed" || !got.PasswordHintsEnabled {
		t.Errorf("tenants update --password-hints on over gRPC = %+v, want hints on and the name kept", got)
	}
	root.fails(cli.ExitUsage, "", "tenants", "update", tenant.ID, "--password-hints", "maybe")
	root.fails(cli.ExitUsage, "", "tenants", "update", tenant.ID)

	// Deleting bob: only with --yes when there is no terminal to confirm on. His key context is
	// destroyed at once, the encryption service being up.
	if e := al.fails(cli.ExitUsage, "", "users", "delete", "bob"); !strings.Contains(e["message"].(string), "--yes") {
		t.Errorf("users delete without --yes or a terminal: %v, want a usage error naming --yes", e)
	}
	var deleted client.DeletedUser
	al.json(&deleted, "", "users", "delete", "bob", "--yes")
	if deleted.UserID != disabled.ID {
		t.Errorf("users delete bob = %+v, want bob's id %s", deleted, disabled.ID)
	}
	assertErased(t, deleted)
	// Over gRPC, by id: carol, made for the purpose.
	var carol client.User
	root.with("CUSTOS_NEW_PASSWORD", "carol's long passphrase").json(&carol, "", "users", "create", "carol", "--tenant", tenant.ID)
	ag.json(&deleted, "", "users", "delete", carol.ID, "--yes")
	if deleted.UserID != carol.ID {
		t.Errorf("users delete CAROL_ID over gRPC = %+v, want carol's id %s", deleted, carol.ID)
	}
	assertErased(t, deleted)
	al.json(&users, "", "users", "list")
	if len(users) != 1 || users[0].Username != "alice" {
		t.Errorf("users list after deleting bob and carol = %+v, want alice alone", users)
	}
	bob.fails(cli.ExitAuth, "", "whoami") // his session ended with him
	al.fails(cli.ExitNotFound, "", "users", "delete", "bob", "--yes")
	al.fails(cli.ExitUsage, "", "users", "delete", "bob")

	// Sessions: alice logs in elsewhere, sees both sessions, and ends the other one.
	// (Her sessions so far: the password change's, and the gRPC profile's login after it.)
	other := base.with("CUSTOS_PROFILE", "alice-elsewhere", "CUSTOS_PASSWORD", newPass, "CUSTOS_TOTP_CODE", confirmed.RecoveryCodes[3])
	other.json(&me, "", "login", "-u", "alice")
	var sessions []client.SessionInfo
	al.json(&sessions, "", "sessions", "list")
	current := 0
	for _, s := range sessions {
		if s.Current {
			current++
		}
	}
	if len(sessions) != 3 || current != 1 || sessions[0].Current || sessions[0].RemoteAddr == "" || !strings.HasPrefix(sessions[0].UserAgent, "custos/test (") {
		t.Fatalf("sessions list = %+v, want alice's three sessions, the newest (elsewhere, by the CLI) not the current one", sessions)
	}
	elsewhere := sessions[0].ID
	al.json(&map[string]string{}, "", "sessions", "revoke", elsewhere)
	other.fails(cli.ExitAuth, "", "whoami")
	ag.json(&me, "", "whoami") // her other sessions go on
	al.fails(cli.ExitNotFound, "", "sessions", "revoke", elsewhere)
	machine.fails(cli.ExitPermission, "", "sessions", "list")

	// The platform admin deletes a tenant: only with --yes without a terminal; its keys go too.
	var scratch client.Tenant
	root.json(&scratch, "", "tenants", "create", "scratch")
	if e := root.fails(cli.ExitUsage, "", "tenants", "delete", scratch.ID); !strings.Contains(e["message"].(string), "--yes") {
		t.Errorf("tenants delete without --yes or a terminal: %v, want a usage error naming --yes", e)
	}
	al.fails(cli.ExitPermission, "", "tenants", "delete", tenant.ID, "--yes") // owners may not
	var gone client.DeletedTenant
	root.json(&gone, "", "tenants", "delete", scratch.ID, "--yes")
	if gone.TenantID != scratch.ID || gone.KeyErasure != client.KeyErasureDone {
		t.Errorf("tenants delete = %+v, want %s with its keys destroyed", gone, scratch.ID)
	}
	root.fails(cli.ExitNotFound, "", "tenants", "get", scratch.ID)
	root.fails(cli.ExitNotFound, "", "tenants", "delete", scratch.ID, "--yes")
	var trail []client.AuditEvent
	root.json(&trail, "", "audit", "--tenant", scratch.ID, "--action", "tenant.delete")
	if len(trail) != 1 || trail[0].TenantID != scratch.ID {
		t.Errorf("audit --tenant of the deleted tenant = %+v, want its tenant.delete", trail)
	}
	if out := root.ok("", "audit", "--action", "tenant.create"); !strings.Contains(out, "TENANT") || !strings.Contains(out, scratch.ID) {
		t.Errorf("audit of the whole platform, as text:\n%s\nwant a TENANT column naming each event's tenant", out)
	}

	al.json(&map[string]string{}, "", "apikeys", "revoke", key.Key.ID)
	machine.fails(cli.ExitAuth, "", "export")
	al.json(&map[string]bool{}, "", "logout")
	if e := al.fails(cli.ExitAuth, "", "items", "list"); e["hint"] != "run: custos login" {
		t.Errorf("items list after logout: %v, want a hint to log in", e)
	}
}

// assertErased checks a deleted user's key erasure: "done", since each had a key context (a
// zero-knowledge tenant makes it with the account) and the encryption service is up.
func assertErased(tb testing.TB, d client.DeletedUser) {
	tb.Helper()
	if d.KeyErasure != client.KeyErasureDone {
		tb.Errorf("deleting user %s: keyErasure %q, want %q (they had a key context and the encryption service is up)",
			d.UserID, d.KeyErasure, client.KeyErasureDone)
	}
}

// versionOf returns version versionID of key context enc in status (the zero value if absent).
func versionOf(status []client.KeyContextStatus, enc, versionID string) client.KeyVersionStatus {
	for _, kc := range status {
		for _, v := range kc.Versions {
			if kc.EncryptionID == enc && v.VersionID == versionID {
				return v
			}
		}
	}
	return client.KeyVersionStatus{}
}

// assertProfileSafe checks that a profile's files are private and hold no password, derived
// password or master key.
func assertProfileSafe(tb testing.TB, config, profile string, secrets ...string) {
	tb.Helper()
	for _, path := range []string{
		filepath.Join(config, "custos", "tokens", profile+".json"),
		filepath.Join(config, "custos", "profiles", profile+".json"),
	} {
		st, err := os.Stat(path)
		if err != nil {
			tb.Fatalf("profile file: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			tb.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
		}
		raw, _ := os.ReadFile(path)
		for _, s := range secrets {
			if strings.Contains(string(raw), s) {
				tb.Errorf("%s holds a secret (password, derived password or master key)", path)
			}
		}
	}
	if st, err := os.Stat(filepath.Join(config, "custos", "tokens")); err != nil || st.Mode().Perm() != 0o700 {
		tb.Errorf("tokens directory: %v, mode %v; want 0700", err, st.Mode().Perm())
	}
}
