package app

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/config"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// erasures runs "core erasures list" and "core erasures forget ID --yes": what core still owes
// the encryption services to destroy (deleted users' key contexts, deleted tenants), and dropping
// one that an operator destroyed by other means.
func erasures(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	usageErr := fmt.Errorf("%w: erasures list | erasures forget ID --yes\n\n%s", ErrUsage, usage)
	if len(args) == 0 {
		return usageErr
	}
	switch {
	case args[0] == "list" && len(args) == 1:
	case args[0] == "forget" && len(args) == 3 && args[2] == "--yes":
	case args[0] == "forget" && len(args) == 2:
		return fmt.Errorf("%w: erasures forget: core stops trying to destroy %s; confirm with --yes once it is destroyed by other means", ErrUsage, args[1])
	default:
		return usageErr
	}
	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	store, done, err := openStore(ctx, db)
	if err != nil {
		return err
	}
	defer done()
	if args[0] == "list" {
		return listErasures(ctx, store, stdout)
	}
	id, err := uuid.Parse(args[1])
	if err != nil {
		return fmt.Errorf("%w: erasures forget: ID: want the UUID of a key context or encryption-service tenant (see: core erasures list)", ErrUsage)
	}
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	if err := store.ForgetErasure(ctx, id, postgres.AuditEvent{
		ActorType: postgres.ActorSystem, Action: "keys.erase.forget", Outcome: "ok", RequestID: actor,
	}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "forgot the erasure of %s: core no longer tries to destroy it\n", id)
	return nil
}

func listErasures(ctx context.Context, store *postgres.Store, stdout io.Writer) error {
	keys, tenants, err := store.PendingErasures(ctx)
	if err != nil {
		return err
	}
	if len(keys)+len(tenants) == 0 {
		fmt.Fprintln(stdout, "no erasure is pending")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tID\tTENANT\tWHY\tREQUESTED\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
	at := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	for _, e := range keys {
		fmt.Fprintf(tw, "key context\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.EncryptionID, e.TenantID, e.Reason, at(e.RequestedAt), e.Attempts,
			at(e.NextAttemptAt), e.LastError)
	}
	for _, e := range tenants {
		fmt.Fprintf(tw, "tenant\t%s\t%s\ttenant_deleted\t%s\t%d\t%s\t%s\n", e.ESTenantID, e.TenantID, at(e.RequestedAt), e.Attempts,
			at(e.NextAttemptAt), e.LastError)
	}
	return tw.Flush()
}
