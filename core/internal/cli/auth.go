package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

func (e *env) loginCommand() *cobra.Command {
	var (
		username, totpCode     string
		platformAdmin, pwStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in (password and TOTP code are asked without echo, or read from CUSTOS_PASSWORD and CUSTOS_TOTP_CODE)",
		Long: `Log in and keep the session (tokens only) in the profile, a 0600 file.

The password never leaves this machine: it is run through Argon2id with the parameters core's
prelogin answers (refused below 16 MiB, 2 passes, 1 lane) and only the derived value is sent. In a
zero-knowledge tenant the same derivation gives the master key, held in memory only: commands
that need it later derive it again (CUSTOS_PASSWORD, or a prompt).

The platform admin (CORE_ADMIN_USERNAME) logs in with --platform-admin: core set that password
from its configuration without the derivation.`,
		Args: cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if pwStdin && e.stdinIsTerminal() {
				// It would read the password with echo on: the prompt reads it without.
				return usageErr("--password-stdin reads a password piped in, and standard input is a terminal: leave it out to be asked without echo")
			}
			if totpCode != "" && recoveryCode(totpCode) {
				e.warn("a recovery code in --totp-code shows in ps and your shell history, and stays good until used; prefer the prompt or CUSTOS_TOTP_CODE")
			}
			c, t, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if t.apiKey != "" {
				return usageErr("CUSTOS_API_KEY is set: machines need no login (unset it to log a person in)")
			}
			user := firstNonEmpty(username, e.getenv("CUSTOS_USERNAME"), t.Username)
			if user == "" {
				if user, err = e.line(ctx, "Username: "); err != nil {
					return err
				}
				if user == "" {
					return usageErr("which user? give --username or set CUSTOS_USERNAME")
				}
			}
			var pw string
			if pwStdin {
				line, err := bufio.NewReader(e.input(ctx, e.stdin)).ReadString('\n')
				if err != nil && err != io.EOF {
					return fmt.Errorf("read the password from standard input: %w", err)
				}
				pw = strings.TrimRight(line, "\r\n")
			} else if pw, err = e.secret(ctx, "CUSTOS_PASSWORD", "Password: ", "a password"); err != nil {
				return err
			}
			totp := func(ctx context.Context) (string, error) {
				return e.secret(ctx, "CUSTOS_TOTP_CODE", "TOTP code (or a recovery code): ", "a TOTP code (--totp-code or CUSTOS_TOTP_CODE)")
			}
			if totpCode != "" {
				totp = func(context.Context) (string, error) { return totpCode, nil }
			}
			login := c.Login
			if platformAdmin {
				login = c.LoginPlatformAdmin
			}
			me, err := login(ctx, user, pw, totp)
			if err != nil {
				return err
			}
			t.settings.Username = user
			if err := e.saveSettings(t.settings); err != nil {
				return err
			}
			return e.print(me, func(w io.Writer) {
				fmt.Fprintf(w, "Logged in to %s as %s", t.URL, me.Username)
				switch {
				case me.PlatformAdmin:
					fmt.Fprint(w, " (platform admin)")
				case me.TenantID != "":
					fmt.Fprintf(w, " (%s of tenant %s)", me.Role, me.TenantID)
				}
				fmt.Fprintln(w, ".")
				if me.KeyMode == "CLIENT" {
					fmt.Fprintln(w, "Zero-knowledge tenant: your master key is never stored; item commands derive it again from your password (CUSTOS_PASSWORD, or they ask).")
				}
			})
		}),
	}
	cmd.Flags().StringVarP(&username, "username", "u", "", "username (default $CUSTOS_USERNAME, else the profile's)")
	cmd.Flags().StringVar(&totpCode, "totp-code", "", "TOTP code for accounts with MFA (default $CUSTOS_TOTP_CODE, else asked); not a recovery code, which stays good until used")
	cmd.Flags().BoolVar(&platformAdmin, "platform-admin", false, "log in as the platform admin (password not derived)")
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input (a pipe, not a terminal)")
	return cmd
}

