package testdb

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestNewGivesMigratedPrivateDatabases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := New(t), New(t)
	if a == b {
		t.Fatalf("New() returned %s twice, want distinct databases", postgres.RedactURL(a))
	}
	poolA, poolB := mustOpen(t, a), mustOpen(t, b)
	if err := postgres.CheckReady(ctx, poolA); err != nil {
		t.Errorf("CheckReady(New()) = %v, want nil", err)
	}
	if err := postgres.CheckReady(ctx, poolB); err != nil {
		t.Errorf("CheckReady(New()) = %v, want nil", err)
	}
	if _, err := poolA.Exec(ctx, "CREATE TABLE core.only_in_a (id int)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var exists bool
	if err := poolB.QueryRow(ctx, "SELECT to_regclass('core.only_in_a') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatalf("look up table: %v", err)
	}
	if exists {
		t.Error("a table created in one New() database is visible in another")
	}
}

func TestNewEmptyHasNoSchema(t *testing.T) {
	t.Parallel()
	conn := mustConnect(t, NewEmpty(t))
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", postgres.Schema).Scan(&exists); err != nil {
		t.Fatalf("look up schema: %v", err)
	}
	if exists {
		t.Errorf("NewEmpty() database has schema %q, want none", postgres.Schema)
	}
}

func TestDatabasesAreDroppedOnCleanup(t *testing.T) {
	t.Parallel()
	var names []string
	t.Run("user", func(t *testing.T) {
		for _, u := range []string{New(t), NewEmpty(t)} {
			cfg, err := pgx.ParseConfig(u)
			if err != nil {
				t.Fatalf("parse %s: %v", postgres.RedactURL(u), err)
			}
			names = append(names, cfg.Database)
			// An open connection must not stop the drop.
			mustConnect(t, u)
		}
	})
	admin := mustConnect(t, server(t))
	for _, name := range names {
		exists, err := databaseExists(t.Context(), admin, name)
		if err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("database %s still exists after its test's cleanup", name)
		}
	}
}

func TestTemplateName(t *testing.T) {
	t.Parallel()
	base := fstest.MapFS{
		"0001_init.up.sql":   {Data: []byte("COMMENT ON SCHEMA s IS 'x';")},
		"0001_init.down.sql": {Data: []byte("COMMENT ON SCHEMA s IS NULL;")},
	}
	changed := fstest.MapFS{
		"0001_init.up.sql":   {Data: []byte("COMMENT ON SCHEMA s IS 'y';")},
		"0001_init.down.sql": base["0001_init.down.sql"],
	}
	added := fstest.MapFS{
		"0001_init.up.sql":   base["0001_init.up.sql"],
		"0001_init.down.sql": base["0001_init.down.sql"],
		"0002_more.up.sql":   {Data: []byte("SELECT 1;")},
		"0002_more.down.sql": {Data: []byte("SELECT 1;")},
	}
	name := func(fsys fstest.MapFS) string {
		t.Helper()
		n, err := templateName("core", fsys)
		if err != nil {
			t.Fatalf("templateName() error: %v", err)
		}
		return n
	}
	got := name(base)
	if got != name(base) {
		t.Errorf("templateName() is not deterministic")
	}
	if !strings.HasPrefix(got, "custos_tpl_core_") || len(got) > 63 || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		t.Errorf("templateName() = %q, want custos_tpl_core_<hex>, a plain identifier of at most 63 bytes", got)
	}
	if name(changed) == got {
		t.Errorf("templateName() unchanged after a migration's content changed")
	}
	if name(added) == got {
		t.Errorf("templateName() unchanged after a migration was added")
	}
}

