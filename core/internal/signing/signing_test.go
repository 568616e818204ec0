package signing_test

import (
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/signing"
	"github.com/custos-platform/custos/core/internal/testdb"
)

func setup(t *testing.T) (*postgres.Store, *pgxpool.Pool, *secretbox.Box) {
	t.Helper()
	pool, err := postgres.Open(context.Background(), testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	keys, err := secretbox.ParseKeys("s1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if err != nil {
		t.Fatal(err)
	}
	box, err := secretbox.NewBox(keys, "s1")
	if err != nil {
		t.Fatal(err)
	}
	return postgres.NewStore(pool), pool, box
}

// TestRotateKeepsKeysWhileTheirTokensLive: a rotated-out key verifies until its successor has
// been in force for the access-token lifetime (plus the reload interval and leeway), however often
// keys rotate meanwhile; then it is retired.
func TestRotateKeepsKeysWhileTheirTokensLive(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, pool, box := setup(t)
	const keep = 15 * time.Minute

	first, err := signing.Keys(ctx, store, box, rand.Reader)
	if err != nil {
		t.Fatalf("Keys() = %v", err)
	}
	again, err := signing.Keys(ctx, store, box, rand.Reader)
	if err != nil || again.CurrentID() != first.CurrentID() {
		t.Fatalf("Keys() a second time = %v, %v; want the existing key %s", again, err, first.CurrentID())
	}
	a := first.CurrentID()
	b, err := signing.Rotate(ctx, store, box, rand.Reader, keep)
	if err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	c, err := signing.Rotate(ctx, store, box, rand.Reader, keep)
	if err != nil {
		t.Fatalf("second Rotate() = %v", err)
	}
	inForce := func() []string {
		t.Helper()
		k, err := signing.Reload(ctx, store, box)
		if err != nil {
			t.Fatalf("Reload() = %v", err)
		}
		if k.CurrentID() != k.IDs()[0] {
			t.Fatalf("current key %s is not the first of %v", k.CurrentID(), k.IDs())
		}
		return k.IDs()
	}
	if got, want := inForce(), []string{c, b, a}; !slices.Equal(got, want) {
		t.Errorf("keys after two quick rotations = %v, want %v (newest first, none retired)", got, want)
	}

	// b has been in force for longer than keep (plus reload interval and leeway): a's tokens have
	// expired. c replaced b only just: b's have not.
	age := keep + signing.ReloadInterval + time.Minute
	for id, ago := range map[string]time.Duration{a: 2 * age, b: age} {
		if _, err := pool.Exec(ctx, "UPDATE core.signing_keys SET created_at = now() - $2::interval WHERE id = $1", id, ago.String()); err != nil {
			t.Fatal(err)
		}
	}
	d, err := signing.Rotate(ctx, store, box, rand.Reader, keep)
	if err != nil {
		t.Fatalf("third Rotate() = %v", err)
	}
	if got, want := inForce(), []string{d, c, b}; !slices.Equal(got, want) {
		t.Errorf("keys after a rotation long after b = %v, want %v (a retired)", got, want)
	}
}

// TestRotateIfDue: a scheduled rotation happens only once the signing key is older than the
// interval, and replicas finding it due at the same moment make one new key between them.
func TestRotateIfDue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, pool, box := setup(t)
	const every = 30 * 24 * time.Hour
	first, err := signing.Keys(ctx, store, box, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := signing.RotateIfDue(ctx, store, box, rand.Reader, 15*time.Minute, every); id != "" || err != nil {
		t.Errorf("RotateIfDue(a new key) = %q, %v; want nothing done", id, err)
	}
	if _, err := signing.RotateIfDue(ctx, store, box, rand.Reader, 15*time.Minute, 0); err == nil {
		t.Error("RotateIfDue(interval 0) = nil error, want it refused")
	}

	if _, err := pool.Exec(ctx, "UPDATE core.signing_keys SET created_at = now() - interval '31 days'"); err != nil {
		t.Fatal(err)
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids []string
	)
	for range 5 {
		wg.Go(func() {
			id, err := signing.RotateIfDue(ctx, store, box, rand.Reader, 15*time.Minute, every)
			if err != nil {
				t.Errorf("RotateIfDue() = %v", err)
			}
			if id != "" {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("5 replicas finding the rotation due made %d keys (%v), want 1", len(ids), ids)
	}
	k, err := signing.Reload(ctx, store, box)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.IDs(), []string{ids[0], first.CurrentID()}; !slices.Equal(got, want) {
		t.Errorf("keys after the scheduled rotation = %v, want %v (the old one still verifies)", got, want)
	}
}
