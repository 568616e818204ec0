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

// throttleTakeSQL counts one attempt in one atomic upsert, unless the stored
// row t is locked at now ($3): then nothing changes and no row is returned.
// A window that began window ago or earlier ($5 = now - window), or a lock
// that has ended, restarts the count at 1 in a new window starting now; when
// the count reaches limit ($4) the key is locked until $6 = now + lockout.
// The row expires ($7 = now + window) when both its window and lock have
// ended.
const throttleTakeSQL = `
	INSERT INTO throttle AS t (scope, key, failures, window_start, locked_until, expires_at)
	VALUES ($1, $2, 1, $3::timestamptz, CASE WHEN 1 >= $4::int THEN $6::timestamptz END,
	        GREATEST($7::timestamptz, CASE WHEN 1 >= $4 THEN $6 END))
	ON CONFLICT (scope, key) DO UPDATE SET
	    failures     = ` + throttleCount + `,
	    window_start = ` + throttleStart + `,
	    locked_until = CASE WHEN ` + throttleCount + ` >= $4 THEN $6 END,
	    expires_at   = GREATEST(` + throttleStart + ` + ($7 - $3), CASE WHEN ` + throttleCount + ` >= $4 THEN $6 END)
	WHERE NOT COALESCE(t.locked_until > $3, false)
	RETURNING 1`

// Expressions of throttleTakeSQL over the stored row t.
const (
	throttleRestart = `(t.window_start <= $5 OR COALESCE(t.locked_until <= $3, false))`
	throttleCount   = `(CASE WHEN ` + throttleRestart + ` THEN 1 ELSE t.failures + 1 END)`
	throttleStart   = `(CASE WHEN ` + throttleRestart + ` THEN $3 ELSE t.window_start END)`
)

// ThrottleTake counts an attempt of key in scope at now before the
// credential is tried, and returns the zero time when the attempt may go
// ahead, or until when the key is locked out when it may not (then nothing
// is counted). Counting before trying, in one atomic statement, is what
// makes the limit hold against parallel requests on any number of
// replicas: at most limit attempts per window are ever tried. Attempts are
// counted in a window of length window that starts at the first one; the
// one that reaches limit may still go ahead, and locks the key until
// now + lockout for every later one. Once the window or the lock is over,
// counting starts afresh. An attempt that turns out not to be a failure is
// given back with ThrottleRefund, or forgets the key's count with
// ThrottleReset.
//
// Errors: Invalid for a scope or key that is not 1–300 characters without
// control characters, a limit below 1, or a window or lockout that is not
// positive.
func (s *Store) ThrottleTake(ctx context.Context, scope, key string, now time.Time, limit int, window, lockout time.Duration) (time.Time, error) {
	if err := validateThrottleKey(scope, key); err != nil {
		return time.Time{}, err
	}
	switch {
	case limit < 1 || limit > 1<<30:
		return time.Time{}, errs.E(errs.Invalid, "throttle limit must be at least 1")
	case window < time.Microsecond || lockout < time.Microsecond:
		return time.Time{}, errs.E(errs.Invalid, "throttle window and lockout must be positive")
	}
	// A lock that ends between the upsert and the read of its end is over:
	// take again, at most once more.
	for range 2 {
		var one int
		err := s.pool.QueryRow(ctx, throttleTakeSQL, scope, key, now, limit, now.Add(-window), now.Add(lockout), now.Add(window)).Scan(&one)
		if err == nil {
			return time.Time{}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return time.Time{}, fail("count throttled attempt", err)
		}
		until, err := s.ThrottleState(ctx, scope, key, now)
		if err != nil || !until.IsZero() {
			return until, err
		}
	}
	return time.Time{}, errs.E(errs.Unavailable, "count throttled attempt: the lock of the key changed twice: try again")
}

// ThrottleRefund gives back one attempt of key in scope that ThrottleTake
// counted and that turned out not to be a failure (a right credential, or a
// check that could not be made). When the count falls below limit, a lock
// goes with it: the attempt that reached the limit was this one. Refunding
// an unknown key, or one whose count has started afresh at 0, changes
// nothing.
//
// Errors: Invalid for a scope or key that is not 1–300 characters without
// control characters.
func (s *Store) ThrottleRefund(ctx context.Context, scope, key string, limit int) error {
	if err := validateThrottleKey(scope, key); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `
		UPDATE throttle SET failures = GREATEST(failures - 1, 0),
		       locked_until = CASE WHEN failures - 1 < $3 THEN NULL ELSE locked_until END
		 WHERE scope = $1 AND key = $2`, scope, key, limit); err != nil {
		return fail("refund throttled attempt", fmt.Errorf("update throttle row: %w", err))
	}
	return nil
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