func (e *env) logoutCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the session (--all: every session of the user) and forget its tokens",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Logout(cmd.Context(), all); err != nil {
				if all && (errors.Is(err, client.ErrUnauthenticated) || errors.Is(err, client.ErrNotLoggedIn)) {
					// Core ended nothing: this profile's session had ended, or there was none.
					return &hintedError{err: err, hint: "run: custos login, then custos logout --all again"}
				}
				return err
			}
			return e.print(map[string]bool{"loggedOut": true}, func(w io.Writer) { fmt.Fprintln(w, "Logged out.") })
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "end every session of the user, on every device")
	return cmd
}

func (e *env) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Describe the caller: the profile's user, or the API key of CUSTOS_API_KEY",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			me, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			return e.print(me, func(w io.Writer) {
				if me.PrincipalType == "apikey" {
					fmt.Fprintf(w, "API key %s of tenant %s, scopes %s\n", me.PrincipalID, me.TenantID, strings.Join(me.Scopes, ", "))
					return
				}
				fmt.Fprintf(w, "%s (%s), tenant %s, role %s, TOTP %v\n", me.Username, me.PrincipalID, orDash(me.TenantID), orDash(me.Role), me.MFAEnabled)
			})
		}),
	}
}

func (e *env) passwordCommand() *cobra.Command {
	var hint string
	cmd := &cobra.Command{
		Use:   "password",
		Short: "Change your password (CUSTOS_PASSWORD and CUSTOS_NEW_PASSWORD, or asked); ends your other sessions",
		Long: `Change your password. In a zero-knowledge tenant your keys move from the old master key to the
new one; no item is re-encrypted. There is no recovery: forget the new password and the data is
lost (the hint, --hint, is the only help, and is stored in plain text).`,
		Args: cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			cur, err := e.secret(cmd.Context(), "CUSTOS_PASSWORD", "Current password: ", "the current password")
			if err != nil {
				return err
			}
			next, err := e.newPassword(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.ChangePassword(cmd.Context(), cur, next, hint); err != nil {
				return err
			}
			return e.print(map[string]bool{"changed": true}, func(w io.Writer) {
				fmt.Fprintln(w, "Password changed; every other session has ended.")
			})
		}),
	}
	cmd.Flags().StringVar(&hint, "hint", "", "a password hint, stored in plain text (empty removes it)")
	return cmd
}

// newPassword reads a new password: CUSTOS_NEW_PASSWORD, or asked twice.
func (e *env) newPassword(ctx context.Context) (string, error) {
	if v := e.getenv("CUSTOS_NEW_PASSWORD"); v != "" {
		return v, nil
	}
	a, err := e.secret(ctx, "CUSTOS_NEW_PASSWORD", "New password (at least 12 characters): ", "a new password")
	if err != nil {
		return "", err
	}
	b, err := e.secret(ctx, "CUSTOS_NEW_PASSWORD", "Again: ", "a new password")
	if err != nil {
		return "", err
	}
	if a != b {
		return "", usageErr("the two passwords differ")
	}
	return a, nil
}

