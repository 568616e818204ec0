package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

func (e *env) apikeysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "apikeys", Short: "Machine credentials of your tenant (owners and admins)"}
	var (
		name    string
		scopes  []string
		expires time.Duration
	)
	create := &cobra.Command{
		Use:   "create --name NAME --scope SCOPE [--scope SCOPE] [--expires 720h]",
		Short: "Issue an API key; its secret is shown once. Scopes: export, keys:rotate, users:manage",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if name == "" || len(scopes) == 0 {
				return usageErr("--name and at least one --scope are required")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var at time.Time
			if expires > 0 {
				at = time.Now().Add(expires)
			}
			k, err := c.CreateAPIKey(cmd.Context(), name, scopes, at)
			if err != nil {
				return err
			}
			return e.print(k, func(w io.Writer) {
				fmt.Fprintf(w, "API key %s (%s), scopes %s. The secret is shown only now:\n", k.Key.ID, k.Key.Name, strings.Join(k.Key.Scopes, ", "))
				fmt.Fprintf(w, "  export CUSTOS_API_KEY=%s\n  export CUSTOS_API_SECRET=%s\n", k.APIKey, k.APISecret)
			})
		}),
	}
	create.Flags().StringVar(&name, "name", "", "a name for people (required)")
	create.Flags().StringSliceVar(&scopes, "scope", nil, "export, keys:rotate or users:manage (repeat, or comma-separated)")
	create.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: never expires)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's API keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			keys, err := client.Collect(c.APIKeys(cmd.Context()))
			if err != nil {
				return err
			}
			if keys == nil {
				keys = []client.APIKey{}
			}
			return e.print(keys, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED BY\tLAST USED\tSTATE")
				for _, k := range keys {
					state := "active"
					switch {
					case !k.RevokedAt.IsZero():
						state = "revoked"
					case !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(time.Now()):
						state = "expired"
					}
					by := k.CreatedByUsername
					if by == "" {
						by = "-" // deleted since, or unknown
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, oneLine(k.Name), strings.Join(k.Scopes, ","), by, when(k.LastUsedAt), state)
				}
				tw.Flush()
			})
		}),
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Make an API key stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.RevokeAPIKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.print(map[string]string{"revoked": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Revoked %s.\n", args[0]) })
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (e *env) usersCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "People of a tenant (owners, admins, the platform admin, machines with users:manage)"}
	var tenant, role, hint string
	create := &cobra.Command{
		Use:   "create USERNAME [--role member|admin|owner] [--tenant ID] [--hint HINT]",
		Short: "Add a person; their password (CUSTOS_NEW_PASSWORD, or asked twice) is derived here, core never sees it",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			r, err := parseRole(role)
			if err != nil {
				return usageErr("--role: want member, admin or owner, got %q", role)
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			tid, err := e.tenantOf(cmd.Context(), c, tenant)
			if err != nil {
				return err
			}
			pw, err := e.newPassword(cmd.Context())
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), tid, client.NewUser{Username: args[0], Password: pw, Role: r, PasswordHint: hint})
			if err != nil {
				return err
			}
			return e.print(u, func(w io.Writer) {
				fmt.Fprintf(w, "Created %s (%s, %s) in tenant %s.\n", u.Username, u.ID, u.Role, u.TenantID)
			})
		}),
	}
	create.Flags().StringVar(&role, "role", "member", "member, admin or owner")
	create.Flags().StringVar(&tenant, "tenant", "", "tenant id (default: your own)")
	create.Flags().StringVar(&hint, "hint", "", "a password hint, stored in plain text")
	var listTenant string
	list := &cobra.Command{
		Use:   "list [--tenant ID]",
		Short: "List a tenant's users",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			tid, err := e.tenantOf(cmd.Context(), c, listTenant)
			if err != nil {
				return err
			}
			users, err := client.Collect(c.Users(cmd.Context(), tid))
			if err != nil {
				return err
			}
			if users == nil {
				users = []client.User{}
			}
			return e.print(users, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tUSERNAME\tROLE\tTOTP\tSTATE")
				for _, u := range users {
					state := "enabled"
					if u.Disabled {
						state = "disabled"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", u.ID, u.Username, u.Role, u.MFAEnabled, state)
				}
				tw.Flush()
			})
		}),
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "tenant id (default: your own)")
	cmd.AddCommand(create, list, e.usersDisable(), e.usersEnable(), e.usersSetRole(), e.usersDelete())
	return cmd
}

func (e *env) usersDisable() *cobra.Command {
	return e.userChange(&cobra.Command{
		Use:   "disable USER_ID|USERNAME [--tenant ID]",
		Short: "Stop a user from logging in; their sessions end at once",
		Args:  cobra.ExactArgs(1),
	}, func(ctx context.Context, c *client.Client, id string, _ []string) (client.User, error) {
		return c.DisableUser(ctx, id)
	}, func(u client.User) string { return fmt.Sprintf("Disabled %s (%s).", u.Username, u.ID) })
}