// TestEnsureTemplateConcurrently stands in for several test binaries starting
// together: each goroutine has its own session, as each process would.
func TestEnsureTemplateConcurrently(t *testing.T) {
	t.Parallel()
	admin := server(t)
	name := "custos_tpl_testonly_" + randName()
	t.Cleanup(func() { dropTemplate(t, admin, name) })

	var migrations atomic.Int32
	migrate := func(ctx context.Context, url string) error {
		migrations.Add(1)
		return postgres.Migrate(ctx, url, nil)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() { errs[i] = ensureTemplate(t.Context(), admin, name, migrate) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ensureTemplate() #%d = %v, want nil", i, err)
		}
	}
	if got := migrations.Load(); got != 1 {
		t.Errorf("template migrated %d times, want once", got)
	}
	// Clones of it are at the latest version.
	url := create(t, admin, name)
	if err := postgres.CheckReady(t.Context(), mustOpen(t, url)); err != nil {
		t.Errorf("CheckReady(clone of template) = %v, want nil", err)
	}
}

func TestEnsureTemplateRecoversFromFailedBuild(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := server(t)
	name := "custos_tpl_testonly_" + randName()
	t.Cleanup(func() { dropTemplate(t, admin, name) })

	errMigrate := errors.New("migration failed")
	err := ensureTemplate(ctx, admin, name, func(context.Context, string) error { return errMigrate })
	if !errors.Is(err, errMigrate) {
		t.Fatalf("ensureTemplate() with a failing migration = %v, want %v", err, errMigrate)
	}
	conn := mustConnect(t, admin)
	for _, db := range []string{name, name + "_build"} {
		if exists, err := databaseExists(ctx, conn, db); err != nil || exists {
			t.Errorf("after a failed build, database %s exists = %v (%v), want false", db, exists, err)
		}
	}
	if err := ensureTemplate(ctx, admin, name, func(ctx context.Context, url string) error {
		return postgres.Migrate(ctx, url, nil)
	}); err != nil {
		t.Fatalf("ensureTemplate() after a failed build = %v, want nil", err)
	}
}

func TestRepoRoot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	deep := filepath.Join(root, "svc", "internal", "pkg")
	mustMkdir(t, deep)
	mustWrite(t, filepath.Join(root, "go.work"), "go 1.27\n")
	if got, err := repoRoot(deep); err != nil || got != root {
		t.Errorf("repoRoot(%s) = %q, %v, want %q", deep, got, err, root)
	}
	if got, err := repoRoot(t.TempDir()); err == nil {
		t.Errorf("repoRoot(dir without go.work above) = %q, nil, want an error", got)
	}
}

