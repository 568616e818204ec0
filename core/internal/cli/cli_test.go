package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boombuler/barcode/qr"

	"github.com/custos-platform/custos/core/client"
)

// The QR code drawn with half blocks decodes back to exactly the modules of the code, with the
// quiet zone around it.
func TestRenderQR(t *testing.T) {
	uri := "otpauth://totp/Custos:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Custos"
	out, err := renderQR(uri, false)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := qr.Encode(uri, qr.M, qr.Auto)
	n := code.Bounds().Dx()
	size := n + 2*quietZone
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != (size+1)/2 {
		t.Fatalf("renderQR gave %d lines, want %d", len(lines), (size+1)/2)
	}
	light := func(x, y int) bool { // from the drawing
		r := []rune(lines[y/2])[x]
		if y%2 == 0 {
			return r == '█' || r == '▀'
		}
		return r == '█' || r == '▄'
	}
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			wantDark := false
			if mx, my := x-quietZone, y-quietZone; mx >= 0 && my >= 0 && mx < n && my < n {
				r, _, _, _ := code.At(mx, my).RGBA()
				wantDark = r < 0x8000
			}
			if light(x, y) == wantDark {
				t.Fatalf("module (%d,%d): drawn light %v, want dark %v", x, y, light(x, y), wantDark)
			}
		}
	}
	colored, _ := renderQR(uri, true)
	if !strings.HasPrefix(colored, "\033[97;40m") || !strings.Contains(colored, "\033[0m\n") {
		t.Errorf("renderQR(ansi) does not fix the colours of each line")
	}
}