func (e *env) usersEnable() *cobra.Command {
	return e.userChange(&cobra.Command{
		Use:   "enable USER_ID|USERNAME [--tenant ID]",
		Short: "Let a disabled user log in again",
		Args:  cobra.ExactArgs(1),
	}, func(ctx context.Context, c *client.Client, id string, _ []string) (client.User, error) {
		return c.EnableUser(ctx, id)
	}, func(u client.User) string { return fmt.Sprintf("Enabled %s (%s).", u.Username, u.ID) })
}

func (e *env) usersSetRole() *cobra.Command {
	return e.userChange(&cobra.Command{
		Use:   "set-role USER_ID|USERNAME member|admin|owner [--tenant ID]",
		Short: "Change a user's role; only owners and the platform admin make owners, and a tenant keeps at least one owner",
		Args:  cobra.ExactArgs(2),
	}, func(ctx context.Context, c *client.Client, id string, args []string) (client.User, error) {
		return c.SetUserRole(ctx, id, args[1])
	}, func(u client.User) string { return fmt.Sprintf("%s (%s) is now %s.", u.Username, u.ID, u.Role) })
}

// userChange completes cmd (Use, Short, Args set; its first argument USER_ID|USERNAME) into a
// command that checks a ROLE second argument if there is one, resolves the user (a username in
// --tenant, default the caller's own), applies change and prints the user, or done's line.
func (e *env) userChange(cmd *cobra.Command, change func(ctx context.Context, c *client.Client, id string, args []string) (client.User, error),
	done func(client.User) string,
) *cobra.Command {
	var tenant string
	cmd.RunE = run(func(cmd *cobra.Command, args []string) error {
		if len(args) > 1 {
			role, err := parseRole(args[1])
			if err != nil {
				return err
			}
			args = []string{args[0], role}
		}
		c, _, err := e.connect()
		if err != nil {
			return err
		}
		defer c.Close()
		id, err := e.userArg(cmd.Context(), c, tenant, args[0])
		if err != nil {
			return err
		}
		u, err := change(cmd.Context(), c, id, args)
		if err != nil {
			return err
		}
		return e.print(u, func(w io.Writer) { fmt.Fprintln(w, done(u)) })
	})
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant to look the username up in (default: your own)")
	return cmd
}

// parseRole checks a ROLE argument: member, admin or owner, in any case. Anything else is a usage
// error.
func parseRole(s string) (string, error) {
	switch r := strings.ToLower(strings.TrimSpace(s)); r {
	case "member", "admin", "owner":
		return r, nil
	}
	return "", usageErr("ROLE: want member, admin or owner, got %q", s)
}

func (e *env) usersDelete() *cobra.Command {
	var tenant string
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete USER_ID|USERNAME [--tenant ID] [--yes]",
		Short: "Delete a user with their items and destroy their keys (crypto-shredding); it cannot be undone",
		Long: `Delete a user with their sessions and vault items, and have the encryption service destroy
their personal key context, so that nothing encrypted under it (exports and backups included) can
be decrypted again. It cannot be undone.

Without --yes, custos asks you to type the username on the terminal; with no terminal, --yes is
required. The answer says whether the keys were destroyed ("done"), could not be yet because the
encryption service was unreachable ("pending": core keeps retrying), or there were none ("none").`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if !yes && !e.stdinIsTerminal() {
				return usageErr("deleting a user cannot be undone: confirm with --yes (there is no terminal to ask on)")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			u, err := e.user(cmd.Context(), c, tenant, args[0])
			if err != nil {
				return err
			}
			if !yes {
				if err := e.confirmDelete(cmd.Context(), u); err != nil {
					return err
				}
			}
			d, err := c.DeleteUser(cmd.Context(), u.ID)
			if err != nil {
				return err
			}
			return e.print(d, func(w io.Writer) {
				fmt.Fprintf(w, "Deleted %s (%s). %s\n", u.Username, u.ID, erasureText(d.KeyErasure))
			})
		}),
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant to look the username up in (default: your own)")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	return cmd
}

// confirmDelete has the operator type u's username on the terminal; anything else, or no answer,
// is an error and nothing is deleted.
func (e *env) confirmDelete(ctx context.Context, u client.User) error {
	fmt.Fprintf(e.stderr, "This deletes %s (%s) with all their items and destroys their keys: nothing encrypted for them,\n"+
		"exports and backups included, can be decrypted again.\n", u.Username, u.ID)
	typed, err := e.line(ctx, fmt.Sprintf("Type the username (%s) to confirm: ", u.Username))
	if err != nil {
		return err
	}
	if !strings.EqualFold(typed, u.Username) {
		return errors.New("not confirmed: nothing was deleted")
	}
	return nil
}

