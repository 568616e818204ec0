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

func TestParseVersionRef(t *testing.T) {
	const id = "0b9d3a52-6f1e-4c1a-9a57-2d4c0e7f8a11"
	tests := []struct {
		in   string
		want versionRef
	}{
		{"1", versionRef{number: 1}},
		{"12", versionRef{number: 12}},
		{id, versionRef{id: id}},
		{strings.ToUpper(id), versionRef{id: id}}, // canonical form
	}
	for _, tc := range tests {
		if got, err := parseVersionRef(tc.in); err != nil || got != tc.want {
			t.Errorf("parseVersionRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"0", "-1", "v2", "", "1.5", "0b9d3a52"} {
		var ue *usageError
		if _, err := parseVersionRef(in); !errors.As(err, &ue) {
			t.Errorf("parseVersionRef(%q) = %v, want a usage error", in, err)
		}
	}
}

func TestFindVersion(t *testing.T) {
	const enc, v1, v2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"
	st := []client.KeyContextStatus{
		{EncryptionID: "44444444-4444-4444-8444-444444444444", Versions: []client.KeyVersionStatus{{VersionID: v1, Version: 1}}},
		{EncryptionID: enc, Versions: []client.KeyVersionStatus{
			{VersionID: v1, Version: 1, State: "DECRYPT_ONLY"}, {VersionID: v2, Version: 2, State: "ACTIVE", ItemCount: 3}}},
	}
	for _, ref := range []versionRef{{number: 2}, {id: v2}} {
		gotEnc, v, err := findVersion(st, strings.ToUpper(enc), ref)
		if err != nil || gotEnc != enc || v.VersionID != v2 || v.Version != 2 {
			t.Errorf("findVersion(%+v) = %q, %+v, %v; want version 2 of %s", ref, gotEnc, v, err, enc)
		}
	}
	for _, tc := range []struct {
		enc  string
		ref  versionRef
		want string
	}{
		{enc, versionRef{number: 3}, "has no version 3"},
		{enc, versionRef{id: "55555555-5555-4555-8555-555555555555"}, "has no version 55555555-"},
		{"66666666-6666-4666-8666-666666666666", versionRef{number: 1}, "no key context 66666666-"},
	} {
		_, _, err := findVersion(st, tc.enc, tc.ref)
		if !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), tc.want) || exitCode(context.Background(), &ranError{err: err}) != ExitNotFound {
			t.Errorf("findVersion(%s, %+v) = %v, want NOT_FOUND (exit 4) saying %q", tc.enc, tc.ref, err, tc.want)
		}
	}
}

func TestFirstN(t *testing.T) {
	seq := func(vals []int, fail error) func(func(int, error) bool) {
		return func(yield func(int, error) bool) {
			for _, v := range vals {
				if !yield(v, nil) {
					return
				}
			}
			if fail != nil {
				yield(0, fail)
			}
		}
	}
	if got, err := firstN(seq([]int{1, 2, 3}, errors.New("never read")), 2); err != nil || fmt.Sprint(got) != "[1 2]" {
		t.Errorf("firstN(3 values, 2) = %v, %v; want [1 2], stopping before the error", got, err)
	}
	if got, err := firstN(seq(nil, nil), 5); err != nil || got == nil || len(got) != 0 {
		t.Errorf("firstN(nothing) = %#v, %v; want an empty, non-nil slice", got, err)
	}
	boom := errors.New("boom")
	if _, err := firstN(seq([]int{1}, boom), 5); !errors.Is(err, boom) {
		t.Errorf("firstN with a failing page = %v, want its error", err)
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
		{[]string{"audit", "--limit", "0"}, "--limit"},
		{[]string{"audit", "--limit", "1001"}, "--limit"},
		{[]string{"keys", "disable", "11111111-1111-4111-8111-111111111111", "latest"}, "VERSION"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), "test", tc.args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
		if code != ExitUsage || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("custos %s = exit %d, stderr %q; want %d naming %q", strings.Join(tc.args, " "), code, errOut.String(), ExitUsage, tc.want)
		}
	}
}

// An export that breaks off says how to resume it: with the same file (quoted for the shell)
// and --after, or appending standard output to the file.
func TestResumeCommand(t *testing.T) {
	tests := []struct {
		file, cursor, want string
	}{
		{"backup.ndjson", "MTc5", "custos export --file backup.ndjson --after MTc5"},
		{"/var/backups/nightly 1.ndjson", "MTc5", "custos export --file '/var/backups/nightly 1.ndjson' --after MTc5"},
		{"it's.ndjson", "MTc5", `custos export --file 'it'\''s.ndjson' --after MTc5`},
		{"", "MTc5", "custos export --after MTc5 >> FILE"},
	}
	for _, tc := range tests {
		if got := resumeCommand(tc.file, tc.cursor); got != tc.want {
			t.Errorf("resumeCommand(%q, %q) = %q, want %q", tc.file, tc.cursor, got, tc.want)
		}
	}
}
