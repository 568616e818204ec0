package keyring

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// mustService returns a Service over a fresh database with one tenant, and that tenant as a Caller.
func mustService(tb testing.TB) (*Service, *postgres.Store, Caller) {
	tb.Helper()
	svc, store, _, caller := mustServiceWith(tb, Options{})
	return svc, store, caller
}

// mustServiceWith is mustService with opts, also returning the database URL.
func mustServiceWith(tb testing.TB, opts Options) (*Service, *postgres.Store, string, Caller) {
	tb.Helper()
	ctx := context.Background()
	url := testdb.New(tb)
	pool, err := postgres.Open(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	caller := mustTenant(tb, store)
	return New(store, mustKeyring(tb, "k1", "k1"), opts), store, url, caller
}

// mustTenant creates a tenant and returns it as a Caller.
func mustTenant(tb testing.TB, store *postgres.Store) Caller {
	tb.Helper()
	tenant := postgres.Tenant{ID: uuid.New(), Name: "t-" + uuid.NewString()}
	secret := postgres.TenantSecret{ID: uuid.New(), TenantID: tenant.ID, Hash: bytes.Repeat([]byte{2}, 32)}
	if err := store.CreateTenant(context.Background(), tenant, secret, postgres.AuditEvent{Actor: "test", Action: "tenant.create", Outcome: "ok"}); err != nil {
		tb.Fatal(err)
	}
	return Caller{TenantID: tenant.ID, Actor: "test"}
}

// mustKeyring returns master keys with the given ids, active the one named. A key's bytes follow
// from its id alone (32 times its last byte), so every keyring agrees on them.
func mustKeyring(tb testing.TB, active string, ids ...string) *masterkey.Keyring {
	tb.Helper()
	var keys []masterkey.Key
	for _, id := range ids {
		keys = append(keys, masterkey.Key{ID: id, Bytes: bytes.Repeat([]byte{id[len(id)-1]}, 32)})
	}
	mk, err := masterkey.NewKeyring(keys, active)
	if err != nil {
		tb.Fatal(err)
	}
	return mk
}

// mustCreate creates a key context.
func mustCreate(tb testing.TB, svc *Service, c Caller, alg, mode string, p RotationPolicy) uuid.UUID {
	tb.Helper()
	created, err := svc.CreateEncryption(context.Background(), c, alg, mode, p)
	if err != nil {
		tb.Fatalf("CreateEncryption(%s, %s, %+v) = %v", alg, mode, p, err)
	}
	return created.EncryptionID
}

func mustEncrypt(tb testing.TB, svc *Service, c Caller, id uuid.UUID, data string) Encrypted {
	tb.Helper()
	enc, err := svc.Encrypt(context.Background(), c, id, uuid.NullUUID{}, []byte(data))
	if err != nil {
		tb.Fatalf("Encrypt(%s) = %v", id, err)
	}
	return enc
}

// wantKind fails tb unless err is an *errs.Error of kind whose message contains msg.
func wantKind(tb testing.TB, call string, err error, kind errs.Kind, msg string) {
	tb.Helper()
	var e *errs.Error
	switch {
	case err == nil:
		tb.Errorf("%s = nil, want a %v error", call, kind)
	case !errors.As(err, &e):
		tb.Errorf("%s = %v (%T), want an *errs.Error", call, err, err)
	case e.Kind != kind || !strings.Contains(e.Message, msg):
		tb.Errorf("%s = %v (kind %v), want kind %v mentioning %q", call, err, e.Kind, kind, msg)
	}
}

func TestCacheDoesNotKeepWhatAnInvalidationOvertook(t *testing.T) {
	c := newCache(time.Minute, 10, time.Now)
	id := uuid.New()
	gen := c.generation()
	c.invalidate(id) // a change is notified while the loader reads the database
	c.put(gen, postgres.Encryption{ID: id})
	if _, ok := c.get(id); ok {
		t.Errorf("get after a put that an invalidation overtook = cached, want a miss")
	}
	c.put(c.generation(), postgres.Encryption{ID: id})
	if _, ok := c.get(id); !ok {
		t.Errorf("get after a current put = miss, want cached")
	}
	c.reset()
	if _, ok := c.get(id); ok {
		t.Errorf("get after reset = cached, want a miss")
	}
}

func TestCacheExpires(t *testing.T) {
	now := time.Now()
	c := newCache(time.Minute, 10, func() time.Time { return now })
	id := uuid.New()
	c.put(c.generation(), postgres.Encryption{ID: id})
	now = now.Add(2 * time.Minute)
	if _, ok := c.get(id); ok {
		t.Errorf("get after maxAge = cached, want a miss")
	}
}

func TestCountsReachTheDatabase(t *testing.T) {
	svc, _, caller := mustService(t)
	ctx := context.Background()
	created, err := svc.CreateEncryption(ctx, caller, "", "", RotationPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := svc.Encrypt(ctx, caller, created.EncryptionID, uuid.NullUUID{}, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	e, err := svc.GetEncryption(ctx, caller, created.EncryptionID)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Versions[0].Encryptions; got != 3 {
		t.Errorf("encryptions after 3 encrypts = %d, want 3", got)
	}
}

// FuzzDecrypt feeds arbitrary ciphertexts and metadata to Decrypt on real key contexts of every
// algorithm: nothing may panic, and nothing but the real ciphertext may decrypt.
func FuzzDecrypt(f *testing.F) {
	svc, _, caller := mustService(f)
	ctx := context.Background()
	type target struct {
		id, version uuid.UUID
		ct          []byte
		meta        aead.Metadata
	}
	var targets []target
	for _, alg := range aead.Algorithms() {
		created, err := svc.CreateEncryption(ctx, caller, alg, ModePlatform, RotationPolicy{})
		if err != nil {
			f.Fatal(err)
		}
		enc, err := svc.Encrypt(ctx, caller, created.EncryptionID, uuid.NullUUID{}, []byte("fuzz"))
		if err != nil {
			f.Fatal(err)
		}
		m := enc.Metadata
		targets = append(targets, target{created.EncryptionID, enc.VersionID, enc.CipherText, m})
		i := uint8(len(targets) - 1)
		f.Add(i, enc.CipherText, m.FormatVersion, m.Nonce, m.EncryptedKey)
		f.Add(i, enc.CipherText[:len(enc.CipherText)-1], m.FormatVersion, m.Nonce, m.EncryptedKey)
		f.Add(i, enc.CipherText, int32(2), m.Nonce, m.EncryptedKey)
		f.Add(i, enc.CipherText, int32(1), m.Nonce[1:], m.EncryptedKey)
	}
	f.Add(uint8(0), []byte{}, int32(0), []byte{}, []byte{})
	f.Add(uint8(1), []byte("x"), int32(1), []byte("AAAA"), []byte(nil))

	f.Fuzz(func(t *testing.T, which uint8, ct []byte, version int32, nonce, key []byte) {
		tg := targets[int(which)%len(targets)]
		meta := aead.Metadata{FormatVersion: version, Nonce: nonce, EncryptedKey: key}
		pt, err := svc.Decrypt(ctx, caller, tg.id, tg.version, ct, meta)
		if err == nil {
			if !bytes.Equal(ct, tg.ct) || !bytes.Equal(nonce, tg.meta.Nonce) || !bytes.Equal(key, tg.meta.EncryptedKey) || string(pt) != "fuzz" {
				t.Fatalf("Decrypt accepted a ciphertext that was never produced: %x", ct)
			}
			return
		}
		if k := errs.KindOf(err); k != errs.Invalid {
			t.Fatalf("Decrypt(garbage) = %v (kind %v), want Invalid", err, k)
		}
	})
}

// TestPlatformContextRefusesAClientMasterKey sends a client master key to every method that
// addresses a PLATFORM context: each refuses it (Invalid) and changes nothing, while a CLIENT
// context accepts it on the same methods.
func TestPlatformContextRefusesAClientMasterKey(t *testing.T) {
	ctx := context.Background()
	svc, store, c := mustService(t)
	withKey := c
	withKey.MasterKey = bytes.Repeat([]byte{5}, 32)
	platform := mustCreate(t, svc, c, "", ModePlatform, RotationPolicy{})
	if _, err := svc.Rotate(ctx, c, platform); err != nil {
		t.Fatal(err)
	}
	client := mustCreate(t, svc, withKey, "", ModeClient, RotationPolicy{})
	if _, err := svc.Rotate(ctx, c, client); err != nil {
		t.Fatal(err)
	}
	first := func(id uuid.UUID) uuid.UUID {
		e, err := store.GetEncryption(ctx, c.TenantID, id)
		if err != nil {
			t.Fatal(err)
		}
		return e.Versions[0].ID
	}
	methods := []struct {
		name string
		call func(c Caller, id uuid.UUID) error
	}{
		{"GetEncryption", func(c Caller, id uuid.UUID) error { _, err := svc.GetEncryption(ctx, c, id); return err }},
		{"SetRotationPolicy", func(c Caller, id uuid.UUID) error {
			_, err := svc.SetRotationPolicy(ctx, c, id, RotationPolicy{MaxAge: 2 * time.Hour})
			return err
		}},
		{"DisableVersion", func(c Caller, id uuid.UUID) error { _, err := svc.DisableVersion(ctx, c, id, first(id)); return err }},
		{"EnableVersion", func(c Caller, id uuid.UUID) error { _, err := svc.EnableVersion(ctx, c, id, first(id)); return err }},
		{"DestroyVersion", func(c Caller, id uuid.UUID) error {
			if _, err := svc.DisableVersion(ctx, c, id, first(id)); err != nil {
				return err
			}
			_, err := svc.DestroyVersion(ctx, c, id, first(id))
			return err
		}},
		{"Rotate", func(c Caller, id uuid.UUID) error { _, err := svc.Rotate(ctx, c, id); return err }},
		{"DestroyEncryption", func(c Caller, id uuid.UUID) error { _, err := svc.DestroyEncryption(ctx, c, id); return err }},
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			before, err := store.GetEncryption(ctx, c.TenantID, platform)
			if err != nil {
				t.Fatal(err)
			}
			wantKind(t, m.name+"(PLATFORM, X-Master-Key)", m.call(withKey, platform), errs.Invalid, "X-Master-Key must not be sent")
			if after, err := store.GetEncryption(ctx, c.TenantID, platform); err != nil || !reflect.DeepEqual(after, before) {
				t.Errorf("%s(PLATFORM, X-Master-Key) changed the context: %v", m.name, err)
			}
			if err := m.call(withKey, client); err != nil {
				t.Errorf("%s(CLIENT, X-Master-Key) = %v", m.name, err)
			}
		})
	}
	_, err := svc.Rotate(ctx, withKey, uuid.New())
	wantKind(t, "Rotate(unknown context, X-Master-Key)", err, errs.NotFound, "not found")
}

// TestInvalidValuesAreNotEchoedInFull sends huge algorithm and key mode values: the error names
// the field without flooding a log line with the value.
func TestInvalidValuesAreNotEchoedInFull(t *testing.T) {
	svc, _, c := mustService(t)
	huge := strings.Repeat("A", 1<<20)
	for _, tt := range []struct{ name, alg, mode, field string }{
		{"algorithm", huge, "", "algorithm"},
		{"keyMode", "", huge, "keyMode"},
	} {
		_, err := svc.CreateEncryption(context.Background(), c, tt.alg, tt.mode, RotationPolicy{})
		wantKind(t, "CreateEncryption(huge "+tt.name+")", err, errs.Invalid, tt.field)
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("CreateEncryption(huge %s) error is %d bytes long, want at most 200", tt.name, len(err.Error()))
		}
	}
}
