package postgres_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := mustOpen(t, testdb.New(t), postgres.WithMaxConns(3))

	if got := pool.Config().MaxConns; got != 3 {
		t.Errorf("Open(WithMaxConns(3)) MaxConns = %d, want 3", got)
	}
	var schema, appName string
	if err := pool.QueryRow(ctx, "SELECT current_schema(), current_setting('application_name')").Scan(&schema, &appName); err != nil {
		t.Fatalf("query session settings: %v", err)
	}
	if schema != postgres.Schema {
		t.Errorf("current_schema() = %q, want %q", schema, postgres.Schema)
	}
	if appName != "custos-encryption-service" {
		t.Errorf("application_name = %q, want %q", appName, "custos-encryption-service")
	}
	// Unqualified names resolve to the service schema.
	if _, err := pool.Exec(ctx, "CREATE TABLE probe (id int)"); err != nil {
		t.Fatalf("create unqualified table: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM encryption.probe").Scan(&n); err != nil {
		t.Errorf("unqualified CREATE TABLE did not land in schema encryption: %v", err)
	}
}

func TestOpenRejectsNonPositiveMaxConns(t *testing.T) {
	t.Parallel()
	pool, err := postgres.Open(t.Context(), "postgres://127.0.0.1:1/x", postgres.WithMaxConns(0))
	if err == nil {
		pool.Close()
		t.Fatal("Open(WithMaxConns(0)) = nil error, want an error")
	}
}

func TestOpenErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Pa55"
	u, err := url.Parse(testdb.New(t))
	if err != nil {
		t.Fatalf("parse test database URL: %v", err)
	}
	withPassword := func(u url.URL, path string) string {
		u.User = url.UserPassword(u.User.Username(), secret)
		u.Path = path
		return u.String()
	}
	tests := []struct {
		name string
		url  string
	}{
		{"no such database", withPassword(*u, "/custos_no_such_database")},
		{"nothing listening", "postgres://custos:" + secret + "@127.0.0.1:1/custos?connect_timeout=2"},
		{"unparseable URL", "postgres://custos:" + secret + "@127.0.0.1:notaport/custos"},
		{"bad keyword/value", "host=127.0.0.1 password=" + secret + " port=notaport"},
		{"password query parameter", "postgres://custos@127.0.0.1:1/custos?password=" + secret + "&connect_timeout=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := postgres.Open(t.Context(), tt.url)
			if err == nil {
				pool.Close()
				t.Fatalf("Open(%s) = nil error, want an error", postgres.RedactURL(tt.url))
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Open() error %q contains the password", err)
			}
			if err := postgres.Migrate(t.Context(), tt.url, nil); err == nil || strings.Contains(err.Error(), secret) {
				t.Errorf("Migrate() error = %v, want an error without the password", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"no password", "postgres://custos@db:5432/custos?sslmode=verify-full", "postgres://custos@db:5432/custos?sslmode=verify-full"},
		{"userinfo password", "postgres://custos:hunter2@db:5432/custos", "postgres://custos:xxxxx@db:5432/custos"},
		{"percent-encoded password", "postgresql://custos:p%40ss%2Fw0rd@db/custos", "postgresql://custos:xxxxx@db/custos"},
		{"password with @", "postgres://custos:hun@ter2@db/custos", "postgres://custos:xxxxx@db/custos"},
		{"empty password", "postgres://custos:@db/custos", "postgres://custos:xxxxx@db/custos"},
		{"password parameter", "postgres://db/custos?user=custos&password=hunter2&sslmode=require", "postgres://db/custos?user=custos&password=xxxxx&sslmode=require"},
		{"sslpassword parameter", "postgres://db/custos?sslpassword=hunter2", "postgres://db/custos?sslpassword=xxxxx"},
		{"encoded parameter name", "postgres://db/custos?pass%77ord=hunter2", "postgres://db/custos?pass%77ord=xxxxx"},
		{"multiple hosts", "postgres://custos:hunter2@db1:5432,db2:5432/custos", "postgres://custos:xxxxx@db1:5432,db2:5432/custos"},
		{"unparseable URL", "postgres://custos:hun ter2@db/%zz", "postgres://(unparseable URL redacted)"},
		{"keyword/value", "host=db user=custos password=hunter2 dbname=custos", "host=db user=custos password=xxxxx dbname=custos"},
		{"keyword/value quoted", "host=db password='hun ter\\'2' dbname=custos", "host=db password=xxxxx dbname=custos"},
		{"keyword/value spaced", "password = hunter2 host=db", "password = xxxxx host=db"},
		{"keyword/value sslpassword", "host=db sslpassword=hunter2", "host=db sslpassword=xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := postgres.RedactURL(tt.in)
			if got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if strings.Contains(got, "hunter2") || strings.Contains(got, "hun ter") || strings.Contains(got, "ter2") || strings.Contains(got, "w0rd") {
				t.Errorf("RedactURL(%q) = %q, leaks the password", tt.in, got)
			}
		})
	}
}
