package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

func TestMigrationFiles(t *testing.T) {
	t.Parallel()
	entries, err := fs.ReadDir(postgres.Migrations(), ".")
	if err != nil {
		t.Fatalf("ReadDir(Migrations()) error: %v", err)
	}
	type pair struct{ up, down bool }
	versions := map[uint]*pair{}
	for _, e := range entries {
		m, err := source.Parse(e.Name())
		if err != nil {
			t.Errorf("migration file %q: %v, want NNNN_name.up.sql or NNNN_name.down.sql", e.Name(), err)
			continue
		}
		p := versions[m.Version]
		if p == nil {
			p = &pair{}
			versions[m.Version] = p
		}
		switch m.Direction {
		case source.Up:
			p.up = true
		case source.Down:
			p.down = true
		}
		b, err := fs.ReadFile(postgres.Migrations(), e.Name())
		if err != nil {
			t.Fatalf("ReadFile(%q) error: %v", e.Name(), err)
		}
		if strings.TrimSpace(string(b)) == "" {
			t.Errorf("migration file %q is empty", e.Name())
		}
	}
	latest := postgres.LatestVersion()
	if latest == 0 {
		t.Fatalf("LatestVersion() = 0, want at least 1")
	}
	for v := uint(1); v <= latest; v++ {
		p := versions[v]
		if p == nil || !p.up || !p.down {
			t.Errorf("migration %04d: have %+v, want both an up and a down file (versions must run 1..%d without gaps)", v, p, latest)
		}
	}
	if len(versions) != int(latest) {
		t.Errorf("found %d migration versions, want %d (1..LatestVersion)", len(versions), latest)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.NewEmpty(t)
	for i := range 3 {
		if err := postgres.Migrate(ctx, url, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("Migrate() call %d = %v, want nil", i+1, err)
		}
	}
	assertVersion(t, url, postgres.LatestVersion(), false)
	pool := mustOpen(t, url)
	if err := postgres.CheckReady(ctx, pool); err != nil {
		t.Errorf("CheckReady() after Migrate = %v, want nil", err)
	}
}

func TestMigrateOnTemplateCloneIsNoOp(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	if err := postgres.Migrate(t.Context(), url, nil); err != nil {
		t.Fatalf("Migrate() on an already migrated database = %v, want nil", err)
	}
	assertVersion(t, url, postgres.LatestVersion(), false)
}

// TestMigrateConcurrently starts several replicas' Migrate at once on fresh,
// empty databases: all must succeed and leave the schema clean at the latest
// version.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	const rounds, replicas = 3, 8
	for round := range rounds {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			t.Parallel()
			url := testdb.NewEmpty(t)
			var wg sync.WaitGroup
			errs := make([]error, replicas)
			for i := range replicas {
				wg.Go(func() { errs[i] = postgres.Migrate(t.Context(), url, nil) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("replica %d: Migrate() = %v, want nil", i, err)
				}
			}
			assertVersion(t, url, postgres.LatestVersion(), false)
		})
	}
}

func TestMigrateCancelled(t *testing.T) {
	t.Parallel()
	url := testdb.NewEmpty(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := postgres.Migrate(ctx, url, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Migrate(cancelled ctx) = %v, want an error wrapping context.Canceled", err)
	}
}

func TestCheckReadyBeforeAndAfterMigrate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.NewEmpty(t)
	pool := mustOpen(t, url)

	err := postgres.CheckReady(ctx, pool)
	want := fmt.Sprintf("database not migrated: at version 0, want %d", postgres.LatestVersion())
	if err == nil || err.Error() != want {
		t.Fatalf("CheckReady() before Migrate = %v, want %q", err, want)
	}
	var verr *postgres.SchemaVersionError
	if !errors.As(err, &verr) || verr.Version != 0 || verr.Dirty {
		t.Errorf("CheckReady() before Migrate = %#v, want *SchemaVersionError{Version: 0}", err)
	}

	if err := postgres.Migrate(ctx, url, nil); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	if err := postgres.CheckReady(ctx, pool); err != nil {
		t.Errorf("CheckReady() after Migrate = %v, want nil", err)
	}
}

func TestCheckReadyUnreachable(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	pool := mustOpen(t, url)
	pool.Close()
	err := postgres.CheckReady(t.Context(), pool)
	if err == nil || !strings.Contains(err.Error(), "database unreachable") {
		t.Errorf("CheckReady() on a closed pool = %v, want a \"database unreachable\" error", err)
	}
}

