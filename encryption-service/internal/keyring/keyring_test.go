package keyring

import (
	"bytes"
	"context"
	"encoding/json"
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
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testdb.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	mk, err := masterkey.NewKeyring([]masterkey.Key{{ID: "k1", Bytes: bytes.Repeat([]byte{1}, 32)}}, "")
	if err != nil {
		tb.Fatal(err)
	}
	tenant := postgres.Tenant{ID: uuid.New(), Name: "t-" + uuid.NewString()}
	secret := postgres.TenantSecret{ID: uuid.New(), TenantID: tenant.ID, Hash: bytes.Repeat([]byte{2}, 32)}
	if err := store.CreateTenant(ctx, tenant, secret, postgres.AuditEvent{Actor: "test", Action: "tenant.create", Outcome: "ok"}); err != nil {
		tb.Fatal(err)
	}
	return New(store, mk, Options{}), store, Caller{TenantID: tenant.ID, Actor: "test"}
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
	created, err := svc.CreateEncryption(ctx, caller, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := svc.Encrypt(ctx, caller, created.EncryptionID, uuid.Nil, []byte("x")); err != nil {
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
		meta        string
	}
	var targets []target
	for _, alg := range aead.Algorithms() {
		created, err := svc.CreateEncryption(ctx, caller, alg, ModePlatform)
		if err != nil {
			f.Fatal(err)
		}
		enc, err := svc.Encrypt(ctx, caller, created.EncryptionID, uuid.Nil, []byte("fuzz"))
		if err != nil {
			f.Fatal(err)
		}
		meta, _ := json.Marshal(enc.Metadata.Map())
		targets = append(targets, target{created.EncryptionID, enc.VersionID, enc.CipherText, string(meta)})
		f.Add(uint8(len(targets)-1), enc.CipherText, string(meta))
		f.Add(uint8(len(targets)-1), enc.CipherText[:len(enc.CipherText)-1], string(meta))
	}
	f.Add(uint8(0), []byte{}, `{}`)
	f.Add(uint8(1), []byte("x"), `{"formatVersion":1,"nonce":"AAAA"}`)
	f.Add(uint8(2), []byte("x"), `{"formatVersion":"1","nonce":null,"encryptedKey":[1,2]}`)
	f.Add(uint8(0), []byte("x"), `[]`)

	f.Fuzz(func(t *testing.T, which uint8, ct []byte, metaJSON string) {
		tg := targets[int(which)%len(targets)]
		var meta map[string]any
		if json.Unmarshal([]byte(metaJSON), &meta) != nil {
			meta = nil
		}
		pt, err := svc.Decrypt(ctx, caller, tg.id, tg.version, ct, meta)
		if err == nil {
			if !bytes.Equal(ct, tg.ct) || string(pt) != "fuzz" {
				t.Fatalf("Decrypt accepted a ciphertext that was never produced: %x", ct)
			}
			return
		}
		if k := errs.KindOf(err); k != errs.Invalid {
			t.Fatalf("Decrypt(garbage) = %v (kind %v), want Invalid", err, k)
		}
	})
}
