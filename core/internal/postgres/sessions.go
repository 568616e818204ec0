package postgres

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// maxReasonLen bounds a revocation reason, in characters.
const maxReasonLen = 200

// Session is a refresh-token family: one login and every refresh descending
// from it. Revoking it ends the login on every device holding its tokens.
type Session struct {
	ID, UserID uuid.UUID
	CreatedAt  time.Time
	RevokedAt  *time.Time // nil while the session lives
}

// AccessState is what every authenticated request checks beside the token's
// signature.
type AccessState struct {
	SecurityStamp  string // the user's current stamp: a token with another one is stale
	Disabled       bool
	SessionRevoked bool   // also true for an unknown session or another user's
	Role           string // the user's current role ("" for the platform admin): tokens may carry an older one
}

// errRefreshRejected is the one answer to every refused refresh token, so
// that callers learn nothing about why.
var errRefreshRejected = errs.E(errs.Unauthenticated, "refresh token rejected")

// SessionOrigin is where a login came from, as core saw it; each part is cut
// to 200 characters when stored.
type SessionOrigin struct {
	RemoteAddr string // the client address
	UserAgent  string // the client software as it named itself: shown, never trusted
	// MFATokenID is the jti of the MFA token whose second factor opened the session, if any:
	// one token opens one session at most.
	MFATokenID string
}

// CreateSession starts a session of user userID whose first refresh token
// has SHA-256 refreshHash and expires at expiresAt, made from origin, and
// returns it. stamp is
// the user's security stamp when their credentials were checked: if a
// password or MFA change (or a disable) has bumped it since, the login raced
// that change and no session is created.
//
// Errors: Invalid for a hash that is not 32 bytes or a zero expiresAt;
// NotFound ("user <id> not found"); FailedPrecondition ("user <id> is
// disabled"); Unauthenticated ("credentials changed during login") for a
// stale stamp, or ("MFA token already used") for an origin's MFATokenID that
// opened a session before; Conflict ("refresh token already exists") if the
// hash is taken.
func (s *Store) CreateSession(ctx context.Context, userID uuid.UUID, stamp string, refreshHash []byte, expiresAt time.Time, origin SessionOrigin) (Session, error) {
	if err := validateRefreshToken(refreshHash, expiresAt); err != nil {
		return Session{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Session{}, fail("create session", fmt.Errorf("new session id: %w", err))
	}
	sess := Session{ID: id, UserID: userID}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// FOR SHARE orders this after a concurrent disable, password or
		// MFA change of the user (they update its row and bump its stamp):
		// either that change sees and revokes the new session, or this sees
		// the user disabled or the stamp changed since the credentials were
		// checked.
		var (
			disabled bool
			current  string
		)
		err := tx.QueryRow(ctx, "SELECT disabled_at IS NOT NULL, security_stamp FROM users WHERE id = $1 FOR SHARE", userID).
			Scan(&disabled, &current)
		if errors.Is(err, pgx.ErrNoRows) {
			return userNotFound(userID)
		}
		if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if disabled {
			return errs.E(errs.FailedPrecondition, "user %s is disabled", userID)
		}
		if subtle.ConstantTimeCompare([]byte(current), []byte(stamp)) != 1 {
			return errs.E(errs.Unauthenticated, "credentials changed during login: log in again")
		}
		err = tx.QueryRow(ctx, "INSERT INTO sessions (id, user_id, remote_addr, user_agent, mfa_token_id) VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
			id, userID, truncate(origin.RemoteAddr, 200), truncate(origin.UserAgent, 200), nullIfEmpty(origin.MFATokenID)).Scan(&sess.CreatedAt)
		if c, dup := uniqueViolation(err); dup && c == "sessions_mfa_token_id_key" {
			return errs.E(errs.Unauthenticated, "MFA token already used: log in again")
		}
		if err != nil {
			return fmt.Errorf("insert session: %w", err)
		}
		return insertRefreshToken(ctx, tx, id, refreshHash, expiresAt)
	})
	if err != nil {
		return Session{}, fail("create session", err)
	}
	return sess, nil
}

func validateRefreshToken(hash []byte, expiresAt time.Time) error {
	switch {
	case len(hash) != hashLen:
		return errs.E(errs.Invalid, "refresh token hash must be %d bytes (SHA-256), got %d", hashLen, len(hash))
	case expiresAt.IsZero():
		return errs.E(errs.Invalid, "refresh token expiry is required")
	}
	return nil
}

