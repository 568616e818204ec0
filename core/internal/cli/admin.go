package cli

import (
	"context"
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
				fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tLAST USED\tSTATE")
				for _, k := range keys {
					state := "active"
					switch {
					case !k.RevokedAt.IsZero():
						state = "revoked"
					case !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(time.Now()):
						state = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, oneLine(k.Name), strings.Join(k.Scopes, ","), when(k.LastUsedAt), state)
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
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			tid, err := e.tenantOf(cmd.Context(), c, tenant)
			if err != nil {
				return err
			}
			pw, err := e.newPassword()
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), tid, client.NewUser{Username: args[0], Password: pw, Role: role, PasswordHint: hint})
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
	var disableTenant string
	disable := &cobra.Command{
		Use:   "disable USER_ID|USERNAME [--tenant ID]",
		Short: "Stop a user from logging in; their sessions end at once",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			id := args[0]
			if _, err := uuid.Parse(id); err != nil {
				if id, err = e.userID(cmd.Context(), c, disableTenant, args[0]); err != nil {
					return err
				}
			}
			u, err := c.DisableUser(cmd.Context(), id)
			if err != nil {
				return err
			}
			return e.print(u, func(w io.Writer) { fmt.Fprintf(w, "Disabled %s (%s).\n", u.Username, u.ID) })
		}),
	}
	disable.Flags().StringVar(&disableTenant, "tenant", "", "tenant to look the username up in (default: your own)")
	cmd.AddCommand(create, list, disable)
	return cmd
}

// tenantOf returns flag, else the caller's own tenant.
func (e *env) tenantOf(ctx context.Context, c *client.Client, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	me, err := c.Me(ctx)
	if err != nil {
		return "", err
	}
	if me.TenantID == "" {
		return "", usageErr("the platform admin belongs to no tenant: give --tenant ID")
	}
	return me.TenantID, nil
}

// userID finds a username's id in a tenant.
func (e *env) userID(ctx context.Context, c *client.Client, tenant, username string) (string, error) {
	tid, err := e.tenantOf(ctx, c, tenant)
	if err != nil {
		return "", err
	}
	for u, err := range c.Users(ctx, tid) {
		if err != nil {
			return "", err
		}
		if strings.EqualFold(u.Username, username) {
			return u.ID, nil
		}
	}
	return "", &client.Error{HTTPStatus: 404, Code: "NOT_FOUND", Message: fmt.Sprintf("no user %q in tenant %s", username, tid)}
}

func (e *env) tenantsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Tenants (platform admin only)"}
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
	cmd.AddCommand(create, list)
	return cmd
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}
