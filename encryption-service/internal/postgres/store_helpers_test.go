package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// mustStore returns a Store on a fresh database, its pool and the database URL.
func mustStore(tb testing.TB) (*postgres.Store, *pgxpool.Pool, string) {
	tb.Helper()
	url := testdb.New(tb)
	pool := mustOpen(tb, url)
	return postgres.NewStore(pool), pool, url
}

func mustRandom(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func newSecret(tb testing.TB, tenantID uuid.UUID) postgres.TenantSecret {
	tb.Helper()
	h := sha256.Sum256(mustRandom(tb, 32))
	return postgres.TenantSecret{ID: uuid.New(), TenantID: tenantID, Hash: h[:]}
}

func auditEvent(action string) postgres.AuditEvent {
	return postgres.AuditEvent{Actor: "test", Action: action, Outcome: "ok", RequestID: "req-" + action}
}

// mustTenant creates a tenant named name (a random one if "") with one secret.
func mustTenant(tb testing.TB, s *postgres.Store, name string) (postgres.Tenant, postgres.TenantSecret) {
	tb.Helper()
	if name == "" {
		name = "tenant-" + rand.Text()
	}
	t := postgres.Tenant{ID: uuid.New(), Name: name}
	sec := newSecret(tb, t.ID)
	if err := s.CreateTenant(context.Background(), t, sec, auditEvent("tenant.create")); err != nil {
		tb.Fatalf("CreateTenant(%q) = %v", name, err)
	}
	return t, sec
}

func mustAddSecret(tb testing.TB, s *postgres.Store, tenantID uuid.UUID) postgres.TenantSecret {
	tb.Helper()
	sec := newSecret(tb, tenantID)
	if err := s.AddTenantSecret(context.Background(), sec, auditEvent("tenant.secret.add")); err != nil {
		tb.Fatalf("AddTenantSecret() = %v", err)
	}
	return sec
}

func wrapped(tb testing.TB) *postgres.WrappedKey {
	tb.Helper()
	return &postgres.WrappedKey{MasterKeyID: "mk-1", Blob: mustRandom(tb, 60)}
}

// platformContext returns an unsaved PLATFORM AES-256-GCM context of tenantID and its first version.
func platformContext(tb testing.TB, tenantID uuid.UUID) (postgres.Encryption, postgres.KeyVersion) {
	tb.Helper()
	e := postgres.Encryption{ID: uuid.New(), TenantID: tenantID, Algorithm: postgres.AlgorithmAES256GCM, KeyMode: postgres.KeyModePlatform}
	return e, postgres.KeyVersion{ID: uuid.New(), Material: wrapped(tb)}
}

// mustContext creates a PLATFORM context for tenantID.
func mustContext(tb testing.TB, s *postgres.Store, tenantID uuid.UUID) postgres.Encryption {
	tb.Helper()
	e, first := platformContext(tb, tenantID)
	if err := s.CreateEncryption(context.Background(), e, first, auditEvent("encryption.create")); err != nil {
		tb.Fatalf("CreateEncryption() = %v", err)
	}
	return e
}

// newVersionFunc returns a Rotate callback making a fresh wrapped version.
func newVersionFunc(tb testing.TB) func(postgres.Encryption, int) (postgres.KeyVersion, error) {
	return func(e postgres.Encryption, version int) (postgres.KeyVersion, error) {
		return postgres.KeyVersion{ID: uuid.New(), EncryptionID: e.ID, Version: version, State: postgres.StateActive,
			Material: &postgres.WrappedKey{MasterKeyID: "mk-1", Blob: bytes.Repeat([]byte{byte(version)}, 60)}}, nil
	}
}

// wantKind fails tb unless err is an *errs.Error of kind whose message contains msg.
func wantKind(tb testing.TB, call string, err error, kind errs.Kind, msg string) {
	tb.Helper()
	var e *errs.Error
	switch {
	case err == nil:
		tb.Errorf("%s = nil, want a %v error", call, kind)
	case !errors.As(err, &e):
		tb.Errorf("%s = %v (%T), want an *errs.Error", call, err, err)
	case e.Kind != kind:
		tb.Errorf("%s = %v (kind %v), want kind %v", call, err, e.Kind, kind)
	case !strings.Contains(e.Message, msg):
		tb.Errorf("%s message = %q, want it to contain %q", call, e.Message, msg)
	}
}

func count(tb testing.TB, pool *pgxpool.Pool, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// queryCounter is a pgx tracer counting the statements a pool runs.
type queryCounter struct {
	n atomic.Int64
}

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// waitLockWaiter waits until a session of pool's database waits for a row lock.
func waitLockWaiter(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := count(tb, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("no session waits for a lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
