package postgres_test

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// TestEnsurePlatformSecretsConcurrently starts several replicas at once: one value per name is
// stored, every replica gets it, and later calls make none.
func TestEnsurePlatformSecretsConcurrently(t *testing.T) {
	t.Parallel()
	s, pool, _ := mustStore(t)
	names := []string{postgres.PlatformPreloginSeed, postgres.PlatformExportKey}
	var made atomic.Int32
	newSealed := func(name string) ([]byte, error) {
		made.Add(1)
		return append([]byte(name+"/"), mustRandom(t, 16)...), nil
	}
	const replicas = 8
	got := make([]map[string][]byte, replicas)
	errList := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { got[i], errList[i] = s.EnsurePlatformSecrets(t.Context(), newSealed, names...) })
	}
	wg.Wait()
	for i := range replicas {
		if errList[i] != nil {
			t.Fatalf("replica %d: EnsurePlatformSecrets() = %v", i, errList[i])
		}
		for _, n := range names {
			if !bytes.Equal(got[i][n], got[0][n]) || len(got[i][n]) == 0 {
				t.Errorf("replica %d got %s = %x, replica 0 %x; want the same stored value", i, n, got[i][n], got[0][n])
			}
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM core.platform_secrets"); n != 2 {
		t.Errorf("platform_secrets holds %d rows, want 2", n)
	}
	if n := made.Load(); n != 2 {
		t.Errorf("newSealed called %d times, want 2 (once per name)", n)
	}
	again, err := s.EnsurePlatformSecrets(t.Context(), func(string) ([]byte, error) {
		t.Error("newSealed called with every secret stored")
		return nil, errors.New("unexpected")
	}, names...)
	if err != nil || !bytes.Equal(again[names[0]], got[0][names[0]]) {
		t.Errorf("EnsurePlatformSecrets() again = %x, %v; want the stored value", again, err)
	}
}

func TestEnsurePlatformSecretsErrors(t *testing.T) {
	t.Parallel()
	s, pool, _ := mustStore(t)
	ok := func(string) ([]byte, error) { return []byte("sealed"), nil }
	tests := []struct {
		name      string
		newSealed func(string) ([]byte, error)
		names     []string
		kind      errs.Kind
	}{
		{"no names", ok, nil, errs.Invalid},
		{"malformed name", ok, []string{"Prelogin Seed"}, errs.Invalid},
		{"empty value", func(string) ([]byte, error) { return nil, nil }, []string{"x"}, errs.Invalid},
		{"newSealed fails", func(string) ([]byte, error) { return nil, errors.New("no entropy") }, []string{"x"}, errs.Internal},
		{"newSealed fails with a kind", func(string) ([]byte, error) { return nil, errs.E(errs.Unavailable, "later") }, []string{"x"}, errs.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.EnsurePlatformSecrets(t.Context(), tc.newSealed, tc.names...); errs.KindOf(err) != tc.kind {
				t.Errorf("EnsurePlatformSecrets(%q) = %v, want kind %v", tc.names, err, tc.kind)
			}
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM core.platform_secrets"); n != 0 {
		t.Errorf("after failures platform_secrets holds %d rows, want 0", n)
	}
}
