package app

import (
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/client"
	"github.com/custos-platform/custos/core/internal/cli"
)

// cliOwner starts a platform with a PLATFORM tenant whose owner alice is logged in twice: over
// REST (rest) and over gRPC (grpc), each in a profile of its own.
func cliOwner(t *testing.T) (rest, grpc cliRunner) {
	t.Helper()
	p := startPlatform(t, nil)
	base := cliRunner{tb: t, env: map[string]string{"XDG_CONFIG_HOME": t.TempDir(),
		"CUSTOS_URL": "https://" + p.core.httpAddr, "CUSTOS_CA_FILE": p.core.certs.CAFile}}
	root := base.with("CUSTOS_PROFILE", "root", "CUSTOS_PASSWORD", rootPass)
	root.ok("", "login", "--platform-admin", "--username", rootName)
	var tenant client.Tenant
	root.json(&tenant, "", "tenants", "create", "plain")
	root.with("CUSTOS_NEW_PASSWORD", "alice's long passphrase").ok("", "users", "create", "alice", "--tenant", tenant.ID, "--role", "owner")
	rest = base.with("CUSTOS_PROFILE", "alice", "CUSTOS_PASSWORD", "alice's long passphrase")
	rest.ok("", "login", "-u", "alice")
	grpc = rest.with("CUSTOS_PROFILE", "alice-grpc", "CUSTOS_GRPC", p.core.grpcAddr)
	grpc.ok("", "login", "-u", "alice")
	return rest, grpc
}

// logout --all from a profile whose own session has ended (revoked elsewhere, or expired) ends
// nothing: core refuses it, and custos must say so (exit 3, log in and run it again) rather than
// "Logged out." while every other session lives on. The dead session is forgotten all the same;
// once logged in again, logout --all ends the other sessions.
func TestCLILogoutAllFromEndedSessionEndsNothing(t *testing.T) {
	laptop, phone := cliOwner(t)
	var ss []client.SessionInfo
	phone.json(&ss, "", "sessions", "list")
	for _, s := range ss {
		if !s.Current {
			phone.json(&map[string]string{}, "", "sessions", "revoke", s.ID) // the laptop's session ends
		}
	}

	e := laptop.fails(cli.ExitAuth, "", "logout", "--all")
	if msg, _ := e["message"].(string); !strings.Contains(msg, "no session was ended") || !strings.Contains(e["hint"].(string), "logout --all") {
		t.Errorf("logout --all from an ended session: error %v, want it to say no session was ended, and to log in and run logout --all again", e)
	}
	phone.ok("", "whoami") // still open: nothing was ended
	if e := laptop.fails(cli.ExitAuth, "", "whoami"); e["hint"] != "run: custos login" {
		t.Errorf("whoami after the refused logout --all: %v, want the ended session forgotten (not logged in)", e)
	}

	laptop.ok("", "login", "-u", "alice")
	laptop.json(&map[string]bool{}, "", "logout", "--all")
	phone.fails(cli.ExitAuth, "", "whoami")
}

// Items of about 1 MB each list in full over both transports: core bounds a page by the bytes of
// its ciphertext too, not only by count, so that no page nears gRPC's message limit or the
// client's cap on a REST answer.
func TestCLIListsLargeItems(t *testing.T) {
	rest, grpc := cliOwner(t)
	const n = 6
	for range n {
		rest.ok(strings.Repeat("x", 1_000_000), "items", "put", "--name", "big")
	}
	for name, r := range map[string]cliRunner{"REST": rest, "gRPC": grpc} {
		var items []client.Item
		r.json(&items, "", "items", "list")
		if len(items) != n {
			t.Errorf("%s: items list = %d items, want %d", name, len(items), n)
		}
		for _, it := range items {
			if len(it.Data) != 1_000_000 {
				t.Errorf("%s: item %s has %d bytes of data, want 1000000", name, it.ID, len(it.Data))
			}
		}
	}
}

// Bad input exits 7 (invalid input), as docs/cli.md says, over REST and gRPC alike: an import
// whose line is over 8 MiB, a name that is not UTF-8, an id that is not a UUID.
func TestCLIInvalidInputExitsSevenOverBothTransports(t *testing.T) {
	rest, grpc := cliOwner(t)
	for name, r := range map[string]cliRunner{"REST": rest, "gRPC": grpc} {
		t.Run(name, func(t *testing.T) {
			r := cliRunner{tb: t, env: r.env}
			if e := r.fails(cli.ExitInvalid, strings.Repeat("x", 9<<20), "import"); !strings.Contains(e["message"].(string), "line 1 is over") {
				t.Errorf("import of a 9 MiB line: %v, want it to name line 1 as over the limit", e)
			}
			if e := r.fails(cli.ExitInvalid, "data", "items", "put", "--name", "caf\xe9"); !strings.Contains(e["message"].(string), "name: not UTF-8") {
				t.Errorf("items put --name (Latin-1): %v, want it to name the name as not UTF-8", e)
			}
			for _, args := range [][]string{{"items", "get", "a/b"}, {"items", "rm", "a/b"}, {"items", "edit", "nope", "--name", "n"},
				{"keys", "job", "a/b"}, {"sessions", "revoke", "a/b"}, {"apikeys", "revoke", "../x"}} {
				if e := r.fails(cli.ExitInvalid, "", args...); !strings.Contains(e["message"].(string), "want a UUID") {
					t.Errorf("%s: %v, want it to say a UUID is wanted", strings.Join(args, " "), e)
				}
			}
		})
	}
}
