package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationsTable is the golang-migrate version table, inside Schema.
const migrationsTable = "schema_migrations"

// compatibilityTable holds one row: the schema version the last migrating build brought the
// schema to, and that build's OldestCompatibleVersion.
const compatibilityTable = "schema_compatibility"

// defaultMigrateLockWait bounds how long Migrate waits for another replica's
// migration to finish when ctx carries no deadline.
const defaultMigrateLockWait = 10 * time.Minute

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the embedded migration files (golang-migrate naming,
// NNNN_name.up.sql / NNNN_name.down.sql) at the root of the returned FS.
// It never fails: the files are compiled into the binary.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		// fs.Sub only fails for an invalid path literal.
		panic(fmt.Sprintf("postgres: embedded migrations: %v", err))
	}
	return sub
}

// LatestVersion returns the highest migration version embedded in the
// binary: the version [Migrate] brings a database to and [CheckReady] requires.
// It panics if an embedded file name does not parse as a golang-migrate
// migration, a build defect that the package's tests catch.
func LatestVersion() uint {
	latest, err := latestVersion(Migrations())
	if err != nil {
		panic(fmt.Sprintf("postgres: embedded migrations: %v", err))
	}
	return latest
}

// latestVersion returns the highest version among the migration files in fsys.
func latestVersion(fsys fs.FS) (uint, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return 0, err
	}
	var latest uint
	for _, e := range entries {
		m, err := source.Parse(e.Name())
		if err != nil {
			return 0, fmt.Errorf("%q: %w", e.Name(), err)
		}
		latest = max(latest, m.Version)
	}
	return latest, nil
}

// SchemaVersionError reports that the database's migration state is not the
// one this build needs: behind, ahead, or dirty after a failed migration.
// [Migrate] and [CheckReady] return it (use errors.As); its message is safe to
// show to operators.
type SchemaVersionError struct {
	Version uint // version recorded in Schema.schema_migrations; 0 if none
	Want    uint // LatestVersion of this build
	Dirty   bool // a migration to Version started and did not finish
}

// Error describes the mismatch and, for a dirty schema, what an operator
// must do about it.
func (e *SchemaVersionError) Error() string {
	switch {
	case e.Dirty:
		return fmt.Sprintf("database schema %q is dirty at version %d: that migration failed part-way; "+
			"an operator must check the schema, repair it by hand, then record the version it is really at "+
			"with `migrate force` on the table %s.%s",
			Schema, e.Version, Schema, migrationsTable)
	case e.Version > e.Want:
		return fmt.Sprintf("database schema %q is newer than this build: at version %d, want %d, "+
			"and the build that migrated it does not declare version %d compatible", Schema, e.Version, e.Want, e.Want)
	default:
		return fmt.Sprintf("database not migrated: at version %d, want %d", e.Version, e.Want)
	}
}

// Migrate brings the database at databaseURL to [LatestVersion]: it creates
// [Schema] if missing, then applies the pending embedded migrations with
// golang-migrate, recording them in Schema.schema_migrations.
//
// It is safe to call from several replicas at once (schema creation and
// migrations are serialized by PostgreSQL advisory locks) and is a no-op when
// the database is already current. A nil logger discards logs.
//
// Errors never contain the password from databaseURL. A dirty database, or one
// at a version newer than this build, yields a [*SchemaVersionError] and
// nothing is changed. When ctx has a deadline, no statement runs past it; a
// cancelled ctx stops Migrate between migrations.
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	return migrateFS(ctx, databaseURL, logger, Migrations())
}