func insertRefreshToken(ctx context.Context, tx pgx.Tx, sessionID uuid.UUID, hash []byte, expiresAt time.Time) error {
	_, err := tx.Exec(ctx, "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
		hash, sessionID, expiresAt)
	if _, dup := uniqueViolation(err); dup {
		return errs.E(errs.Conflict, "refresh token already exists")
	}
	if err != nil {
		return fmt.Errorf("insert refresh token: %w", err)
	}
	return nil
}

// RotateRefreshToken exchanges the refresh token whose SHA-256 is oldHash
// for a new one, newHash, expiring at expiresAt, in the same session, and
// returns the session. Each token can be exchanged once.
//
// When the old token was already exchanged, someone is replaying it — a
// thief or the rightful client, which cannot be told apart — so the whole
// session is revoked (reason "refresh token reused") and an
// "auth.refresh.reuse" audit event recorded; both are committed although the
// call fails.
//
// A session lasts at most maxAge from its login, however often it is
// refreshed (0: no bound): the new token expires at expiresAt or at that
// bound, whichever comes first, and a token presented after it is rejected
// (the session is revoked, reason "session lifetime over").
//
// Errors: Invalid for a new hash that is not 32 bytes, a zero expiresAt or a
// negative maxAge; Unauthenticated ("refresh token rejected") alike for an
// unknown, expired or reused token, a revoked or too old session or a
// disabled user; Conflict ("refresh token already exists") if newHash is
// taken.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt time.Time, maxAge time.Duration) (Session, error) {
	if err := validateRefreshToken(newHash, expiresAt); err != nil {
		return Session{}, err
	}
	if maxAge < 0 {
		return Session{}, errs.E(errs.Invalid, "session lifetime must not be negative")
	}
	if len(oldHash) != hashLen {
		return Session{}, errRefreshRejected
	}
	var (
		sess          Session
		reused, ended bool
	)
	// A reuse is detected and punished in one transaction that commits: the
	// refusal is returned only after it.
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		reused, ended = false, false
		var (
			tenantID        *uuid.UUID
			used            bool
			expired, active bool
			over            bool
			bound           *time.Time // when the session's lifetime ends; nil: unbounded
		)
		err := tx.QueryRow(ctx, `
			SELECT s.id, s.user_id, s.created_at, s.revoked_at, t.used_at IS NOT NULL, t.expires_at <= now(),
			       u.disabled_at IS NULL, u.tenant_id,
			       CASE WHEN $2::bigint > 0 THEN s.created_at + $2::bigint * interval '1 millisecond' END,
			       $2::bigint > 0 AND s.created_at + $2::bigint * interval '1 millisecond' <= now()
			  FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
			 WHERE t.token_hash = $1
			   FOR UPDATE OF t, s`, oldHash, maxAge.Milliseconds()).
			Scan(&sess.ID, &sess.UserID, &sess.CreatedAt, &sess.RevokedAt, &used, &expired, &active, &tenantID, &bound, &over)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errRefreshRejected
		case err != nil:
			return fmt.Errorf("find refresh token: %w", err)
		case sess.RevokedAt != nil, expired, !active:
			return errRefreshRejected
		case over:
			ended = true
			return revokeSession(ctx, tx, sess.ID, RevokeLifetimeOver)
		case used:
			reused = true
			if err := revokeSession(ctx, tx, sess.ID, RevokeRefreshTokenUsed); err != nil {
				return err
			}
			return insertAudit(ctx, tx, AuditEvent{
				TenantID: tenantID, ActorType: ActorSystem, Action: ActionRefreshReuse,
				Target: "session:" + sess.ID.String(), Outcome: OutcomeUnauthenticated,
			})
		}
		// The row lock makes this the only exchange; the condition keeps
		// the statement a compare-and-set on its own.
		tag, err := tx.Exec(ctx, "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL", oldHash)
		if err != nil {
			return fmt.Errorf("mark refresh token used: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return errs.E(errs.Aborted, "refresh token exchanged concurrently")
		}
		if bound != nil && bound.Before(expiresAt) {
			expiresAt = *bound
		}
		return insertRefreshToken(ctx, tx, sess.ID, newHash, expiresAt)
	})
	switch {
	case err != nil:
		return Session{}, fail("rotate refresh token", err)
	case reused, ended:
		return Session{}, errRefreshRejected
	}
	return sess, nil
}

