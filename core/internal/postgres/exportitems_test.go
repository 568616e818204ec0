package postgres_test

import (
	"context"
	"encoding/json"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// seq yields items, then err if not nil.
func seq(items []postgres.Item, err error) iter.Seq2[postgres.Item, error] {
	return func(yield func(postgres.Item, error) bool) {
		for _, it := range items {
			if !yield(it, nil) {
				return
			}
		}
		if err != nil {
			yield(postgres.Item{}, err)
		}
	}
}

func TestExportItems(t *testing.T) {
	ctx := context.Background()
	s, _, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	a := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	b := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	v := uuid.New()
	var all []postgres.Item
	for range 3 {
		all = append(all, mustItems(t, s, a, v, 1)...)
		all = append(all, mustItems(t, s, b, v, 1)...)
	}
	other := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	mustItems(t, s, other, v, 2)

	var got []postgres.Item
	cursor := ""
	for range 10 {
		page, err := s.ExportItems(ctx, tenant.ID, uuid.Nil, cursor, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if len(page) < 4 {
			break
		}
		cursor = postgres.ItemCursor(page[len(page)-1])
	}
	if len(got) != len(all) {
		t.Fatalf("ExportItems() pages = %d items, want the tenant's %d", len(got), len(all))
	}
	for i := 1; i < len(got); i++ {
		p, q := got[i-1], got[i]
		if q.CreatedAt.Before(p.CreatedAt) || (q.CreatedAt.Equal(p.CreatedAt) && q.ID.String() <= p.ID.String()) {
			t.Errorf("ExportItems() not in (created_at, id) order at %d", i)
		}
	}
	own, err := s.ExportItems(ctx, tenant.ID, b.user.ID, "", 100)
	if err != nil || len(own) != 3 {
		t.Errorf("ExportItems(owner b) = %d items, %v; want b's 3", len(own), err)
	}
	for _, it := range own {
		if it.OwnerID != b.user.ID {
			t.Errorf("ExportItems(owner b) returned an item of %s", it.OwnerID)
		}
	}
	_, err = s.ExportItems(ctx, tenant.ID, uuid.Nil, "not-a-cursor", 10)
	wantKind(t, "ExportItems(bad cursor)", err, errs.Invalid, "cursor")
}

func TestImportItems(t *testing.T) {
	ctx := context.Background()
	s, pool, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	f := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	g := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	v := uuid.New()
	existing := mustItems(t, s, f, v, 2)
	fresh := func(owner vaultFixture) postgres.Item {
		now := time.Now().UTC().Truncate(time.Microsecond)
		return postgres.Item{ID: uuid.New(), OwnerID: owner.user.ID, Revision: 3, CipherText: "Y3Q=", EncryptionID: owner.kc.EncryptionID,
			VersionID: v, Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{"iv":"aXY=","v":1}`), CreatedAt: now.Add(-time.Hour), UpdatedAt: now}
	}
	countItems := func() int { return count(t, pool, "SELECT count(*) FROM core.items WHERE tenant_id = $1", tenant.ID) }
	before := countItems()

	// Existing items come back unchanged (their metadata in another key order); new ones are
	// stored exactly as given.
	same := existing[0]
	same.Metadata = json.RawMessage(`{ "iv": "aXY=", "v": 1.0 }`)
	n1, n2 := fresh(f), fresh(g)
	res, err := s.ImportItems(ctx, tenant.ID, seq([]postgres.Item{same, n1, existing[1], n2}, nil), auditEvent("vault.import"))
	if err != nil || res.Imported != 2 || res.Unchanged != 2 {
		t.Fatalf("ImportItems() = %+v, %v; want 2 imported, 2 unchanged", res, err)
	}
	got, err := s.GetItem(ctx, g.user.ID, n2.ID)
	if err != nil || got.Revision != 3 || !got.CreatedAt.Equal(n2.CreatedAt) || !got.UpdatedAt.Equal(n2.UpdatedAt) || got.TenantID != tenant.ID {
		t.Errorf("imported item = %+v, %v; want it as given, in the tenant", got, err)
	}

	cases := []struct {
		name    string
		records []postgres.Item
		err     error
		kind    errs.Kind
		msg     string
	}{
		{"error from the stream", []postgres.Item{fresh(f), fresh(f)}, errs.E(errs.Invalid, "record 3: integrity"), errs.Invalid, "record 3: integrity"},
		{"same id, other content", []postgres.Item{fresh(f), func() postgres.Item { it := existing[0]; it.Revision = 9; return it }()},
			nil, errs.Conflict, "record 2 (item " + existing[0].ID.String() + ")"},
		{"owner of another tenant", []postgres.Item{fresh(f), func() postgres.Item {
			o := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
			return fresh(o)
		}()}, nil, errs.FailedPrecondition, "not a user of this tenant"},
		{"another user's key context", []postgres.Item{func() postgres.Item { it := fresh(f); it.EncryptionID = g.kc.EncryptionID; return it }()},
			nil, errs.FailedPrecondition, "record 1"},
		{"owner without a key context", []postgres.Item{func() postgres.Item {
			it := fresh(f)
			it.OwnerID = mustUser(t, s, tenant.ID, "member").ID
			return it
		}()}, nil, errs.FailedPrecondition, "has no key context"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.ImportItems(ctx, tenant.ID, seq(c.records, c.err), auditEvent("vault.import"))
			wantKind(t, "ImportItems()", err, c.kind, c.msg)
			if n := countItems(); n != before+2 {
				t.Errorf("after a refused import the tenant has %d items, want %d: nothing stored", n, before+2)
			}
		})
	}
}

// stream yields items one at a time off a queue, as grpcapi's Import does off a gRPC stream: a
// second range goes on where the first stopped instead of starting over. before, if set, is
// called before the n-th item (from 1) is yielded.
func stream(items []postgres.Item, before func(n int)) iter.Seq2[postgres.Item, error] {
	var mu sync.Mutex
	queue, n := items, 0
	return func(yield func(postgres.Item, error) bool) {
		for {
			mu.Lock()
			if len(queue) == 0 {
				mu.Unlock()
				return
			}
			it := queue[0]
			queue, n = queue[1:], n+1
			i := n
			mu.Unlock()
			if before != nil {
				before(i)
			}
			if !yield(it, nil) {
				return
			}
		}
	}
}

// An import that deadlocks with another transaction is not run again (its records are a stream
// that cannot be read twice): it fails Aborted, saying that nothing was imported and naming the
// record it had reached, and stores nothing.
func TestImportItemsDeadlockIsNotRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	f := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	v := uuid.New()
	mk := func() postgres.Item {
		now := time.Now().UTC().Truncate(time.Microsecond)
		return postgres.Item{ID: uuid.New(), OwnerID: f.user.ID, Revision: 1, CipherText: "Y3Q=", EncryptionID: f.kc.EncryptionID,
			VersionID: v, Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{"v":1}`), CreatedAt: now, UpdatedAt: now}
	}
	x, y, z := mk(), mk(), mk()

	// Before record 2 (y) goes in, another transaction inserts y, then — once the import waits for
	// it — x, which the import holds: a deadlock. PostgreSQL aborts the import, whose wait began
	// first (deadlock_timeout, 1 s by default, runs out first there); the other one rolls back.
	other := make(chan error, 1)
	before := func(n int) {
		if n != 2 {
			return
		}
		insertedY := make(chan struct{})
		go func() {
			other <- func() error {
				tx, err := pool.Begin(ctx)
				if err != nil {
					close(insertedY)
					return err
				}
				defer tx.Rollback(ctx) //nolint:errcheck // the test only needs it gone
				ins := `INSERT INTO core.items (id, tenant_id, owner_id, cipher_text, encryption_id, encryption_version_id, algorithm, metadata)
					VALUES ($1, $2, $3, 'x', $4, $5, 'AES-256-GCM', '{}') ON CONFLICT (id) DO NOTHING`
				_, err = tx.Exec(ctx, ins, y.ID, tenant.ID, f.user.ID, f.kc.EncryptionID, v)
				close(insertedY)
				if err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond)
				_, err = tx.Exec(ctx, ins, x.ID, tenant.ID, f.user.ID, f.kc.EncryptionID, v)
				return err
			}()
		}()
		<-insertedY
	}
	res, err := s.ImportItems(ctx, tenant.ID, stream([]postgres.Item{x, y, z}, before), auditEvent("vault.import"))
	if oerr := <-other; oerr != nil {
		t.Fatalf("the other transaction: %v", oerr)
	}
	wantKind(t, "ImportItems(deadlocked)", err, errs.Aborted, "at record 2: nothing was imported; send all the records again")
	if res != (postgres.ImportResult{}) {
		t.Errorf("ImportItems(deadlocked) = %+v, want nothing counted", res)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.items WHERE id = ANY($1)", []uuid.UUID{x.ID, y.ID, z.ID}); n != 0 {
		t.Errorf("after a deadlocked import %d of its 3 items are stored, want none", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'vault.import'"); n != 0 {
		t.Errorf("a deadlocked import left %d audit events, want none", n)
	}
}

// A backup taken before a re-encryption job imports again as unchanged: the job moved its items
// to another key version (new ciphertext) without changing their revision or timestamps, so they
// are the same items. On the same version, other ciphertext is other content.
func TestImportItemsAfterReencryption(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _ := mustStore(t)
	tenant := mustTenant(t, s, "")
	f := mustVaultUser(t, s, tenant, postgres.KeyModePlatform)
	backup := mustItems(t, s, f, uuid.New(), 3)
	moved := uuid.New()
	// What ApplyPage writes for a moved item.
	if _, err := pool.Exec(ctx, `UPDATE core.items SET cipher_text = 'rewrapped', encryption_version_id = $2,
		metadata = '{"v":2}' WHERE id = ANY($1)`, []uuid.UUID{backup[0].ID, backup[1].ID}, moved); err != nil {
		t.Fatal(err)
	}
	for range 2 { // importing the same file twice is harmless
		res, err := s.ImportItems(ctx, tenant.ID, seq(backup, nil), auditEvent("vault.import"))
		if err != nil || res.Unchanged != 3 || res.Imported != 0 {
			t.Fatalf("ImportItems(backup from before the re-encryption) = %+v, %v; want 3 unchanged", res, err)
		}
	}
	if got, err := s.GetItem(ctx, f.user.ID, backup[0].ID); err != nil || got.VersionID != moved || got.CipherText != "rewrapped" {
		t.Errorf("after the import the moved item is %+v, %v; want it left on the version it was moved to", got, err)
	}

	cases := []struct {
		name   string
		change func(*postgres.Item)
	}{
		{"same version, other ciphertext", func(it *postgres.Item) { it.CipherText = "b3RoZXI=" }},
		{"same version, other metadata", func(it *postgres.Item) { it.Metadata = json.RawMessage(`{"v":9}`) }},
		{"other version, other revision", func(it *postgres.Item) { it.VersionID, it.Revision = uuid.New(), 2 }},
		{"other version, other updatedAt", func(it *postgres.Item) { it.VersionID, it.UpdatedAt = uuid.New(), it.UpdatedAt.Add(time.Second) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			it := backup[2]
			c.change(&it)
			_, err := s.ImportItems(ctx, tenant.ID, seq([]postgres.Item{backup[0], it}, nil), auditEvent("vault.import"))
			wantKind(t, "ImportItems()", err, errs.Conflict, "record 2 (item "+it.ID.String()+")")
		})
	}
}