func TestRunDevPostgres(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		script    string // "" for no script at all
		want      string
		wantInErr string
	}{
		{
			name:   "prints URL",
			script: "echo 'starting things' >&2\necho 'postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable'\n",
			want:   "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable",
		},
		{name: "fails with advice", script: "echo 'install postgresql' >&2\nexit 1\n", wantInErr: "install postgresql"},
		{name: "two lines", script: "echo a\necho b\n", wantInErr: "want exactly one line"},
		{name: "nothing", script: "true\n", wantInErr: "want exactly one line"},
		{name: "missing", wantInErr: "dev-postgres.sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			mustWrite(t, filepath.Join(root, "go.work"), "go 1.27\n")
			if tt.script != "" {
				mustMkdir(t, filepath.Join(root, "scripts"))
				mustWrite(t, filepath.Join(root, "scripts", "dev-postgres.sh"), "#!/usr/bin/env bash\n"+tt.script)
			}
			got, err := runDevPostgres(t.Context(), root, t.Logf)
			if tt.wantInErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Errorf("runDevPostgres() = %q, %v, want an error mentioning %q", got, err, tt.wantInErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("runDevPostgres() = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}

func TestChooseServer(t *testing.T) {
	t.Parallel()
	noContainer := func(context.Context) (string, error) { return "", errors.New("no Docker engine answered") }
	noEnv := func(string) string { return "" }
	working := server(t)

	t.Run("TEST_DATABASE_URL wins", func(t *testing.T) {
		got, err := chooseServer(t.Context(), sources{
			getenv:         func(k string) string { return map[string]string{"TEST_DATABASE_URL": working}[k] },
			startContainer: func(context.Context) (string, error) { t.Error("container started"); return "", nil },
			wd:             t.TempDir(),
			logf:           t.Logf,
		})
		if err != nil || got != working {
			t.Errorf("chooseServer() = %q, %v, want %q", got, err, working)
		}
	})
	t.Run("unusable TEST_DATABASE_URL fails without leaking", func(t *testing.T) {
		_, err := chooseServer(t.Context(), sources{
			getenv: func(k string) string {
				return map[string]string{"TEST_DATABASE_URL": "postgres://u:hunter2@127.0.0.1:1/postgres?connect_timeout=2"}[k]
			},
			startContainer: noContainer,
			wd:             t.TempDir(),
			logf:           t.Logf,
		})
		if err == nil || !strings.Contains(err.Error(), "TEST_DATABASE_URL") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("chooseServer() = %v, want an error naming TEST_DATABASE_URL without its password", err)
		}
	})
	t.Run("container", func(t *testing.T) {
		got, err := chooseServer(t.Context(), sources{
			getenv:         noEnv,
			startContainer: func(context.Context) (string, error) { return working, nil },
			wd:             t.TempDir(),
			logf:           t.Logf,
		})
		if err != nil || got != working {
			t.Errorf("chooseServer() = %q, %v, want the container's URL", got, err)
		}
	})
	t.Run("script", func(t *testing.T) {
		root := t.TempDir()
		mustWrite(t, filepath.Join(root, "go.work"), "go 1.27\n")
		mustMkdir(t, filepath.Join(root, "scripts"))
		mustWrite(t, filepath.Join(root, "scripts", "dev-postgres.sh"), "echo '"+working+"'\n")
		got, err := chooseServer(t.Context(), sources{getenv: noEnv, startContainer: noContainer, wd: root, logf: t.Logf})
		if err != nil || got != working {
			t.Errorf("chooseServer() = %q, %v, want the script's URL", got, err)
		}
	})
	t.Run("nothing says how to get a server", func(t *testing.T) {
		_, err := chooseServer(t.Context(), sources{getenv: noEnv, startContainer: noContainer, wd: t.TempDir(), logf: t.Logf})
		t.Logf("chooseServer() = %v", err)
		for _, want := range []string{"TEST_DATABASE_URL", "Docker", "dev-postgres.sh", "apt-get install"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("chooseServer() = %v, want an error mentioning %q", err, want)
			}
		}
	})
}

func TestDatabaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ admin, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/db1?sslmode=disable"},
		{"postgres://u:p@h", "postgres://u:p@h/db1"},
		{"postgres://h/?dbname=postgres", "postgres://h/db1?dbname=db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	}
	for _, tt := range tests {
		if got := databaseURL(tt.admin, "db1"); got != tt.want {
			t.Errorf("databaseURL(%q, db1) = %q, want %q", tt.admin, got, tt.want)
		}
		cfg, err := pgx.ParseConfig(databaseURL(tt.admin, "db1"))
		if err != nil || cfg.Database != "db1" {
			t.Errorf("databaseURL(%q, db1) connects to %v (%v), want db1", tt.admin, cfg, err)
		}
	}
}

func randName() string {
	return strings.ToLower(rand.Text()[:12])
}

func dropTemplate(tb testing.TB, admin, name string) {
	tb.Helper()
	conn := mustConnect(tb, admin)
	ctx := context.Background()
	exists, err := databaseExists(ctx, conn, name)
	if err != nil || !exists {
		return
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH IS_TEMPLATE false"); err != nil {
		tb.Errorf("unmark template %s: %v", name, err)
	}
	if err := dropDatabase(ctx, conn, name); err != nil {
		tb.Error(err)
	}
}

func mustOpen(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("postgres.Open() = %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func mustConnect(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatalf("connect to %s: %v", postgres.RedactURL(url), err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustMkdir(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
}

func mustWrite(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		tb.Fatal(err)
	}
}
