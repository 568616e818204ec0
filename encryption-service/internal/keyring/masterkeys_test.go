package keyring

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// written is a ciphertext and what decrypting it needs.
type written struct {
	caller Caller
	item   DecryptItem
	data   string
}

// mustWriteEverywhere creates a context of every algorithm and mode, rotates each once and
// encrypts under both versions.
func mustWriteEverywhere(tb testing.TB, svc *Service, c Caller) []written {
	tb.Helper()
	cc := c
	cc.MasterKey = bytes.Repeat([]byte{7}, 32)
	var out []written
	for _, alg := range aead.Algorithms() {
		for _, caller := range []Caller{c, cc} {
			mode := ModePlatform
			if caller.MasterKey != nil {
				mode = ModeClient
			}
			id := mustCreate(tb, svc, caller, alg, mode, RotationPolicy{})
			for i := range 2 {
				data := alg + "/" + mode + "/" + string(rune('1'+i))
				enc := mustEncrypt(tb, svc, caller, id, data)
				out = append(out, written{caller, DecryptItem{EncryptionID: id, VersionID: enc.VersionID, CipherText: enc.CipherText, Metadata: metaOf(tb, enc)}, data})
				if i == 0 {
					if _, err := svc.Rotate(context.Background(), caller, id); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
	}
	return out
}

func wantAllDecrypt(tb testing.TB, svc *Service, all []written) {
	tb.Helper()
	for _, w := range all {
		pt, err := svc.Decrypt(context.Background(), w.caller, w.item.EncryptionID, w.item.VersionID, w.item.CipherText, w.item.Metadata)
		if err != nil || string(pt) != w.data {
			tb.Errorf("Decrypt(%s) = %q, %v; want %q", w.data, pt, err, w.data)
		}
	}
}

func usageOf(tb testing.TB, store StoredKeys, keys *masterkey.Keyring) map[string]MasterKeyUsage {
	tb.Helper()
	usages, err := MasterKeyUsages(context.Background(), store, keys)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]MasterKeyUsage{}
	for _, u := range usages {
		out[u.ID] = u
	}
	return out
}

func TestRotateMasterKey(t *testing.T) {
	ctx := context.Background()
	before, store, _, c := mustServiceWith(t, Options{})
	all := mustWriteEverywhere(t, before, c) // under k1
	// 6 contexts with 2 versions each, and 3 CLIENT sealing keys.
	const stored = 6*2 + 3

	both := mustKeyring(t, "k2", "k1", "k2")
	if u := usageOf(t, store, both); u["k1"].WrappedKeys != stored || u["k2"].WrappedKeys != 0 || !u["k2"].Active || u["k1"].Active {
		t.Fatalf("usage before rotation = %+v, want k1: %d, k2 active: 0", u, stored)
	}

	// Without k1 configured nothing can move: the run says which key is missing.
	_, err := RotateMasterKey(ctx, store, mustKeyring(t, "k2", "k2"), MasterKeyRotation{})
	wantKind(t, "RotateMasterKey(k1 not configured)", err, errs.Unavailable, "k1: 15")

	// Interrupted after its first batch of 4.
	stop, cancel := context.WithCancel(ctx)
	var progress []int64
	n, err := RotateMasterKey(stop, store, both, MasterKeyRotation{BatchSize: 4, Actor: "test", Progress: func(done, left int64) {
		progress = append(progress, done, left)
		cancel()
	}})
	if !errors.Is(err, context.Canceled) || n != 4 || len(progress) != 2 || progress[1] != stored-4 {
		t.Fatalf("interrupted RotateMasterKey = %d, %v, progress %v; want 4, Canceled, [4 %d]", n, err, progress, stored-4)
	}
	if u := usageOf(t, store, both); u["k1"].WrappedKeys != stored-4 || u["k2"].WrappedKeys != 4 {
		t.Fatalf("usage after the interruption = %+v, want k1: %d, k2: 4", u, stored-4)
	}
	// Half-way, a replica that knows both keys serves everything.
	mixed := New(store, both, Options{})
	wantAllDecrypt(t, mixed, all)

	// Resumed: it continues with what is left.
	if n, err := RotateMasterKey(ctx, store, both, MasterKeyRotation{BatchSize: 4}); err != nil || n != stored-4 {
		t.Fatalf("resumed RotateMasterKey = %d, %v; want %d, nil", n, err, stored-4)
	}
	if u := usageOf(t, store, both); u["k1"].WrappedKeys != 0 || u["k2"].WrappedKeys != stored {
		t.Fatalf("usage after rotation = %+v, want k1: 0, k2: %d", u, stored)
	}
	if n, err := RotateMasterKey(ctx, store, both, MasterKeyRotation{}); err != nil || n != 0 {
		t.Errorf("RotateMasterKey with nothing left = %d, %v; want 0, nil", n, err)
	}
	// k1 can be retired: a replica without it decrypts everything, and the wrapping still binds
	// each blob to its row.
	after := New(store, mustKeyring(t, "k2", "k2"), Options{})
	wantAllDecrypt(t, after, all)
	cc := c
	cc.MasterKey = bytes.Repeat([]byte{8}, 32)
	w := all[len(all)-1] // a CLIENT context
	if _, err := after.Decrypt(ctx, cc, w.item.EncryptionID, w.item.VersionID, w.item.CipherText, w.item.Metadata); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("Decrypt(CLIENT, wrong client key) after rotation = %v, want PermissionDenied", err)
	}
	u := usageOf(t, store, mustKeyring(t, "k2", "k2"))
	if _, listed := u["k1"]; listed {
		t.Errorf("usage lists k1 after it wraps nothing and is not configured: %+v", u)
	}
}

func TestChangeMasterKey(t *testing.T) {
	ctx := context.Background()
	svc, _, _, c := mustServiceWith(t, Options{})
	old, next := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	withOld, withNew := c, c
	withOld.MasterKey, withNew.MasterKey = old, next
	id := mustCreate(t, svc, withOld, "", ModeClient, RotationPolicy{})
	w1 := mustEncrypt(t, svc, withOld, id, "one")
	if _, err := svc.Rotate(ctx, c, id); err != nil {
		t.Fatal(err)
	}
	w2 := mustEncrypt(t, svc, withOld, id, "two")
	platform := mustCreate(t, svc, c, "", "", RotationPolicy{})

	change := withOld
	change.NewMasterKey = next
	wrongOld := withNew
	wrongOld.NewMasterKey = old
	noNew := withOld
	noOld := c
	noOld.NewMasterKey = next
	same := withOld
	same.NewMasterKey = old
	refusals := []struct {
		name   string
		caller Caller
		id     uuid.UUID
		kind   errs.Kind
		msg    string
	}{
		{"wrong old key", wrongOld, id, errs.PermissionDenied, "wrong client master key"},
		{"no new key", noNew, id, errs.Invalid, "X-New-Master-Key"},
		{"no old key", noOld, id, errs.Unauthenticated, "X-Master-Key"},
		{"same key", same, id, errs.Invalid, "the same"},
		{"platform context", noOld, platform, errs.Invalid, "PLATFORM"},
		{"unknown context", change, uuid.New(), errs.NotFound, "not found"},
	}
	for _, tt := range refusals {
		_, err := svc.ChangeMasterKey(ctx, tt.caller, tt.id)
		wantKind(t, "ChangeMasterKey("+tt.name+")", err, tt.kind, tt.msg)
	}
	n, err := svc.ChangeMasterKey(ctx, change, id)
	if err != nil || n != 2 {
		t.Fatalf("ChangeMasterKey() = %d, %v; want 2 versions", n, err)
	}
	for _, w := range []Encrypted{w1, w2} {
		if _, err := svc.Decrypt(ctx, withOld, id, w.VersionID, w.CipherText, metaOf(t, w)); !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("Decrypt(old key) after the change = %v, want PermissionDenied", err)
		}
		if _, err := svc.Decrypt(ctx, withNew, id, w.VersionID, w.CipherText, metaOf(t, w)); err != nil {
			t.Errorf("Decrypt(new key) after the change = %v", err)
		}
	}
}

