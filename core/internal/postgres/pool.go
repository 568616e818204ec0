package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SQLSTATE codes this package acts on (see PostgreSQL's errcodes appendix).
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
	sqlstateUndefinedTable       = "42P01"
	sqlstateInvalidSchemaName    = "3F000"
)

// Pool defaults; see Open.
const (
	defaultMaxConns          = 10
	defaultMaxConnLifetime   = 30 * time.Minute
	defaultMaxConnIdleTime   = 5 * time.Minute
	defaultHealthCheckPeriod = 30 * time.Second
	defaultConnectTimeout    = 5 * time.Second
)

// Option adjusts the pool built by [Open].
type Option func(*poolOptions)

type poolOptions struct {
	maxConns int32
}

// WithMaxConns sets the maximum number of open connections in the pool
// (default 10). [Open] fails if n is not positive.
func WithMaxConns(n int32) Option {
	return func(o *poolOptions) { o.maxConns = n }
}

// Open connects a pool to databaseURL (a postgres:// URL or a keyword/value
// connection string) with search_path set to [Schema], so queries may name
// the service's tables unqualified, and pings the server once.
//
// Defaults: 10 connections at most (see [WithMaxConns]), connections
// recycled after 30 minutes or 5 idle minutes, a 5 s connect timeout unless
// the URL sets connect_timeout, and application_name
// [defaultApplicationName] unless the URL sets one. Pool settings in the
// URL (pool_max_conns and the like) are replaced by these defaults and opts.
//
// Open does not check the schema version: call [CheckReady] for that. On error
// no pool is left open, and the error names the database with [RedactURL],
// never with its password.
func Open(ctx context.Context, databaseURL string, opts ...Option) (*pgxpool.Pool, error) {
	o := poolOptions{maxConns: defaultMaxConns}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxConns <= 0 {
		return nil, fmt.Errorf("open database: max conns must be positive, got %d", o.maxConns)
	}

	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, parseURLError(databaseURL, err)
	}
	cfg.MaxConns = o.maxConns
	cfg.MinConns = 0
	cfg.MaxConnLifetime = defaultMaxConnLifetime
	cfg.MaxConnLifetimeJitter = defaultMaxConnLifetime / 10
	cfg.MaxConnIdleTime = defaultMaxConnIdleTime
	cfg.HealthCheckPeriod = defaultHealthCheckPeriod
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	cc.RuntimeParams["search_path"] = pgx.Identifier{Schema}.Sanitize()
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = defaultApplicationName
	}

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", RedactURL(databaseURL), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s: %w", RedactURL(databaseURL), err)
	}
	return pool, nil
}

// CheckReady reports whether the service can use the database behind pool:
// the server answers and Schema.schema_migrations records [LatestVersion], not
// dirty, or a newer version whose migrating build declared this one
// compatible (see [OldestCompatibleVersion]). It returns nil when ready; a
// [*SchemaVersionError] when the schema is behind ("database not migrated: at
// version 0, want 1"), ahead or dirty; otherwise an error saying the database
// is unreachable or its version unreadable. Errors contain no credentials.
func CheckReady(ctx context.Context, pool *pgxpool.Pool) error {
	want := LatestVersion()
	query := "SELECT version, dirty FROM " + pgx.Identifier{Schema, migrationsTable}.Sanitize() + " LIMIT 1"
	var (
		version int64
		dirty   bool
	)
	err := pool.QueryRow(ctx, query).Scan(&version, &dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows), isSQLState(err, sqlstateUndefinedTable, sqlstateInvalidSchemaName):
		version, dirty = 0, false
	case err != nil:
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return fmt.Errorf("read database schema version: %w", err)
		}
		return fmt.Errorf("database unreachable: %w", err)
	}
	got := uint(max(version, 0)) // golang-migrate records "no version" as -1
	if !dirty && got > want {
		ok, err := compatibleWith(ctx, pool, got, want)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	if dirty || got != want {
		return &SchemaVersionError{Version: got, Want: want, Dirty: dirty}
	}
	return nil
}

// isSQLState reports whether err wraps a PostgreSQL error with one of codes.
func isSQLState(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}

// redactedMask replaces secrets, as url.URL.Redacted does.
const redactedMask = "xxxxx"

// keywordPassword matches password and sslpassword settings in a keyword/value
// connection string, quoted (with backslash escapes) or not.
var keywordPassword = regexp.MustCompile(`(^|\s)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

// RedactURL returns databaseURL with every password replaced by "xxxxx": the
// userinfo password and password/sslpassword query parameters of a URL, or the
// password/sslpassword settings of a keyword/value connection string. A URL
// that cannot be parsed is replaced whole, keeping only its scheme. It never
// fails and is safe to log.
func RedactURL(databaseURL string) string {
	scheme, _, isURL := strings.Cut(databaseURL, "://")
	if !isURL {
		return keywordPassword.ReplaceAllString(databaseURL, "${1}${2}"+redactedMask)
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		return scheme + "://" + "(unparseable URL redacted)"
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		u.User = url.UserPassword(u.User.Username(), redactedMask)
	}
	if u.RawQuery != "" {
		// Rewritten pair by pair to keep the parameters' order and encoding.
		pairs := strings.Split(u.RawQuery, "&")
		for i, pair := range pairs {
			key, _, _ := strings.Cut(pair, "=")
			if k, err := url.QueryUnescape(key); err != nil || k == "password" || k == "sslpassword" {
				pairs[i] = key + "=" + redactedMask
			}
		}
		u.RawQuery = strings.Join(pairs, "&")
	}
	return u.String()
}

// parseURLError reports an unparseable connection string without echoing it:
// the parser's own message may quote parts of it, so it is reachable only
// through errors.As/Unwrap.
func parseURLError(databaseURL string, err error) error {
	return &safeError{msg: "invalid database URL " + RedactURL(databaseURL), err: err}
}

// safeError carries a message safe to log and wraps a cause that may not be.
type safeError struct {
	msg string
	err error
}

func (e *safeError) Error() string { return e.msg }
func (e *safeError) Unwrap() error { return e.err }