// erasureText tells people what DeletedUser.KeyErasure means.
func erasureText(keyErasure string) string {
	switch keyErasure {
	case client.KeyErasureDone:
		return "Their keys were destroyed: their ciphertext, exports and backups included, can no longer be decrypted."
	case client.KeyErasurePending:
		return "The encryption service could not be reached: the destruction of their keys is queued and core keeps retrying until it succeeds."
	case client.KeyErasureNone:
		return "They had no keys to destroy."
	}
	return "This core does not report whether their keys were destroyed."
}

// tenantOf returns flag, else the caller's own tenant.
func (e *env) tenantOf(ctx context.Context, c *client.Client, flag string) (string, error) {
	return e.tenantOrOwn(ctx, c, flag, "--tenant ID")
}

// tenantOrOwn returns id, else the caller's own tenant. The platform admin, who belongs to none,
// gets a usage error telling them to give how.
func (e *env) tenantOrOwn(ctx context.Context, c *client.Client, id, how string) (string, error) {
	if id != "" {
		return id, nil
	}
	me, err := c.Me(ctx)
	if err != nil {
		return "", err
	}
	if me.TenantID == "" {
		return "", usageErr("the platform admin belongs to no tenant: give %s", how)
	}
	return me.TenantID, nil
}

// userArg returns the id of a USER_ID|USERNAME argument: a UUID in its canonical form (the only
// one core takes), a username looked up in tenant (default: the caller's own).
func (e *env) userArg(ctx context.Context, c *client.Client, tenant, arg string) (string, error) {
	if id, err := uuid.Parse(arg); err == nil {
		return id.String(), nil
	}
	u, err := e.findUser(ctx, c, tenant, arg)
	return u.ID, err
}

// user describes the user of a USER_ID|USERNAME argument (NOT_FOUND when there is none).
func (e *env) user(ctx context.Context, c *client.Client, tenant, arg string) (client.User, error) {
	if id, err := uuid.Parse(arg); err == nil {
		return c.GetUser(ctx, id.String())
	}
	return e.findUser(ctx, c, tenant, arg)
}

// findUser finds a username in a tenant (default: the caller's own); NOT_FOUND when it is not
// there.
func (e *env) findUser(ctx context.Context, c *client.Client, tenant, username string) (client.User, error) {
	tid, err := e.tenantOf(ctx, c, tenant)
	if err != nil {
		return client.User{}, err
	}
	for u, err := range c.Users(ctx, tid) {
		if err != nil {
			return client.User{}, err
		}
		if strings.EqualFold(u.Username, username) {
			return u, nil
		}
	}
	return client.User{}, notFound("no user %q in tenant %s", username, tid)
}

func (e *env) tenantsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Tenants: create and list (platform admin), get (its members), update (its owners)"}
	var keyMode string
	var noHints bool
	create := &cobra.Command{
		Use:   "create NAME [--key-mode PLATFORM|CLIENT] [--no-password-hints]",
		Short: "Create a tenant on the platform's encryption service; CLIENT makes it zero-knowledge",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			mode := strings.ToUpper(keyMode)
			if mode != "PLATFORM" && mode != "CLIENT" {
				return usageErr("--key-mode: PLATFORM or CLIENT")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			nt := client.NewTenant{Name: args[0], KeyMode: mode}
			if noHints {
				off := false
				nt.PasswordHints = &off
			}
			t, err := c.CreateTenant(cmd.Context(), nt)
			if err != nil {
				return err
			}
			return e.print(t, func(w io.Writer) { fmt.Fprintf(w, "Created tenant %s (%s, %s).\n", t.Name, t.ID, t.KeyMode) })
		}),
	}
	create.Flags().StringVar(&keyMode, "key-mode", "PLATFORM", "PLATFORM (keys managed by the platform) or CLIENT (zero-knowledge)")
	create.Flags().BoolVar(&noHints, "no-password-hints", false, "switch password hints off for this tenant")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ts, err := client.Collect(c.Tenants(cmd.Context()))
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []client.Tenant{}
			}
			return e.print(ts, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tKEY MODE\tENCRYPTION SERVICE")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, oneLine(t.Name), t.KeyMode, t.EndpointKind)
				}
				tw.Flush()
			})
		}),
	}
	cmd.AddCommand(create, list, e.tenantsGet(), e.tenantsUpdate(), e.tenantsDelete())
	return cmd
}