func TestExitCodes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		err  error
		want int
	}{
		{usageErr("x"), ExitUsage},
		{errors.New("unknown flag: --x"), ExitUsage}, // cobra's own
		{&ranError{err: errors.New("disk full")}, ExitError},
		{&ranError{err: client.ErrNotLoggedIn}, ExitAuth},
		{&ranError{err: fmt.Errorf("x: %w", client.ErrSessionExpired)}, ExitAuth},
		{&ranError{err: client.ErrLocked}, ExitAuth},
		{&ranError{err: &authError{msg: "no password"}}, ExitAuth},
		{&ranError{err: fmt.Errorf("%w: short", client.ErrWeakPassword)}, ExitInvalid},
		{&ranError{err: &client.Error{HTTPStatus: 401, Code: "UNAUTHENTICATED"}}, ExitAuth},
		{&ranError{err: &client.Error{HTTPStatus: 404, Code: "NOT_FOUND"}}, ExitNotFound},
		{&ranError{err: &client.Error{HTTPStatus: 409, Code: "ABORTED"}}, ExitConflict},
		{&ranError{err: &client.Error{HTTPStatus: 409, Code: "ALREADY_EXISTS"}}, ExitConflict},
		{&ranError{err: &client.Error{HTTPStatus: 403, Code: "PERMISSION_DENIED"}}, ExitPermission},
		{&ranError{err: &client.Error{HTTPStatus: 400, Code: "INVALID_ARGUMENT"}}, ExitInvalid},
		{&ranError{err: &client.Error{HTTPStatus: 429, Code: "RESOURCE_EXHAUSTED"}}, ExitThrottled},
		{&ranError{err: &client.Error{Code: "UNAVAILABLE"}}, ExitUnavailable},
		{&ranError{err: &client.Error{HTTPStatus: 501, Code: "UNIMPLEMENTED"}}, ExitNotImplemented},
		{&ranError{err: &client.Error{HTTPStatus: 500, Code: "INTERNAL"}}, ExitError},
		{&ranError{err: &jobFailedError{}}, ExitError},
	}
	for _, tc := range tests {
		if got := exitCode(ctx, tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := exitCode(cancelled, &ranError{err: context.Canceled}); got != ExitInterrupted {
		t.Errorf("exitCode(interrupted) = %d, want %d", got, ExitInterrupted)
	}
}

func TestWantsJSON(t *testing.T) {
	for args, want := range map[string]bool{
		"-o json x": true, "--output json": true, "--output=json": true, "-ojson": true,
		"-o text": false, "x -- -o json": false, "": false,
	} {
		if got := wantsJSON(strings.Fields(args)); got != want {
			t.Errorf("wantsJSON(%q) = %v, want %v", args, got, want)
		}
	}
}

func TestProfiles(t *testing.T) {
	dir := t.TempDir()
	getenv := func(env map[string]string) func(string) string { return func(k string) string { return env[k] } }
	var out, errOut bytes.Buffer
	// Without a URL anywhere: a usage error naming how to give one.
	code := Run(context.Background(), "test", []string{"whoami"}, getenv(map[string]string{"XDG_CONFIG_HOME": dir}), strings.NewReader(""), &out, &errOut)
	if code != ExitUsage || !strings.Contains(errOut.String(), "CUSTOS_URL") {
		t.Errorf("whoami without a URL = %d %q, want usage naming CUSTOS_URL", code, errOut.String())
	}
	// A bad profile name.
	errOut.Reset()
	code = Run(context.Background(), "test", []string{"--profile", "../x", "whoami"}, getenv(map[string]string{"XDG_CONFIG_HOME": dir, "CUSTOS_URL": "https://localhost:1"}), strings.NewReader(""), &out, &errOut)
	if code != ExitUsage {
		t.Errorf("--profile ../x = %d, want usage", code)
	}
	// Not logged in: exit 3 and a hint.
	errOut.Reset()
	code = Run(context.Background(), "test", []string{"whoami"}, getenv(map[string]string{"HOME": dir, "CUSTOS_URL": "https://localhost:1"}), strings.NewReader(""), &out, &errOut)
	if code != ExitAuth || !strings.Contains(errOut.String(), "custos login") {
		t.Errorf("whoami without a session = %d %q, want 3 and a hint", code, errOut.String())
	}
	// The file store: 0600 in a 0700 directory, removed when the session is.
	fs := fileStore{path: filepath.Join(dir, "custos", "tokens", "p.json")}
	ctx := context.Background()
	if err := fs.Save(ctx, client.Session{AccessToken: "a", RefreshToken: "r", Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(fs.path)
	dst, _ := os.Stat(filepath.Dir(fs.path))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Errorf("token file %v in directory %v, want 0600 in 0700", st.Mode().Perm(), dst.Mode().Perm())
	}
	if s, err := fs.Load(ctx); err != nil || s.Username != "alice" {
		t.Errorf("Load = %+v, %v", s, err)
	}
	unlock, err := fs.LockTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := fs.Save(ctx, client.Session{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fs.path); !os.IsNotExist(err) {
		t.Errorf("after saving the zero session the file is still there: %v", err)
	}
}

func TestParseRole(t *testing.T) {
	for in, want := range map[string]string{"member": "member", "Admin": "admin", " OWNER ": "owner"} {
		if got, err := parseRole(in); err != nil || got != want {
			t.Errorf("parseRole(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "root", "owners", "platform-admin"} {
		var ue *usageError
		if _, err := parseRole(in); !errors.As(err, &ue) {
			t.Errorf("parseRole(%q) = %v, want a usage error", in, err)
		}
	}
}

func TestParseOnOff(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "ON": true, "off": false, " Off": false} {
		if got, err := parseOnOff("--password-hints", in); err != nil || got != want {
			t.Errorf("parseOnOff(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yes", "true", "1", "of"} {
		var ue *usageError
		if _, err := parseOnOff("--password-hints", in); !errors.As(err, &ue) || !strings.Contains(err.Error(), "--password-hints") {
			t.Errorf("parseOnOff(%q) = %v, want a usage error naming the flag", in, err)
		}
	}
}

// Commands whose arguments are wrong exit 2 before contacting core: the server of CUSTOS_URL is
// never reached.
func TestAdminUsageErrors(t *testing.T) {
	env := map[string]string{"XDG_CONFIG_HOME": t.TempDir(), "CUSTOS_URL": "https://127.0.0.1:1"}
	tests := []struct {
		args []string
		want string // in the message
	}{
		{[]string{"users", "delete", "bob"}, "--yes"}, // no terminal to ask on
		{[]string{"users", "set-role", "bob", "root"}, "member, admin or owner"},
		{[]string{"users", "set-role", "bob"}, "accepts 2 arg"},
		{[]string{"tenants", "update", "t-1"}, "--name, --password-hints"},
		{[]string{"tenants", "update", "t-1", "--password-hints", "maybe"}, "on or off"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), "test", tc.args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
		if code != ExitUsage || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("custos %s = exit %d, stderr %q; want %d naming %q", strings.Join(tc.args, " "), code, errOut.String(), ExitUsage, tc.want)
		}
	}
}
