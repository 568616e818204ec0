package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/custos-platform/custos/core/client"
)

// target is where and how to reach core, resolved from flags, environment and profile.
type target struct {
	settings
	saved             settings // the profile's own, as login saved them
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
	}, saved: saved}
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
// else the profile's session. The session is only ever sent to the core it was opened at (the SDK
// refuses it elsewhere with client.ErrOtherServer); one saved before sessions named their core
// belongs to the core the profile was saved with.
func (e *env) connect() (*client.Client, target, error) {
	t, err := e.target()
	if err != nil {
		return nil, t, err
	}
	_, tokens, err := e.profilePaths()
	if err != nil {
		return nil, t, err
	}
	store := fileStore{path: tokens, url: t.saved.URL, grpc: t.saved.GRPC}
	opts := []client.Option{client.WithTokenStore(store), client.WithUserAgent(e.userAgent())}
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
// when stdin is a terminal. what names it in the error. Ctrl-C (ctx ending) at the prompt gives
// up at once, with the terminal's echo back on.
func (e *env) secret(ctx context.Context, envName, prompt, what string) (string, error) {
	if v := e.getenv(envName); v != "" {
		return v, nil
	}
	fd, ok := terminal(e.stdin)
	if !ok {
		return "", &authError{msg: fmt.Sprintf("%s needed: set %s, or run in a terminal to be asked", what, envName)}
	}
	fmt.Fprint(e.stderr, prompt)
	b, err := readSecret(ctx, fd)
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return string(b), nil
}

// readSecret reads a line without echo from the terminal fd, or gives up when ctx ends: the read
// goes on in the background (the process is about to exit), the terminal's state is restored now.
func readSecret(ctx context.Context, fd int) ([]byte, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		_ = term.Restore(fd, state) // best effort: the echo comes back
		return nil, ctx.Err()
	}
}

// warn writes a warning line to stderr, except with --output json, whose standard error holds
// only the JSON error, if any.
func (e *env) warn(format string, args ...any) {
	if !e.json() {
		fmt.Fprintf(e.stderr, "custos: warning: "+format+"\n", args...)
	}
}

// line reads a line with echo from a terminal stdin (a username, a confirmation): "" when stdin is
// not a terminal or gives no answer; ctx's error when it ends first (Ctrl-C).
func (e *env) line(ctx context.Context, prompt string) (string, error) {
	if !e.stdinIsTerminal() {
		return "", nil
	}
	fmt.Fprint(e.stderr, prompt)
	s, err := bufio.NewReader(e.input(ctx, e.stdin)).ReadString('\n')
	if cerr := ctx.Err(); cerr != nil {
		fmt.Fprintln(e.stderr)
		return "", cerr
	}
	if err != nil && s == "" {
		return "", nil
	}
	return strings.TrimSpace(s), nil
}

// input returns r read so that ctx ending (Ctrl-C) ends a read blocked on it at once, with ctx's
// error: a terminal waiting for a line, a pipe that stalls. Main keeps SIGINT trapped until then.
func (e *env) input(ctx context.Context, r io.Reader) io.Reader {
	return &ctxReader{ctx: ctx, r: r}
}

// ctxReader is an io.Reader whose Read returns ctx's error as soon as ctx ends. The read under
// way goes on in the background, into a buffer of its own, and its result is dropped: the
// process is about to exit, and the reader is not read again.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	buf []byte
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if len(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	buf := c.buf[:len(p)]
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.r.Read(buf)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return copy(p, buf[:r.n]), r.err
	case <-c.ctx.Done():
		c.buf = nil // the abandoned read may still write into buf
		return 0, c.ctx.Err()
	}
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
	pw, err := e.secret(ctx, "CUSTOS_PASSWORD", fmt.Sprintf("Password of %s (zero-knowledge tenant: it derives your master key): ", s.Username),
		"your password (this tenant is zero-knowledge: the master key is derived from it and never stored)")
	if err != nil {
		return err
	}
	return c.Unlock(ctx, pw)
}

// maxInput bounds data read from stdin or a file (an item is at most a few MiB).
const maxInput = 16 << 20

// dataFlags are the flags of an item's data: --data STRING or --data-file PATH ("-": standard
// input), else standard input.
type dataFlags struct {
	data, file string
}

func (d *dataFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&d.data, "data", "", what+" as an argument: it shows in ps and shell history, prefer --data-file or standard input")
	cmd.Flags().StringVar(&d.file, "data-file", "", what+" from the file PATH (- for standard input, the default)")
	cmd.MarkFlagsMutuallyExclusive("data", "data-file")
}

// given reports whether the command line gives the data (else it comes from standard input only
// when the command needs it).
func (d *dataFlags) given(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("data") || cmd.Flags().Changed("data-file")
}

// readData returns the data: --data (with a warning on a terminal, where it was typed into the
// shell's history), --data-file, else all of stdin (telling a terminal how to end it).
func (e *env) readData(cmd *cobra.Command, d dataFlags) (string, error) {
	if cmd.Flags().Changed("data") {
		if e.stdinIsTerminal() {
			e.warn("--data shows the item's data in the process list (ps) and your shell history; use --data-file PATH or standard input")
		}
		return d.data, nil
	}
	if d.file != "" && d.file != "-" {
		f, err := os.Open(d.file)
		if err != nil {
			return "", fmt.Errorf("--data-file: %w", err)
		}
		defer f.Close()
		return readText(e.input(cmd.Context(), f), d.file) // a FIFO may stall too
	}
	if e.stdinIsTerminal() {
		fmt.Fprintln(e.stderr, "Reading the data from standard input; end with Ctrl-D.")
	}
	return readText(e.input(cmd.Context(), e.stdin), "standard input")
}

// readText reads all of r, which must be UTF-8 text of at most maxInput bytes. A read that r ends
// with its context's error (Ctrl-C) returns that error.
func readText(r io.Reader, name string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxInput {
		return "", usageErr("%s is over %d MiB", name, maxInput>>20)
	}
	if !utf8.Valid(b) {
		return "", usageErr("the data in %s is not UTF-8 text: encode binary data first (e.g. base64)", name)
	}
	return string(b), nil
}
