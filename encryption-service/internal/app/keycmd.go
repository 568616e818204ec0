package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/config"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// runVersion runs "version disable|enable|destroy TENANT_ID ENCRYPTION_ID VERSION_ID" against the
// database directly, as the API's DisableVersion, EnableVersion and DestroyVersion do: audited as
// "cli:$USER", and every running replica follows at once. It needs no master key.
func runVersion(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	asJSON, args := flag(args, "--json")
	if len(args) != 4 {
		return fmt.Errorf("%w: version disable|enable|destroy TENANT_ID ENCRYPTION_ID VERSION_ID\n\n%s", ErrUsage, usage)
	}
	var ids [3]uuid.UUID
	for i, name := range []string{"TENANT_ID", "ENCRYPTION_ID", "VERSION_ID"} {
		id, err := uuid.Parse(args[i+1])
		if err != nil {
			return fmt.Errorf("%w: %s must be a UUID", ErrUsage, name)
		}
		ids[i] = id
	}
	store, done, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer done()
	keys := keyring.New(store, nil, keyring.Options{})
	change := map[string]func(context.Context, keyring.Caller, uuid.UUID, uuid.UUID) (postgres.KeyVersion, error){
		"disable": keys.DisableVersion, "enable": keys.EnableVersion, "destroy": keys.DestroyVersion,
	}[args[0]]
	if change == nil {
		return fmt.Errorf("%w: unknown version subcommand %q: want disable, enable or destroy\n\n%s", ErrUsage, args[0], usage)
	}
	v, err := change(ctx, keyring.Caller{TenantID: ids[0], Actor: cliActor(getenv)}, ids[1], ids[2])
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"encryptionId": ids[1], "versionId": v.ID, "version": v.Version, "state": v.State,
		})
	}
	fmt.Fprintf(stdout, "version %d (%s) of key context %s is %s\n", v.Version, v.ID, ids[1], v.State)
	if v.State == keyring.StateDestroyed {
		fmt.Fprintln(stdout, "Its key material is erased: what it encrypted is unrecoverable.")
	}
	return nil
}

// runMasterKey runs "master-key rotate [--dry-run] [--batch-size N]": it rewraps every stored key
// that an older platform master key wraps to the active one, printing progress, or with --dry-run
// only shows what each master key wraps.
func runMasterKey(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	dryRun, args := flag(args, "--dry-run")
	batch := 500
	if len(args) >= 3 && args[1] == "--batch-size" {
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 1 || n > 10_000 {
			return fmt.Errorf("%w: --batch-size wants an integer from 1 to 10000", ErrUsage)
		}
		batch, args = n, args[:1]
	}
	if len(args) != 1 || args[0] != "rotate" {
		return fmt.Errorf("%w: master-key rotate [--dry-run] [--batch-size N]\n\n%s", ErrUsage, usage)
	}
	cfg, err := config.LoadKeys(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	for _, w := range cfg.MasterKeyWarnings {
		fmt.Fprintln(stderr, "warning: master keys: "+w)
	}
	keys, err := masterkey.NewKeyring(cfg.MasterKeys, cfg.ActiveMasterKeyID)
	if err != nil {
		return fmt.Errorf("master keys: %w", err)
	}
	store, done, err := openMigrated(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer done()

	if err := printUsages(ctx, stdout, store, keys); err != nil {
		return err
	}
	if dryRun {
		return nil
	}
	fmt.Fprintf(stdout, "\nrewrapping to master key %s, %d stored keys per transaction\n", keys.ActiveID(), batch)
	n, err := keyring.RotateMasterKey(ctx, store, keys, keyring.MasterKeyRotation{
		BatchSize: batch,
		Actor:     cliActor(getenv),
		Progress: func(rewrapped, left int64) {
			fmt.Fprintf(stdout, "rewrapped %d stored keys; about %d left\n", rewrapped, left)
		},
	})
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(stdout, "interrupted after rewrapping %d stored keys; run master-key rotate again to continue\n", n)
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "done: rewrapped %d stored keys\n\n", n)
	if err := printUsages(ctx, stdout, store, keys); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nA master key that wraps 0 stored keys can be removed from the configuration once every replica runs with the active key.")
	return nil
}

// printUsages prints what each master key wraps.
func printUsages(ctx context.Context, w io.Writer, store keyring.StoredKeys, keys *masterkey.Keyring) error {
	usages, err := keyring.MasterKeyUsages(ctx, store, keys)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MASTER KEY\tACTIVE\tSTORED KEYS")
	for _, u := range usages {
		active := ""
		switch {
		case u.Active:
			active = "yes"
		case !u.Configured:
			active = "NOT CONFIGURED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", u.ID, active, u.WrappedKeys)
	}
	return tw.Flush()
}
