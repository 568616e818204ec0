package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// mustCounterPool returns a pool on a fresh database holding the table
// encryption.counter with one row (id 1, n 0).
func mustCounterPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool := mustOpen(tb, testdb.New(tb))
	_, err := pool.Exec(context.Background(), `
		CREATE TABLE encryption.counter (id int PRIMARY KEY, n int NOT NULL);
		INSERT INTO encryption.counter VALUES (1, 0)`)
	if err != nil {
		tb.Fatalf("create counter table: %v", err)
	}
	return pool
}

func counter(tb testing.TB, pool *pgxpool.Pool) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT n FROM encryption.counter WHERE id = 1").Scan(&n); err != nil {
		tb.Fatalf("read counter: %v", err)
	}
	return n
}

func increment(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "UPDATE encryption.counter SET n = n + 1 WHERE id = 1")
	return err
}

func TestInTx(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	serializationFailure := &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
	deadlock := &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}

	tests := []struct {
		name         string
		failAttempts int   // attempts that fail with failWith before one succeeds
		failWith     error // returned by fn after its update
		wantErr      error // errors.Is target; nil for success
		wantAttempts int
		wantCounter  int
	}{
		{name: "commit", wantAttempts: 1, wantCounter: 1},
		{name: "error rolls back", failAttempts: 99, failWith: errBoom, wantErr: errBoom, wantAttempts: 1, wantCounter: 0},
		{name: "serialization failure retried", failAttempts: 2, failWith: serializationFailure, wantAttempts: 3, wantCounter: 1},
		{name: "deadlock retried", failAttempts: 1, failWith: deadlock, wantAttempts: 2, wantCounter: 1},
		{name: "retries exhausted", failAttempts: 99, failWith: serializationFailure, wantErr: serializationFailure,
			wantAttempts: postgres.MaxTxAttempts, wantCounter: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			pool := mustCounterPool(t)
			attempts := 0
			err := postgres.InTx(ctx, pool, pgx.Serializable, func(tx pgx.Tx) error {
				attempts++
				if err := increment(ctx, tx); err != nil {
					return err
				}
				if attempts <= tt.failAttempts {
					return tt.failWith
				}
				return nil
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("InTx() = %v, want %v", err, tt.wantErr)
			}
			if attempts != tt.wantAttempts {
				t.Errorf("InTx() ran fn %d times, want %d", attempts, tt.wantAttempts)
			}
			if got := counter(t, pool); got != tt.wantCounter {
				t.Errorf("counter after InTx() = %d, want %d", got, tt.wantCounter)
			}
		})
	}
}

func TestInTxExhaustedRetriesSaySo(t *testing.T) {
	t.Parallel()
	pool := mustCounterPool(t)
	err := postgres.InTx(t.Context(), pool, pgx.Serializable, func(pgx.Tx) error {
		return &pgconn.PgError{Code: "40001"}
	})
	want := fmt.Sprintf("after %d attempts", postgres.MaxTxAttempts)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("InTx() = %v, want an error mentioning %q", err, want)
	}
}

func TestInTxPanicRollsBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := mustCounterPool(t)
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("recover() = %v, want the panic from fn re-raised", p)
			}
		}()
		_ = postgres.InTx(ctx, pool, pgx.ReadCommitted, func(tx pgx.Tx) error {
			if err := increment(ctx, tx); err != nil {
				t.Errorf("increment: %v", err)
			}
			panic("kaboom")
		})
	}()
	if got := counter(t, pool); got != 0 {
		t.Errorf("counter after panicking fn = %d, want 0", got)
	}
	// The connection went back to the pool usable, with no transaction open.
	if err := postgres.InTx(ctx, pool, pgx.ReadCommitted, func(tx pgx.Tx) error { return increment(ctx, tx) }); err != nil {
		t.Fatalf("InTx() after a panic = %v", err)
	}
	if got := counter(t, pool); got != 1 {
		t.Errorf("counter = %d, want 1", got)
	}
}

// TestInTxRetriesRealConflict makes two serializable transactions read the
// same row before either writes it: PostgreSQL aborts one with SQLSTATE 40001,
// and InTx must retry it so that both increments count.
func TestInTxRetriesRealConflict(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := mustCounterPool(t)

	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var mu sync.Mutex
	attempts := 0
	readModifyWrite := func(first *bool) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			mu.Lock()
			attempts++
			mu.Unlock()
			var n int
			if err := tx.QueryRow(ctx, "SELECT n FROM encryption.counter WHERE id = 1").Scan(&n); err != nil {
				return err
			}
			if *first {
				*first = false
				bothRead.Done()
				bothRead.Wait()
			}
			_, err := tx.Exec(ctx, "UPDATE encryption.counter SET n = $1 WHERE id = 1", n+1)
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		first := true
		wg.Go(func() { errs[i] = postgres.InTx(ctx, pool, pgx.Serializable, readModifyWrite(&first)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("InTx() #%d = %v, want nil", i, err)
		}
	}
	if got := counter(t, pool); got != 2 {
		t.Errorf("counter = %d, want 2", got)
	}
	if attempts < 3 {
		t.Errorf("fn ran %d times, want at least 3 (one conflict retried)", attempts)
	}
}