func TestDirtyAndNewerSchemasAreRefused(t *testing.T) {
	t.Parallel()
	latest := postgres.LatestVersion()
	tests := []struct {
		name      string
		version   uint
		dirty     bool
		wantInErr []string
	}{
		{
			name:      "dirty",
			version:   latest,
			dirty:     true,
			wantInErr: []string{fmt.Sprintf("dirty at version %d", latest), "migrate force", postgres.Schema + ".schema_migrations"},
		},
		{
			name:      "newer",
			version:   latest + 1,
			wantInErr: []string{fmt.Sprintf("newer than this build: at version %d, want %d", latest+1, latest)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			url := testdb.New(t)
			pool := mustOpen(t, url)
			if _, err := pool.Exec(ctx, "UPDATE "+postgres.Schema+".schema_migrations SET version = $1, dirty = $2", tt.version, tt.dirty); err != nil {
				t.Fatalf("set version: %v", err)
			}

			for _, check := range []struct {
				name string
				err  error
			}{
				{"Migrate", postgres.Migrate(ctx, url, nil)},
				{"CheckReady", postgres.CheckReady(ctx, pool)},
			} {
				var verr *postgres.SchemaVersionError
				if !errors.As(check.err, &verr) || verr.Version != tt.version || verr.Dirty != tt.dirty {
					t.Errorf("%s() = %v, want *SchemaVersionError{Version: %d, Dirty: %v}", check.name, check.err, tt.version, tt.dirty)
					continue
				}
				for _, s := range tt.wantInErr {
					if !strings.Contains(check.err.Error(), s) {
						t.Errorf("%s() = %q, want it to mention %q", check.name, check.err, s)
					}
				}
			}
			// Refusing must not have touched the recorded state.
			assertVersion(t, url, tt.version, tt.dirty)
		})
	}
}

// TestFailedMigrationLeavesDirtyState runs a migration that fails: nothing of
// it may stay applied, the version is marked dirty, and Migrate and
// CheckReady then refuse with instructions for the operator.
func TestFailedMigrationLeavesDirtyState(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.New(t)
	latest := postgres.LatestVersion()

	fsys := embeddedMigrations(t)
	broken := latest + 1
	fsys[fmt.Sprintf("%04d_broken.up.sql", broken)] = &fstest.MapFile{
		Data: []byte(fmt.Sprintf("CREATE TABLE %s.half_done (id int);\nSELECT 1/0;\n", postgres.Schema)),
	}
	fsys[fmt.Sprintf("%04d_broken.down.sql", broken)] = &fstest.MapFile{
		Data: []byte(fmt.Sprintf("DROP TABLE %s.half_done;\n", postgres.Schema)),
	}

	err := postgres.MigrateFS(ctx, url, nil, fsys)
	var verr *postgres.SchemaVersionError
	if !errors.As(err, &verr) || !verr.Dirty || verr.Version != broken {
		t.Fatalf("MigrateFS(broken migration) = %v, want *SchemaVersionError{Version: %d, Dirty: true}", err, broken)
	}
	for _, want := range []string{"division by zero", "migrate force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("MigrateFS(broken migration) = %q, want it to mention %q", err, want)
		}
	}
	t.Logf("MigrateFS(broken migration) = %v", err)
	assertVersion(t, url, broken, true)

	conn := mustConnect(t, url)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", postgres.Schema+".half_done").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("the failed migration's first statement stayed applied; each file must run as one transaction")
	}

	for _, check := range []struct {
		name string
		err  error
	}{
		{"Migrate", postgres.Migrate(ctx, url, nil)},
		{"CheckReady", postgres.CheckReady(ctx, mustOpen(t, url))},
	} {
		if !errors.As(check.err, &verr) || !verr.Dirty || verr.Version != broken {
			t.Errorf("%s() after a failed migration = %v, want *SchemaVersionError{Version: %d, Dirty: true}", check.name, check.err, broken)
		}
	}
}