// TestChangeMasterKeyLeavesNothingForTheOldKey plays the owner of a CLIENT context whose client
// master key leaked: after the change, the old key together with copies of the rows taken before
// it (a backup, the write-ahead log, dead row versions) and the platform master key must open no
// version, neither those created before the change nor after it.
func TestChangeMasterKeyLeavesNothingForTheOldKey(t *testing.T) {
	ctx := context.Background()
	svc, store, url, c := mustServiceWith(t, Options{})
	conn := mustConn(t, url)
	oldKey, newKey := bytes.Repeat([]byte{0xA}, 32), bytes.Repeat([]byte{0xB}, 32)
	withOld, withNew := c, c
	withOld.MasterKey, withNew.MasterKey = oldKey, newKey
	for _, alg := range aead.Algorithms() {
		t.Run(alg, func(t *testing.T) {
			id := mustCreate(t, svc, withOld, alg, ModeClient, RotationPolicy{})
			before := []Encrypted{mustEncrypt(t, svc, withOld, id, "one")}
			if _, err := svc.Rotate(ctx, c, id); err != nil {
				t.Fatal(err)
			}
			before = append(before, mustEncrypt(t, svc, withOld, id, "two"))
			backup := mustStored(t, store, c, id) // the attacker's copy, taken before the change

			change := withOld
			change.NewMasterKey = newKey
			if n, err := svc.ChangeMasterKey(ctx, change, id); err != nil || n != 2 {
				t.Fatalf("ChangeMasterKey = %d, %v; want 2 versions", n, err)
			}
			if _, err := svc.Rotate(ctx, c, id); err != nil {
				t.Fatal(err)
			}
			after := mustEncrypt(t, svc, withNew, id, "written after the change")
			current := mustStored(t, store, c, id)
			if bytes.Equal(current.SealingPublicKey, backup.SealingPublicKey) {
				t.Fatal("the sealing key pair survived the change of client master key")
			}

			// Offline, with the platform master key and the old client key: the old private half
			// opens none of the versions as they are stored now.
			oldPriv, _, err := svc.unwrapSealingKey(backup, oldKey)
			if err != nil {
				t.Fatalf("unwrap of the backed-up sealing key with the old key = %v", err)
			}
			for _, v := range current.Versions {
				sealed, _, err := svc.unwrapVersion(current, v)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := keywrap.Open(oldPriv, sealed, versionAD(current, v.ID)); err == nil {
					t.Errorf("the old private sealing key opens version %d as stored after the change", v.Version)
				}
			}

			// Through the service, with the old blob put back: alone, and with its public half.
			all := append(before, after)
			restore := []struct {
				name string
				sql  string
				args []any
			}{
				{"private half", `UPDATE encryption.encryptions SET sealing_private_key = $2, sealing_master_key_id = $3 WHERE id = $1`,
					[]any{id, backup.SealingPrivateKey.Blob, backup.SealingPrivateKey.MasterKeyID}},
				{"key pair", `UPDATE encryption.encryptions SET sealing_public_key = $4, sealing_private_key = $2, sealing_master_key_id = $3 WHERE id = $1`,
					[]any{id, backup.SealingPrivateKey.Blob, backup.SealingPrivateKey.MasterKeyID, backup.SealingPublicKey}},
			}
			for _, r := range restore {
				mustExec(t, conn, r.sql, r.args...)
				svc.ResetCache()
				for i, w := range all {
					if pt, err := svc.Decrypt(ctx, withOld, id, w.VersionID, w.CipherText, metaOf(t, w)); err == nil {
						t.Errorf("old %s restored: Decrypt(%d) with the old key = %q, want a failure", r.name, i, pt)
					}
				}
			}
			mustExec(t, conn, `UPDATE encryption.encryptions SET sealing_public_key = $4, sealing_private_key = $2, sealing_master_key_id = $3 WHERE id = $1`,
				id, current.SealingPrivateKey.Blob, current.SealingPrivateKey.MasterKeyID, current.SealingPublicKey)
			svc.ResetCache()
			for i, w := range all {
				if pt, err := svc.Decrypt(ctx, withNew, id, w.VersionID, w.CipherText, metaOf(t, w)); err != nil || string(pt) != []string{"one", "two", "written after the change"}[i] {
					t.Errorf("Decrypt(%d) with the new key = %q, %v", i, pt, err)
				}
			}
		})
	}
}

