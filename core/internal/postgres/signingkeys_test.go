package postgres_test

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func signingKeyIDs(keys []postgres.SigningKey) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

func TestSigningKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)

	keys, err := s.ListSigningKeys(ctx)
	if err != nil || keys == nil || len(keys) != 0 {
		t.Fatalf("ListSigningKeys(none) = %v, %v, want an empty slice", keys, err)
	}
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"k1", "k2", "k3"} {
		k := postgres.SigningKey{ID: id, PrivateKeySealed: mustRandom(t, 80), CreatedAt: base.Add(time.Duration(i) * time.Hour)}
		if err := s.InsertSigningKey(ctx, k); err != nil {
			t.Fatalf("InsertSigningKey(%s) = %v", id, err)
		}
	}
	keys, err = s.ListSigningKeys(ctx)
	if err != nil || !slices.Equal(signingKeyIDs(keys), []string{"k3", "k2", "k1"}) {
		t.Fatalf("ListSigningKeys() = %v, %v, want k3, k2, k1: newest first", signingKeyIDs(keys), err)
	}
	if !keys[0].CreatedAt.Equal(base.Add(2*time.Hour)) || len(keys[0].PrivateKeySealed) != 80 || keys[0].RetiredAt != nil {
		t.Errorf("ListSigningKeys()[0] = %+v, want k3 as inserted", keys[0])
	}

	for _, id := range []string{"k2", "k2", "k1"} { // retiring twice is no error
		if err := s.RetireSigningKey(ctx, id); err != nil {
			t.Errorf("RetireSigningKey(%s) = %v", id, err)
		}
	}
	keys, _ = s.ListSigningKeys(ctx)
	if !slices.Equal(signingKeyIDs(keys), []string{"k3"}) {
		t.Errorf("ListSigningKeys() after retiring k1, k2 = %v, want k3", signingKeyIDs(keys))
	}
	wantKind(t, "RetireSigningKey(last)", s.RetireSigningKey(ctx, "k3"), errs.FailedPrecondition, "last signing key")
	wantKind(t, "RetireSigningKey(unknown)", s.RetireSigningKey(ctx, "k9"), errs.NotFound, `signing key "k9" not found`)

	tests := []struct {
		name    string
		key     postgres.SigningKey
		kind    errs.Kind
		message string
	}{
		{"id taken", postgres.SigningKey{ID: "k1", PrivateKeySealed: []byte{1}}, errs.Conflict, `signing key "k1" already exists`},
		{"no id", postgres.SigningKey{PrivateKeySealed: []byte{1}}, errs.Invalid, "signing key id"},
		{"no key", postgres.SigningKey{ID: "k4"}, errs.Invalid, "sealed signing key"},
	}
	for _, tt := range tests {
		wantKind(t, "InsertSigningKey("+tt.name+")", s.InsertSigningKey(ctx, tt.key), tt.kind, tt.message)
	}

	// A key inserted without a time gets the database's.
	if err := s.InsertSigningKey(ctx, postgres.SigningKey{ID: "k5", PrivateKeySealed: []byte{5}}); err != nil {
		t.Fatal(err)
	}
	keys, _ = s.ListSigningKeys(ctx)
	if !slices.Equal(signingKeyIDs(keys), []string{"k5", "k3"}) || time.Since(keys[0].CreatedAt) > time.Minute {
		t.Errorf("ListSigningKeys() = %+v, want k5 (created now), k3", keys)
	}
}

// TestEnsureSigningKeyConcurrent: replicas, each with its own pool, starting
// on an empty table at once create exactly one key, and all return it.
func TestEnsureSigningKeyConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, pool, url := mustStore(t)

	const replicas = 8
	stores := make([]*postgres.Store, replicas)
	for i := range stores {
		stores[i] = postgres.NewStore(mustOpen(t, url, postgres.WithMaxConns(2)))
	}
	var made atomic.Int32
	results := make([][]postgres.SigningKey, replicas)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			keys, err := s.EnsureSigningKey(ctx, func() (postgres.SigningKey, error) {
				n := made.Add(1)
				return postgres.SigningKey{ID: "kid-" + string(rune('a'+n-1)), PrivateKeySealed: []byte{byte(n)}}, nil
			})
			if err != nil {
				t.Errorf("replica %d: EnsureSigningKey() = %v", i, err)
			}
			results[i] = keys
		})
	}
	wg.Wait()
	if n := made.Load(); n != 1 {
		t.Errorf("EnsureSigningKey made %d keys, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.signing_keys"); n != 1 {
		t.Errorf("signing keys stored = %d, want 1", n)
	}
	for i, keys := range results {
		if !slices.Equal(signingKeyIDs(keys), []string{"kid-a"}) {
			t.Errorf("replica %d: EnsureSigningKey() = %v, want [kid-a]", i, signingKeyIDs(keys))
		}
	}

	// With a key present, newKey is not called at all.
	keys, err := stores[0].EnsureSigningKey(ctx, func() (postgres.SigningKey, error) {
		t.Error("EnsureSigningKey called newKey although a key exists")
		return postgres.SigningKey{}, errors.New("unexpected")
	})
	if err != nil || len(keys) != 1 {
		t.Errorf("EnsureSigningKey(key present) = %v, %v", keys, err)
	}
}

func TestEnsureSigningKeyErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)

	_, err := s.EnsureSigningKey(ctx, func() (postgres.SigningKey, error) { return postgres.SigningKey{}, errors.New("no entropy") })
	wantKind(t, "EnsureSigningKey(newKey fails)", err, errs.Internal, "create signing key")
	_, err = s.EnsureSigningKey(ctx, func() (postgres.SigningKey, error) {
		return postgres.SigningKey{}, errs.E(errs.Unavailable, "sealing keys missing")
	})
	wantKind(t, "EnsureSigningKey(newKey fails with a kind)", err, errs.Unavailable, "sealing keys missing")
	_, err = s.EnsureSigningKey(ctx, func() (postgres.SigningKey, error) { return postgres.SigningKey{ID: "k"}, nil })
	wantKind(t, "EnsureSigningKey(newKey makes an invalid key)", err, errs.Invalid, "sealed signing key")
	if n := count(t, pool, "SELECT count(*) FROM core.signing_keys"); n != 0 {
		t.Errorf("signing keys after failures = %d, want 0", n)
	}
}
