package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

func (e *env) itemsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "items",
		Short: "Your private items, stored by core only encrypted",
		Long: `Your private items. Core stores them only as ciphertext; in a zero-knowledge tenant only your
master key opens them, and these commands derive it from your password (CUSTOS_PASSWORD, or they
ask) for each run.`,
	}
	cmd.AddCommand(e.itemsPut(), e.itemsGet(), e.itemsList(), e.itemsEdit(), e.itemsRm())
	return cmd
}

// vault connects and, in a zero-knowledge tenant, derives the master key.
func (e *env) vault(cmd *cobra.Command) (*client.Client, error) {
	c, _, err := e.connect()
	if err != nil {
		return nil, err
	}
	// A machine (CUSTOS_API_KEY) goes on: core refuses it with a clear 403.
	if err := e.unlock(cmd.Context(), c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (e *env) itemsPut() *cobra.Command {
	var name string
	var data dataFlags
	cmd := &cobra.Command{
		Use:   "put --name NAME [--data-file PATH | --data STRING] < DATA",
		Short: "Store a new item; the data comes from standard input (or --data-file). Prints its id",
		Long: `Store a new item. Its data comes from standard input, or from the file of --data-file PATH.
--data STRING also works (for scripts that build the data themselves), but the data then shows in
the process list (ps) and in the shell's history: on a terminal custos warns about it.`,
		Args: cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageErr("--name is required")
			}
			body, err := e.readData(cmd, data)
			if err != nil {
				return err
			}
			c, err := e.vault(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			it, err := c.PutItem(cmd.Context(), name, body)
			if err != nil {
				return err
			}
			return e.print(it, func(w io.Writer) { fmt.Fprintln(w, it.ID) })
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "the item's name (required)")
	data.register(cmd, "the item's data")
	return cmd
}

func (e *env) itemsGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print an item's data (--output json: the whole item)",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, err := e.vault(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			it, err := c.GetItem(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(it, func(w io.Writer) {
				data := it.Data
				if e.stdoutIsTerminal() && !strings.HasSuffix(data, "\n") {
					data += "\n"
				}
				_, _ = io.WriteString(w, data) // a closed stdout shows as the shell's error

			})
		}),
	}
}

func (e *env) itemsList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List your items, newest first (--output json: with their data)",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := e.vault(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			items, err := client.Collect(c.ListItems(cmd.Context()))
			if err != nil {
				return err
			}
			if items == nil {
				items = []client.Item{}
			}
			return e.print(items, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tREVISION\tUPDATED\tNAME")
				for _, it := range items {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", it.ID, it.Revision, it.UpdatedAt.Local().Format(time.DateTime), oneLine(it.Name))
				}
				tw.Flush()
			})
		}),
	}
}

func (e *env) itemsEdit() *cobra.Command {
	var name string
	var data dataFlags
	cmd := &cobra.Command{
		Use:   "edit ID [--name NAME] [--data-file PATH | --data STRING] [< DATA]",
		Short: "Replace an item's data (from standard input or --data-file) and/or name, at the revision just read",
		Long: `Replace an item's data (from standard input, or --data-file PATH) and, with --name, its name.
The change is made only if nobody changed the item since it was read here: otherwise exit code 5
(conflict) and nothing changes. With only --name, the data is kept. --data STRING works too, but
shows the data in ps and the shell's history (custos warns on a terminal).`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := e.vault(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			it, err := c.GetItem(ctx, args[0])
			if err != nil {
				return err
			}
			newData := it.Data
			if data.given(cmd) || !cmd.Flags().Changed("name") {
				if newData, err = e.readData(cmd, data); err != nil {
					return err
				}
			}
			newName := it.Name
			if cmd.Flags().Changed("name") {
				newName = name
			}
			updated, err := c.UpdateItem(ctx, it.ID, it.Revision, newName, newData)
			if err != nil {
				return err
			}
			return e.print(updated, func(w io.Writer) {
				fmt.Fprintf(w, "%s revision %d\n", updated.ID, updated.Revision)
			})
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "a new name")
	data.register(cmd, "the new data")
	return cmd
}

func (e *env) itemsRm() *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Delete an item",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect() // deleting needs no master key
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.DeleteItem(cmd.Context(), args[0]); err != nil {
				return err
			}
			return e.print(map[string]string{"deleted": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "Deleted %s.\n", args[0]) })
		}),
	}
}

// oneLine keeps a name on its line of a table.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
	if len([]rune(s)) > 60 {
		s = string([]rune(s)[:59]) + "…"
	}
	return s
}