// TestMigrationsStayInSchema guards the rule in migrations/README.md: every
// object a migration creates is schema-qualified into postgres.Schema.
func TestMigrationsStayInSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.NewEmpty(t)
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	conn := mustConnect(t, url)

	rows, err := conn.Query(ctx, `
		SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = 'public'
		UNION ALL
		SELECT 'type ' || n.nspname || '.' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		 WHERE n.nspname = 'public'
		UNION ALL
		SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname = 'public'
		UNION ALL
		SELECT 'schema ' || nspname FROM pg_namespace
		 WHERE nspname NOT IN ('public', 'information_schema', $1) AND nspname NOT LIKE 'pg\_%'`, postgres.Schema)
	if err != nil {
		t.Fatalf("list objects: %v", err)
	}
	stray, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list objects: %v", err)
	}
	if len(stray) > 0 {
		t.Errorf("migrations created objects outside schema %s: %v; schema-qualify them (see migrations/README.md)", postgres.Schema, stray)
	}

	var comment *string
	if err := conn.QueryRow(ctx, "SELECT obj_description($1::regnamespace, 'pg_namespace')", postgres.Schema).Scan(&comment); err != nil {
		t.Fatalf("read schema comment: %v", err)
	}
	if comment == nil || !strings.HasPrefix(*comment, "Custos ") {
		t.Errorf("COMMENT ON SCHEMA %s = %v, want a description of the service's schema", postgres.Schema, comment)
	}
}

// TestMigrationsDownUp runs every down migration and then every up migration
// again: down files must undo their up files.
func TestMigrationsDownUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.New(t)

	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	src, err := iofs.New(postgres.Migrations(), ".")
	if err != nil {
		t.Fatalf("iofs.New: %v", err)
	}
	driver, err := migratepgx.WithInstance(stdlib.OpenDB(*cfg), &migratepgx.Config{
		SchemaName:      postgres.Schema,
		MigrationsTable: "schema_migrations",
	})
	if err != nil {
		t.Fatalf("WithInstance: %v", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		t.Fatalf("NewWithInstance: %v", err)
	}
	t.Cleanup(func() { m.Close() })

	if err := m.Down(); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	conn := mustConnect(t, url)
	var comment *string
	if err := conn.QueryRow(ctx, "SELECT obj_description($1::regnamespace, 'pg_namespace')", postgres.Schema).Scan(&comment); err != nil {
		t.Fatalf("read schema comment: %v", err)
	}
	if comment != nil {
		t.Errorf("schema comment after migrating down = %q, want none", *comment)
	}
	if err := m.Up(); err != nil {
		t.Fatalf("migrate up again: %v", err)
	}
	if err := postgres.CheckReady(ctx, mustOpen(t, url)); err != nil {
		t.Errorf("CheckReady() after down and up = %v, want nil", err)
	}
}

func TestLatestVersion(t *testing.T) {
	t.Parallel()
	// Migration 0001_init is the first; later migrations only raise it.
	if got := postgres.LatestVersion(); got < 1 {
		t.Errorf("LatestVersion() = %d, want >= 1", got)
	}
}

func assertVersion(t *testing.T, url string, wantVersion uint, wantDirty bool) {
	t.Helper()
	conn := mustConnect(t, url)
	rows, err := conn.Query(t.Context(), "SELECT version, dirty FROM "+postgres.Schema+".schema_migrations")
	if err != nil {
		t.Fatalf("read %s.schema_migrations: %v", postgres.Schema, err)
	}
	type row struct {
		Version int64
		Dirty   bool
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatalf("read %s.schema_migrations: %v", postgres.Schema, err)
	}
	want := []row{{int64(wantVersion), wantDirty}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s.schema_migrations = %v, want %v", postgres.Schema, got, want)
	}
}