func (e *env) totpCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "totp", Short: "Two-factor authentication with TOTP codes"}
	var code string
	enroll := &cobra.Command{
		Use:   "enroll",
		Short: "Start TOTP: shows the QR code to scan, then asks for a first code (or: custos totp confirm CODE)",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			pw, err := e.secret(ctx, "CUSTOS_PASSWORD", "Password: ", "your password (to re-authenticate)")
			if err != nil {
				return err
			}
			en, err := c.EnrollTOTP(ctx, pw)
			if err != nil {
				return err
			}
			out := map[string]any{"secret": en.Secret, "otpauthUri": en.URI}
			if !e.json() {
				qr, err := renderQR(en.URI, e.stdoutIsTerminal())
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Scan this with your authenticator app:\n\n%s\nOr enter the secret: %s\n\n", qr, en.Secret)
			}
			if code == "" && e.stdinIsTerminal() {
				if code, err = e.secret(ctx, "CUSTOS_TOTP_CODE", "First code from the app: ", "a TOTP code"); err != nil {
					return err
				}
			}
			if code == "" {
				if e.json() {
					return e.printJSON(out)
				}
				fmt.Fprintln(e.stdout, "TOTP is not on yet: confirm with  custos totp confirm CODE")
				return nil
			}
			codes, err := c.ConfirmTOTP(ctx, code)
			if err != nil {
				return err
			}
			out["recoveryCodes"] = codes
			return e.print(out, func(w io.Writer) { printRecovery(w, codes) })
		}),
	}
	enroll.Flags().StringVar(&code, "code", "", "confirm at once with this code (a TOTP code: good for seconds, once)")
	confirm := &cobra.Command{
		Use:   "confirm [CODE]",
		Short: "Turn TOTP on with a first code (CODE, CUSTOS_TOTP_CODE, or asked); prints the recovery codes (once). Log in again afterwards",
		Args:  cobra.MaximumNArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var code string
			if len(args) == 1 {
				code = args[0]
			} else if code, err = e.secret(cmd.Context(), "CUSTOS_TOTP_CODE", "Code from the app: ", "a TOTP code (CODE, or CUSTOS_TOTP_CODE)"); err != nil {
				return err
			}
			codes, err := c.ConfirmTOTP(cmd.Context(), code)
			if err != nil {
				return err
			}
			return e.print(map[string]any{"recoveryCodes": codes}, func(w io.Writer) { printRecovery(w, codes) })
		}),
	}
	var disableCode string
	disable := &cobra.Command{
		Use:   "disable",
		Short: "Turn TOTP off (password and a current code); log in again afterwards",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if recoveryCode(disableCode) {
				e.warn("a recovery code in --code shows in ps and your shell history, and stays good until used; prefer the prompt or CUSTOS_TOTP_CODE")
			}
			pw, err := e.secret(cmd.Context(), "CUSTOS_PASSWORD", "Password: ", "your password")
			if err != nil {
				return err
			}
			code := disableCode
			if code == "" {
				if code, err = e.secret(cmd.Context(), "CUSTOS_TOTP_CODE", "Current code (or a recovery code): ", "a TOTP code (--code or CUSTOS_TOTP_CODE)"); err != nil {
					return err
				}
			}
			if err := c.DisableTOTP(cmd.Context(), pw, code); err != nil {
				return err
			}
			return e.print(map[string]bool{"disabled": true}, func(w io.Writer) {
				fmt.Fprintln(w, "TOTP is off. Every session has ended: log in again.")
			})
		}),
	}
	disable.Flags().StringVar(&disableCode, "code", "", "a current TOTP code (default $CUSTOS_TOTP_CODE, else asked); a recovery code rather there, it stays good until used")
	cmd.AddCommand(enroll, confirm, disable)
	return cmd
}

func printRecovery(w io.Writer, codes []string) {
	fmt.Fprintln(w, "TOTP is on. Recovery codes, each good once — keep them somewhere safe, they are not shown again:")
	for _, c := range codes {
		fmt.Fprintln(w, "  "+c)
	}
	fmt.Fprintln(w, "Every session has ended: log in again (custos login).")
}

// recoveryCode reports whether code is not a TOTP code (6 to 8 digits), so presumably a recovery
// code: those stay valid until used, which makes them worth keeping out of ps and shell history.
func recoveryCode(code string) bool {
	code = strings.TrimSpace(code)
	if code == "" {
		return false
	}
	if len(code) < 6 || len(code) > 8 {
		return true
	}
	return strings.Trim(code, "0123456789") != ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
