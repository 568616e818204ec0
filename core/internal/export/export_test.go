package export

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"iter"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/testdb"
)

func mustKey(tb testing.TB, secret []byte) []byte {
	tb.Helper()
	k, err := IntegrityKey(secret)
	if err != nil {
		tb.Fatalf("IntegrityKey() = %v", err)
	}
	return k
}

func testSecret() []byte {
	s := make([]byte, 32)
	for i := range s {
		s[i] = byte(i)
	}
	return s
}

// TestIntegrityKeyKnownAnswer pins the derivation: HKDF-SHA256, no salt, info
// "custos/core/export-integrity/v1", 32 bytes. Changing it would invalidate every export.
func TestIntegrityKeyKnownAnswer(t *testing.T) {
	want := "41422a3aed24b97c9a8862fdc444a787468b755ffdfce76bd12fe6239682bff0"
	if got := hex.EncodeToString(mustKey(t, testSecret())); got != want {
		t.Errorf("IntegrityKey(00..1f) = %s, want %s", got, want)
	}
	if _, err := IntegrityKey(nil); err == nil {
		t.Error("IntegrityKey(nil) = nil error, want one")
	}
}

func testRecord(s *Service) Record {
	r := Record{
		ID: uuid.NewString(), OwnerID: uuid.NewString(), Revision: 3, CipherText: "AAECAwQFBgcICQ==",
		EncryptionID: uuid.NewString(), VersionID: uuid.NewString(), Algorithm: "AES-256-GCM",
		Metadata:  json.RawMessage(`{"formatVersion":1,"nonce":"bm9uY2U="}`),
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC), UpdatedAt: time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC),
		Cursor: "c",
	}
	r.Metadata, _ = canonicalJSON(r.Metadata)
	r.Integrity = s.tag(r)
	return r
}

// TestTagDetectsEveryChange alters every byte of every covered field, one at a time, and the tag
// itself: each alteration is refused. Transport re-encodings that change nothing are accepted.
func TestTagDetectsEveryChange(t *testing.T) {
	s := New(nil, mustKey(t, testSecret()))
	r := testRecord(s)
	if _, err := s.verify(1, r); err != nil {
		t.Fatalf("verify(an exported record) = %v", err)
	}
	strs := map[string]*string{"id": &r.ID, "ownerId": &r.OwnerID, "cipherText": &r.CipherText, "encryptionId": &r.EncryptionID,
		"encryptionVersionId": &r.VersionID, "algorithm": &r.Algorithm, "integrity": &r.Integrity}
	for name, p := range strs {
		orig := *p
		for i := range len(orig) {
			b := []byte(orig)
			b[i] ^= 0x01
			*p = string(b)
			if _, err := s.verify(1, r); !errs.Is(err, errs.Invalid) {
				t.Errorf("verify() with byte %d of %s flipped = %v, want Invalid", i, name, err)
			}
		}
		*p = orig[:len(orig)-1]
		if _, err := s.verify(1, r); !errs.Is(err, errs.Invalid) {
			t.Errorf("verify() with %s truncated = %v, want Invalid", name, err)
		}
		*p = orig
	}
	alter := map[string]func(Record) Record{
		"revision":  func(r Record) Record { r.Revision++; return r },
		"createdAt": func(r Record) Record { r.CreatedAt = r.CreatedAt.Add(time.Microsecond); return r },
		"updatedAt": func(r Record) Record { r.UpdatedAt = r.UpdatedAt.Add(-time.Second); return r },
		"metadata value": func(r Record) Record {
			r.Metadata = json.RawMessage(`{"formatVersion":2,"nonce":"bm9uY2U="}`)
			return r
		},
		"metadata key": func(r Record) Record {
			r.Metadata = json.RawMessage(`{"formatVersion":1,"nonce":"bm9uY2U=","x":1}`)
			return r
		},
		"fields swapped": func(r Record) Record { r.ID, r.OwnerID = r.OwnerID, r.ID; return r },
		"boundary moved": func(r Record) Record { r.CipherText, r.Algorithm = r.CipherText+"A", r.Algorithm[1:]; return r },
		"no tag":         func(r Record) Record { r.Integrity = ""; return r },
		"another key":    func(r Record) Record { r.Integrity = New(nil, mustKey(t, []byte("other secret"))).tag(r); return r },
	}
	for name, f := range alter {
		if _, err := s.verify(7, f(r)); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "record 7") {
			t.Errorf("verify() with %s altered = %v, want Invalid naming record 7", name, err)
		}
	}
	same := map[string]func(Record) Record{
		"cursor": func(r Record) Record { r.Cursor = "elsewhere"; return r },
		"metadata key order": func(r Record) Record {
			r.Metadata = json.RawMessage(`{ "nonce": "bm9uY2U=", "formatVersion": 1.0 }`)
			return r
		},
		"time zone": func(r Record) Record { r.CreatedAt = r.CreatedAt.In(time.FixedZone("x", 3600)); return r },
	}
	for name, f := range same {
		if _, err := s.verify(1, f(r)); err != nil {
			t.Errorf("verify() with %s changed = %v, want it accepted: the tag does not cover it", name, err)
		}
	}
}

func TestCanonicalIsInjective(t *testing.T) {
	s := New(nil, mustKey(t, testSecret()))
	a := testRecord(s)
	b := a
	b.CipherText, b.EncryptionID = a.CipherText+a.EncryptionID[:1], a.EncryptionID[1:]
	if reflect.DeepEqual(canonical(a), canonical(b)) {
		t.Error("canonical() encodes two records with a moved field boundary alike")
	}
}

