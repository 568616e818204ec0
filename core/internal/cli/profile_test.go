package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/client"
)

// whoamiAnswer answers GET /v1/me for the access token "access", 401 otherwise.
func whoamiAnswer(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/me" || r.Header.Get("Authorization") != "Bearer access" {
		w.WriteHeader(401)
		fmt.Fprintln(w, `{"code":16,"message":"who are you"}`)
		return
	}
	fmt.Fprintln(w, `{"principalType":"user","principalId":"u-1","username":"alice","tenantId":"t-1","role":"owner"}`)
}

// A profile's session goes only to the core it was opened at. With another --url or CUSTOS_URL
// the command is refused (exit 2, naming --profile) before anything is sent, and the session is
// kept. A session saved by an older custos, without its URL, belongs to the URL the profile was
// saved with.
func TestSessionStaysWithItsServer(t *testing.T) {
	stub := newStubCore(t, whoamiAnswer)
	const prod = "https://prod.example:8443"
	tests := []struct {
		name       string
		profileURL string // saved by login; "" for none
		session    client.Session
		wantCode   int
	}{
		{"session of another core", "", liveSession(prod), ExitUsage},
		{"older session, profile of another core", prod, liveSession(""), ExitUsage},
		{"session of this core", prod, liveSession(stub.url), ExitOK},
		{"older session, profile of this core", stub.url, liveSession(""), ExitOK},
		{"older session, no profile", "", liveSession(""), ExitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.profileURL != "" {
				raw, _ := json.Marshal(settings{URL: tc.profileURL, Username: "alice"})
				if err := writeFile0600(filepath.Join(dir, "custos", "profiles", "default.json"), raw); err != nil {
					t.Fatal(err)
				}
			}
			mustSaveSession(t, dir, tc.session)
			before := len(stub.requests())
			code, _, errOut := runCustos(stub.env(dir), strings.NewReader(""), "whoami")
			if code != tc.wantCode {
				t.Fatalf("whoami = exit %d (%s), want %d", code, strings.TrimSpace(errOut), tc.wantCode)
			}
			if code == ExitOK {
				return
			}
			if sent := stub.requests()[before:]; len(sent) != 0 {
				t.Errorf("the other core received %q", sent)
			}
			if !strings.Contains(errOut, prod) || !strings.Contains(errOut, "--profile") {
				t.Errorf("stderr %q, want it to name the session's core %s and --profile", errOut, prod)
			}
			kept, err := fileStore{path: filepath.Join(dir, "custos", "tokens", "default.json")}.Load(context.Background())
			if err != nil || kept.RefreshToken != "refresh" {
				t.Errorf("the session after the refusal = %v, %v; want it kept", kept, err)
			}
		})
	}
}

// Saving a profile or a session narrows directories of custos's left open to others to 0700.
func TestPrivateDirectories(t *testing.T) {
	dir := t.TempDir()
	custos := filepath.Join(dir, "custos")
	tokens := filepath.Join(custos, "tokens")
	if err := os.MkdirAll(tokens, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{custos, tokens} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	mustSaveSession(t, dir, liveSession("https://core.example"))
	for _, d := range []string{custos, tokens} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s after saving a session: %v, mode %v; want 0700", d, err, st.Mode().Perm())
		}
	}
	if err := privateDir(filepath.Join(dir, "file", "x")); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(filepath.Join(notDir, "tokens")); err == nil {
		t.Error("privateDir under a file = nil, want an error")
	}
}

// itemsStub answers POST /v1/items, recording the data received.
type itemsStub struct {
	*stubCore
	data chan string
}

func newItemsStub(tb testing.TB) *itemsStub {
	s := &itemsStub{data: make(chan string, 10)}
	s.stubCore = newStubCore(tb, func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Name, Data string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		s.data <- in.Data
		fmt.Fprintf(w, `{"id":"i-1","name":%q,"data":%q,"revision":1}`, in.Name, in.Data)
	})
	return s
}

// items put takes its data from --data-file PATH, standard input (also as --data-file -) or
// --data; not two of them, and only UTF-8 text.
func TestItemsData(t *testing.T) {
	stub := newItemsStub(t)
	dir := t.TempDir()
	mustSaveSession(t, dir, liveSession(stub.url))
	file := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(file, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(dir, "binary")
	if err := os.WriteFile(binary, []byte{0xff, 0xfe}, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantData string
	}{
		{"--data-file", "ignored", []string{"--data-file", file}, ExitOK, "from a file\n"},
		{"--data-file -", "from stdin", []string{"--data-file", "-"}, ExitOK, "from stdin"},
		{"standard input", "from stdin", nil, ExitOK, "from stdin"},
		{"--data", "ignored", []string{"--data", "from a flag"}, ExitOK, "from a flag"},
		{"both", "", []string{"--data", "x", "--data-file", file}, ExitUsage, ""},
		{"missing file", "", []string{"--data-file", filepath.Join(dir, "nope")}, ExitError, ""},
		{"not UTF-8", "", []string{"--data-file", binary}, ExitUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"items", "put", "--name", "n"}, tc.args...)
			code, _, errOut := runCustos(stub.env(dir), strings.NewReader(tc.stdin), args...)
			if code != tc.wantCode {
				t.Fatalf("custos %s = exit %d (%s), want %d", strings.Join(args, " "), code, strings.TrimSpace(errOut), tc.wantCode)
			}
			if code != ExitOK {
				return
			}
			if got := <-stub.data; got != tc.wantData {
				t.Errorf("custos %s sent data %q, want %q", strings.Join(args, " "), got, tc.wantData)
			}
		})
	}
}

// totp confirm takes its code from CUSTOS_TOTP_CODE when none is given as an argument.
func TestTOTPConfirmCodeFromEnvironment(t *testing.T) {
	codes := make(chan string, 1)
	stub := newStubCore(t, func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var in struct{ Code string }
		_ = json.Unmarshal(raw, &in)
		codes <- in.Code
		fmt.Fprintln(w, `{"recoveryCodes":["aaaa-bbbb"]}`)
	})
	dir := t.TempDir()
	mustSaveSession(t, dir, liveSession(stub.url))
	env := stub.env(dir)
	env["CUSTOS_TOTP_CODE"] = "123456"
	if code, _, errOut := runCustos(env, strings.NewReader(""), "totp", "confirm"); code != ExitOK {
		t.Fatalf("totp confirm = exit %d (%s)", code, errOut)
	}
	if got := <-codes; got != "123456" {
		t.Errorf("totp confirm sent code %q, want CUSTOS_TOTP_CODE's", got)
	}
	delete(env, "CUSTOS_TOTP_CODE")
	if code, _, errOut := runCustos(env, strings.NewReader(""), "totp", "confirm"); code != ExitAuth || !strings.Contains(errOut, "CUSTOS_TOTP_CODE") {
		t.Errorf("totp confirm without a code, no terminal = exit %d (%s), want 3 naming CUSTOS_TOTP_CODE", code, errOut)
	}
}

func TestRecoveryCode(t *testing.T) {
	for code, want := range map[string]bool{
		"123456": false, "12345678": false, " 123456 ": false, "": false,
		"12345": true, "123456789": true, "abcd-efgh-ijkl": true, "12 3456": true,
	} {
		if got := recoveryCode(code); got != want {
			t.Errorf("recoveryCode(%q) = %v, want %v", code, got, want)
		}
	}
}
