package postgres_test

import (
	"context"
	"encoding/json"
	"iter"
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