// migrateFS is Migrate with the migration files as a parameter, for tests.
func migrateFS(ctx context.Context, databaseURL string, logger *slog.Logger, migrations fs.FS) (err error) {
	want, err := latestVersion(migrations)
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	connConfig, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return parseURLError(databaseURL, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		// golang-migrate runs its statements without a context: bound them
		// (including the wait for another replica's migration lock) server-side.
		ms := max(time.Until(deadline).Milliseconds(), 1)
		connConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(ms, 10)
	}

	if err := ensureSchema(ctx, connConfig); err != nil {
		return fmt.Errorf("prepare database %s: %w", RedactURL(databaseURL), err)
	}

	src, err := iofs.New(migrations, ".")
	if err != nil {
		return fmt.Errorf("read embedded migrations: %w", err)
	}
	db := stdlib.OpenDB(*connConfig)
	// WithInstance takes migrate's advisory lock to create the version table,
	// so concurrent first starts are safe.
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{
		SchemaName:      Schema,
		MigrationsTable: migrationsTable,
	})
	if err != nil {
		_ = src.Close()
		_ = db.Close()
		return fmt.Errorf("prepare migrations on %s: %w", RedactURL(databaseURL), err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		_ = src.Close()
		_ = driver.Close() // closes db too
		return fmt.Errorf("prepare migrations: %w", err)
	}
	defer func() {
		srcErr, dbErr := m.Close()
		if err == nil && dbErr != nil {
			err = fmt.Errorf("close migration connection: %w", dbErr)
		}
		_ = srcErr // closing an embedded FS source cannot fail meaningfully
	}()
	m.Log = migrateLogger{logger}
	m.LockTimeout = defaultMigrateLockWait
	if deadline, ok := ctx.Deadline(); ok {
		m.LockTimeout = max(time.Until(deadline), time.Millisecond)
	}

	stop := context.AfterFunc(ctx, func() { m.GracefulStop <- true })
	defer stop()

	// Declare which older builds may serve on the schema this one migrates to before migrating:
	// recorded afterwards, the record would trail the new version, and an older replica starting
	// or checking its readiness in between would find the schema newer and not declared
	// compatible. (The version read here, outside migrate's lock, only decides whether to write
	// early; a record is never replaced by an older build's.)
	if v, dirty, err := currentVersion(m); err == nil && !dirty && v < want {
		if err := recordCompatibility(ctx, connConfig, want); err != nil {
			return fmt.Errorf("record schema compatibility on %s: %w", RedactURL(databaseURL), err)
		}
	}

	// The version is only trusted when read under migrate's lock, which Up
	// holds: a read outside it can see another replica's migration in
	// flight, marked dirty until it completes.
	upErr := m.Up()
	var dirtyErr migrate.ErrDirty
	switch {
	case errors.As(upErr, &dirtyErr):
		return &SchemaVersionError{Version: uint(max(dirtyErr.Version, 0)), Want: want, Dirty: true}
	case upErr != nil && !errors.Is(upErr, migrate.ErrNoChange):
		// A database ahead of this build fails in Up with "no migration
		// found", and a migration that fails leaves its version dirty: say
		// so plainly, with what the operator must do.
		if v, dirty, err := currentVersion(m); err == nil && (dirty || v > want) {
			verr := &SchemaVersionError{Version: v, Want: want, Dirty: dirty}
			if dirty {
				return fmt.Errorf("%w; the migration failed with: %w", verr, upErr)
			}
			if ok, cerr := newerCompatible(ctx, connConfig, v, want); cerr != nil {
				return fmt.Errorf("%w (%w)", verr, cerr)
			} else if ok {
				logger.InfoContext(ctx, "database schema is newer than this build and declared compatible with it",
					"schema", Schema, "schema_version", v, "build_schema_version", want)
				return nil
			}
			return verr
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("migrate schema %q: %w (%w)", Schema, ctxErr, upErr)
		}
		return fmt.Errorf("migrate schema %q to version %d: %w", Schema, want, upErr)
	}
	version, _, err := currentVersion(m)
	if err != nil {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil && version != want {
		// GracefulStop makes Up return nil between two migrations.
		return fmt.Errorf("migrate schema %q: stopped at version %d, want %d: %w", Schema, version, want, ctxErr)
	}
	if version == want {
		if err := recordCompatibility(ctx, connConfig, want); err != nil {
			return fmt.Errorf("record schema compatibility on %s: %w", RedactURL(databaseURL), err)
		}
	}
	if errors.Is(upErr, migrate.ErrNoChange) {
		logger.InfoContext(ctx, "database schema up to date", "schema", Schema, "schema_version", version)
	} else {
		logger.InfoContext(ctx, "database schema migrated", "schema", Schema, "schema_version", version)
	}
	return nil
}

// currentVersion reads the recorded version, mapping "never migrated" to 0.
func currentVersion(m *migrate.Migrate) (version uint, dirty bool, err error) {
	v, dirty, err := m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read schema version: %w", err)
	}
	return v, dirty, nil
}

