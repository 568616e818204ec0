package keyring

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// k2Bytes is the key mustKeyring gives id "k2".
var k2Bytes = bytes.Repeat([]byte{'2'}, 32)

// wantBinding reports how context id's stored blobs authenticate under master key k2: each must
// open under the bound associated data when bound is set, else only under the legacy one.
func wantBinding(tb testing.TB, store *postgres.Store, c Caller, id uuid.UUID, bound bool) {
	tb.Helper()
	e := mustStored(tb, store, c, id)
	check := func(what string, w *postgres.WrappedKey, boundAD, legacyAD []byte) {
		tb.Helper()
		if w.MasterKeyID != "k2" {
			tb.Fatalf("%s is under master key %q, want k2", what, w.MasterKeyID)
		}
		_, errBound := keywrap.Unwrap(k2Bytes, w.Blob, boundAD)
		_, errLegacy := keywrap.Unwrap(k2Bytes, w.Blob, legacyAD)
		switch {
		case bound && errBound != nil:
			tb.Errorf("%s does not authenticate with its public key bound: %v", what, errBound)
		case !bound && (errBound == nil || errLegacy != nil):
			tb.Errorf("%s: bound %v, legacy %v; want it still legacy (unbound)", what, errBound, errLegacy)
		}
	}
	check("the sealing key", e.SealingPrivateKey, sealingWrapAD(e), sealingAD(e))
	for _, v := range e.Versions {
		if v.Material != nil && len(v.PublicKey) > 0 {
			check("version "+v.ID.String(), v.Material, versionWrapAD(e, v), versionAD(e, v.ID))
		}
	}
}

