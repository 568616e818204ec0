package cli

import (
	"fmt"
	"io"
	"iter"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

// maxAuditLimit is the most events one audit command prints: one page of core's.
const maxAuditLimit = 1000

func (e *env) auditCommand() *cobra.Command {
	var actor, action, tenant string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--actor USER_ID|USERNAME] [--action ACTION] [--tenant ID] [--limit N]",
		Short: "Your tenant's audit trail, newest first (owners and admins; the platform admin: any tenant's)",
		Long: `Your tenant's audit trail, newest first: logins, refusals and changes, with who did them
and the outcome ("ok", or the gRPC code of the failure). Events never hold plaintext, keys or
secrets. --actor takes a user's or an API key's id, or a username of your tenant; --action an
action such as auth.login, user.disable or authz.denied. The platform admin reads every event of
the platform, or one tenant's with --tenant (a deleted tenant's too).`,
		Args: cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > maxAuditLimit {
				return usageErr("--limit: want 1 to %d, got %d", maxAuditLimit, limit)
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			f := client.AuditFilter{Action: action, PageSize: limit, TenantID: tenant}
			if actor != "" {
				if f.ActorID, err = e.userArg(cmd.Context(), c, tenant, actor); err != nil {
					return err
				}
			}
			events, err := firstN(c.AuditEvents(cmd.Context(), f), limit)
			if err != nil {
				return err
			}
			return e.print(events, func(w io.Writer) { printAudit(w, events) })
		}),
	}
	cmd.Flags().StringVar(&actor, "actor", "", "only this actor's events: a user's or API key's id, or a username")
	cmd.Flags().StringVar(&action, "action", "", "only this action, e.g. user.disable")
	cmd.Flags().StringVar(&tenant, "tenant", "", "the platform admin: only this tenant's events (default: every event)")
	cmd.Flags().IntVar(&limit, "limit", 50, fmt.Sprintf("at most this many events (1 to %d)", maxAuditLimit))
	return cmd
}

func printAudit(w io.Writer, events []client.AuditEvent) {
	// Events of several tenants (the platform admin's view) say whose they are.
	tenants := false
	for _, ev := range events {
		tenants = tenants || ev.TenantID != events[0].TenantID
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if tenants {
		fmt.Fprint(tw, "TENANT\t")
	}
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tTARGET\tOUTCOME")
	for _, ev := range events {
		actor := ev.ActorID
		if actor == "" {
			actor = ev.ActorType
		}
		if tenants {
			t := ev.TenantID
			if t == "" {
				t = "(platform)"
			}
			fmt.Fprintf(tw, "%s\t", t)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format(time.DateTime), actor, ev.Action, oneLine(ev.Target), ev.Outcome)
	}
	tw.Flush()
}

// firstN gathers at most n values of seq, stopping there or at its first error. The slice is
// never nil, so that JSON shows an empty array.
func firstN[T any](seq iter.Seq2[T, error], n int) ([]T, error) {
	out := []T{}
	if n <= 0 {
		return out, nil
	}
	for v, err := range seq {
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if len(out) == n {
			break
		}
	}
	return out, nil
}