func mustOpen(tb testing.TB, url string, opts ...postgres.Option) *pgxpool.Pool {
	tb.Helper()
	pool, err := postgres.Open(context.Background(), url, opts...)
	if err != nil {
		tb.Fatalf("Open() = %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func mustConnect(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestOldestCompatibleVersionIsAnExistingVersion(t *testing.T) {
	if v := postgres.OldestCompatibleVersion; v < 1 || v > postgres.LatestVersion() {
		t.Errorf("OldestCompatibleVersion = %d, want 1 to LatestVersion (%d)", v, postgres.LatestVersion())
	}
}

// TestNewerCompatibleSchemaIsAccepted: during a rolling upgrade, a build finds the schema migrated
// by a newer one. It serves on it when the newer build declared it compatible, and refuses it,
// changing nothing, when not.
func TestNewerCompatibleSchemaIsAccepted(t *testing.T) {
	t.Parallel()
	latest := postgres.LatestVersion()
	ctx := t.Context()
	url := testdb.NewEmpty(t)
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		t.Fatal(err)
	}
	pool := mustOpen(t, url)
	var version, oldest int64
	if err := pool.QueryRow(ctx, "SELECT version, oldest_compatible FROM "+postgres.Schema+".schema_compatibility").Scan(&version, &oldest); err != nil ||
		version != int64(latest) || oldest != int64(postgres.OldestCompatibleVersion) {
		t.Fatalf("after Migrate, schema_compatibility = (%d, %d) %v, want (%d, %d)", version, oldest, err, latest, postgres.OldestCompatibleVersion)
	}

	// What a newer build's Migrate leaves: version latest+1, declaring builds from oldest on compatible.
	newer := func(oldest uint) {
		t.Helper()
		if _, err := pool.Exec(ctx, "UPDATE "+postgres.Schema+".schema_migrations SET version = $1, dirty = false", latest+1); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "UPDATE "+postgres.Schema+".schema_compatibility SET version = $1, oldest_compatible = $2", latest+1, oldest); err != nil {
			t.Fatal(err)
		}
	}

	newer(latest)
	if err := postgres.CheckReady(ctx, pool); err != nil {
		t.Errorf("CheckReady() on a newer schema compatible with this build = %v, want nil", err)
	}
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		t.Errorf("Migrate() on a newer schema compatible with this build = %v, want nil", err)
	}
	assertVersion(t, url, latest+1, false)
	if err := pool.QueryRow(ctx, "SELECT version, oldest_compatible FROM "+postgres.Schema+".schema_compatibility").Scan(&version, &oldest); err != nil ||
		version != int64(latest+1) || oldest != int64(latest) {
		t.Errorf("an older build's Migrate changed schema_compatibility to (%d, %d) %v, want the newer build's (%d, %d)", version, oldest, err, latest+1, latest)
	}

	newer(latest + 1)
	for name, err := range map[string]error{"CheckReady": postgres.CheckReady(ctx, pool), "Migrate": postgres.Migrate(ctx, url, nil)} {
		var verr *postgres.SchemaVersionError
		if !errors.As(err, &verr) || verr.Version != latest+1 || !strings.Contains(err.Error(), "does not declare") {
			t.Errorf("%s() on a newer schema incompatible with this build = %v, want a SchemaVersionError saying so", name, err)
		}
	}
	assertVersion(t, url, latest+1, false)
}

// TestCompatibilityIsRecordedBeforeMigrating: an additive migration keeps older replicas serving,
// including the moment its version is recorded — so the record declaring them compatible is
// written before the migration runs, never after (checked by the migration itself), and older
// builds serve on the result at once.
func TestCompatibilityIsRecordedBeforeMigrating(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.New(t)
	latest := postgres.LatestVersion()
	fsys := embeddedMigrations(t)
	next := latest + 1
	fsys[fmt.Sprintf("%04d_additive.up.sql", next)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(`
DO $$ BEGIN
  IF (SELECT version FROM %[1]s.schema_compatibility) IS DISTINCT FROM %[2]d THEN
    RAISE EXCEPTION 'schema_compatibility does not declare version %[2]d before its migration';
  END IF;
END $$;
CREATE TABLE %[1]s.additive (id int);`, postgres.Schema, next))}
	fsys[fmt.Sprintf("%04d_additive.down.sql", next)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("DROP TABLE %s.additive;", postgres.Schema))}

	if err := postgres.MigrateFS(ctx, url, nil, fsys); err != nil {
		t.Fatalf("MigrateFS(additive migration) = %v, want nil: the compatibility record must come first", err)
	}
	assertVersion(t, url, next, false)
	// This build is now the older one: it starts and stays ready on the newer schema.
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		t.Errorf("older build's Migrate on the additive schema = %v, want nil", err)
	}
	if err := postgres.CheckReady(ctx, mustOpen(t, url)); err != nil {
		t.Errorf("older build's CheckReady on the additive schema = %v, want nil", err)
	}
}

// embeddedMigrations returns a copy of the build's migrations, to which a test adds its own.
func embeddedMigrations(tb testing.TB) fstest.MapFS {
	tb.Helper()
	fsys := fstest.MapFS{}
	entries, err := fs.ReadDir(postgres.Migrations(), ".")
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		b, err := fs.ReadFile(postgres.Migrations(), e.Name())
		if err != nil {
			tb.Fatal(err)
		}
		fsys[e.Name()] = &fstest.MapFile{Data: b}
	}
	return fsys
}