func (e *env) tenantsGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get [ID]",
		Short: "Describe a tenant (default: your own)",
		Args:  cobra.MaximumNArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			id, err = e.tenantOrOwn(cmd.Context(), c, id, "the tenant's ID: custos tenants get ID")
			if err != nil {
				return err
			}
			t, err := c.GetTenant(cmd.Context(), id)
			if err != nil {
				return err
			}
			return e.print(t, func(w io.Writer) { printTenant(w, t) })
		}),
	}
}

func printTenant(w io.Writer, t client.Tenant) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", t.ID)
	fmt.Fprintf(tw, "Name\t%s\n", oneLine(t.Name))
	fmt.Fprintf(tw, "Key mode\t%s\n", t.KeyMode)
	fmt.Fprintf(tw, "Encryption service\t%s\n", t.EndpointKind)
	fmt.Fprintf(tw, "Password hints\t%s\n", onOff(t.PasswordHintsEnabled))
	fmt.Fprintf(tw, "Created\t%s\n", when(t.CreatedAt))
	tw.Flush()
}

func (e *env) tenantsUpdate() *cobra.Command {
	var name, hints string
	cmd := &cobra.Command{
		Use:   "update ID [--name NAME] [--password-hints on|off]",
		Short: "Rename a tenant (platform admin) or switch its password hints (platform admin, the tenant's owners)",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			var u client.TenantUpdate
			if cmd.Flags().Changed("name") {
				u.Name = &name
			}
			if cmd.Flags().Changed("password-hints") {
				on, err := parseOnOff("--password-hints", hints)
				if err != nil {
					return err
				}
				u.PasswordHints = &on
			}
			if u.Name == nil && u.PasswordHints == nil {
				return usageErr("nothing to change: give --name, --password-hints or both")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.UpdateTenant(cmd.Context(), args[0], u)
			if err != nil {
				return err
			}
			return e.print(t, func(w io.Writer) {
				fmt.Fprintf(w, "Updated tenant %s (%s): password hints %s.\n", oneLine(t.Name), t.ID, onOff(t.PasswordHintsEnabled))
			})
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "the tenant's new name")
	cmd.Flags().StringVar(&hints, "password-hints", "", "on: users may set and read password hints; off: they may not")
	return cmd
}

func (e *env) tenantsDelete() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete ID [--yes]",
		Short: "Delete a tenant with everything of it and destroy its keys (crypto-shredding); it cannot be undone",
		Long: `Delete a tenant with its people, their items, its API keys and its jobs (platform admin only),
and have the platform's encryption service destroy the tenant there, every key of it, so that
nothing encrypted for the tenant (exports and backups included) can be decrypted again. It cannot
be undone; the tenant's audit trail stays.

Without --yes, custos asks you to type the tenant's name on the terminal; with no terminal, --yes is
required. The answer says whether the keys were destroyed ("done"), could not be yet ("pending":
core keeps retrying), or are on the tenant's own encryption service, which core does not touch
("hosted": its operator destroys them there).`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			if !yes && !e.stdinIsTerminal() {
				return usageErr("deleting a tenant cannot be undone: confirm with --yes (there is no terminal to ask on)")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.GetTenant(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintf(e.stderr, "This deletes tenant %s (%s) with all its people and items and destroys its keys:\n"+
					"nothing encrypted for it, exports and backups included, can be decrypted again.\n", oneLine(t.Name), t.ID)
				typed, err := e.line(cmd.Context(), "Type the tenant's name to confirm: ")
				if err != nil {
					return err
				}
				if typed != t.Name {
					return errors.New("not confirmed: nothing was deleted")
				}
			}
			d, err := c.DeleteTenant(cmd.Context(), t.ID, t.Name)
			if err != nil {
				return err
			}
			return e.print(d, func(w io.Writer) {
				fmt.Fprintf(w, "Deleted tenant %s (%s). %s\n", oneLine(t.Name), t.ID, tenantErasureText(d.KeyErasure))
			})
		}),
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation (required without a terminal)")
	return cmd
}

// tenantErasureText tells people what DeletedTenant.KeyErasure means.
func tenantErasureText(keyErasure string) string {
	switch keyErasure {
	case client.KeyErasureDone:
		return "Its keys were destroyed: its ciphertext, exports and backups included, can no longer be decrypted."
	case client.KeyErasurePending:
		return "The encryption service could not be reached: the destruction of its keys is queued and core keeps retrying until it succeeds."
	case client.KeyErasureHosted:
		return "Its keys are on its own encryption service, which core does not touch: destroy the tenant there."
	}
	return "This core does not report whether its keys were destroyed."
}

// parseOnOff reads flag's value: on or off, in any case. Anything else is a usage error.
func parseOnOff(flag, v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, usageErr("%s: want on or off, got %q", flag, v)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}