// revokeSession revokes session id unless it is revoked already.
func revokeSession(ctx context.Context, tx pgx.Tx, id uuid.UUID, reason string) error {
	_, err := tx.Exec(ctx, "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
		id, reason)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// revokeSessions revokes every live session of user userID but except
// (uuid.Nil: none spared).
func revokeSessions(ctx context.Context, tx pgx.Tx, userID, except uuid.UUID, reason string) error {
	_, err := tx.Exec(ctx, `
		UPDATE sessions SET revoked_at = now(), revoke_reason = $3
		 WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2`, userID, except, reason)
	if err != nil {
		return fmt.Errorf("revoke sessions: %w", err)
	}
	return nil
}

func validateReason(reason string) error {
	if !validText(reason, 1, maxReasonLen) {
		return errs.E(errs.Invalid, "revocation reason must be 1 to %d characters without control characters", maxReasonLen)
	}
	return nil
}

// RevokeSessionByRefreshToken revokes the session of the refresh token whose
// SHA-256 is hash (any token of the session, used or not): a logout; with
// all, every session of the token's user: a logout everywhere, which the
// refresh token alone proves the right to (a client need not hold a valid
// access token to end a thief's sessions). The audit event is recorded with
// the token's user as its actor. Ending one session is idempotent: an
// unknown token or a revoked session is no error, and the event is recorded
// either way.
//
// Errors: Invalid for an empty or over-long reason; Unauthenticated with
// all for a token core does not know (expired and forgotten, or never
// issued): nothing was ended, so the caller must not be told otherwise.
func (s *Store) RevokeSessionByRefreshToken(ctx context.Context, hash []byte, all bool, reason string, audit AuditEvent) error {
	if err := validateReason(reason); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var (
			sessionID, userID uuid.UUID
			tenantID          *uuid.UUID
		)
		// FOR NO KEY UPDATE of the user orders a logout everywhere with a
		// concurrent CreateSession (FOR SHARE), as RevokeUserSessions does.
		var live bool
		err := tx.QueryRow(ctx, `
			SELECT s.id, u.id, u.tenant_id, s.revoked_at IS NULL AND t.expires_at > now()
			  FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
			 WHERE t.token_hash = $1
			   FOR NO KEY UPDATE OF u`, hash).Scan(&sessionID, &userID, &tenantID, &live)
		switch {
		case err == nil && all && !live:
			// The token of an ended session — revoked, by a password change or a detected reuse,
			// or expired — proves nothing now: a thief keeping one must not be able to end the
			// owner's new sessions.
			return errs.E(errs.Unauthenticated, "refresh token rejected: its session has ended, so nothing was ended; log in, then log out everywhere again")
		case errors.Is(err, pgx.ErrNoRows) && all:
			return errs.E(errs.Unauthenticated, "refresh token rejected: nothing was ended; log in, then log out everywhere again")
		case errors.Is(err, pgx.ErrNoRows):
			return insertAudit(ctx, tx, audit)
		case err != nil:
			return fmt.Errorf("find refresh token: %w", err)
		}
		audit.ActorType, audit.ActorID = ActorUser, &userID
		if all {
			if err := revokeSessions(ctx, tx, userID, uuid.Nil, reason); err != nil {
				return err
			}
			return insertAudit(ctx, tx, audit.about(tenantID, "user:"+userID.String()))
		}
		if err := revokeSession(ctx, tx, sessionID, reason); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(tenantID, "session:"+sessionID.String()))
	})
	return fail("revoke session", err)
}

// RevokeUserSessions revokes every session of user userID but except
// (uuid.Nil: all of them), giving reason: "log out everywhere", or an
// administrator ending a user's logins.
//
// Errors: Invalid for an empty or over-long reason; NotFound ("user <id> not
// found").
func (s *Store) RevokeUserSessions(ctx context.Context, userID uuid.UUID, reason string, except uuid.UUID, audit AuditEvent) error {
	if err := validateReason(reason); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// FOR NO KEY UPDATE orders this with a concurrent CreateSession
		// (FOR SHARE): a session created meanwhile is revoked too.
		var tenantID *uuid.UUID
		err := tx.QueryRow(ctx, "SELECT tenant_id FROM users WHERE id = $1 FOR NO KEY UPDATE", userID).Scan(&tenantID)
		if errors.Is(err, pgx.ErrNoRows) {
			return userNotFound(userID)
		}
		if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if err := revokeSessions(ctx, tx, userID, except, reason); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(tenantID, "user:"+userID.String()))
	})
	return fail("revoke user sessions", err)
}

