package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testdb"
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

// hash returns a random 32-byte value standing for a SHA-256 digest.
func hash(tb testing.TB) []byte {
	tb.Helper()
	return mustRandom(tb, 32)
}

func auditEvent(action string) postgres.AuditEvent {
	return postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: action, Outcome: postgres.OutcomeOK,
		RemoteAddr: "192.0.2.1:4242", RequestID: "req-" + action}
}

// newTenant returns an unsaved tenant on the platform's encryption service.
func newTenant(tb testing.TB, name string) postgres.Tenant {
	tb.Helper()
	if name == "" {
		name = "tenant-" + rand.Text()
	}
	return postgres.Tenant{
		ID: uuid.New(), Name: name, KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: mustRandom(tb, 60)},
	}
}

// mustTenant creates a tenant named name (a random one if "").
func mustTenant(tb testing.TB, s *postgres.Store, name string) postgres.Tenant {
	tb.Helper()
	t := newTenant(tb, name)
	if err := s.CreateTenant(context.Background(), t, auditEvent("tenant.create")); err != nil {
		tb.Fatalf("CreateTenant(%q) = %v", t.Name, err)
	}
	return t
}

// newUser returns an unsaved user of tenantID with role, named username (a
// random name if ""); a platform admin if tenantID is uuid.Nil.
func newUser(tb testing.TB, tenantID uuid.UUID, role, username string) postgres.User {
	tb.Helper()
	if username == "" {
		username = "user-" + strings.ToLower(rand.Text())
	}
	u := postgres.User{
		ID: uuid.New(), TenantID: tenantID, Username: username, Role: role,
		PasswordHash:  "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		KDF:           postgres.KDF{Salt: mustRandom(tb, 16), MemoryKiB: 65536, Iterations: 3, Parallelism: 4},
		SecurityStamp: rand.Text(),
	}
	if tenantID == uuid.Nil {
		u.PlatformAdmin, u.Role = true, ""
	}
	return u
}

// mustUser creates a user of tenantID with role (a platform admin if
// tenantID is uuid.Nil).
func mustUser(tb testing.TB, s *postgres.Store, tenantID uuid.UUID, role string) postgres.User {
	tb.Helper()
	u := newUser(tb, tenantID, role, "")
	if err := s.CreateUser(context.Background(), u, auditEvent("user.create")); err != nil {
		tb.Fatalf("CreateUser(%q) = %v", u.Username, err)
	}
	return mustGetUser(tb, s, u.ID)
}

// stampOf returns user id's security stamp, or "" for an unknown user.
func stampOf(tb testing.TB, s *postgres.Store, id uuid.UUID) string {
	tb.Helper()
	u, err := s.GetUser(context.Background(), id)
	if err != nil {
		return ""
	}
	return u.SecurityStamp
}

func mustGetUser(tb testing.TB, s *postgres.Store, id uuid.UUID) postgres.User {
	tb.Helper()
	u, err := s.GetUser(context.Background(), id)
	if err != nil {
		tb.Fatalf("GetUser(%s) = %v", id, err)
	}
	return u
}

// mustSession starts a session of userID whose refresh token expires in an
// hour, and returns it with the token's hash.
func mustSession(tb testing.TB, s *postgres.Store, userID uuid.UUID) (postgres.Session, []byte) {
	tb.Helper()
	h := hash(tb)
	sess, err := s.CreateSession(context.Background(), userID, stampOf(tb, s, userID), h, time.Now().Add(time.Hour), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"})
	if err != nil {
		tb.Fatalf("CreateSession(%s) = %v", userID, err)
	}
	return sess, h
}

// sessionState returns whether session id is revoked and why.
func sessionState(tb testing.TB, pool *pgxpool.Pool, id uuid.UUID) (revoked bool, reason string) {
	tb.Helper()
	var r *string
	err := pool.QueryRow(context.Background(), "SELECT revoked_at IS NOT NULL, revoke_reason FROM core.sessions WHERE id = $1", id).
		Scan(&revoked, &r)
	if err != nil {
		tb.Fatalf("read session %s: %v", id, err)
	}
	if r != nil {
		reason = *r
	}
	return revoked, reason
}

// wantRevoked fails tb unless session id is revoked with reason ("" for alive).
func wantRevoked(tb testing.TB, pool *pgxpool.Pool, id uuid.UUID, reason string) {
	tb.Helper()
	revoked, got := sessionState(tb, pool, id)
	switch {
	case reason == "" && revoked:
		tb.Errorf("session %s revoked (%q), want alive", id, got)
	case reason != "" && (!revoked || got != reason):
		tb.Errorf("session %s revoked = %v, reason %q; want revoked, reason %q", id, revoked, got, reason)
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

// auditActions returns the actions of the audit events of tenantID (all
// events if nil), oldest first.
func auditActions(tb testing.TB, s *postgres.Store, tenantID *uuid.UUID) []string {
	tb.Helper()
	events, _, err := s.ListAuditEvents(context.Background(), postgres.AuditFilter{TenantID: tenantID, PageSize: 1000})
	if err != nil {
		tb.Fatalf("ListAuditEvents() = %v", err)
	}
	actions := make([]string, len(events))
	for i, e := range events {
		actions[len(events)-1-i] = e.Action
	}
	return actions
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }
