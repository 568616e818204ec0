// Package testdb gives tests their own real PostgreSQL database.
//
// [New] clones a template database that was migrated once, which costs a few
// milliseconds per test; [NewEmpty] creates a database with no schema at all.
// Each database is dropped when its test ends.
//
// The server is chosen once per test process, in this order:
//
//  1. TEST_DATABASE_URL, if set: a URL (or keyword/value string) for a role
//     that may CREATE DATABASE, pointing at a maintenance database such as
//     "postgres";
//  2. a PostgreSQL container started with testcontainers-go, if a Docker
//     engine answers within a few seconds (the container is removed by
//     testcontainers' reaper when the process exits);
//  3. the URL printed by <repo>/scripts/dev-postgres.sh, where <repo> is the
//     nearest directory above the working directory holding go.work.
//
// If none works the test fails, saying how to provide a server: a database
// test never skips silently.
package testdb

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/custos-platform/custos/core/internal/postgres"
)

// Timeouts for the work done once per process and once per test.
const (
	dockerProbeTimeout = 5 * time.Second
	containerTimeout   = 3 * time.Minute
	scriptTimeout      = 2 * time.Minute
	pingTimeout        = 10 * time.Second
	templateTimeout    = 2 * time.Minute
	databaseTimeout    = 30 * time.Second
)

// containerImage matches the PostgreSQL major version the service targets.
const containerImage = "postgres:15-alpine"

// shared caches, for the lifetime of the test process, the server choice and
// the template database: every test in the binary wants the same ones, and
// finding them costs seconds. It is the package's only mutable state, which
// is acceptable in a test helper (production packages take their
// dependencies as parameters instead).
var shared struct {
	serverOnce sync.Once
	adminURL   string
	serverErr  error

	templateOnce sync.Once
	template     string
	templateErr  error
}

// New returns the URL of a new database, migrated to
// [postgres.LatestVersion], that belongs to tb alone and is dropped (WITH
// (FORCE), closing leftover connections) when tb's cleanup runs. It calls
// tb.Fatalf if no PostgreSQL server can be had, saying how to provide one,
// or if the database cannot be created.
func New(tb testing.TB) string {
	tb.Helper()
	adminURL := server(tb)
	shared.templateOnce.Do(func() {
		shared.template, shared.templateErr = migratedTemplate(adminURL)
	})
	if shared.templateErr != nil {
		tb.Fatalf("testdb: prepare template database: %v", shared.templateErr)
	}
	return create(tb, adminURL, shared.template)
}

// NewEmpty returns the URL of a new, empty database (cloned from template0,
// with no [postgres.Schema] schema and no migrations) that belongs to tb
// alone and is dropped when tb's cleanup runs. It calls tb.Fatalf if no
// PostgreSQL server can be had or the database cannot be created.
func NewEmpty(tb testing.TB) string {
	tb.Helper()
	return create(tb, server(tb), "template0")
}

// server returns the maintenance-database URL of the process-wide server.
func server(tb testing.TB) string {
	tb.Helper()
	shared.serverOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			shared.serverErr = fmt.Errorf("find working directory: %w", err)
			return
		}
		shared.adminURL, shared.serverErr = chooseServer(context.Background(), sources{
			getenv:         os.Getenv,
			startContainer: startContainer,
			wd:             wd,
			logf:           tb.Logf,
		})
	})
	if shared.serverErr != nil {
		tb.Fatalf("testdb: %v", shared.serverErr)
	}
	return shared.adminURL
}

// sources are where chooseServer may find a server; tests replace them.
type sources struct {
	getenv         func(string) string
	startContainer func(context.Context) (string, error)
	wd             string               // where to start looking for go.work
	logf           func(string, ...any) // why a source was passed over
}

