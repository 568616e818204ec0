package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/custos-platform/custos/core/client"
)

// target is where and how to reach core, resolved from flags, environment and profile.
type target struct {
	settings
	apiKey, apiSecret string
}

func (e *env) target() (target, error) {
	saved, err := e.loadSettings()
	if err != nil {
		return target{}, err
	}
	t := target{settings: settings{
		URL:      firstNonEmpty(e.url, e.getenv("CUSTOS_URL"), saved.URL),
		CAFile:   firstNonEmpty(e.caFile, e.getenv("CUSTOS_CA_FILE"), saved.CAFile),
		GRPC:     firstNonEmpty(e.grpcAddr, e.getenv("CUSTOS_GRPC"), saved.GRPC),
		Username: saved.Username,
	}}
	if t.URL == "" {
		return target{}, usageErr("which core? give --url, set CUSTOS_URL, or log in once with --url to save it in the profile")
	}
	if t.CAFile != "" {
		if abs, err := filepath.Abs(t.CAFile); err == nil {
			t.CAFile = abs
		}
	}
	t.apiKey, t.apiSecret = e.getenv("CUSTOS_API_KEY"), e.getenv("CUSTOS_API_SECRET")
	if (t.apiKey == "") != (t.apiSecret == "") {
		return target{}, usageErr("set both CUSTOS_API_KEY and CUSTOS_API_SECRET, or neither")
	}
	return t, nil
}

// userAgent names the CLI to core, which shows it in people's session lists: "custos/<version>
// (<os>/<arch>)", the version cut to printable ASCII.
func (e *env) userAgent() string {
	v := strings.Map(func(r rune) rune {
		if r <= 0x20 || r > 0x7e || r == '(' || r == ')' {
			return -1
		}
		return r
	}, e.version)
	if v == "" || len(v) > 64 {
		v = "dev"
	}
	return "custos/" + v + " (" + runtime.GOOS + "/" + runtime.GOARCH + ")"
}

// connect returns a client for the profile in force: an API key from the environment if set,
// else the profile's session.
func (e *env) connect() (*client.Client, target, error) {
	t, err := e.target()
	if err != nil {
		return nil, t, err
	}
	_, tokens, err := e.profilePaths()
	if err != nil {
		return nil, t, err
	}
	opts := []client.Option{client.WithTokenStore(fileStore{path: tokens}), client.WithUserAgent(e.userAgent())}
	if t.CAFile != "" {
		opts = append(opts, client.WithCAFile(t.CAFile))
	}
	if t.GRPC != "" {
		opts = append(opts, client.WithGRPC(t.GRPC))
	}
	if t.apiKey != "" {
		opts = append(opts, client.WithAPIKey(t.apiKey, t.apiSecret))
	}
	c, err := client.New(t.URL, opts...)
	if err != nil {
		return nil, t, usageErr("%v", err)
	}
	return c, t, nil
}

// secret reads a secret: the environment variable envName if set, else a prompt without echo
// when stdin is a terminal. what names it in the error.
func (e *env) secret(envName, prompt, what string) (string, error) {
	if v := e.getenv(envName); v != "" {
		return v, nil
	}
	fd, ok := terminal(e.stdin)
	if !ok {
		return "", &authError{msg: fmt.Sprintf("%s needed: set %s, or run in a terminal to be asked", what, envName)}
	}
	fmt.Fprint(e.stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return string(b), nil
}

// line reads a line with echo from a terminal stdin (a username).
func (e *env) line(prompt string) (string, bool) {
	if !e.stdinIsTerminal() {
		return "", false
	}
	fmt.Fprint(e.stderr, prompt)
	s, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && s == "" {
		return "", false
	}
	return strings.TrimSpace(s), true
}

// unlock makes sure c holds the master key when the tenant is zero-knowledge: the key is derived
// again from the password (CUSTOS_PASSWORD, or a prompt) for each run, since it is never stored.
func (e *env) unlock(ctx context.Context, c *client.Client) error {
	locked, err := c.Locked(ctx)
	if err != nil || !locked {
		return err
	}
	s, err := c.Session(ctx)
	if err != nil {
		return err
	}
	pw, err := e.secret("CUSTOS_PASSWORD", fmt.Sprintf("Password of %s (zero-knowledge tenant: it derives your master key): ", s.Username),
		"your password (this tenant is zero-knowledge: the master key is derived from it and never stored)")
	if err != nil {
		return err
	}
	return c.Unlock(ctx, pw)
}

// maxInput bounds data read from stdin (an item is at most a few MiB).
const maxInput = 16 << 20

// readData returns flag if set, else all of stdin (refusing a terminal with nothing piped in).
func (e *env) readData(flag string, set bool) (string, error) {
	if set {
		return flag, nil
	}
	if e.stdinIsTerminal() {
		fmt.Fprintln(e.stderr, "Reading the data from standard input; end with Ctrl-D.")
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, maxInput+1))
	if err != nil {
		return "", fmt.Errorf("read standard input: %w", err)
	}
	if len(b) > maxInput {
		return "", usageErr("standard input is over %d MiB", maxInput>>20)
	}
	if !utf8.Valid(b) {
		return "", usageErr("the data is not UTF-8 text: encode binary data first (e.g. base64)")
	}
	return string(b), nil
}
