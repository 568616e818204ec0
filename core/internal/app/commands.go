package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/custos-platform/custos/core/internal/config"
	"github.com/custos-platform/custos/core/internal/directory"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
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
	box, err := secretBox(db.SecretKeys, db.ActiveSecretKeyID)
	if err != nil {
		return err
	}
	store, done, err := openStore(ctx, db)
	if err != nil {
		return err
	}
	defer done()
	seed, err := preloginSeed(db.SecretKeys)
	if err != nil {
		return err
	}
	pw := password.DefaultParams()
	pw.MemoryKiB, pw.Iterations = uint32(db.PasswordMemoryKiB), uint32(db.PasswordIterations) //nolint:gosec // bounded above: config allows at most 1 GiB and 100 iterations
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
	box, err := secretBox(db.SecretKeys, db.ActiveSecretKeyID)
	if err != nil {
		return err
	}
	store, done, err := openStore(ctx, db)
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