func countAudit(tb testing.TB, conn *pgx.Conn, id uuid.UUID, action string) int {
	tb.Helper()
	var n int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM encryption.audit_events WHERE encryption_id = $1 AND action = $2`, id, action).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestMasterKeyRotationKeepsClientLegacyUnbound: a platform master-key rotation must not turn a
// public key swapped into a legacy CLIENT row into an authenticated one. Someone who can write the
// database replaces the sealing public key, or an RSA version's public key, of a legacy CLIENT
// context, then the platform master key is rotated: the rows stay legacy (outer key changed,
// binding not), and the client master key, when presented, refuses the swapped key. An honest
// legacy context is bound at its first use with the client master key.
func TestMasterKeyRotationKeepsClientLegacyUnbound(t *testing.T) {
	ctx := context.Background()
	svc, store, url, c := mustServiceWith(t, Options{})
	conn := mustConn(t, url)
	cc := c
	cc.MasterKey = bytes.Repeat([]byte{7}, 32)
	_, evilSealing, err := keywrap.NewSealingKey(nil)
	if err != nil {
		t.Fatal(err)
	}

	swappedSealing := mustCreate(t, svc, cc, "", ModeClient, RotationPolicy{})
	sealingCT := mustEncrypt(t, svc, cc, swappedSealing, "sealing")
	mustMakeLegacy(t, svc, store, conn, c, swappedSealing)
	mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, swappedSealing, evilSealing)

	swappedRSA := mustCreate(t, svc, cc, aead.RSAOAEP3072SHA256, ModeClient, RotationPolicy{})
	rsaCT := mustEncrypt(t, svc, cc, swappedRSA, "rsa")
	mustMakeLegacy(t, svc, store, conn, c, swappedRSA)
	evilPEM := attackerPEM(t)
	mustExec(t, conn, `UPDATE encryption.encryption_key_versions SET public_key = $2 WHERE encryption_id = $1`, swappedRSA, evilPEM)

	honest := mustCreate(t, svc, cc, aead.RSAOAEP3072SHA256, ModeClient, RotationPolicy{})
	honestCT := mustEncrypt(t, svc, cc, honest, "honest")
	mustMakeLegacy(t, svc, store, conn, c, honest)

	both := mustKeyring(t, "k2", "k1", "k2")
	if n, err := RotateMasterKey(ctx, store, both, MasterKeyRotation{}); err != nil || n != 6 {
		t.Fatalf("RotateMasterKey = %d, %v; want 6 blobs rewrapped (3 sealing keys, 3 versions)", n, err)
	}
	rotated := New(store, both, Options{})

	t.Run("swapped sealing key", func(t *testing.T) {
		wantBinding(t, store, c, swappedSealing, false)
		_, err := rotated.Decrypt(ctx, cc, swappedSealing, sealingCT.VersionID, sealingCT.CipherText, metaOf(t, sealingCT))
		wantKind(t, "Decrypt(legacy, sealing public key swapped before the rotation)", err, errs.Internal, "altered")
		wantBinding(t, store, c, swappedSealing, false)
		if stored := mustStored(t, store, c, swappedSealing); !bytes.Equal(stored.SealingPublicKey, evilSealing) {
			t.Fatal("test setup: the swapped key is gone")
		}
	})
	t.Run("swapped RSA public key", func(t *testing.T) {
		wantBinding(t, store, c, swappedRSA, false)
		_, err := rotated.Decrypt(ctx, cc, swappedRSA, rsaCT.VersionID, rsaCT.CipherText, metaOf(t, rsaCT))
		wantKind(t, "Decrypt(legacy, RSA public key swapped before the rotation)", err, errs.Internal, "altered")
		_, err = rotated.Encrypt(ctx, cc, swappedRSA, uuid.NullUUID{}, []byte("to whom?"))
		wantKind(t, "Encrypt(legacy, RSA public key swapped before the rotation)", err, errs.Internal, "altered")
		wantBinding(t, store, c, swappedRSA, false)
		if n := countAudit(t, conn, swappedRSA, "encryption.legacy-binding"); n != 0 {
			t.Errorf("%d legacy-binding events for the swapped context, want 0", n)
		}
	})
	t.Run("honest legacy context bound at first use", func(t *testing.T) {
		wantBinding(t, store, c, honest, false) // the rotation changed the outer key only
		pt, err := rotated.Decrypt(ctx, cc, honest, honestCT.VersionID, honestCT.CipherText, metaOf(t, honestCT))
		if err != nil || string(pt) != "honest" {
			t.Fatalf("Decrypt(honest legacy) = %q, %v", pt, err)
		}
		wantBinding(t, store, c, honest, true)
		if n := countAudit(t, conn, honest, "encryption.legacy-binding"); n != 1 {
			t.Errorf("%d legacy-binding events, want 1", n)
		}
		// Keys and data are unchanged, and later uses do not rewrite anything.
		stored := mustStored(t, store, c, honest)
		pt, err = rotated.Decrypt(ctx, cc, honest, honestCT.VersionID, honestCT.CipherText, metaOf(t, honestCT))
		if err != nil || string(pt) != "honest" {
			t.Fatalf("Decrypt(after the binding) = %q, %v", pt, err)
		}
		if again := mustStored(t, store, c, honest); !bytes.Equal(again.SealingPrivateKey.Blob, stored.SealingPrivateKey.Blob) {
			t.Error("a use after the binding rewrote the sealing key")
		}
		// Now bound, a swap fails without the client master key too.
		mustExec(t, conn, `UPDATE encryption.encryption_key_versions SET public_key = $2 WHERE encryption_id = $1`, honest, evilPEM)
		rotated.ResetCache()
		_, err = rotated.GetEncryption(ctx, c, honest)
		wantKind(t, "GetEncryption(bound, RSA public key swapped)", err, errs.Internal, "altered")
		mustExec(t, conn, `UPDATE encryption.encryption_key_versions SET public_key = $2 WHERE encryption_id = $1`, honest, stored.Versions[0].PublicKey)
		mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, honest, evilSealing)
		rotated.ResetCache()
		_, err = rotated.Rotate(ctx, c, honest)
		wantKind(t, "Rotate(bound, sealing public key swapped)", err, errs.Internal, "altered")
	})
}

// blockingRewrap is a store whose first rewrap of a platform master-key rotation waits for release,
// holding the rows of its batch, once it has closed entered.
type blockingRewrap struct {
	*postgres.Store
	once             sync.Once
	entered, release chan struct{}
}

func (b *blockingRewrap) RewrapStoredKeys(ctx context.Context, from []string, limit int,
	rewrap func(postgres.StoredKey) (postgres.WrappedKey, error), audit postgres.AuditEvent) (int, error) {
	return b.Store.RewrapStoredKeys(ctx, from, limit, func(k postgres.StoredKey) (postgres.WrappedKey, error) {
		b.once.Do(func() { close(b.entered); <-b.release })
		return rewrap(k)
	}, audit)
}

// waitLockWaiters waits until n sessions of the test database wait for a row lock.
func waitLockWaiters(tb testing.TB, conn *pgx.Conn, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&got); err != nil {
			tb.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d sessions wait for a lock, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLegacyBindingKeepsMasterKeyRotation: the first request that brings the client master key to
// a legacy CLIENT context binds it while a platform master-key rotation (step 3) runs. The binding
// must not write back a blob the rotation rewrapped meanwhile as it read it, under the old master
// key: once the rotation has reported that the old key wraps nothing, it must stay so, and
// retiring the old key (step 5) must lose nothing.
func TestLegacyBindingKeepsMasterKeyRotation(t *testing.T) {
	for _, alg := range []string{aead.AES256GCM, aead.RSAOAEP3072SHA256} {
		t.Run(alg, func(t *testing.T) {
			ctx := context.Background()
			svc, store, url, c := mustServiceWith(t, Options{}) // k1 active
			conn := mustConn(t, url)
			cc := c
			cc.MasterKey = bytes.Repeat([]byte{7}, 32)
			id := mustCreate(t, svc, cc, alg, ModeClient, RotationPolicy{})
			ct := mustEncrypt(t, svc, cc, id, "keep me")
			v1 := ct.VersionID
			mustMakeLegacy(t, svc, store, conn, c, id) // as written before schema 4

			both := mustKeyring(t, "k2", "k1", "k2") // steps 1 and 2 done: k2 active on every replica
			rotated := New(store, both, Options{})
			v2, err := rotated.Rotate(ctx, c, id) // under k2
			if err != nil {
				t.Fatal(err)
			}
			rewrap := func(k postgres.StoredKey) (postgres.WrappedKey, error) {
				return rewrapStoredKey(both, both.Active(), k)
			}

			// An earlier batch found v1 held (a counter flush) and rewrapped the sealing key only.
			flush, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustExecTx(t, flush, `SELECT 1 FROM encryption.encryption_key_versions WHERE id = $1 FOR UPDATE`, v1)
			audit := postgres.AuditEvent{Actor: "test", Action: "masterkey.rewrap", Outcome: "ok"}
			if n, err := store.RewrapStoredKeys(ctx, []string{"k1"}, 10, rewrap, audit); err != nil || n != 1 {
				t.Fatalf("RewrapStoredKeys(v1 held) = %d, %v; want the sealing key rewrapped", n, err)
			}
			if err := flush.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			// Another flush holds v2 while the binding runs, so that it commits after the rotation.
			held := mustConn(t, url)
			hold, err := held.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustExecTx(t, hold, `SELECT 1 FROM encryption.encryption_key_versions WHERE id = $1 FOR UPDATE`, v2)

			bs := &blockingRewrap{Store: store, entered: make(chan struct{}), release: make(chan struct{})}
			var once sync.Once
			free := func() { once.Do(func() { close(bs.release) }) }
			t.Cleanup(free) // a failed test leaves no transaction waiting
			type result struct {
				n   int64
				err error
			}
			rotation := make(chan result, 1)
			go func() {
				n, err := RotateMasterKey(ctx, bs, both, MasterKeyRotation{Actor: "cli:op"})
				rotation <- result{n, err}
			}()
			<-bs.entered // the rotation holds v1, about to rewrap it

			meta := metaOf(t, ct)
			decrypted := make(chan error, 1)
			go func() { // the tenant's first request since the upgrade binds its legacy context
				_, err := rotated.Decrypt(ctx, cc, id, v1, ct.CipherText, meta)
				decrypted <- err
			}()
			waitLockWaiters(t, conn, 1)
			free()
			if r := <-rotation; r.err != nil || r.n != 1 {
				t.Fatalf("RotateMasterKey() = %d, %v; want 1 blob rewrapped", r.n, r.err)
			}
			if u := usageOf(t, store, both); u["k1"].WrappedKeys != 0 {
				t.Fatalf("right after the rotation k1 wraps %d stored keys, want 0", u["k1"].WrappedKeys)
			}
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-decrypted; err != nil {
				t.Fatalf("Decrypt(legacy, during the rotation) = %v", err)
			}

			if u := usageOf(t, store, both); u["k1"].WrappedKeys != 0 {
				t.Errorf("after the legacy binding committed k1 wraps %d stored keys, want 0", u["k1"].WrappedKeys)
			}
			wantBinding(t, store, c, id, true)
			if n := countAudit(t, conn, id, "encryption.legacy-binding"); n != 1 {
				t.Errorf("%d legacy-binding events, want 1", n)
			}
			retired := New(store, mustKeyring(t, "k2", "k2"), Options{}) // step 5
			if pt, err := retired.Decrypt(ctx, cc, id, v1, ct.CipherText, metaOf(t, ct)); err != nil || string(pt) != "keep me" {
				t.Errorf("Decrypt(k1 retired) = %q, %v; want the data", pt, err)
			}
		})
	}
}

func mustExecTx(tb testing.TB, tx pgx.Tx, sql string, args ...any) {
	tb.Helper()
	if _, err := tx.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}
