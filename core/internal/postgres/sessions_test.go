package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestCreateSession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	sess, h := mustSession(t, s, u.ID)
	if sess.ID == uuid.Nil || sess.UserID != u.ID || sess.CreatedAt.IsZero() || sess.RevokedAt != nil {
		t.Errorf("CreateSession() = %+v, want a live session of user %s", sess, u.ID)
	}

	later := time.Now().Add(time.Hour)
	unknown := uuid.New()
	tests := []struct {
		name    string
		user    uuid.UUID
		hash    []byte
		expires time.Time
		kind    errs.Kind
		message string
	}{
		{"hash taken", u.ID, h, later, errs.Conflict, "refresh token already exists"},
		{"short hash", u.ID, hash(t)[:31], later, errs.Invalid, "32 bytes"},
		{"no expiry", u.ID, hash(t), time.Time{}, errs.Invalid, "expiry"},
		{"unknown user", unknown, hash(t), later, errs.NotFound, fmt.Sprintf("user %s not found", unknown)},
	}
	for _, tt := range tests {
		_, err := s.CreateSession(ctx, tt.user, stampOf(t, s, tt.user), tt.hash, tt.expires, postgres.SessionOrigin{RemoteAddr: "192.0.2.1"})
		wantKind(t, "CreateSession("+tt.name+")", err, tt.kind, tt.message)
	}
}

// TestCreateSessionAfterACredentialChange: a login whose password check read the user before a
// concurrent password change committed gets no session, since the change revoked every session
// it could see and this one would outlive it.
func TestCreateSessionAfterACredentialChange(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	checked := u.SecurityStamp // what the login read before verifying the password
	if _, err := pool.Exec(ctx, "UPDATE core.users SET security_stamp = 'stamp-after-change' WHERE id = $1", u.ID); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateSession(ctx, u.ID, checked, hash(t), time.Now().Add(time.Hour), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"})
	wantKind(t, "CreateSession(stale stamp)", err, errs.Unauthenticated, "credentials changed during login")
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM core.sessions WHERE user_id = $1", u.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("sessions of the user after the refused login = %d (%v), want 0", n, err)
	}
	if _, err := s.CreateSession(ctx, u.ID, "stamp-after-change", hash(t), time.Now().Add(time.Hour), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"}); err != nil {
		t.Errorf("CreateSession(current stamp) = %v, want a session", err)
	}
}

func TestRotateRefreshToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	sess, h := mustSession(t, s, u.ID)

	for i := range 3 {
		next := hash(t)
		got, err := s.RotateRefreshToken(ctx, h, next, time.Now().Add(time.Hour), 0)
		if err != nil {
			t.Fatalf("rotation %d: RotateRefreshToken() = %v", i, err)
		}
		if got.ID != sess.ID || got.UserID != u.ID || !got.CreatedAt.Equal(sess.CreatedAt) || got.RevokedAt != nil {
			t.Errorf("rotation %d: RotateRefreshToken() = %+v, want session %+v", i, got, sess)
		}
		h = next
	}
	if n := count(t, pool, "SELECT count(*) FROM core.refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL", sess.ID); n != 3 {
		t.Errorf("used refresh tokens = %d, want 3", n)
	}
	st, err := s.AccessState(ctx, u.ID, sess.ID)
	if err != nil || st.SessionRevoked {
		t.Errorf("AccessState() after rotations = %+v, %v, want the session live", st, err)
	}

	_, err = s.RotateRefreshToken(ctx, h, h, time.Now().Add(time.Hour), 0)
	wantKind(t, "RotateRefreshToken(new hash taken)", err, errs.Conflict, "already exists")
	_, err = s.RotateRefreshToken(ctx, h, hash(t)[:5], time.Now().Add(time.Hour), 0)
	wantKind(t, "RotateRefreshToken(short new hash)", err, errs.Invalid, "32 bytes")
	_, err = s.RotateRefreshToken(ctx, h, hash(t), time.Time{}, 0)
	wantKind(t, "RotateRefreshToken(no expiry)", err, errs.Invalid, "expiry")
	// The refused calls used nothing up.
	if _, err := s.RotateRefreshToken(ctx, h, hash(t), time.Now().Add(time.Hour), 0); err != nil {
		t.Errorf("RotateRefreshToken() after refused calls = %v", err)
	}
}

