package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// mustConn returns a direct connection to the test database, playing someone who can write the
// database but holds no master key.
func mustConn(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(tb testing.TB, conn *pgx.Conn, sql string, args ...any) {
	tb.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// attackerPEM is an RSA public key whose private half the attacker holds.
func attackerPEM(tb testing.TB) []byte {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// mustStored reads key context id as stored, bypassing every cache.
func mustStored(tb testing.TB, store *postgres.Store, c Caller, id uuid.UUID) postgres.Encryption {
	tb.Helper()
	e, err := store.GetEncryption(context.Background(), c.TenantID, id)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// mustMakeLegacy rewrites the platform wrapping of what binds a public key in context id — RSA
// versions' key material, a CLIENT context's private sealing key — as releases before the binding
// wrote it: under the unbound associated data.
func mustMakeLegacy(tb testing.TB, svc *Service, store *postgres.Store, conn *pgx.Conn, c Caller, id uuid.UUID) {
	tb.Helper()
	e := mustStored(tb, store, c, id)
	rewrap := func(w postgres.WrappedKey, from, to []byte) []byte {
		material, err := svc.unwrapPlatform(w, from)
		if err != nil {
			tb.Fatal(err)
		}
		out, err := svc.wrapPlatform(material, to)
		if err != nil {
			tb.Fatal(err)
		}
		return out.Blob
	}
	for _, v := range e.Versions {
		if v.Material != nil && len(v.PublicKey) > 0 {
			mustExec(tb, conn, `UPDATE encryption.encryption_key_versions SET key_material = $2 WHERE id = $1`,
				v.ID, rewrap(*v.Material, versionWrapAD(e, v), versionAD(e, v.ID)))
		}
	}
	if e.SealingPrivateKey != nil {
		mustExec(tb, conn, `UPDATE encryption.encryptions SET sealing_private_key = $2 WHERE id = $1`,
			id, rewrap(*e.SealingPrivateKey, sealingWrapAD(e), sealingAD(e)))
	}
	svc.ResetCache()
}

// TestPublicKeysAuthenticate replaces the public keys the service serves or seals to, as someone
// with write access to the database but no master key could, and expects every such key to be
// refused before use — for rows written with the binding and for legacy rows the service can check.
func TestPublicKeysAuthenticate(t *testing.T) {
	ctx := context.Background()
	svc, store, url, c := mustServiceWith(t, Options{})
	conn := mustConn(t, url)
	cc := c
	cc.MasterKey = bytes.Repeat([]byte{7}, 32)
	evil := attackerPEM(t)
	_, evilSealing, err := keywrap.NewSealingKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	swapRSA := func(id uuid.UUID) {
		mustExec(t, conn, `UPDATE encryption.encryption_key_versions SET public_key = $2 WHERE encryption_id = $1`, id, evil)
		svc.ResetCache()
	}
	swapSealing := func(id uuid.UUID) {
		mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, id, evilSealing)
		svc.ResetCache()
	}
	wantServed := func(name string, caller Caller, id uuid.UUID) {
		t.Helper()
		e, err := svc.GetEncryption(ctx, caller, id)
		if err != nil {
			t.Fatalf("%s: GetEncryption = %v", name, err)
		}
		stored := mustStored(t, store, c, id)
		for i, v := range e.Versions {
			if len(v.PublicKey) == 0 || !bytes.Equal(v.PublicKey, stored.Versions[i].PublicKey) {
				t.Errorf("%s: GetEncryption version %d public key = %.40q, want the stored one", name, v.Version, v.PublicKey)
			}
		}
	}
	wantAltered := func(name string, err error) {
		t.Helper()
		wantKind(t, name, err, errs.Internal, "altered")
	}

	t.Run("RSA version, PLATFORM", func(t *testing.T) {
		id := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
		wantServed("genuine", c, id)
		swapRSA(id)
		_, err := svc.GetEncryption(ctx, c, id)
		wantAltered("GetEncryption(public key replaced)", err)
	})
	t.Run("RSA version, PLATFORM, legacy", func(t *testing.T) {
		id := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
		enc := mustEncrypt(t, svc, c, id, "before the upgrade")
		mustMakeLegacy(t, svc, store, conn, c, id)
		wantServed("legacy", c, id)
		if pt, err := svc.Decrypt(ctx, c, id, enc.VersionID, enc.CipherText, metaOf(t, enc)); err != nil || string(pt) != "before the upgrade" {
			t.Errorf("Decrypt(legacy version) = %q, %v", pt, err)
		}
		swapRSA(id)
		_, err := svc.GetEncryption(ctx, c, id)
		wantAltered("GetEncryption(legacy, public key replaced)", err)
	})
	t.Run("RSA version, CLIENT", func(t *testing.T) {
		id := mustCreate(t, svc, cc, aead.RSAOAEP3072SHA256, ModeClient, RotationPolicy{})
		wantServed("genuine", c, id)
		swapRSA(id)
		_, err := svc.GetEncryption(ctx, c, id)
		wantAltered("GetEncryption(public key replaced)", err)
	})
	t.Run("RSA version, lifecycle answers", func(t *testing.T) {
		id := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
		v1 := mustStored(t, store, c, id).Versions[0]
		if _, err := svc.Rotate(ctx, c, id); err != nil {
			t.Fatal(err)
		}
		v, err := svc.DisableVersion(ctx, c, id, v1.ID)
		if err != nil || !bytes.Equal(v.PublicKey, v1.PublicKey) {
			t.Fatalf("DisableVersion = %.40q, %v; want the genuine public key", v.PublicKey, err)
		}
		swapRSA(id)
		_, err = svc.EnableVersion(ctx, c, id, v1.ID)
		wantAltered("EnableVersion(public key replaced)", err)
	})
	t.Run("RSA version, destroyed", func(t *testing.T) {
		id := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
		v1 := mustStored(t, store, c, id).Versions[0]
		if _, err := svc.Rotate(ctx, c, id); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.DisableVersion(ctx, c, id, v1.ID); err != nil {
			t.Fatal(err)
		}
		v, err := svc.DestroyVersion(ctx, c, id, v1.ID)
		if err != nil || v.PublicKey != nil {
			t.Errorf("DestroyVersion = public key %.40q, %v; want none: nothing can check it", v.PublicKey, err)
		}
		e, err := svc.GetEncryption(ctx, c, id)
		if err != nil || e.Versions[0].PublicKey != nil || e.Versions[1].PublicKey == nil {
			t.Errorf("GetEncryption after destroying version 1 = %v; want no public key for it, one for version 2", err)
		}
	})
	t.Run("sealing key", func(t *testing.T) {
		id := mustCreate(t, svc, cc, "", ModeClient, RotationPolicy{})
		enc := mustEncrypt(t, svc, cc, id, "x")
		before := len(mustStored(t, store, c, id).Versions)
		swapSealing(id)
		_, err := svc.Rotate(ctx, c, id)
		wantAltered("Rotate(sealing public key replaced)", err)
		if n := len(mustStored(t, store, c, id).Versions); n != before {
			t.Errorf("Rotate(sealing public key replaced) made a version: %d versions, want %d", n, before)
		}
		_, err = svc.Decrypt(ctx, cc, id, enc.VersionID, enc.CipherText, metaOf(t, enc))
		wantAltered("Decrypt(sealing public key replaced)", err)
	})
	t.Run("sealing key, legacy", func(t *testing.T) {
		// A database of its own: the master-key rotation below would meet the rows the other
		// subtests altered.
		svc, store, url, c := mustServiceWith(t, Options{})
		conn := mustConn(t, url)
		cc := c
		cc.MasterKey = bytes.Repeat([]byte{7}, 32)
		swapSealing := func(id uuid.UUID) {
			mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, id, evilSealing)
			svc.ResetCache()
		}
		id := mustCreate(t, svc, cc, "", ModeClient, RotationPolicy{})
		enc := mustEncrypt(t, svc, cc, id, "x")
		mustMakeLegacy(t, svc, store, conn, c, id)
		if _, err := svc.Rotate(ctx, c, id); err != nil { // legacy rows keep working
			t.Fatalf("Rotate(legacy) = %v", err)
		}
		if pt, err := svc.Decrypt(ctx, cc, id, enc.VersionID, enc.CipherText, metaOf(t, enc)); err != nil || string(pt) != "x" {
			t.Fatalf("Decrypt(legacy) = %q, %v", pt, err)
		}
		// A legacy row binds nothing: the client master key catches a replaced public key.
		good := mustStored(t, store, c, id).SealingPublicKey
		swapSealing(id)
		_, err := svc.Decrypt(ctx, cc, id, enc.VersionID, enc.CipherText, metaOf(t, enc))
		wantAltered("Decrypt(legacy, sealing public key replaced)", err)
		mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, id, good)
		svc.ResetCache()

		// The use above with the client master key bound it (see also
		// TestMasterKeyRotationKeepsClientLegacyUnbound); a platform master-key rotation keeps it so.
		both := mustKeyring(t, "k2", "k1", "k2")
		if _, err := RotateMasterKey(ctx, store, both, MasterKeyRotation{}); err != nil {
			t.Fatal(err)
		}
		rotated := New(store, both, Options{})
		if pt, err := rotated.Decrypt(ctx, cc, id, enc.VersionID, enc.CipherText, metaOf(t, enc)); err != nil || string(pt) != "x" {
			t.Fatalf("Decrypt(after the master-key rotation) = %q, %v", pt, err)
		}
		mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $2 WHERE id = $1`, id, evilSealing)
		_, err = rotated.Rotate(ctx, c, id)
		wantAltered("Rotate(bound by the rotation, sealing public key replaced)", err)
	})
}

// TestMasterKeyRotationBindsLegacyPublicKeys checks that the platform master-key rotation binds
// the public key of a legacy RSA version, and refuses one whose public key does not match its
// private key rather than binding it.
func TestMasterKeyRotationBindsLegacyPublicKeys(t *testing.T) {
	ctx := context.Background()
	svc, store, url, c := mustServiceWith(t, Options{})
	conn := mustConn(t, url)
	genuine := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
	mustMakeLegacy(t, svc, store, conn, c, genuine)
	both := mustKeyring(t, "k2", "k1", "k2")
	if n, err := RotateMasterKey(ctx, store, both, MasterKeyRotation{}); err != nil || n != 1 {
		t.Fatalf("RotateMasterKey = %d, %v; want 1 blob rewrapped", n, err)
	}
	e := mustStored(t, store, c, genuine)
	v := e.Versions[0]
	if _, err := keywrap.Unwrap(bytes.Repeat([]byte{'2'}, 32), v.Material.Blob, versionWrapAD(e, v)); err != nil {
		t.Errorf("the rewrapped version does not authenticate with its public key bound: %v", err)
	}

	tampered := mustCreate(t, svc, c, aead.RSAOAEP3072SHA256, ModePlatform, RotationPolicy{})
	mustMakeLegacy(t, svc, store, conn, c, tampered)
	mustExec(t, conn, `UPDATE encryption.encryption_key_versions SET public_key = $2 WHERE encryption_id = $1`, tampered, attackerPEM(t))
	_, err := RotateMasterKey(ctx, store, mustKeyring(t, "k2", "k1", "k2"), MasterKeyRotation{})
	wantKind(t, "RotateMasterKey(legacy version, public key replaced)", err, errs.Internal, "altered")
}