// TestChangeMasterKeyKeepsEveryVersion changes the key of a context with versions in every state:
// the live ones move to the new key, the destroyed one stays erased, and a request that began
// before the change on this replica still works when it meets the new key pair.
func TestChangeMasterKeyKeepsEveryVersion(t *testing.T) {
	ctx := context.Background()
	svc, store, _, c := mustServiceWith(t, Options{})
	oldKey, newKey := bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32)
	withOld, withNew := c, c
	withOld.MasterKey, withNew.MasterKey = oldKey, newKey
	id := mustCreate(t, svc, withOld, "", ModeClient, RotationPolicy{})
	var written []Encrypted
	for i := range 4 {
		written = append(written, mustEncrypt(t, svc, withOld, id, string(rune('a'+i))))
		if _, err := svc.Rotate(ctx, c, id); err != nil {
			t.Fatal(err)
		}
	}
	vs := mustStored(t, store, c, id).Versions // v1 … v5; v5 active
	for _, step := range []struct {
		v  int
		do func(context.Context, Caller, uuid.UUID, uuid.UUID) (postgres.KeyVersion, error)
	}{{0, svc.DisableVersion}, {0, svc.DestroyVersion}, {1, svc.DisableVersion}} {
		if _, err := step.do(ctx, c, id, vs[step.v].ID); err != nil {
			t.Fatal(err)
		}
	}
	change := withOld
	change.NewMasterKey = newKey
	if n, err := svc.ChangeMasterKey(ctx, change, id); err != nil || n != 4 {
		t.Fatalf("ChangeMasterKey = %d, %v; want 4 versions (all but the destroyed one)", n, err)
	}
	stored := mustStored(t, store, c, id)
	if stored.Versions[0].Material != nil {
		t.Errorf("the destroyed version has key material after the change")
	}
	if _, err := svc.EnableVersion(ctx, c, id, vs[1].ID); err != nil {
		t.Fatal(err)
	}
	for i, w := range written[1:] {
		if pt, err := svc.Decrypt(ctx, withNew, id, w.VersionID, w.CipherText, metaOf(t, w)); err != nil || string(pt) != string(rune('b'+i)) {
			t.Errorf("Decrypt(version %d) with the new key = %q, %v", i+2, pt, err)
		}
	}
	_, err := svc.Decrypt(ctx, withNew, id, written[0].VersionID, written[0].CipherText, metaOf(t, written[0]))
	wantKind(t, "Decrypt(destroyed version)", err, errs.FailedPrecondition, "destroyed")

	// A session that unwrapped the old private half, then reloads (a version it does not know)
	// and meets the new pair, drops the old private half rather than failing.
	ss := svc.session(ctx, withNew, id)
	defer ss.close()
	ss.e = &entry{enc: mustStored(t, store, c, id)}
	ss.e.enc.SealingPublicKey = []byte("the pair before the change")
	ss.priv = bytes.Repeat([]byte{1}, 32)
	if _, err := ss.decrypt(ctx, uuid.New(), written[1].CipherText, metaOf(t, written[1])); !errs.Is(err, errs.NotFound) {
		t.Fatalf("decrypt(unknown version) = %v, want NotFound after a reload", err)
	}
	if pt, err := ss.decrypt(ctx, written[1].VersionID, written[1].CipherText, metaOf(t, written[1])); err != nil || string(pt) != "b" {
		t.Errorf("decrypt after a reload that met a new key pair = %q, %v", pt, err)
	}
}
