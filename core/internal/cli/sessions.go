package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

func (e *env) sessionsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Your open sessions (one per login), and ending one you do not recognise"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List your open sessions, newest first; * marks this profile's",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			sessions, err := c.Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if sessions == nil {
				sessions = []client.SessionInfo{}
			}
			return e.print(sessions, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "\tID\tFROM\tCLIENT\tLOGGED IN\tLAST REFRESHED")
				for _, s := range sessions {
					mark := ""
					if s.Current {
						mark = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mark, s.ID, oneLine(s.RemoteAddr), oneLine(s.UserAgent), when(s.CreatedAt), when(s.LastRefreshedAt))
				}
				tw.Flush()
			})
		}),
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "End one of your sessions at once (its tokens stop working); your own current one logs you out",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.RevokeSession(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.print(map[string]string{"revoked": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Ended session %s.\n", args[0]) })
		}),
	}
	cmd.AddCommand(list, revoke)
	return cmd
}
