package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// maxThrottleText bounds a throttle scope or key, in characters.
const maxThrottleText = 300

func validateThrottleKey(scope, key string) error {
	if !validText(scope, 1, maxThrottleText) || !validText(key, 1, maxThrottleText) {
		return errs.E(errs.Invalid, "throttle scope and key must be 1 to %d characters without control characters", maxThrottleText)
	}
	return nil
}

// ThrottleState returns until when key is locked out in scope (scopes such
// as "login", "totp", "hint" keep separate counters for the same key), or
// the zero time if it is not locked at now.
//
// Errors: Invalid for a scope or key that is not 1–300 characters without
// control characters.
func (s *Store) ThrottleState(ctx context.Context, scope, key string, now time.Time) (time.Time, error) {
	if err := validateThrottleKey(scope, key); err != nil {
		return time.Time{}, err
	}
	var lockedUntil time.Time
	err := s.pool.QueryRow(ctx, "SELECT locked_until FROM throttle WHERE scope = $1 AND key = $2 AND locked_until > $3",
		scope, key, now).Scan(&lockedUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fail("read throttle state", err)
	}
	return lockedUntil, nil
}

// throttleFailSQL counts one failure in one atomic upsert. With t the
// stored row: while t is locked at now ($3) nothing changes; a window that
// began window ago or earlier ($5 = now - window), or a lock that has ended,
// restarts the count at 1 in a new window starting now; when the count
// reaches limit ($4) the key is locked until $6 = now + lockout. The row
// expires ($7 = now + window) when both its window and lock have ended.
const throttleFailSQL = `
	INSERT INTO throttle AS t (scope, key, failures, window_start, locked_until, expires_at)
	VALUES ($1, $2, 1, $3::timestamptz, CASE WHEN 1 >= $4::int THEN $6::timestamptz END,
	        GREATEST($7::timestamptz, CASE WHEN 1 >= $4 THEN $6 END))
	ON CONFLICT (scope, key) DO UPDATE SET
	    failures     = CASE WHEN ` + throttleLocked + ` THEN t.failures ELSE ` + throttleCount + ` END,
	    window_start = CASE WHEN ` + throttleLocked + ` THEN t.window_start ELSE ` + throttleStart + ` END,
	    locked_until = CASE WHEN ` + throttleLocked + ` THEN t.locked_until
	                        WHEN ` + throttleCount + ` >= $4 THEN $6 END,
	    expires_at   = CASE WHEN ` + throttleLocked + ` THEN t.expires_at
	                        ELSE GREATEST(` + throttleStart + ` + ($7 - $3),
	                                      CASE WHEN ` + throttleCount + ` >= $4 THEN $6 END) END
	RETURNING locked_until`

// Expressions of throttleFailSQL over the stored row t.
const (
	throttleLocked  = `COALESCE(t.locked_until > $3, false)`
	throttleRestart = `(t.window_start <= $5 OR COALESCE(t.locked_until <= $3, false))`
	throttleCount   = `(CASE WHEN ` + throttleRestart + ` THEN 1 ELSE t.failures + 1 END)`
	throttleStart   = `(CASE WHEN ` + throttleRestart + ` THEN $3 ELSE t.window_start END)`
)

// ThrottleFail counts a failed attempt of key in scope at now, and returns
// until when the key is locked out, or the zero time if it is not. Failures
// are counted in a window of length window that starts at the first one;
// when they reach limit within it, the key is locked until now + lockout.
// Once the window or the lock is over, counting starts afresh. A failure
// counted while the key is locked changes nothing: callers are expected to
// refuse locked keys before trying the credential at all. One atomic
// statement: concurrent failures on any number of replicas all count.
//
// Errors: Invalid for a scope or key that is not 1–300 characters without
// control characters, a limit below 1, or a window or lockout that is not
// positive.
func (s *Store) ThrottleFail(ctx context.Context, scope, key string, now time.Time, limit int, window, lockout time.Duration) (time.Time, error) {
	if err := validateThrottleKey(scope, key); err != nil {
		return time.Time{}, err
	}
	switch {
	case limit < 1 || limit > 1<<30:
		return time.Time{}, errs.E(errs.Invalid, "throttle limit must be at least 1")
	case window < time.Microsecond || lockout < time.Microsecond:
		return time.Time{}, errs.E(errs.Invalid, "throttle window and lockout must be positive")
	}
	var lockedUntil *time.Time
	err := s.pool.QueryRow(ctx, throttleFailSQL, scope, key, now, limit, now.Add(-window), now.Add(lockout), now.Add(window)).
		Scan(&lockedUntil)
	if err != nil {
		return time.Time{}, fail("count throttle failure", err)
	}
	if lockedUntil == nil || !lockedUntil.After(now) {
		return time.Time{}, nil
	}
	return *lockedUntil, nil
}

// ThrottleReset forgets the failures and lock of key in scope, after a
// success. Resetting an unknown key is no error.
//
// Errors: Invalid for a scope or key that is not 1–300 characters without
// control characters.
func (s *Store) ThrottleReset(ctx context.Context, scope, key string) error {
	if err := validateThrottleKey(scope, key); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM throttle WHERE scope = $1 AND key = $2", scope, key); err != nil {
		return fail("reset throttle", fmt.Errorf("delete throttle row: %w", err))
	}
	return nil
}