// OpenSession describes a session that can still be used: not revoked, with a
// refresh token that has not expired.
type OpenSession struct {
	ID              uuid.UUID
	CreatedAt       time.Time
	LastRefreshedAt time.Time // when its newest refresh token was issued
	SessionOrigin             // of the login
}

// maxOpenSessions bounds ListOpenSessions.
const maxOpenSessions = 1000

// ListOpenSessions returns user userID's open sessions, newest first, at most
// 1000 (the oldest beyond are left out).
func (s *Store) ListOpenSessions(ctx context.Context, userID uuid.UUID) ([]OpenSession, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT s.id, s.created_at, max(t.issued_at), s.remote_addr, s.user_agent
		  FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id
		 WHERE s.user_id = $1 AND s.revoked_at IS NULL
		 GROUP BY s.id
		HAVING max(t.expires_at) > now()
		 ORDER BY s.created_at DESC, s.id DESC
		 LIMIT $2`, userID, maxOpenSessions)
	if err != nil {
		return nil, fail("list sessions", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OpenSession, error) {
		var o OpenSession
		err := r.Scan(&o.ID, &o.CreatedAt, &o.LastRefreshedAt, &o.RemoteAddr, &o.UserAgent)
		return o, err
	})
	return out, fail("list sessions", err)
}

// RevokeSession ends session sessionID of user userID (reason says why) and
// records audit.
//
// Errors: NotFound ("session <id> not found") when it is not one of the
// user's open sessions: unknown, another user's, or already revoked.
func (s *Store) RevokeSession(ctx context.Context, userID, sessionID uuid.UUID, reason string, audit AuditEvent) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var tenantID *uuid.UUID
		err := tx.QueryRow(ctx, `UPDATE sessions s SET revoked_at = now(), revoke_reason = $3
			  FROM users u
			 WHERE s.id = $1 AND s.user_id = $2 AND u.id = s.user_id AND s.revoked_at IS NULL
			RETURNING u.tenant_id`, sessionID, userID, reason).Scan(&tenantID)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "session %s not found", sessionID)
		}
		if err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(tenantID, "session:"+sessionID.String()))
	})
	return fail("revoke session", err)
}

// AccessState returns, in one query, what decides whether an access token of
// user userID in session sessionID is still good: the user's security stamp
// and role, whether it is disabled, and whether the session is revoked
// (or unknown, or another user's).
//
// Errors: NotFound ("user <id> not found").
func (s *Store) AccessState(ctx context.Context, userID, sessionID uuid.UUID) (AccessState, error) {
	var st AccessState
	err := s.pool.QueryRow(ctx, `
		SELECT u.security_stamp, u.disabled_at IS NOT NULL, s.id IS NULL OR s.revoked_at IS NOT NULL, COALESCE(u.role, '')
		  FROM users u LEFT JOIN sessions s ON s.id = $2 AND s.user_id = u.id
		 WHERE u.id = $1`, userID, sessionID).Scan(&st.SecurityStamp, &st.Disabled, &st.SessionRevoked, &st.Role)
	if errors.Is(err, pgx.ErrNoRows) {
		return AccessState{}, userNotFound(userID)
	}
	if err != nil {
		return AccessState{}, fail("read access state", err)
	}
	return st, nil
}

// PruneExpired deletes what can no longer matter at time before, normally
// the current time: refresh tokens that expired before it (an expired token
// is refused whether or not it was used, so its reuse needs no detecting),
// sessions created before it that have no token left (they cannot be
// refreshed, and [Store.AccessState] reports an unknown session as revoked
// just as a revoked one), and throttle counters whose window and lock both
// ended before it. It returns how many rows it deleted in all.
//
// It returns no error of its own.
func (s *Store) PruneExpired(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		for _, stmt := range []struct{ what, sql string }{
			{"refresh tokens", "DELETE FROM refresh_tokens WHERE expires_at < $1"},
			{"sessions", `DELETE FROM sessions s WHERE s.created_at < $1
				AND NOT EXISTS (SELECT FROM refresh_tokens t WHERE t.session_id = s.id)`},
			{"throttle counters", "DELETE FROM throttle WHERE expires_at < $1"},
		} {
			tag, err := tx.Exec(ctx, stmt.sql, before)
			if err != nil {
				return fmt.Errorf("prune %s: %w", stmt.what, err)
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, fail("prune expired", err)
	}
	return n, nil
}
