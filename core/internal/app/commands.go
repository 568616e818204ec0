package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/custos-platform/custos/core/internal/config"
	"github.com/custos-platform/custos/core/internal/directory"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/signing"
)

// needSecretKeys refuses a command that seals or opens secrets without CORE_SECRET_KEYS.
func needSecretKeys(db config.Database) error {
	if db.SecretKeys == "" {
		return fmt.Errorf("configuration: CORE_SECRET_KEYS (or CORE_SECRET_KEYS_FILE) is required")
	}
	return nil
}

// openStore opens the database for a one-off command and checks it is migrated.
func openStore(ctx context.Context, db config.Database) (*postgres.Store, func(), error) {
	pool, err := postgres.Open(ctx, db.DatabaseURL, postgres.WithMaxConns(2))
	if err != nil {
		return nil, nil, err
	}
	if err := postgres.CheckReady(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("%w (run: core migrate)", err)
	}
	return postgres.NewStore(pool), pool.Close, nil
}

// openSealedStore is openStore with the box of core's secret keys, for the commands that seal or
// open stored secrets (needSecretKeys checked the keys are configured).
func openSealedStore(ctx context.Context, db config.Database) (*postgres.Store, *secretbox.Box, func(), error) {
	box, err := secretBox(db.SecretKeys, db.ActiveSecretKeyID)
	if err != nil {
		return nil, nil, nil, err
	}
	store, done, err := openStore(ctx, db)
	if err != nil {
		return nil, nil, nil, err
	}
	return store, box, done, nil
}

// adminBootstrap creates the platform admin from CORE_ADMIN_USERNAME and CORE_ADMIN_PASSWORD.
func adminBootstrap(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, version string) error {
	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if err := needSecretKeys(db); err != nil {
		return err
	}
	if db.AdminUsername == "" || db.AdminPassword == "" {
		return fmt.Errorf("configuration: set CORE_ADMIN_USERNAME and CORE_ADMIN_PASSWORD (or CORE_ADMIN_PASSWORD_FILE)")
	}
	if err := postgres.Migrate(ctx, db.DatabaseURL, newLogger(stderr, db.LogLevel, version)); err != nil {
		return err
	}
	store, box, done, err := openSealedStore(ctx, db)
	if err != nil {
		return err
	}
	defer done()
	seed, _, err := rootSecrets(ctx, store, box, db.SecretKeys)
	if err != nil {
		return err
	}
	pw := password.DefaultParams()
	pw.MemoryKiB, pw.Iterations = uint32(db.PasswordMemoryKiB), uint32(db.PasswordIterations) //nolint:gosec // bounded above: config allows at most 256 MiB and 10 iterations
	created, err := directory.New(store, box, nil, pw, seed).BootstrapPlatformAdmin(ctx, db.AdminUsername, db.AdminPassword)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, "platform admin %q created\n", db.AdminUsername)
	} else {
		fmt.Fprintln(stdout, "a platform admin exists already; nothing changed")
	}
	return nil
}

// rotateSigningKey adds a new access-token signing key.
func rotateSigningKey(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if err := needSecretKeys(db); err != nil {
		return err
	}
	store, box, done, err := openSealedStore(ctx, db)
	if err != nil {
		return err
	}
	defer done()
	id, err := signing.Rotate(ctx, store, box, rand.Reader, db.AccessTTL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new signing key %s; replicas sign with it within a minute, and older keys keep verifying the tokens they signed until those expire\n", id)
	return nil
}

// secretKeys runs "core secret-keys status" and "core secret-keys rewrap [--dry-run]": how many
// stored secrets each of core's secret keys seals, and re-sealing them all under the active key so
// that the others can be retired.
func secretKeys(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var rewrap bool
	switch {
	case len(args) == 1 && args[0] == "status",
		len(args) == 2 && args[0] == "rewrap" && args[1] == "--dry-run":
	case len(args) == 1 && args[0] == "rewrap":
		rewrap = true
	default:
		return fmt.Errorf("%w: secret-keys status | secret-keys rewrap [--dry-run]\n\n%s", ErrUsage, usage)
	}
	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if err := needSecretKeys(db); err != nil {
		return err
	}
	store, box, done, err := openSealedStore(ctx, db)
	if err != nil {
		return err
	}
	defer done()
	if !rewrap {
		return printSealedCounts(ctx, store, box, stdout)
	}
	// The platform secrets are stored now if no core has started since they were: they would be
	// derived from the key with the smallest id, which may be the one about to be retired.
	if _, _, err := rootSecrets(ctx, store, box, db.SecretKeys); err != nil {
		return err
	}
	res, err := store.RewrapSealed(ctx, box, 100, nil)
	var total int64
	for _, n := range res.Rewrapped {
		total += n
	}
	fmt.Fprintf(stdout, "re-sealed %d secrets under key %s\n", total, box.ActiveID())
	if err != nil {
		return fmt.Errorf("rewrap (the secrets re-sealed so far stay so; run it again): %w", err)
	}
	for _, f := range res.Failed {
		fmt.Fprintf(stdout, "cannot re-seal the %s of %s (key %q): %v\n", f.Kind, f.Row, f.KeyID, f.Err)
	}
	if err := printSealedCounts(ctx, store, box, stdout); err != nil {
		return err
	}
	if res.Failures > 0 {
		return fmt.Errorf("%d secrets could not be re-sealed (listed above): they stay sealed under their key", res.Failures)
	}
	return nil
}

// printSealedCounts prints, for each key id that seals stored secrets or is in CORE_SECRET_KEYS,
// whether it is active, configured or missing, and how many secrets of each kind it seals: a key
// may be retired once it seals none.
func printSealedCounts(ctx context.Context, store *postgres.Store, box *secretbox.Box, stdout io.Writer) error {
	counts, err := store.CountSealed(ctx)
	if err != nil {
		return err
	}
	byKey := map[string]map[string]int64{}
	for _, id := range box.IDs() {
		byKey[id] = map[string]int64{}
	}
	for _, c := range counts {
		if byKey[c.KeyID] == nil {
			byKey[c.KeyID] = map[string]int64{}
		}
		byKey[c.KeyID][c.Kind] += c.Count
	}
	ids := make([]string, 0, len(byKey))
	for id := range byKey {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	kinds := []string{postgres.SealedKindTOTP, postgres.SealedKindSigningKey, postgres.SealedKindTenantSecret,
		postgres.SealedKindClientKey, postgres.SealedKindPlatformSecret}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tSTATE\tSEALED\tTOTP SECRETS\tSIGNING KEYS\tTENANT SECRETS\tCLIENT KEYS\tPLATFORM SECRETS")
	for _, id := range ids {
		state, name := "can be retired", id
		switch {
		case id == "":
			state, name = "malformed values", "-"
		case id == box.ActiveID():
			state = "active"
		case !slices.Contains(box.IDs(), id):
			state = "MISSING from CORE_SECRET_KEYS"
		}
		var total int64
		row := ""
		for _, k := range kinds {
			total += byKey[id][k]
			row += fmt.Sprintf("\t%d", byKey[id][k])
		}
		if total > 0 && state == "can be retired" {
			state = "seals secrets: run core secret-keys rewrap"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d%s\n", name, state, total, row)
	}
	return tw.Flush()
}
