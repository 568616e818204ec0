package keyring

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

func TestAutoRotationByEncryptions(t *testing.T) {
	ctx := context.Background()
	svc, _, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 3})

	tests := []struct {
		name   string
		policy RotationPolicy
		per    int // encryptions per version
	}{
		{"service bound", RotationPolicy{}, 3},
		{"context policy below the bound", RotationPolicy{MaxEncryptions: 2}, 2},
		{"context policy at the bound", RotationPolicy{MaxEncryptions: 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustCreate(t, svc, c, "", "", tt.policy)
			var versions []uuid.UUID
			for range 3*tt.per + 1 {
				versions = append(versions, mustEncrypt(t, svc, c, id, "x").VersionID)
			}
			for i := range versions {
				if want := versions[i/tt.per*tt.per]; versions[i] != want {
					t.Fatalf("encryption %d used version %s, want %s: a version encrypts exactly %d times (%v)", i, versions[i], want, tt.per, versions)
				}
				if i%tt.per == 0 && i > 0 && versions[i] == versions[i-1] {
					t.Fatalf("encryption %d did not rotate (%v)", i, versions)
				}
			}
			e, err := svc.GetEncryption(ctx, c, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Versions) != 4 {
				t.Fatalf("versions after %d encryptions = %d, want 4", 3*tt.per+1, len(e.Versions))
			}
			for i, v := range e.Versions[:3] {
				if v.Encryptions != int64(tt.per) || v.State != StateDecryptOnly {
					t.Errorf("version %d: %d encryptions, %s; want %d, DECRYPT_ONLY", i+1, v.Encryptions, v.State, tt.per)
				}
			}
		})
	}

	t.Run("batch crossing the limit", func(t *testing.T) {
		id := mustCreate(t, svc, c, "", "", RotationPolicy{})
		items := make([]EncryptItem, 7)
		for i := range items {
			items[i] = EncryptItem{EncryptionID: id, Data: []byte("x")}
		}
		res, failures := svc.EncryptBatch(ctx, c, items)
		for i, err := range failures {
			if err != nil {
				t.Fatalf("EncryptBatch item %d = %v", i, err)
			}
		}
		for i := range res {
			if res[i].VersionID != res[i/3*3].VersionID || (i%3 == 0 && i > 0 && res[i].VersionID == res[i-1].VersionID) {
				t.Fatalf("batch item %d used version %s: want 3 items per version", i, res[i].VersionID)
			}
		}
	})

	t.Run("named version that is due", func(t *testing.T) {
		id := mustCreate(t, svc, c, "", "", RotationPolicy{})
		v1 := mustEncrypt(t, svc, c, id, "x").VersionID
		for range 2 {
			if _, err := svc.Encrypt(ctx, c, id, v1, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := svc.Encrypt(ctx, c, id, v1, []byte("x"))
		wantKind(t, "Encrypt(named version at its limit)", err, errs.FailedPrecondition, "no longer encrypts")
	})

	t.Run("policy out of bounds", func(t *testing.T) {
		for _, p := range []RotationPolicy{{MaxEncryptions: 4}, {MaxEncryptions: -1}, {MaxAge: 30 * time.Minute}, {MaxAge: -time.Hour},
			{MaxAge: MaxRotationMaxAge + time.Hour}} {
			_, err := svc.CreateEncryption(ctx, c, "", "", p)
			wantKind(t, "CreateEncryption(policy out of bounds)", err, errs.Invalid, "rotationPolicy.")
		}
	})
}

func TestAutoRotationByAge(t *testing.T) {
	ctx := context.Background()
	svc, _, url, c := mustServiceWith(t, Options{})
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	id := mustCreate(t, svc, c, "", "", RotationPolicy{})
	if _, err := svc.SetRotationPolicy(ctx, c, id, RotationPolicy{MaxAge: time.Hour}); err != nil {
		t.Fatalf("SetRotationPolicy() = %v", err)
	}
	v1 := mustEncrypt(t, svc, c, id, "x").VersionID
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; v != v1 {
		t.Fatalf("a fresh version was rotated")
	}
	// The version grows old; the change reaches the cache as a notification would.
	if _, err := pool.Exec(ctx, "UPDATE encryption.encryption_key_versions SET created_at = now() - interval '61 minutes' WHERE id = $1", v1); err != nil {
		t.Fatal(err)
	}
	svc.Invalidate(id)
	v2 := mustEncrypt(t, svc, c, id, "x").VersionID
	if v2 == v1 {
		t.Fatalf("a version older than maxAge still encrypts")
	}
	if v := mustEncrypt(t, svc, c, id, "x").VersionID; v != v2 {
		t.Errorf("the new version was rotated again at once")
	}
	e, _ := svc.GetEncryption(ctx, c, id)
	if len(e.Versions) != 2 || e.RotationMaxAge != time.Hour {
		t.Errorf("context after rotation by age = %d versions, policy %v; want 2, 1h", len(e.Versions), e.RotationMaxAge)
	}
	if _, err := svc.SetRotationPolicy(ctx, c, uuid.New(), RotationPolicy{}); !errs.Is(err, errs.NotFound) {
		t.Errorf("SetRotationPolicy(unknown) = %v, want NotFound", err)
	}
}

// TestAutoRotationOnceAcrossReplicas has two services over one database encrypt with one version:
// neither alone reaches the bound, together they do; the flush that shows it rotates it, once.
func TestAutoRotationOnceAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	a, store, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 5})
	b := New(store, mustKeyring(t, "k1", "k1"), Options{MaxEncryptionsPerVersion: 5})
	id := mustCreate(t, a, c, "", "", RotationPolicy{})
	v1 := mustEncrypt(t, a, c, id, "x").VersionID
	for range 2 {
		mustEncrypt(t, a, c, id, "x")
	}
	for range 3 {
		if v := mustEncrypt(t, b, c, id, "x").VersionID; v != v1 {
			t.Fatalf("replica b rotated on its own count")
		}
	}
	for _, svc := range []*Service{a, b, a} {
		if err := svc.FlushCounts(ctx); err != nil {
			t.Fatalf("FlushCounts() = %v", err)
		}
	}
	e, err := store.GetEncryption(ctx, c.TenantID, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Versions) != 2 || e.Versions[0].Encryptions != 6 || e.Versions[1].State != StateActive {
		t.Fatalf("after both replicas flushed: %+v, want version 1 with 6 encryptions and a new active version", e.Versions)
	}
	// a still has version 1 cached (no change listener here); what it encrypts with it later
	// does not rotate the context again.
	mustEncrypt(t, a, c, id, "x")
	if err := a.FlushCounts(ctx); err != nil {
		t.Fatal(err)
	}
	if e, _ := store.GetEncryption(ctx, c.TenantID, id); len(e.Versions) != 2 {
		t.Errorf("versions after a stale replica's flush = %d, want 2", len(e.Versions))
	}
	events, _, err := store.ListAuditEvents(ctx, postgres.AuditFilter{EncryptionID: &id})
	if err != nil || events[0].Action != "encryption.rotate.auto" || events[0].Actor != autoRotationActor {
		t.Errorf("audit = %+v, %v; want the automatic rotation, by %q", events, err, autoRotationActor)
	}
}

// TestCountSurvivesACacheReload: another replica's change drops the cached context between
// encryptions; the encryptions made before, still waiting for the flush, must keep counting.
func TestCountSurvivesACacheReload(t *testing.T) {
	svc, _, _, c := mustServiceWith(t, Options{MaxEncryptionsPerVersion: 5})
	id := mustCreate(t, svc, c, "", "", RotationPolicy{})
	var versions []uuid.UUID
	for i := range 6 {
		if i == 3 {
			svc.Invalidate(id) // as a notification of another replica's change would
		}
		versions = append(versions, mustEncrypt(t, svc, c, id, "x").VersionID)
	}
	if versions[0] != versions[4] || versions[5] == versions[4] {
		t.Errorf("versions of 6 encryptions with a bound of 5 and a reload after the 3rd = %v, want a rotation before the 6th", versions)
	}
}