// recordCompatibility records, for builds older than this one, that the schema is at version and
// which of them may serve against it (OldestCompatibleVersion). A newer build's record is never
// replaced by an older one's.
func recordCompatibility(ctx context.Context, connConfig *pgx.ConnConfig, version uint) error {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	table := pgx.Identifier{Schema, compatibilityTable}.Sanitize()
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The same lock as schema creation: concurrent CREATE TABLE IF NOT EXISTS can collide.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey()); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
			singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
			version           bigint NOT NULL,
			oldest_compatible bigint NOT NULL)`); err != nil {
			return fmt.Errorf("create %s: %w", table, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+table+` AS c (version, oldest_compatible) VALUES ($1, $2)
			ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, oldest_compatible = EXCLUDED.oldest_compatible
			WHERE c.version <= EXCLUDED.version`, int64(version), int64(OldestCompatibleVersion)) //nolint:gosec // migration versions are small
		if err != nil {
			return fmt.Errorf("write %s: %w", table, err)
		}
		return nil
	})
}

// rowQuerier is what compatibleWith reads with: a connection or a pool.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// compatibleWith reports whether the schema, recorded at version (newer than want), was declared
// compatible with builds at want by the build that migrated it. No record means not compatible.
func compatibleWith(ctx context.Context, q rowQuerier, version, want uint) (bool, error) {
	var recorded, oldest int64
	err := q.QueryRow(ctx, "SELECT version, oldest_compatible FROM "+pgx.Identifier{Schema, compatibilityTable}.Sanitize()).
		Scan(&recorded, &oldest)
	switch {
	case errors.Is(err, pgx.ErrNoRows), isSQLState(err, sqlstateUndefinedTable):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read schema compatibility: %w", err)
	}
	return recorded == int64(version) && oldest <= int64(want), nil //nolint:gosec // migration versions are small
}

// newerCompatible is compatibleWith on a connection of its own.
func newerCompatible(ctx context.Context, connConfig *pgx.ConnConfig, version, want uint) (bool, error) {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return false, fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return compatibleWith(ctx, conn, version, want)
}

// ensureSchema creates Schema if it does not exist. Concurrent callers are
// serialized by a transaction-scoped advisory lock: two plain CREATE SCHEMA IF
// NOT EXISTS racing each other can fail with a unique violation.
func ensureSchema(ctx context.Context, connConfig *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	exists, err := schemaExists(ctx, conn)
	if err != nil {
		return err
	}
	if exists {
		// Checked first so a role without CREATE on the database can run
		// against a schema a DBA created for it.
		return nil
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey()); err != nil {
			return fmt.Errorf("lock schema creation: %w", err)
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{Schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %q: %w", Schema, err)
		}
		return nil
	})
	return err
}

func schemaExists(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", Schema).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("look up schema %q: %w", Schema, err)
	}
	return exists, nil
}

// schemaLockKey is the advisory lock key guarding creation of Schema; it is
// derived from the schema name so core and this service do not contend.
func schemaLockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("custos/create-schema/" + Schema))
	return int64(h.Sum64()) //nolint:gosec // bit reinterpretation of a hash into an advisory lock key
}

// migrateLogger adapts golang-migrate's logger to slog.
type migrateLogger struct{ logger *slog.Logger }

func (l migrateLogger) Printf(format string, v ...any) {
	l.logger.Info("golang-migrate: "+strings.TrimSpace(fmt.Sprintf(format, v...)), "schema", Schema)
}

func (l migrateLogger) Verbose() bool { return false }
