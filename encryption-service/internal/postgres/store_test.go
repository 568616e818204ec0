package postgres_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Nothing listens on port 1: every call fails to connect.
	cfg, err := pgxpool.ParseConfig("postgres://custos@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	down, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	s := postgres.NewStore(down)
	_, err = s.GetTenant(ctx, uuid.New())
	wantKind(t, "GetTenant(unreachable database)", err, errs.Unavailable, "database unavailable")
	_, err = s.ActiveSecrets(ctx, uuid.New())
	wantKind(t, "ActiveSecrets(unreachable database)", err, errs.Unavailable, "database unavailable")

	_, pool, _ := mustStore(t)
	closed := postgres.NewStore(pool)
	pool.Close()
	_, _, err = closed.ListTenants(ctx, 10, uuid.Nil)
	wantKind(t, "ListTenants(closed pool)", err, errs.Unavailable, "database unavailable")
}