// fixture is a tenant with an admin and a member, each with a key context and items.
type fixture struct {
	store         *postgres.Store
	tenant        postgres.Tenant
	admin, member principal.Principal
	memberItems   []postgres.Item
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	ctx := context.Background()
	url := testdb.New(tb)
	pool, err := postgres.Open(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	st := postgres.NewStore(pool)
	sys := postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "test", Outcome: postgres.OutcomeOK}
	t := postgres.Tenant{ID: uuid.New(), Name: "t-" + uuid.NewString()[:8], KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: make([]byte, 60)}}
	if err := st.CreateTenant(ctx, t, sys); err != nil {
		tb.Fatal(err)
	}
	f := &fixture{store: st, tenant: t}
	mk := func(role string) (principal.Principal, []postgres.Item) {
		u := postgres.User{ID: uuid.New(), TenantID: t.ID, Username: role + "-" + uuid.NewString()[:8], Role: role,
			PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", SecurityStamp: "s",
			KDF: postgres.KDF{Salt: []byte("salt"), MemoryKiB: 65536, Iterations: 3, Parallelism: 4}}
		if err := st.CreateUser(ctx, u, sys); err != nil {
			tb.Fatal(err)
		}
		kc, err := st.PutKeyContext(ctx, postgres.KeyContext{UserID: u.ID, TenantID: t.ID, EncryptionID: uuid.New(), KeyMode: postgres.KeyModePlatform})
		if err != nil {
			tb.Fatal(err)
		}
		var items []postgres.Item
		for range 3 {
			it, err := st.CreateItem(ctx, postgres.Item{ID: uuid.New(), TenantID: t.ID, OwnerID: u.ID, CipherText: "Y3Q=" + uuid.NewString(),
				EncryptionID: kc.EncryptionID, VersionID: uuid.New(), Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{"v":1}`)}, sys)
			if err != nil {
				tb.Fatal(err)
			}
			items = append(items, it)
		}
		return principal.Principal{Kind: principal.User, ID: u.ID, TenantID: t.ID, Role: role}, items
	}
	f.admin, _ = mk(principal.RoleAdmin)
	f.member, f.memberItems = mk(principal.RoleMember)
	return f
}

func exportAll(tb testing.TB, s *Service, p principal.Principal, cursor string) []Record {
	tb.Helper()
	var out []Record
	err := s.Export(principal.NewContext(context.Background(), p), Call{}, cursor, func(r Record) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		tb.Fatalf("Export() = %v", err)
	}
	return out
}

func records(rs []Record) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		for _, r := range rs {
			if !yield(r, nil) {
				return
			}
		}
	}
}

func TestExportImport(t *testing.T) {
	f := newFixture(t)
	s := New(f.store, mustKey(t, testSecret()))
	all := exportAll(t, s, f.admin, "")
	if len(all) != 6 {
		t.Fatalf("Export(admin) = %d records, want the tenant's 6", len(all))
	}
	if own := exportAll(t, s, f.member, ""); len(own) != 3 || own[0].OwnerID != f.member.ID.String() {
		t.Errorf("Export(member) = %d records, want their own 3", len(own))
	}
	machine := principal.Principal{Kind: principal.APIKey, ID: uuid.New(), TenantID: f.tenant.ID, Scopes: []string{"export"}}
	if got := exportAll(t, s, machine, ""); len(got) != 6 {
		t.Errorf("Export(machine) = %d records, want 6", len(got))
	}
	if rest := exportAll(t, s, f.admin, all[3].Cursor); !reflect.DeepEqual(rest, all[4:]) {
		t.Errorf("Export(cursor of record 4) = %d records, want the 2 after it", len(rest))
	}

	adminCtx := principal.NewContext(context.Background(), f.admin)
	// Everything is there already: unchanged.
	res, err := s.Import(adminCtx, Call{}, records(all))
	if err != nil || res.Imported != 0 || res.Unchanged != 6 {
		t.Fatalf("Import(the export) = %+v, %v; want 6 unchanged", res, err)
	}
	// An altered record among good ones: refused, naming it, and nothing stored.
	for _, it := range f.memberItems {
		if err := f.store.DeleteItem(context.Background(), f.member.ID, it.ID, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "t", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	bad := append([]Record(nil), all...)
	bad[4].Revision++
	_, err = s.Import(adminCtx, Call{}, records(bad))
	if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "record 5 (item "+bad[4].ID+")") || !strings.Contains(err.Error(), "integrity") {
		t.Errorf("Import(record 5 altered) = %v, want Invalid naming record 5's integrity", err)
	}
	if got := exportAll(t, s, f.member, ""); len(got) != 0 {
		t.Errorf("after a refused import the member has %d items, want none restored", len(got))
	}
	res, err = s.Import(adminCtx, Call{}, records(all))
	if err != nil || res.Imported != 3 || res.Unchanged != 3 {
		t.Fatalf("Import(the export) after deleting 3 = %+v, %v; want 3 imported, 3 unchanged", res, err)
	}
	if again := exportAll(t, s, f.admin, ""); !reflect.DeepEqual(again, all) {
		t.Errorf("export after import differs from the original export")
	}

	memberCtx := principal.NewContext(context.Background(), f.member)
	if _, err := s.Import(memberCtx, Call{}, records(all)); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("Import(member) = %v, want PermissionDenied", err)
	}
	err = s.Export(adminCtx, Call{}, "garbage", func(Record) error { return nil })
	if !errs.Is(err, errs.Invalid) {
		t.Errorf("Export(bad cursor) = %v, want Invalid", err)
	}
}
