package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
)

func mustBox(tb testing.TB, active string, ids ...string) *secretbox.Box {
	tb.Helper()
	var keys []secretbox.Key
	for _, id := range ids {
		// A key's bytes follow from its id, so that boxes with the same ids share keys.
		keys = append(keys, secretbox.Key{ID: id, Bytes: bytes.Repeat([]byte{id[len(id)-1]}, secretbox.KeySize)})
	}
	b, err := secretbox.NewBox(keys, active)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustSeal(tb testing.TB, box *secretbox.Box, plain string, ad []byte) []byte {
	tb.Helper()
	b, err := box.Seal([]byte(plain), ad)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// sealedValue is a stored sealed value, how to read it and the associated data it was sealed with.
type sealedValue struct {
	name  string
	query string
	arg   any
	ad    []byte
	plain string
}

func (v sealedValue) read(tb testing.TB, pool *pgxpool.Pool) []byte {
	tb.Helper()
	var b []byte
	if err := pool.QueryRow(context.Background(), v.query, v.arg).Scan(&b); err != nil {
		tb.Fatalf("%s: %v", v.name, err)
	}
	return b
}

func countsByKey(tb testing.TB, s *postgres.Store) map[string]int64 {
	tb.Helper()
	counts, err := s.CountSealed(context.Background())
	if err != nil {
		tb.Fatalf("CountSealed() = %v", err)
	}
	m := map[string]int64{}
	for _, c := range counts {
		m[c.KeyID] += c.Count
	}
	return m
}

// TestRewrapSealed stores one value of every sealed kind under key k1, then rewraps with k2
// active: every value opens under k2 alone with its associated data, a retired signing key is left
// alone, a value that does not open is reported without stopping the rest, and a second run
// changes nothing.
func TestRewrapSealed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	old := mustBox(t, "", "k1")

	tn := newTenant(t, "")
	tn.ES = postgres.ESEndpoint{Kind: postgres.ESKindHosted, URL: "https://es.example.com:8443", Protocol: postgres.ESProtocolGRPC,
		CABundlePEM: "CA", ClientCertPEM: "CERT", TenantID: uuid.New(),
		ClientKeySealed:    mustSeal(t, old, "client key", postgres.EndpointSecretAD(tn.ID, postgres.SealedClientKey)),
		TenantSecretSealed: mustSeal(t, old, "tenant secret", postgres.EndpointSecretAD(tn.ID, postgres.SealedTenantSecret))}
	if err := s.CreateTenant(ctx, tn, auditEvent("tenant.create")); err != nil {
		t.Fatal(err)
	}
	var users []postgres.User
	for range 3 { // more than a batch of 2
		u := mustUser(t, s, tn.ID, postgres.RoleMember)
		totpAD := []byte("custos/core/totp-secret/v1\x00" + u.ID.String())
		if err := s.SetPendingTOTP(ctx, u.ID, mustSeal(t, old, "totp "+u.ID.String(), totpAD)); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	broken := mustUser(t, s, tn.ID, postgres.RoleMember)
	brokenSealed := mustSeal(t, old, "totp", []byte("other associated data"))
	if err := s.SetPendingTOTP(ctx, broken.ID, brokenSealed); err != nil {
		t.Fatal(err)
	}
	signingAD := func(id string) []byte { return []byte("custos/core/signing-key/v1\x00" + id) }
	for _, id := range []string{"kid-old", "kid-new"} {
		k := postgres.SigningKey{ID: id, PrivateKeySealed: mustSeal(t, old, "private "+id, signingAD(id)),
			CreatedAt: time.Now().Add(-time.Hour)}
		if err := s.InsertSigningKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RetireSigningKey(ctx, "kid-old"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnsurePlatformSecrets(ctx, func(name string) ([]byte, error) {
		return old.Seal([]byte("root "+name), postgres.PlatformSecretAD(name))
	}, postgres.PlatformPreloginSeed); err != nil {
		t.Fatal(err)
	}

	values := []sealedValue{
		{"client key", "SELECT es_client_key_sealed FROM core.tenants WHERE id = $1", tn.ID,
			postgres.EndpointSecretAD(tn.ID, postgres.SealedClientKey), "client key"},
		{"tenant secret", "SELECT es_tenant_secret_sealed FROM core.tenants WHERE id = $1", tn.ID,
			postgres.EndpointSecretAD(tn.ID, postgres.SealedTenantSecret), "tenant secret"},
		{"signing key", "SELECT private_key_sealed FROM core.signing_keys WHERE id = $1", "kid-new", signingAD("kid-new"), "private kid-new"},
		{"platform secret", "SELECT value_sealed FROM core.platform_secrets WHERE name = $1", postgres.PlatformPreloginSeed,
			postgres.PlatformSecretAD(postgres.PlatformPreloginSeed), "root " + postgres.PlatformPreloginSeed},
	}
	for _, u := range users {
		values = append(values, sealedValue{"totp of " + u.Username, "SELECT totp_secret_sealed FROM core.users WHERE id = $1", u.ID,
			[]byte("custos/core/totp-secret/v1\x00" + u.ID.String()), "totp " + u.ID.String()})
	}
	want := int64(len(values) + 1) // and the broken one; not the retired signing key
	if got := countsByKey(t, s); got["k1"] != want || len(got) != 1 {
		t.Fatalf("CountSealed() before = %v, want k1: %d", got, want)
	}
	if err := s.CheckSealedKeys(ctx, []string{"k2"}); err == nil {
		t.Errorf("CheckSealedKeys(k2) with values under k1 = nil, want a *MissingKeyError")
	} else if me := (*postgres.MissingKeyError)(nil); !errors.As(err, &me) || me.Missing["k1"] != want {
		t.Errorf("CheckSealedKeys(k2) = %v, want a *MissingKeyError with k1: %d", err, want)
	}

	both := mustBox(t, "k2", "k1", "k2")
	var progressed int
	res, err := s.RewrapSealed(ctx, both, 2, func(_ string, n int) { progressed += n })
	if err != nil {
		t.Fatalf("RewrapSealed() = %v", err)
	}
	if res.Failures != 1 || len(res.Failed) != 1 || res.Failed[0].Kind != postgres.SealedKindTOTP ||
		res.Failed[0].Row != "user "+broken.ID.String() || res.Failed[0].KeyID != "k1" || !errors.Is(res.Failed[0].Err, secretbox.ErrOpen) {
		t.Errorf("RewrapSealed() failures = %d %+v, want the broken TOTP secret of user %s", res.Failures, res.Failed, broken.ID)
	}
	var total int64
	for _, n := range res.Rewrapped {
		total += n
	}
	if total != int64(len(values)) || progressed != len(values) {
		t.Errorf("RewrapSealed() rewrapped %v (progress %d), want %d", res.Rewrapped, progressed, len(values))
	}
	if got := countsByKey(t, s); got["k1"] != 1 || got["k2"] != int64(len(values)) {
		t.Errorf("CountSealed() after = %v, want k1: 1 (the broken one), k2: %d", got, len(values))
	}
	newOnly := mustBox(t, "", "k2")
	for _, v := range values {
		pt, err := newOnly.Open(v.read(t, pool), v.ad)
		if err != nil || string(pt) != v.plain {
			t.Errorf("%s after rewrap opens under k2 alone = %q, %v; want %q", v.name, pt, err, v.plain)
		}
	}
	var retired []byte
	if err := pool.QueryRow(ctx, "SELECT private_key_sealed FROM core.signing_keys WHERE id = 'kid-old'").Scan(&retired); err != nil {
		t.Fatal(err)
	}
	if id, _ := secretbox.KeyID(retired); id != "k1" {
		t.Errorf("the retired signing key is sealed under %q after rewrap, want k1 (left alone)", id)
	}

	// Idempotent: the values under k2 are not touched again.
	before := make([][]byte, len(values))
	for i, v := range values {
		before[i] = v.read(t, pool)
	}
	res, err = s.RewrapSealed(ctx, both, 0, nil)
	if err != nil || res.Rewrapped[postgres.SealedKindTOTP]+res.Rewrapped[postgres.SealedKindSigningKey] != 0 || res.Failures != 1 {
		t.Errorf("RewrapSealed() again = %+v, %v; want nothing rewrapped, the broken value failing again", res, err)
	}
	for i, v := range values {
		if !bytes.Equal(v.read(t, pool), before[i]) {
			t.Errorf("%s changed on the second rewrap", v.name)
		}
	}
	if err := s.CheckSealedKeys(ctx, []string{"k1", "k2"}); err != nil {
		t.Errorf("CheckSealedKeys(k1, k2) = %v, want nil", err)
	}
}
