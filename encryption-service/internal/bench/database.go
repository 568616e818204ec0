package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates a new, empty database on the server that serverURL reaches (through a
// role that may CREATE DATABASE) and returns its URL and a function that drops it. The service
// migrates it when it starts. Errors never show the URL's password.
func CreateDatabase(ctx context.Context, serverURL string) (databaseURL string, drop func(context.Context) error, err error) {
	name := "custos_bench_" + strings.ToLower(rand.Text()[:12])
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("bench: create database %s: %w", name, err)
	}
	drop = func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("bench: drop database %s: %w", name, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("bench: drop database %s: %w", name, err)
		}
		return nil
	}
	return withDatabase(serverURL, name), drop, nil
}

// withDatabase returns serverURL (a URL or a keyword/value string) pointing at database name.
func withDatabase(serverURL, name string) string {
	if u, err := url.Parse(serverURL); err == nil && u.Scheme != "" {
		u.Path, u.RawPath = "/"+name, ""
		q := u.Query()
		if q.Has("dbname") {
			q.Set("dbname", name)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return serverURL + " dbname=" + name // a later keyword overrides an earlier one
}
