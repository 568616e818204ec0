package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MaxTxAttempts is how many times [InTx] runs a transaction that keeps
// failing with a serialization failure or deadlock before giving up.
const MaxTxAttempts = 4

// txRetryBaseDelay is the first back-off between attempts; it doubles, with
// jitter, so that conflicting transactions stop colliding.
const txRetryBaseDelay = 5 * time.Millisecond

// InTx runs fn in a transaction at isoLevel (pgx.Serializable,
// pgx.RepeatableRead, pgx.ReadCommitted; "" for the server default) and
// commits it if fn returns nil, or rolls it back if fn returns an error or
// panics (the panic is re-raised).
//
// When fn or the commit fails with a serialization failure (SQLSTATE 40001)
// or a deadlock (40P01), the whole transaction is retried after a short
// jittered back-off, up to [MaxTxAttempts] runs in all: fn must therefore
// have no effects outside tx. Errors returned by fn are passed through
// unwrapped unless retries are exhausted, in which case the error says so and
// wraps the last failure. Failures to begin or commit are wrapped with what
// failed. A cancelled ctx stops the retries and returns ctx's error.
func InTx(ctx context.Context, pool *pgxpool.Pool, isoLevel pgx.TxIsoLevel, fn func(pgx.Tx) error) error {
	delay := txRetryBaseDelay
	for attempt := 1; ; attempt++ {
		err := runTx(ctx, pool, isoLevel, fn)
		if err == nil || !isSQLState(err, sqlstateSerializationFailure, sqlstateDeadlockDetected) {
			return err
		}
		if attempt == MaxTxAttempts {
			return fmt.Errorf("transaction failed after %d attempts: %w", attempt, err)
		}
		jittered := delay/2 + rand.N(delay) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			return fmt.Errorf("transaction retry abandoned: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(jittered):
		}
		delay *= 2
	}
}

// runTx runs one attempt of InTx.
func runTx(ctx context.Context, pool *pgxpool.Pool, isoLevel pgx.TxIsoLevel, fn func(pgx.Tx) error) (err error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: isoLevel})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		// Rollback errors are dropped: err (or the panic) says what went
		// wrong, pgx closes a connection whose rollback failed, and after a
		// failed commit the transaction is already over.
		if p := recover(); p != nil {
			_ = tx.Rollback(ctx)
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback(ctx)
		}
	}()

	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}
