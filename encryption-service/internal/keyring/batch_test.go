package keyring

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// countingStore counts how often the keyring reads key contexts from the database.
type countingStore struct {
	*postgres.Store
	get, getMany atomic.Int64
}

func (s *countingStore) GetEncryption(ctx context.Context, tenantID, id uuid.UUID) (postgres.Encryption, error) {
	s.get.Add(1)
	return s.Store.GetEncryption(ctx, tenantID, id)
}

func (s *countingStore) GetEncryptions(ctx context.Context, tenantID uuid.UUID, ids []uuid.UUID) ([]postgres.Encryption, error) {
	s.getMany.Add(1)
	return s.Store.GetEncryptions(ctx, tenantID, ids)
}

// metaOf is an Encrypted's metadata as a caller sends it back: a copy.
func metaOf(tb testing.TB, e Encrypted) aead.Metadata {
	tb.Helper()
	m := e.Metadata
	m.Nonce, m.EncryptedKey = bytes.Clone(m.Nonce), bytes.Clone(m.EncryptedKey)
	return m
}

func TestBatches(t *testing.T) {
	ctx := context.Background()
	writer, pgStore, _, c := mustServiceWith(t, Options{MaxDataBytes: 64})
	clientKey := bytes.Repeat([]byte{9}, 32)
	cc := c
	cc.MasterKey = clientKey
	platform := mustCreate(t, writer, c, "", "", RotationPolicy{})
	xchacha := mustCreate(t, writer, c, "XCHACHA20-POLY1305", "", RotationPolicy{})
	client := mustCreate(t, writer, cc, "", ModeClient, RotationPolicy{})
	foreign := mustCreate(t, writer, mustTenant(t, pgStore), "", "", RotationPolicy{})

	// A fresh replica: nothing cached.
	store := &countingStore{Store: pgStore}
	svc := New(store, mustKeyring(t, "k1", "k1"), Options{MaxDataBytes: 64})

	var items []EncryptItem
	for i := range 60 {
		id := []uuid.UUID{platform, xchacha}[i%2]
		items = append(items, EncryptItem{EncryptionID: id, Data: []byte(strings.Repeat("p", i))})
	}
	items = append(items,
		EncryptItem{EncryptionID: uuid.New(), Data: []byte("unknown context")},
		EncryptItem{EncryptionID: foreign, Data: []byte("another tenant's context")},
		EncryptItem{EncryptionID: platform, Data: bytes.Repeat([]byte("x"), 65)},
		EncryptItem{EncryptionID: platform, VersionID: uuid.NullUUID{UUID: uuid.New(), Valid: true}, Data: []byte("unknown version")},
		EncryptItem{EncryptionID: client, Data: []byte("needs the client key")},
	)
	res, failures := svc.EncryptBatch(ctx, c, items)
	if len(res) != len(items) || len(failures) != len(items) {
		t.Fatalf("EncryptBatch(%d items) = %d results, %d errors", len(items), len(res), len(failures))
	}
	for i := range 60 {
		if failures[i] != nil || res[i].Algorithm == "" {
			t.Fatalf("EncryptBatch item %d = %+v, %v; want a ciphertext", i, res[i], failures[i])
		}
	}
	wantKind(t, "unknown context", failures[60], errs.NotFound, "not found")
	wantKind(t, "another tenant's context", failures[61], errs.NotFound, "key context "+foreign.String()+" not found")
	wantKind(t, "data over the limit", failures[62], errs.Invalid, "over the limit")
	wantKind(t, "unknown version", failures[63], errs.NotFound, "not found")
	wantKind(t, "CLIENT without key", failures[64], errs.Unauthenticated, "X-Master-Key")
	// One bulk read for the three contexts; one more read of the context whose item names a
	// version the cached copy lacks (another replica may have just made it).
	if g, m := store.get.Load(), store.getMany.Load(); g != 1 || m != 1 {
		t.Errorf("EncryptBatch read contexts %d times one by one and %d times in bulk, want 1 and 1", g, m)
	}

	// The CLIENT context's items, with its key; one wrong key fails them all alike.
	clientItems := []EncryptItem{{EncryptionID: client, Data: []byte("a")}, {EncryptionID: client, Data: []byte("b")}}
	clientRes, clientFailures := svc.EncryptBatch(ctx, cc, clientItems)
	if clientFailures[0] != nil || clientFailures[1] != nil {
		t.Fatalf("EncryptBatch(CLIENT, right key) = %v", clientFailures)
	}
	wrong := c
	wrong.MasterKey = bytes.Repeat([]byte{8}, 32)
	_, wrongFailures := svc.EncryptBatch(ctx, wrong, clientItems)
	for _, err := range wrongFailures {
		wantKind(t, "EncryptBatch(CLIENT, wrong key) item", err, errs.PermissionDenied, "wrong client master key")
	}

	// Decrypt them all back, with a tampered item and a disabled version in the mix.
	dec := make([]DecryptItem, 0, 62)
	for i := range 60 {
		dec = append(dec, DecryptItem{EncryptionID: items[i].EncryptionID, VersionID: res[i].VersionID, CipherText: res[i].CipherText, Metadata: metaOf(t, res[i])})
	}
	tampered := bytes.Clone(res[0].CipherText)
	tampered[0] ^= 1
	dec = append(dec, DecryptItem{EncryptionID: platform, VersionID: res[0].VersionID, CipherText: tampered, Metadata: metaOf(t, res[0])})
	disabledCtx := mustCreate(t, writer, c, "", "", RotationPolicy{})
	old := mustEncrypt(t, writer, c, disabledCtx, "old")
	if _, err := writer.Rotate(ctx, c, disabledCtx); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.DisableVersion(ctx, c, disabledCtx, old.VersionID); err != nil {
		t.Fatal(err)
	}
	svc.Invalidate(disabledCtx)
	dec = append(dec, DecryptItem{EncryptionID: disabledCtx, VersionID: old.VersionID, CipherText: old.CipherText, Metadata: metaOf(t, old)})
	data, decFailures := svc.DecryptBatch(ctx, c, dec)
	for i := range 60 {
		if decFailures[i] != nil || !bytes.Equal(data[i], items[i].Data) {
			t.Fatalf("DecryptBatch item %d = %q, %v; want %q", i, data[i], decFailures[i], items[i].Data)
		}
	}
	wantKind(t, "DecryptBatch(tampered)", decFailures[60], errs.Invalid, "does not authenticate")
	wantKind(t, "DecryptBatch(disabled version)", decFailures[61], errs.FailedPrecondition, "disabled")

	// Rotate, rewrap everything to the new versions, and decrypt the result.
	for _, id := range []uuid.UUID{platform, xchacha, client} {
		if _, err := writer.Rotate(ctx, c, id); err != nil {
			t.Fatal(err)
		}
		svc.Invalidate(id) // as the change notification does
	}
	rewrapItems := append(dec[:60:60], dec[61])
	rewrapped, rewrapFailures := svc.RewrapBatch(ctx, c, rewrapItems)
	back := make([]DecryptItem, 0, 60)
	for i := range 60 {
		if rewrapFailures[i] != nil || rewrapped[i].VersionID == rewrapItems[i].VersionID {
			t.Fatalf("RewrapBatch item %d = %+v, %v; want a ciphertext under the new version", i, rewrapped[i], rewrapFailures[i])
		}
		back = append(back, DecryptItem{EncryptionID: rewrapItems[i].EncryptionID, VersionID: rewrapped[i].VersionID,
			CipherText: rewrapped[i].CipherText, Metadata: metaOf(t, rewrapped[i])})
	}
	wantKind(t, "RewrapBatch(disabled version)", rewrapFailures[60], errs.FailedPrecondition, "disabled")
	data, decFailures = svc.DecryptBatch(ctx, c, back)
	for i := range 60 {
		if decFailures[i] != nil || !bytes.Equal(data[i], items[i].Data) {
			t.Fatalf("DecryptBatch(rewrapped) item %d = %q, %v; want %q", i, data[i], decFailures[i], items[i].Data)
		}
	}

	clientRewrap := []DecryptItem{
		{EncryptionID: client, VersionID: clientRes[0].VersionID, CipherText: clientRes[0].CipherText, Metadata: metaOf(t, clientRes[0])},
		{EncryptionID: client, VersionID: clientRes[1].VersionID, CipherText: clientRes[1].CipherText, Metadata: metaOf(t, clientRes[1])},
	}
	rewrapped, rewrapFailures = svc.RewrapBatch(ctx, cc, clientRewrap)
	if rewrapFailures[0] != nil || rewrapFailures[1] != nil || rewrapped[0].VersionID == clientRes[0].VersionID {
		t.Fatalf("RewrapBatch(CLIENT) = %+v, %v", rewrapped, rewrapFailures)
	}
	data, decFailures = svc.DecryptBatch(ctx, cc, []DecryptItem{
		{EncryptionID: client, VersionID: rewrapped[0].VersionID, CipherText: rewrapped[0].CipherText, Metadata: metaOf(t, rewrapped[0])},
		{EncryptionID: client, VersionID: rewrapped[1].VersionID, CipherText: rewrapped[1].CipherText, Metadata: metaOf(t, rewrapped[1])},
	})
	if decFailures[0] != nil || decFailures[1] != nil || string(data[0]) != "a" || string(data[1]) != "b" {
		t.Errorf("DecryptBatch(rewrapped CLIENT items) = %q, %v", data, decFailures)
	}
	if res, failures := svc.EncryptBatch(ctx, c, nil); len(res) != 0 || len(failures) != 0 {
		t.Errorf("EncryptBatch(no items) = %v, %v; want nothing", res, failures)
	}
}
