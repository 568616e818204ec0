package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/client"
)

// stubCore is a TLS server standing in for core, answering with h and recording each request.
type stubCore struct {
	url, ca string
	mu      sync.Mutex
	seen    []string // "METHOD path Authorization"
}

func newStubCore(tb testing.TB, h http.HandlerFunc) *stubCore {
	tb.Helper()
	s := &stubCore{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		s.mu.Unlock()
		h(w, r)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	s.url = srv.URL
	s.ca = filepath.Join(tb.TempDir(), "ca.pem")
	if err := os.WriteFile(s.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *stubCore) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// env returns the environment of a custos run against s with its configuration in dir.
func (s *stubCore) env(dir string) map[string]string {
	return map[string]string{"XDG_CONFIG_HOME": dir, "CUSTOS_URL": s.url, "CUSTOS_CA_FILE": s.ca}
}

// runCustos runs the custos command in-process with env and stdin.
func runCustos(env map[string]string, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Run(context.Background(), "test", args, func(k string) string { return env[k] }, stdin, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustSaveSession writes s as the session of profile "default" under dir.
func mustSaveSession(tb testing.TB, dir string, s client.Session) {
	tb.Helper()
	fs := fileStore{path: filepath.Join(dir, "custos", "tokens", "default.json")}
	if err := fs.Save(context.Background(), s); err != nil {
		tb.Fatal(err)
	}
}

// liveSession is a session of a PLATFORM tenant that needs no refresh.
func liveSession(url string) client.Session {
	return client.Session{AccessToken: "access", RefreshToken: "refresh", Expiry: time.Now().Add(time.Hour), Username: "alice", TenantID: "t-1", URL: url}
}

// exportAnswer answers GET /v1/export as core's gateway does: records, and an error line after
// failAfter of them (never with -1).
func exportAnswer(records, failAfter int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/export" {
			w.WriteHeader(404)
			return
		}
		for i := 1; i <= records; i++ {
			if i-1 == failAfter {
				fmt.Fprintln(w, `{"error":{"code":14,"message":"encryption service unavailable"}}`)
				return
			}
			fmt.Fprintf(w, `{"result":{"record":{"id":"r%d","cursor":"c%d"}}}`+"\n", i, i)
		}
	}
}

// dirNames lists the names in dir, sorted.
func dirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// export --file writes a new file that replaces FILE only once the export is complete: a failed
// export leaves an earlier backup as it was and no file behind; one that broke off keeps its
// records in FILE.partial. The file is 0600 whatever FILE was, and a symlink in FILE's place is
// replaced, never written through.
func TestExportFileReplacedOnlyWhenComplete(t *testing.T) {
	const old = `{"id":"old record"}` + "\n"
	status := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code); fmt.Fprintln(w, body) }
	}
	tests := []struct {
		name     string
		h        http.HandlerFunc
		loggedIn bool
		want     int    // exit code
		file     string // FILE afterwards
	}{
		{"not logged in", exportAnswer(2, -1), false, ExitAuth, old},
		{"permission denied", status(403, `{"code":7,"message":"role missing"}`), true, ExitPermission, old},
		{"unavailable", status(503, `{"code":14,"message":"down"}`), true, ExitUnavailable, old},
		{"error before any record", exportAnswer(2, 0), true, ExitUnavailable, old},
		{"complete", exportAnswer(2, -1), true, ExitOK, `{"id":"r1","cursor":"c1"}` + "\n" + `{"id":"r2","cursor":"c2"}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := newStubCore(t, tc.h)
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			backup := filepath.Join(out, "backup.ndjson")
			if err := os.WriteFile(backup, []byte(old), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.loggedIn {
				mustSaveSession(t, dir, liveSession(stub.url))
			}
			code, _, errOut := runCustos(stub.env(dir), strings.NewReader(""), "export", "--file", backup)
			raw, _ := os.ReadFile(backup)
			if code != tc.want || string(raw) != tc.file {
				t.Errorf("export --file = exit %d (%s), file %q; want exit %d, file %q", code, strings.TrimSpace(errOut), raw, tc.want, tc.file)
			}
			if names := dirNames(t, out); len(names) != 1 {
				t.Errorf("files beside the backup afterwards: %q, want only backup.ndjson", names)
			}
			if st, err := os.Stat(backup); err != nil || (code == ExitOK && st.Mode().Perm() != 0o600) {
				t.Errorf("the new backup: %v, mode %v; want 0600", err, st.Mode().Perm())
			}
		})
	}

	t.Run("symlink", func(t *testing.T) {
		stub := newStubCore(t, exportAnswer(1, -1))
		dir := t.TempDir()
		mustSaveSession(t, dir, liveSession(stub.url))
		target, link := filepath.Join(dir, "target"), filepath.Join(dir, "link.ndjson")
		if err := os.WriteFile(target, []byte(old), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if code, _, errOut := runCustos(stub.env(dir), strings.NewReader(""), "export", "--file", link); code != ExitOK {
			t.Fatalf("export --file LINK = exit %d (%s)", code, errOut)
		}
		if raw, _ := os.ReadFile(target); string(raw) != old {
			t.Errorf("the symlink's target was written: %q", raw)
		}
		if st, err := os.Lstat(link); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
			t.Errorf("FILE after export: %v, %v; want a regular 0600 file in the symlink's place", err, st.Mode())
		}
	})

	t.Run("append", func(t *testing.T) {
		stub := newStubCore(t, exportAnswer(1, -1))
		dir := t.TempDir()
		mustSaveSession(t, dir, liveSession(stub.url))
		backup := filepath.Join(dir, "backup.ndjson")
		if err := os.WriteFile(backup, []byte(old), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, _, errOut := runCustos(stub.env(dir), strings.NewReader(""), "export", "--file", backup, "--after", "c0"); code != ExitOK {
			t.Fatalf("export --after = exit %d (%s)", code, errOut)
		}
		raw, _ := os.ReadFile(backup)
		st, _ := os.Stat(backup)
		if string(raw) != old+`{"id":"r1","cursor":"c1"}`+"\n" || st.Mode().Perm() != 0o600 {
			t.Errorf("export --after: file %q, mode %v; want the record appended, 0600", raw, st.Mode().Perm())
		}
	})
}

// An export that broke off after some records keeps them in FILE.partial and says how to finish:
// in text, a line before the error; with -o json, in the error object (records, lastCursor,
// resume, partialFile), standard error holding that one JSON document only.
func TestExportBrokeOff(t *testing.T) {
	stub := newStubCore(t, exportAnswer(3, 1))
	dir := t.TempDir()
	mustSaveSession(t, dir, liveSession(stub.url))
	backup := filepath.Join(dir, "backup 1.ndjson")
	const old = `{"id":"old record"}` + "\n"
	if err := os.WriteFile(backup, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	partial := backup + ".partial"
	wantResume := "custos export --file '" + partial + "' --after c1 && mv '" + partial + "' '" + backup + "'"

	code, _, errOut := runCustos(stub.env(dir), strings.NewReader(""), "-o", "json", "export", "--file", backup)
	var doc struct {
		Error struct {
			ExitCode    int    `json:"exitCode"`
			Records     int    `json:"records"`
			LastCursor  string `json:"lastCursor"`
			Resume      string `json:"resume"`
			PartialFile string `json:"partialFile"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(errOut), &doc); err != nil {
		t.Fatalf("stderr of -o json is not one JSON document: %v\n%s", err, errOut)
	}
	if e := doc.Error; code != ExitUnavailable || e.ExitCode != ExitUnavailable || e.Records != 1 || e.LastCursor != "c1" ||
		e.PartialFile != partial || e.Resume != wantResume {
		t.Errorf("export -o json that broke off = exit %d, %+v; want 9, 1 record, cursor c1, %s, resume %q", code, e, partial, wantResume)
	}
	raw, _ := os.ReadFile(backup)
	kept, _ := os.ReadFile(partial)
	if string(raw) != old || string(kept) != `{"id":"r1","cursor":"c1"}`+"\n" {
		t.Errorf("after the break-off FILE = %q, FILE.partial = %q; want FILE as it was, the record in FILE.partial", raw, kept)
	}

	code, _, errOut = runCustos(stub.env(dir), strings.NewReader(""), "export", "--file", backup)
	if code != ExitUnavailable || !strings.Contains(errOut, "after 1 complete records, kept in") || !strings.Contains(errOut, wantResume) {
		t.Errorf("export that broke off = exit %d, stderr %q; want 9 and the resume command %q", code, errOut, wantResume)
	}
}