// TestRotateRefreshTokenLifetime: a session lasts at most maxAge from its login however often it
// is refreshed: new tokens expire at that bound at the latest, and a token presented after it ends
// the session.
func TestRotateRefreshTokenLifetime(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	sess, h := mustSession(t, s, u.ID)

	next := hash(t)
	if _, err := s.RotateRefreshToken(ctx, h, next, time.Now().Add(30*24*time.Hour), 2*time.Hour); err != nil {
		t.Fatalf("RotateRefreshToken(within the lifetime) = %v", err)
	}
	var expires time.Time
	if err := pool.QueryRow(ctx, "SELECT expires_at FROM core.refresh_tokens WHERE token_hash = $1", next).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	if want := sess.CreatedAt.Add(2 * time.Hour); !expires.Equal(want) {
		t.Errorf("new token expires at %v, want the session's bound %v", expires, want)
	}
	_, err := s.RotateRefreshToken(ctx, h, hash(t), time.Now().Add(time.Hour), -time.Hour)
	wantKind(t, "RotateRefreshToken(negative lifetime)", err, errs.Invalid, "lifetime")

	// Three hours after the login, with a two-hour lifetime.
	if _, err := pool.Exec(ctx, "UPDATE core.sessions SET created_at = now() - interval '3 hours' WHERE id = $1", sess.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.RotateRefreshToken(ctx, next, hash(t), time.Now().Add(time.Hour), 2*time.Hour)
	wantKind(t, "RotateRefreshToken(lifetime over)", err, errs.Unauthenticated, "refresh token rejected")
	if revoked, reason := sessionState(t, pool, sess.ID); !revoked || reason != postgres.RevokeLifetimeOver {
		t.Errorf("session after its lifetime: revoked %v (%q), want revoked for %q", revoked, reason, postgres.RevokeLifetimeOver)
	}
}

func TestRotateRefreshTokenRejections(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)

	tests := []struct {
		name  string
		token func(t *testing.T) []byte
	}{
		{"unknown", func(t *testing.T) []byte { return hash(t) }},
		{"wrong length", func(t *testing.T) []byte { return hash(t)[:20] }},
		{"expired", func(t *testing.T) []byte {
			u := mustUser(t, s, tn.ID, postgres.RoleMember)
			h := hash(t)
			if _, err := s.CreateSession(ctx, u.ID, u.SecurityStamp, h, time.Now().Add(-time.Second), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"}); err != nil {
				t.Fatal(err)
			}
			return h
		}},
		{"session revoked", func(t *testing.T) []byte {
			u := mustUser(t, s, tn.ID, postgres.RoleMember)
			_, h := mustSession(t, s, u.ID)
			if err := s.RevokeSessionByRefreshToken(ctx, h, false, "logout", auditEvent("auth.logout")); err != nil {
				t.Fatal(err)
			}
			return h
		}},
		{"user disabled", func(t *testing.T) []byte {
			u := mustUser(t, s, tn.ID, postgres.RoleMember)
			_, h := mustSession(t, s, u.ID)
			// Behind the store's back: disabling through it revokes too.
			if _, err := pool.Exec(ctx, "UPDATE core.users SET disabled_at = now() WHERE id = $1", u.ID); err != nil {
				t.Fatal(err)
			}
			return h
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := tt.token(t)
			_, err := s.RotateRefreshToken(ctx, old, hash(t), time.Now().Add(time.Hour), 0)
			wantKind(t, "RotateRefreshToken("+tt.name+")", err, errs.Unauthenticated, "refresh token rejected")
			var e *errs.Error
			if errors.As(err, &e) && e.Err != nil {
				t.Errorf("rejection carries a cause %v; want the same bare answer for every case", e.Err)
			}
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM core.refresh_tokens WHERE used_at IS NOT NULL"); n != 0 {
		t.Errorf("refresh tokens used by rejected rotations = %d, want 0", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = $1", postgres.ActionRefreshReuse); n != 0 {
		t.Errorf("reuse events recorded for rejections that are no reuse = %d, want 0", n)
	}
}

// TestRefreshTokenReuseRevokesFamily: presenting an exchanged refresh token
// ends the whole session — the thief's and the rightful client's tokens
// alike — and the revocation and its audit event stay committed although
// the call fails.
func TestRefreshTokenReuseRevokesFamily(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	sess, t1 := mustSession(t, s, u.ID)
	otherSess, otherToken := mustSession(t, s, u.ID)
	t2 := hash(t)
	if _, err := s.RotateRefreshToken(ctx, t1, t2, time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}

	_, err := s.RotateRefreshToken(ctx, t1, hash(t), time.Now().Add(time.Hour), 0)
	wantKind(t, "RotateRefreshToken(reused)", err, errs.Unauthenticated, "refresh token rejected")
	wantRevoked(t, pool, sess.ID, postgres.RevokeRefreshTokenUsed)
	wantRevoked(t, pool, otherSess.ID, "") // only the family of the reused token
	_, err = s.RotateRefreshToken(ctx, t2, hash(t), time.Now().Add(time.Hour), 0)
	wantKind(t, "RotateRefreshToken(newest token of the revoked family)", err, errs.Unauthenticated, "refresh token rejected")
	if st, err := s.AccessState(ctx, u.ID, sess.ID); err != nil || !st.SessionRevoked {
		t.Errorf("AccessState(revoked family) = %+v, %v, want SessionRevoked", st, err)
	}
	if _, err := s.RotateRefreshToken(ctx, otherToken, hash(t), time.Now().Add(time.Hour), 0); err != nil {
		t.Errorf("RotateRefreshToken(other session) = %v, want nil", err)
	}

	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tn.ID, Action: postgres.ActionRefreshReuse})
	if err != nil || len(events) != 1 {
		t.Fatalf("reuse audit events = %+v, %v, want 1", events, err)
	}
	if e := events[0]; e.Target != "session:"+sess.ID.String() || e.Outcome != postgres.OutcomeUnauthenticated {
		t.Errorf("reuse audit event = %+v, want target session:%s, outcome UNAUTHENTICATED", e, sess.ID)
	}
}

// TestRotateRefreshTokenConcurrent: one refresh token exchanged ten times at
// once succeeds once; the other nine are reuses, which end the session.
func TestRotateRefreshTokenConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	sess, h := mustSession(t, s, u.ID)

	errc := make(chan error, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			_, err := s.RotateRefreshToken(ctx, h, hash(t), time.Now().Add(time.Hour), 0)
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	var wins int
	for err := range errc {
		switch {
		case err == nil:
			wins++
		case !errs.Is(err, errs.Unauthenticated):
			t.Errorf("concurrent RotateRefreshToken() = %v, want nil or Unauthenticated", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d of 10 concurrent rotations of one token succeeded, want 1", wins)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.refresh_tokens WHERE session_id = $1", sess.ID); n != 2 {
		t.Errorf("refresh tokens of the session = %d, want 2 (the old and one new)", n)
	}
	wantRevoked(t, pool, sess.ID, postgres.RevokeRefreshTokenUsed)
}

func TestRevokeSessionByRefreshToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	sess, t1 := mustSession(t, s, u.ID)
	other, _ := mustSession(t, s, u.ID)
	t2 := hash(t)
	if _, err := s.RotateRefreshToken(ctx, t1, t2, time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}

	// Any token of the family names the session, the used one included;
	// repeating and unknown tokens are no error.
	for _, h := range [][]byte{t1, t2, hash(t)} {
		if err := s.RevokeSessionByRefreshToken(ctx, h, false, "logout", auditEvent("auth.logout")); err != nil {
			t.Errorf("RevokeSessionByRefreshToken() = %v, want nil", err)
		}
	}
	wantRevoked(t, pool, sess.ID, "logout")
	wantRevoked(t, pool, other.ID, "")
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'auth.logout'"); n != 3 {
		t.Errorf("logout audit events = %d, want 3", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'auth.logout' AND tenant_id = $1 AND target = $2",
		tn.ID, "session:"+sess.ID.String()); n != 2 {
		t.Errorf("logout audit events naming tenant and session = %d, want 2", n)
	}
	wantKind(t, "RevokeSessionByRefreshToken(no reason)", s.RevokeSessionByRefreshToken(ctx, t2, false, "", auditEvent("auth.logout")),
		errs.Invalid, "reason")
}

func TestRevokeUserSessions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u, other := mustUser(t, s, tn.ID, postgres.RoleMember), mustUser(t, s, tn.ID, postgres.RoleMember)
	a, _ := mustSession(t, s, u.ID)
	b, _ := mustSession(t, s, u.ID)
	c, _ := mustSession(t, s, u.ID)
	o, _ := mustSession(t, s, other.ID)

	if err := s.RevokeUserSessions(ctx, u.ID, "logout everywhere", b.ID, auditEvent("auth.logout.all")); err != nil {
		t.Fatalf("RevokeUserSessions(except b) = %v", err)
	}
	wantRevoked(t, pool, a.ID, "logout everywhere")
	wantRevoked(t, pool, b.ID, "")
	wantRevoked(t, pool, c.ID, "logout everywhere")
	wantRevoked(t, pool, o.ID, "")

	if err := s.RevokeUserSessions(ctx, u.ID, "admin", uuid.Nil, auditEvent("auth.logout.all")); err != nil {
		t.Fatalf("RevokeUserSessions(all) = %v", err)
	}
	wantRevoked(t, pool, a.ID, "logout everywhere") // the first reason stays
	wantRevoked(t, pool, b.ID, "admin")

	unknown := uuid.New()
	wantKind(t, "RevokeUserSessions(unknown user)", s.RevokeUserSessions(ctx, unknown, "x", uuid.Nil, auditEvent("x")),
		errs.NotFound, fmt.Sprintf("user %s not found", unknown))
	wantKind(t, "RevokeUserSessions(no reason)", s.RevokeUserSessions(ctx, u.ID, "", uuid.Nil, auditEvent("x")),
		errs.Invalid, "reason")
}

func TestAccessState(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, url := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u, other := mustUser(t, s, tn.ID, postgres.RoleAdmin), mustUser(t, s, tn.ID, postgres.RoleMember)
	admin := mustUser(t, s, uuid.Nil, "")
	sess, _ := mustSession(t, s, u.ID)
	revoked, revokedToken := mustSession(t, s, u.ID)
	if err := s.RevokeSessionByRefreshToken(ctx, revokedToken, false, "logout", auditEvent("auth.logout")); err != nil {
		t.Fatal(err)
	}
	otherSess, _ := mustSession(t, s, other.ID)
	adminSess, _ := mustSession(t, s, admin.ID)

	tests := []struct {
		name          string
		user, session uuid.UUID
		want          postgres.AccessState
	}{
		{"live", u.ID, sess.ID, postgres.AccessState{SecurityStamp: u.SecurityStamp, Role: postgres.RoleAdmin}},
		{"revoked", u.ID, revoked.ID, postgres.AccessState{SecurityStamp: u.SecurityStamp, Role: postgres.RoleAdmin, SessionRevoked: true}},
		{"another user's session", u.ID, otherSess.ID, postgres.AccessState{SecurityStamp: u.SecurityStamp, Role: postgres.RoleAdmin, SessionRevoked: true}},
		{"unknown session", u.ID, uuid.New(), postgres.AccessState{SecurityStamp: u.SecurityStamp, Role: postgres.RoleAdmin, SessionRevoked: true}},
		{"platform admin", admin.ID, adminSess.ID, postgres.AccessState{SecurityStamp: admin.SecurityStamp}},
	}
	for _, tt := range tests {
		if got, err := s.AccessState(ctx, tt.user, tt.session); err != nil || got != tt.want {
			t.Errorf("AccessState(%s) = %+v, %v, want %+v", tt.name, got, err, tt.want)
		}
	}

	if _, err := s.SetUserDisabled(ctx, u.ID, true, "stamp-2", auditEvent("user.disable")); err != nil {
		t.Fatal(err)
	}
	want := postgres.AccessState{SecurityStamp: "stamp-2", Disabled: true, SessionRevoked: true, Role: postgres.RoleAdmin}
	if got, err := s.AccessState(ctx, u.ID, sess.ID); err != nil || got != want {
		t.Errorf("AccessState(disabled) = %+v, %v, want %+v", got, err, want)
	}
	_, err := s.AccessState(ctx, uuid.New(), sess.ID)
	wantKind(t, "AccessState(unknown user)", err, errs.NotFound, "not found")

	// Every authenticated request pays for it: one statement, no transaction.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = postgres.Schema
	var queries queryCounter
	cfg.ConnConfig.Tracer = &queries
	counted, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(counted.Close)
	if _, err := postgres.NewStore(counted).AccessState(ctx, other.ID, otherSess.ID); err != nil {
		t.Fatal(err)
	}
	if n := queries.n.Load(); n != 1 {
		t.Errorf("AccessState() ran %d statements, want 1", n)
	}
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

func TestPruneExpired(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	now := time.Now()

	// A session whose only token expired: pruned with it.
	gone := hash(t)
	goneSess, err := s.CreateSession(ctx, u.ID, u.SecurityStamp, gone, now.Add(-time.Minute), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	// A session with an expired, used token and a live one: only the
	// expired token goes.
	kept, old := mustSession(t, s, u.ID)
	if _, err := s.RotateRefreshToken(ctx, old, hash(t), now.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE core.refresh_tokens SET expires_at = $2 WHERE token_hash = $1", old, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Throttle rows: one whose window is over, one still counting, one
	// locked (limit 1: the first attempt locks).
	base := now.Add(-2 * time.Hour)
	for _, c := range []struct {
		key   string
		at    time.Time
		limit int
	}{{"old", base, 5}, {"counting", now, 5}, {"locked", base, 1}} {
		if _, err := s.ThrottleTake(ctx, "login", c.key, c.at, c.limit, 10*time.Minute, 3*time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	// The sessions' creation times must be before the cut-off.
	n, err := s.PruneExpired(ctx, time.Now().Add(time.Second))
	if err != nil || n != 4 {
		t.Errorf("PruneExpired() = %d, %v, want 4 (two tokens, a session, a throttle row)", n, err)
	}
	if c := count(t, pool, "SELECT count(*) FROM core.sessions WHERE id = $1", goneSess.ID); c != 0 {
		t.Errorf("session without tokens left = %d, want pruned", c)
	}
	if c := count(t, pool, "SELECT count(*) FROM core.refresh_tokens WHERE session_id = $1", kept.ID); c != 1 {
		t.Errorf("tokens of the live session = %d, want 1", c)
	}
	var keys []string
	rows, _ := pool.Query(ctx, "SELECT key FROM core.throttle ORDER BY key")
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		keys = append(keys, k)
	}
	if rows.Err() != nil || fmt.Sprint(keys) != "[counting locked]" {
		t.Errorf("throttle rows after pruning = %v, %v, want [counting locked]", keys, rows.Err())
	}
	if n, err := s.PruneExpired(ctx, time.Now()); err != nil || n != 0 {
		t.Errorf("PruneExpired() again = %d, %v, want 0", n, err)
	}
}

func TestListAndRevokeOpenSessions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleOwner)
	other := mustUser(t, s, tn.ID, postgres.RoleMember)

	first, firstHash := mustSession(t, s, u.ID)
	second, err := s.CreateSession(ctx, u.ID, u.SecurityStamp, hash(t), time.Now().Add(time.Hour), postgres.SessionOrigin{RemoteAddr: "198.51.100.7:" + strings.Repeat("9", 300), UserAgent: "custos/1.0 (linux)"})
	if err != nil {
		t.Fatal(err)
	}
	// Open sessions only: not a revoked one, nor one whose every refresh token has expired.
	revoked, _ := mustSession(t, s, u.ID)
	if err := s.RevokeSession(ctx, u.ID, revoked.ID, "test", auditEvent("auth.session.revoke")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSession(ctx, u.ID, u.SecurityStamp, hash(t), time.Now().Add(-time.Minute), postgres.SessionOrigin{RemoteAddr: "192.0.2.9"}); err != nil {
		t.Fatal(err)
	}
	othersSession, _ := mustSession(t, s, other.ID)

	time.Sleep(10 * time.Millisecond)
	if _, err := s.RotateRefreshToken(ctx, firstHash, hash(t), time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListOpenSessions(ctx, u.ID)
	if err != nil || len(got) != 2 || got[0].ID != second.ID || got[1].ID != first.ID {
		t.Fatalf("ListOpenSessions() = %+v, %v; want the second then the first session", got, err)
	}
	if got[1].RemoteAddr != "192.0.2.1" || !got[1].LastRefreshedAt.After(got[1].CreatedAt) {
		t.Errorf("first session = %+v, want its address and a refresh after its creation", got[1])
	}
	if n := len([]rune(got[0].RemoteAddr)); n != 200 || got[0].UserAgent != "custos/1.0 (linux)" || got[0].LastRefreshedAt.Before(got[0].CreatedAt) {
		t.Errorf("second session = %+v; want its address cut to 200 characters (got %d) and its user agent", got[0], n)
	}

	// Another user's session, an unknown one or one already ended: NotFound, and nothing changes.
	for _, id := range []uuid.UUID{othersSession.ID, uuid.New(), revoked.ID} {
		err := s.RevokeSession(ctx, u.ID, id, "test", auditEvent("auth.session.revoke"))
		wantKind(t, "RevokeSession(not an open session of the user)", err, errs.NotFound, "not found")
	}
	if r, _ := sessionState(t, pool, othersSession.ID); r {
		t.Error("another user's session was revoked")
	}
	if err := s.RevokeSession(ctx, u.ID, second.ID, "revoked by the user", auditEvent("auth.session.revoke")); err != nil {
		t.Fatal(err)
	}
	if r, reason := sessionState(t, pool, second.ID); !r || reason != "revoked by the user" {
		t.Errorf("session after RevokeSession: revoked %v, reason %q", r, reason)
	}
	if st, err := s.AccessState(ctx, u.ID, second.ID); err != nil || !st.SessionRevoked {
		t.Errorf("AccessState() of the revoked session = %+v, %v; want it revoked", st, err)
	}
	if got, _ := s.ListOpenSessions(ctx, u.ID); len(got) != 1 || got[0].ID != first.ID {
		t.Errorf("ListOpenSessions() after the revoke = %+v, want the first session alone", got)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'auth.session.revoke' AND target = $1 AND tenant_id = $2",
		"session:"+second.ID.String(), tn.ID); n != 1 {
		t.Errorf("auth.session.revoke audit events for the session = %d, want 1", n)
	}
}