// chooseServer finds a PostgreSQL server as the package doc describes and
// returns a URL for its maintenance database.
func chooseServer(ctx context.Context, src sources) (string, error) {
	if u := src.getenv("TEST_DATABASE_URL"); u != "" {
		if err := ping(ctx, u); err != nil {
			return "", fmt.Errorf("TEST_DATABASE_URL=%s is set but unusable: %w", postgres.RedactURL(u), err)
		}
		return u, nil
	}

	u, containerErr := src.startContainer(ctx)
	if containerErr == nil {
		return u, nil
	}
	src.logf("testdb: TEST_DATABASE_URL is not set; not using testcontainers: %v", containerErr)

	u, scriptErr := runDevPostgres(ctx, src.wd, src.logf)
	if scriptErr == nil {
		if scriptErr = ping(ctx, u); scriptErr == nil {
			src.logf("testdb: using %s from scripts/dev-postgres.sh", postgres.RedactURL(u))
			return u, nil
		}
		scriptErr = fmt.Errorf("%s, which it printed, is unusable: %w", postgres.RedactURL(u), scriptErr)
	}
	return "", fmt.Errorf("no PostgreSQL server for tests:\n"+
		"  - TEST_DATABASE_URL is not set\n"+
		"  - testcontainers: %v\n"+
		"  - scripts/dev-postgres.sh: %v\n"+
		"Provide one: set TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/postgres for a role with CREATEDB, "+
		"start a Docker engine, or install PostgreSQL (apt-get install -y postgresql) so that "+
		"scripts/dev-postgres.sh can start a throwaway cluster",
		containerErr, scriptErr)
}

// ping checks that databaseURL accepts a connection.
func ping(ctx context.Context, databaseURL string) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		var perr *pgconn.ParseConfigError
		if errors.As(err, &perr) {
			return errors.New("not a valid connection string")
		}
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// startContainer starts a PostgreSQL container if a Docker engine answers
// within dockerProbeTimeout, and returns its URL. The container outlives the
// test that started it; testcontainers' reaper removes it at process exit.
func startContainer(ctx context.Context) (string, error) {
	if err := probeDocker(ctx); err != nil {
		return "", fmt.Errorf("no Docker engine answered: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, containerTimeout)
	defer cancel()
	ctr, err := tcpostgres.Run(ctx, containerImage, tcpostgres.BasicWaitStrategies())
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return "", fmt.Errorf("start %s: %w", containerImage, err)
	}
	u, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return "", fmt.Errorf("container URL: %w", err)
	}
	return u, nil
}

// probeDocker asks the Docker engine for its info, giving up after
// dockerProbeTimeout even if the client does not honour the context.
func probeDocker(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("docker client panicked: %v", p)
			}
		}()
		provider, err := testcontainers.NewDockerProvider()
		if err != nil {
			done <- err
			return
		}
		done <- provider.Health(ctx) // Health closes the provider
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runDevPostgres runs <repo>/scripts/dev-postgres.sh, which prints the URL of
// a reachable server as its only line on stdout and diagnostics on stderr.
func runDevPostgres(ctx context.Context, wd string, logf func(string, ...any)) (string, error) {
	root, err := repoRoot(wd)
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "scripts", "dev-postgres.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("cannot run it: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, scriptTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A server the script starts in the background may inherit the pipes;
	// do not wait for it to close them.
	cmd.WaitDelay = 2 * time.Second
	runErr := cmd.Run()
	diag := strings.TrimSpace(stderr.String())
	if runErr != nil && !errors.Is(runErr, exec.ErrWaitDelay) {
		return "", fmt.Errorf("%s failed (%w):\n%s", script, runErr, indent(diag))
	}
	if diag != "" {
		logf("testdb: scripts/dev-postgres.sh said:\n%s", indent(diag))
	}
	out := strings.TrimSpace(stdout.String())
	if out == "" || strings.ContainsAny(out, "\r\n") {
		return "", fmt.Errorf("%s printed %d bytes on stdout, want exactly one line holding a database URL", script, len(out))
	}
	return out, nil
}

// repoRoot returns the nearest directory at or above dir holding go.work.
func repoRoot(dir string) (string, error) {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work in %s or any directory above it, so no scripts/dev-postgres.sh to run", dir)
		}
		d = parent
	}
}

