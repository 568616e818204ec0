// Package cli is the custos command: people and scripts use Custos core through it, with the
// client SDK (core/client) underneath. core/cmd/custos is its main; tests call Run in-process.
//
// Exit codes (a contract with scripts, listed in docs/cli.md): 0 success, 1 any other error, 2
// usage, 3 authentication (not logged in, session ended, wrong password or code, master key
// missing), 4 not found, 5 conflict (stale revision, name taken), 6 permission denied, 7 invalid
// input, 8 throttled, 9 core unavailable, 10 not implemented by this core, 130 interrupted.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/custos-platform/custos/core/client"
)

// Exit codes.
const (
	ExitOK             = 0
	ExitError          = 1
	ExitUsage          = 2
	ExitAuth           = 3
	ExitNotFound       = 4
	ExitConflict       = 5
	ExitPermission     = 6
	ExitInvalid        = 7
	ExitThrottled      = 8
	ExitUnavailable    = 9
	ExitNotImplemented = 10
	ExitInterrupted    = 130
)

// env is one invocation's world: everything Run was given.
type env struct {
	version string
	getenv  func(string) string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer

	// global flags
	profile, url, caFile, grpcAddr, output string
}

// Run runs the custos command with args (without the program name) and returns its exit code.
// Configuration comes from getenv (CUSTOS_*, XDG_CONFIG_HOME, HOME); prompts read stdin only
// when it is a terminal.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{version: version, getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := e.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(ctx, err)
	if wantsJSON(args) {
		e.output = "json" // cobra stops before parsing flags on some usage errors
	}
	e.reportError(err, code)
	return code
}

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "custos",
		Short: "Use Custos: log in, keep private items, export, rotate keys, manage users and API keys, read the audit trail",
		Long: `custos talks to Custos core over TLS 1.3 (REST, or gRPC with --grpc).

People log in once per profile (custos login); machines set CUSTOS_API_KEY and CUSTOS_API_SECRET.
In a zero-knowledge tenant the master key is derived from the password at login and kept in
memory only: later commands that read or write items derive it again, from CUSTOS_PASSWORD or a
prompt. It is never written to disk. See docs/cli.md for every command and exit code.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       e.version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%s", err.Error()) })
	f := root.PersistentFlags()
	f.StringVar(&e.profile, "profile", "", "profile to use (default $CUSTOS_PROFILE, else \"default\")")
	f.StringVar(&e.url, "url", "", "core's base URL, e.g. https://localhost:8443 (default $CUSTOS_URL, else the profile's)")
	f.StringVar(&e.caFile, "ca-file", "", "PEM CA that signed core's certificate (default $CUSTOS_CA_FILE, else the profile's)")
	f.StringVar(&e.grpcAddr, "grpc", "", "use core's gRPC API at host:port instead of REST (default $CUSTOS_GRPC, else the profile's)")
	f.StringVarP(&e.output, "output", "o", "text", "output format: text or json")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if e.output != "text" && e.output != "json" {
			return usageErr("--output: want text or json")
		}
		return nil
	}
	root.AddCommand(e.loginCommand(), e.logoutCommand(), e.whoamiCommand(), e.passwordCommand(), e.itemsCommand(),
		e.exportCommand(), e.importCommand(), e.keysCommand(), e.apikeysCommand(), e.usersCommand(),
		e.tenantsCommand(), e.totpCommand(), e.auditCommand(), e.sessionsCommand())
	return root
}

// usageError is a command line that cannot be run as given.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usageErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// notFound is a NOT_FOUND found on the client side (exit 4, as core's own).
func notFound(format string, args ...any) error {
	return &client.Error{HTTPStatus: 404, Code: "NOT_FOUND", Message: fmt.Sprintf(format, args...)}
}

// authError is missing or refused credentials found on the client side.
type authError struct{ msg string }

func (a *authError) Error() string { return a.msg }

// hintedError is an error with the hint to show with it (the "hint" of --output json).
type hintedError struct {
	err  error
	hint string
}

func (h *hintedError) Error() string { return h.err.Error() }
func (h *hintedError) Unwrap() error { return h.err }

// ranError marks an error from a command's own work, as opposed to cobra's argument checks.
type ranError struct{ err error }

func (r *ranError) Error() string { return r.err.Error() }
func (r *ranError) Unwrap() error { return r.err }

// run wraps a command's body so that its errors are told apart from cobra's usage errors.
func run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			return &ranError{err: err}
		}
		return nil
	}
}

// jobFailedError is a job that ended FAILED.
type jobFailedError struct{ job client.Job }

func (j *jobFailedError) Error() string {
	return fmt.Sprintf("job %s failed: %s", j.job.ID, j.job.Message)
}

func exitCode(ctx context.Context, err error) int {
	var (
		ue *usageError
		ae *authError
		ce *client.Error
		re *ranError
	)
	switch {
	case errors.As(err, &ue), errors.Is(err, client.ErrOtherServer):
		return ExitUsage
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ae), errors.Is(err, client.ErrNotLoggedIn), errors.Is(err, client.ErrSessionExpired),
		errors.Is(err, client.ErrMFARequired), errors.Is(err, client.ErrLocked):
		return ExitAuth
	case errors.Is(err, client.ErrWeakPassword):
		return ExitInvalid
	case errors.As(err, &ce):
		switch ce.Code {
		case "UNAUTHENTICATED":
			return ExitAuth
		case "NOT_FOUND":
			return ExitNotFound
		case "ABORTED", "ALREADY_EXISTS":
			return ExitConflict
		case "PERMISSION_DENIED":
			return ExitPermission
		case "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE":
			return ExitInvalid
		case "RESOURCE_EXHAUSTED":
			return ExitThrottled
		case "UNAVAILABLE", "DEADLINE_EXCEEDED":
			return ExitUnavailable
		case "UNIMPLEMENTED":
			return ExitNotImplemented
		}
		return ExitError
	case errors.As(err, &re):
		return ExitError
	}
	// Anything else comes from cobra: an unknown command or flag, a wrong number of arguments.
	return ExitUsage
}

// reportError writes err to stderr: a line of text, or {"error":{…}} with --output json. An
// export that broke off adds how to resume it: a line of text before the error, or the fields
// records, lastCursor, resume (and partialFile) of the error object.
func (e *env) reportError(err error, code int) {
	msg := err.Error()
	hint := ""
	var (
		broke  *brokeOffError
		hinted *hintedError
	)
	switch {
	case errors.As(err, &hinted):
		hint = hinted.hint
	case errors.Is(err, client.ErrOtherServer):
		hint = "a profile keeps the session of one core: log in to this one with another profile (custos --profile NAME login)"
	case errors.Is(err, client.ErrNotLoggedIn), errors.Is(err, client.ErrSessionExpired):
		hint = "run: custos login"
	case errors.Is(err, client.ErrUnimplemented):
		hint = "this core does not offer it yet"
	case code == ExitUsage:
		hint = "see: custos --help"
	}
	if e.output == "json" {
		out := map[string]any{"message": msg, "exitCode": code}
		var ce *client.Error
		if errors.As(err, &ce) {
			out["code"], out["httpStatus"], out["message"] = ce.Code, ce.HTTPStatus, ce.Message
		}
		if hint != "" {
			out["hint"] = hint
		}
		if errors.As(err, &broke) {
			out["records"], out["lastCursor"], out["resume"] = broke.records, broke.lastCursor, broke.resume
			if broke.partialFile != "" {
				out["partialFile"] = broke.partialFile
			}
		}
		enc := json.NewEncoder(e.stderr)
		enc.SetEscapeHTML(false) // a resume command's && as it is
		_ = enc.Encode(map[string]any{"error": out})
		return
	}
	if errors.As(err, &broke) {
		fmt.Fprintln(e.stderr, broke.text())
	}
	fmt.Fprintf(e.stderr, "custos: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(e.stderr, "(%s)\n", hint)
	}
}

// wantsJSON reports whether args ask for --output json.
func wantsJSON(args []string) bool {
	for i, a := range args {
		switch {
		case a == "--":
			return false
		case a == "--output=json" || a == "-ojson" || a == "-o=json":
			return true
		case (a == "--output" || a == "-o") && i+1 < len(args) && args[i+1] == "json":
			return true
		}
	}
	return false
}

// json reports whether --output json is in force.
func (e *env) json() bool { return e.output == "json" }

// printJSON writes v as indented JSON to stdout.
func (e *env) printJSON(v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the output: %w", err)
	}
	_, err = fmt.Fprintln(e.stdout, string(raw))
	return err
}

// print writes v as JSON with --output json, else text(w) to stdout.
func (e *env) print(v any, text func(w io.Writer)) error {
	if e.json() {
		return e.printJSON(v)
	}
	text(e.stdout)
	return nil
}

// terminal returns the file descriptor of r if it is a terminal.
func terminal(r any) (int, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

func (e *env) stdinIsTerminal() bool  { _, ok := terminal(e.stdin); return ok }
func (e *env) stdoutIsTerminal() bool { _, ok := terminal(e.stdout); return ok }
func (e *env) stderrIsTerminal() bool { _, ok := terminal(e.stderr); return ok }

// firstNonEmpty returns the first of vs that is not empty.
func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