func indent(s string) string {
	if s == "" {
		return "    (nothing on stderr)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// migratedTemplate returns the name of the template database holding the
// current migrations, creating it if no process has yet.
func migratedTemplate(adminURL string) (string, error) {
	name, err := templateName(postgres.Schema, postgres.Migrations())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), templateTimeout)
	defer cancel()
	migrate := func(ctx context.Context, databaseURL string) error {
		return postgres.Migrate(ctx, databaseURL, nil)
	}
	if err := ensureTemplate(ctx, adminURL, name, migrate); err != nil {
		return "", err
	}
	return name, nil
}

// templateName names the template database after the schema and a hash of
// the migration files, so that changing a migration yields a new template.
func templateName(schema string, migrations fs.FS) (string, error) {
	h := sha256.New()
	var names []string
	err := fs.WalkDir(migrations, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := fs.ReadFile(migrations, n)
		if err != nil {
			return "", fmt.Errorf("read migration: %w", err)
		}
		// Length-prefixed so that no two file sets hash alike.
		fmt.Fprintf(h, "%d:%s%d:", len(n), n, len(b))
		h.Write(b)
	}
	return "custos_tpl_" + schema + "_" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// ensureTemplate creates the template database name, filled by migrate, unless
// it exists. Test binaries run in parallel processes, so creation is
// serialized by a session advisory lock taken on the maintenance database
// (advisory locks are per database: every process must use the same one), and
// the template is built under a temporary name and renamed when complete, so
// its existence means it is usable.
func ensureTemplate(ctx context.Context, adminURL, name string, migrate func(context.Context, string) error) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", postgres.RedactURL(adminURL), err)
	}
	// Closing the session also releases the advisory lock.
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey(name)); err != nil {
		return fmt.Errorf("lock template %s: %w", name, err)
	}
	exists, err := databaseExists(ctx, conn, name)
	if err != nil || exists {
		return err
	}

	build := name + "_build"
	// A build left by a process that died: nobody else builds while we hold the lock.
	if err := dropDatabase(ctx, conn, build); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{build}.Sanitize()+" TEMPLATE template0"); err != nil {
		return fmt.Errorf("create %s: %w", build, err)
	}
	if err := migrate(ctx, databaseURL(adminURL, build)); err != nil {
		_ = dropDatabase(context.WithoutCancel(ctx), conn, build)
		return fmt.Errorf("migrate %s: %w", build, err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{build}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		_ = dropDatabase(context.WithoutCancel(ctx), conn, build)
		return fmt.Errorf("publish template %s: %w", name, err)
	}
	// No connections: CREATE DATABASE ... TEMPLATE fails while anyone is
	// connected to the template.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("mark %s as template: %w", name, err)
	}
	return nil
}

// lockKey derives the advisory lock key guarding a template's creation.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("custos/testdb/" + name))
	return int64(h.Sum64()) //nolint:gosec // bit reinterpretation of a hash into an advisory lock key
}

func databaseExists(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("look up database %s: %w", name, err)
	}
	return exists, nil
}

func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// create makes a database for tb alone from template and drops it in tb's cleanup.
func create(tb testing.TB, adminURL, template string) string {
	tb.Helper()
	name := "custos_test_" + postgres.Schema + "_" + rand.Text()[:12]
	name = strings.ToLower(name)

	ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("testdb: connect to %s: %v", postgres.RedactURL(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{template}.Sanitize()); err != nil {
		tb.Fatalf("testdb: create database %s from %s: %v", name, template, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			tb.Errorf("testdb: drop database %s: connect: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if err := dropDatabase(ctx, conn, name); err != nil {
			tb.Errorf("testdb: %v", err)
		}
	})
	return databaseURL(adminURL, name)
}

// databaseURL returns adminURL pointing at database name instead.
func databaseURL(adminURL, name string) string {
	if u, err := url.Parse(adminURL); err == nil && u.Scheme != "" {
		u.Path, u.RawPath = "/"+name, ""
		q := u.Query()
		if q.Has("dbname") {
			q.Set("dbname", name)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// Keyword/value form: a later setting overrides an earlier one.
	return adminURL + " dbname=" + name
}
