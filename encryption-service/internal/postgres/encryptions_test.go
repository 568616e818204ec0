package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// withoutTimes returns e with its and its versions' times zeroed, for comparison.
func withoutTimes(e postgres.Encryption) postgres.Encryption {
	e.CreatedAt = time.Time{}
	e.Versions = append([]postgres.KeyVersion(nil), e.Versions...)
	for i := range e.Versions {
		e.Versions[i].CreatedAt, e.Versions[i].UpdatedAt = time.Time{}, time.Time{}
	}
	return e
}

func TestCreateAndGetEncryption(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")

	platform, platformFirst := platformContext(t, tenant.ID)
	platform.RotationMaxAge = 90 * 24 * time.Hour
	platform.RotationMaxEncryptions = 1 << 32

	client := postgres.Encryption{ID: uuid.New(), TenantID: tenant.ID, Algorithm: postgres.AlgorithmXChaCha20Poly1305,
		KeyMode: postgres.KeyModeClient, SealingPublicKey: mustRandom(t, 32),
		SealingPrivateKey: &postgres.WrappedKey{MasterKeyID: "mk-2", Blob: mustRandom(t, 100)}}
	clientFirst := postgres.KeyVersion{ID: uuid.New(), Material: wrapped(t)}

	rsa := postgres.Encryption{ID: uuid.New(), TenantID: tenant.ID, Algorithm: postgres.AlgorithmRSAOAEP3072SHA256,
		KeyMode: postgres.KeyModePlatform}
	rsaFirst := postgres.KeyVersion{ID: uuid.New(), Material: wrapped(t), PublicKey: mustRandom(t, 400)}

	for _, tt := range []struct {
		name  string
		e     postgres.Encryption
		first postgres.KeyVersion
	}{
		{"platform", platform, platformFirst},
		{"client", client, clientFirst},
		{"rsa", rsa, rsaFirst},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.CreateEncryption(ctx, tt.e, tt.first, auditEvent("encryption.create")); err != nil {
				t.Fatalf("CreateEncryption() = %v", err)
			}
			got, err := s.GetEncryption(ctx, tenant.ID, tt.e.ID)
			if err != nil {
				t.Fatalf("GetEncryption() = %v", err)
			}
			if got.CreatedAt.IsZero() || len(got.Versions) != 1 || got.Versions[0].CreatedAt.IsZero() {
				t.Fatalf("GetEncryption() = %+v, want creation times and one version", got)
			}
			want := tt.e
			first := tt.first
			first.EncryptionID, first.Version, first.State = tt.e.ID, 1, postgres.StateActive
			want.Versions = []postgres.KeyVersion{first}
			if g := withoutTimes(got); !reflect.DeepEqual(g, want) {
				t.Errorf("GetEncryption() = %+v\nwant %+v", g, want)
			}
		})
	}

	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{EncryptionID: &client.ID})
	if err != nil || len(events) != 1 || *events[0].VersionID != clientFirst.ID || *events[0].TenantID != tenant.ID {
		t.Errorf("ListAuditEvents(client context) = %+v, %v, want one event naming tenant and first version", events, err)
	}
}

func TestCreateEncryptionRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	existing := mustContext(t, s, tenant.ID)
	destroyed, _ := mustTenant(t, s, "")
	if _, err := pool.Exec(ctx, "UPDATE encryption.tenants SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}

	type mutate func(e *postgres.Encryption, v *postgres.KeyVersion)
	tests := []struct {
		name    string
		mutate  mutate
		kind    errs.Kind
		message string
	}{
		{"unknown tenant", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.TenantID = uuid.New() }, errs.NotFound, "not found"},
		{"destroyed tenant", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.TenantID = destroyed.ID }, errs.NotFound, "not found"},
		{"context id taken", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.ID = existing.ID }, errs.Conflict, "already exists"},
		{"version id taken", func(_ *postgres.Encryption, v *postgres.KeyVersion) {
			v.ID = mustGet(t, s, tenant.ID, existing.ID).Versions[0].ID
		}, errs.Conflict, "already exists"},
		{"nil id", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.ID = uuid.Nil }, errs.Invalid, "id is required"},
		{"nil tenant", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.TenantID = uuid.Nil }, errs.Invalid, "tenant id is required"},
		{"unknown algorithm", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.Algorithm = "DES" }, errs.Invalid, "algorithm"},
		{"unknown key mode", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.KeyMode = "platform" }, errs.Invalid, "keyMode"},
		{"client without sealing key", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.KeyMode = postgres.KeyModeClient },
			errs.Invalid, "sealing"},
		{"client without wrapped private key", func(e *postgres.Encryption, _ *postgres.KeyVersion) {
			e.KeyMode, e.SealingPublicKey = postgres.KeyModeClient, []byte{1}
		}, errs.Invalid, "sealing"},
		{"platform with sealing key", func(e *postgres.Encryption, _ *postgres.KeyVersion) {
			e.SealingPublicKey = []byte{1}
		}, errs.Invalid, "sealing"},
		{"negative max age", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.RotationMaxAge = -time.Hour }, errs.Invalid, "max age"},
		{"nanosecond max age", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.RotationMaxAge = time.Nanosecond }, errs.Invalid, "max age"},
		{"negative max encryptions", func(e *postgres.Encryption, _ *postgres.KeyVersion) { e.RotationMaxEncryptions = -1 },
			errs.Invalid, "max encryptions"},
		{"version nil id", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.ID = uuid.Nil }, errs.Invalid, "id is required"},
		{"version of another context", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.EncryptionID = uuid.New() },
			errs.Invalid, "belongs to key context"},
		{"version 2", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.Version = 2 }, errs.Invalid, "version must be 1"},
		{"decrypt-only first version", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.State = postgres.StateDecryptOnly },
			errs.Invalid, "must be ACTIVE"},
		{"no material", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.Material = nil }, errs.Invalid, "key material"},
		{"no master key id", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.Material.MasterKeyID = "" }, errs.Invalid, "key material"},
		{"rsa without public key", func(e *postgres.Encryption, _ *postgres.KeyVersion) {
			e.Algorithm = postgres.AlgorithmRSAOAEP3072SHA256
		}, errs.Invalid, "public key"},
		{"aes with public key", func(_ *postgres.Encryption, v *postgres.KeyVersion) { v.PublicKey = []byte{1} }, errs.Invalid, "public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, first := platformContext(t, tenant.ID)
			tt.mutate(&e, &first)
			err := s.CreateEncryption(ctx, e, first, auditEvent("encryption.create"))
			wantKind(t, "CreateEncryption()", err, tt.kind, tt.message)
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.encryptions"); n != 1 {
		t.Errorf("key contexts after refused creations = %d, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.encryption_key_versions"); n != 1 {
		t.Errorf("key versions after refused creations = %d, want 1", n)
	}
}

func mustGet(tb testing.TB, s *postgres.Store, tenantID, id uuid.UUID) postgres.Encryption {
	tb.Helper()
	e, err := s.GetEncryption(tb.Context(), tenantID, id)
	if err != nil {
		tb.Fatalf("GetEncryption() = %v", err)
	}
	return e
}

// TestGetEncryptionNotFound checks that a missing, destroyed or foreign
// context gets the same answer.
func TestGetEncryptionNotFound(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	other, _ := mustTenant(t, s, "")
	foreign := mustContext(t, s, other.ID)
	destroyed := mustContext(t, s, tenant.ID)
	if _, err := pool.Exec(ctx, "UPDATE encryption.encryptions SET destroyed_at = now() WHERE id = $1", destroyed.ID); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]uuid.UUID{"missing": uuid.New(), "foreign": foreign.ID, "destroyed": destroyed.ID} {
		_, err := s.GetEncryption(ctx, tenant.ID, id)
		var e *errs.Error
		if !errors.As(err, &e) || e.Kind != errs.NotFound || e.Message != fmt.Sprintf("key context %s not found", id) || e.Err != nil {
			t.Errorf("GetEncryption(%s) = %#v, want NotFound %q and nothing more", name, err, fmt.Sprintf("key context %s not found", id))
		}
		_, err = s.Rotate(ctx, tenant.ID, id, newVersionFunc(t), auditEvent("encryption.rotate"))
		if !errors.As(err, &e) || e.Kind != errs.NotFound || e.Message != fmt.Sprintf("key context %s not found", id) {
			t.Errorf("Rotate(%s) = %v, want NotFound %q", name, err, fmt.Sprintf("key context %s not found", id))
		}
	}
}

func TestRotate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)

	var seen postgres.Encryption
	var seenVersion int
	v2, err := s.Rotate(ctx, tenant.ID, e.ID, func(e postgres.Encryption, version int) (postgres.KeyVersion, error) {
		seen, seenVersion = e, version
		return postgres.KeyVersion{ID: uuid.New(), Material: wrapped(t)}, nil // zero fields filled in
	}, auditEvent("encryption.rotate"))
	if err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	if seenVersion != 2 || len(seen.Versions) != 1 || seen.ID != e.ID {
		t.Errorf("Rotate called newVersion(%+v, %d), want the context with its 1 version and 2", seen, seenVersion)
	}
	if v2.Version != 2 || v2.State != postgres.StateActive || v2.EncryptionID != e.ID || v2.CreatedAt.IsZero() {
		t.Errorf("Rotate() = %+v, want ACTIVE version 2 of %s", v2, e.ID)
	}
	got := mustGet(t, s, tenant.ID, e.ID)
	if len(got.Versions) != 2 || got.Versions[0].State != postgres.StateDecryptOnly || got.Versions[1].ID != v2.ID ||
		got.Versions[1].State != postgres.StateActive || !got.Versions[0].UpdatedAt.After(got.Versions[0].CreatedAt) {
		t.Errorf("versions after Rotate = %+v, want 1 DECRYPT_ONLY (updated) and 2 ACTIVE", got.Versions)
	}
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{EncryptionID: &e.ID})
	if err != nil || len(events) != 2 || events[0].Action != "encryption.rotate" || *events[0].VersionID != v2.ID {
		t.Errorf("ListAuditEvents() = %+v, %v, want the rotation naming version %s first", events, err, v2.ID)
	}

	errBoom := errors.New("boom")
	refusals := []struct {
		name       string
		newVersion func(postgres.Encryption, int) (postgres.KeyVersion, error)
		kind       errs.Kind
		message    string
	}{
		{"callback errs.Error", func(postgres.Encryption, int) (postgres.KeyVersion, error) {
			return postgres.KeyVersion{}, errs.E(errs.PermissionDenied, "wrong master key")
		}, errs.PermissionDenied, "wrong master key"},
		{"callback plain error", func(postgres.Encryption, int) (postgres.KeyVersion, error) {
			return postgres.KeyVersion{}, errBoom
		}, errs.Internal, "cannot create a key version"},
		{"wrong version", func(e postgres.Encryption, _ int) (postgres.KeyVersion, error) {
			return postgres.KeyVersion{ID: uuid.New(), Version: 7, Material: wrapped(t)}, nil
		}, errs.Invalid, "version must be 3"},
		{"not active", func(e postgres.Encryption, _ int) (postgres.KeyVersion, error) {
			return postgres.KeyVersion{ID: uuid.New(), State: postgres.StateDisabled, Material: wrapped(t)}, nil
		}, errs.Invalid, "must be ACTIVE"},
		{"reused id", func(e postgres.Encryption, _ int) (postgres.KeyVersion, error) {
			return postgres.KeyVersion{ID: v2.ID, Material: wrapped(t)}, nil
		}, errs.Conflict, "already exists"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Rotate(ctx, tenant.ID, e.ID, tt.newVersion, auditEvent("encryption.rotate"))
			wantKind(t, "Rotate()", err, tt.kind, tt.message)
			if tt.name == "callback plain error" && !errors.Is(err, errBoom) {
				t.Errorf("Rotate() = %v, want it to wrap the callback's error for the logs", err)
			}
		})
	}
	if after := mustGet(t, s, tenant.ID, e.ID); !reflect.DeepEqual(after, got) {
		t.Errorf("refused rotations changed the context:\n%+v\nwant %+v", after, got)
	}
}

func TestRotateClientContext(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	pub := mustRandom(t, 32)
	e := postgres.Encryption{ID: uuid.New(), TenantID: tenant.ID, Algorithm: postgres.AlgorithmAES256GCM,
		KeyMode: postgres.KeyModeClient, SealingPublicKey: pub, SealingPrivateKey: wrapped(t)}
	if err := s.CreateEncryption(ctx, e, postgres.KeyVersion{ID: uuid.New(), Material: wrapped(t)}, auditEvent("encryption.create")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Rotate(ctx, tenant.ID, e.ID, func(got postgres.Encryption, version int) (postgres.KeyVersion, error) {
		if !bytes.Equal(got.SealingPublicKey, pub) {
			t.Errorf("newVersion got sealing public key %x, want %x", got.SealingPublicKey, pub)
		}
		return newVersionFunc(t)(got, version)
	}, auditEvent("encryption.rotate"))
	if err != nil {
		t.Fatalf("Rotate(CLIENT context) = %v", err)
	}
}

// TestRotateConcurrently rotates one context from 20 goroutines at once.
func TestRotateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)

	const rotations = 20
	var wg sync.WaitGroup
	results := make([]error, rotations)
	for i := range rotations {
		wg.Go(func() {
			_, results[i] = s.Rotate(ctx, tenant.ID, e.ID, newVersionFunc(t), auditEvent("encryption.rotate"))
		})
	}
	wg.Wait()
	for i, err := range results {
		if err != nil {
			t.Errorf("Rotate() #%d = %v, want nil", i, err)
		}
	}
	got := mustGet(t, s, tenant.ID, e.ID)
	active := 0
	for i, v := range got.Versions {
		if v.Version != i+1 {
			t.Errorf("version #%d is %d, want %d (consecutive)", i, v.Version, i+1)
		}
		if v.State == postgres.StateActive {
			active++
		}
	}
	if len(got.Versions) != rotations+1 || active != 1 || got.Versions[rotations].State != postgres.StateActive {
		t.Errorf("after %d rotations: %d versions, %d ACTIVE (last %s), want %d, 1, the last",
			rotations, len(got.Versions), active, got.Versions[len(got.Versions)-1].State, rotations+1)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'encryption.rotate'"); n != rotations {
		t.Errorf("rotation audit events = %d, want %d", n, rotations)
	}
}

func TestAddEncryptions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)
	v2, err := s.Rotate(ctx, tenant.ID, e.ID, newVersionFunc(t), auditEvent("encryption.rotate"))
	if err != nil {
		t.Fatal(err)
	}
	v1 := mustGet(t, s, tenant.ID, e.ID).Versions[0]

	if err := s.AddEncryptions(ctx, nil); err != nil {
		t.Errorf("AddEncryptions(nil) = %v, want nil", err)
	}
	// Concurrent flushes touching the same versions in any order add up.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if err := s.AddEncryptions(ctx, map[uuid.UUID]int64{v1.ID: 3, v2.ID: 5, uuid.New(): 7}); err != nil {
				t.Errorf("AddEncryptions() = %v", err)
			}
		})
	}
	wg.Wait()
	err = s.AddEncryptions(ctx, map[uuid.UUID]int64{v1.ID: 1, v2.ID: -1})
	wantKind(t, "AddEncryptions(negative)", err, errs.Invalid, "must not be negative")

	got := mustGet(t, s, tenant.ID, e.ID)
	if got.Versions[0].Encryptions != 30 || got.Versions[1].Encryptions != 50 {
		t.Errorf("counters = %d, %d, want 30, 50", got.Versions[0].Encryptions, got.Versions[1].Encryptions)
	}
}

// TestSchemaConstraints checks that the database itself refuses rows that
// break the key model, whatever code writes them.
func TestSchemaConstraints(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)
	v1 := mustGet(t, s, tenant.ID, e.ID).Versions[0]

	tests := []struct {
		name string
		sql  string
		args []any
	}{
		{"second ACTIVE version", `INSERT INTO encryption.encryption_key_versions (id, encryption_id, version, state, key_material, master_key_id)
			VALUES ($1, $2, 2, 'ACTIVE', '\x01', 'mk')`, []any{uuid.New(), e.ID}},
		{"version 0", `INSERT INTO encryption.encryption_key_versions (id, encryption_id, version, state, key_material, master_key_id)
			VALUES ($1, $2, 0, 'DISABLED', '\x01', 'mk')`, []any{uuid.New(), e.ID}},
		{"duplicate version", `INSERT INTO encryption.encryption_key_versions (id, encryption_id, version, state, key_material, master_key_id)
			VALUES ($1, $2, 1, 'DISABLED', '\x01', 'mk')`, []any{uuid.New(), e.ID}},
		{"unknown state", `UPDATE encryption.encryption_key_versions SET state = 'RETIRED' WHERE id = $1`, []any{v1.ID}},
		{"destroyed with material", `UPDATE encryption.encryption_key_versions SET state = 'DESTROYED' WHERE id = $1`, []any{v1.ID}},
		{"live without material", `UPDATE encryption.encryption_key_versions SET key_material = NULL WHERE id = $1`, []any{v1.ID}},
		{"live without master key id", `UPDATE encryption.encryption_key_versions SET master_key_id = NULL WHERE id = $1`, []any{v1.ID}},
		{"negative counter", `UPDATE encryption.encryption_key_versions SET encryptions = -1 WHERE id = $1`, []any{v1.ID}},
		{"client without sealing key", `UPDATE encryption.encryptions SET key_mode = 'CLIENT' WHERE id = $1`, []any{e.ID}},
		{"platform with sealing key", `UPDATE encryption.encryptions SET sealing_public_key = '\x01' WHERE id = $1`, []any{e.ID}},
		{"unknown algorithm", `UPDATE encryption.encryptions SET algorithm = 'DES' WHERE id = $1`, []any{e.ID}},
		{"zero max age", `UPDATE encryption.encryptions SET rotation_max_age = '0s' WHERE id = $1`, []any{e.ID}},
		{"empty tenant name", `UPDATE encryption.tenants SET name = '' WHERE id = $1`, []any{tenant.ID}},
		{"long tenant name", `UPDATE encryption.tenants SET name = repeat('x', 201) WHERE id = $1`, []any{tenant.ID}},
		{"1-byte secret hash", `UPDATE encryption.tenant_secrets SET secret_hash = '\x00' WHERE tenant_id = $1`, []any{tenant.ID}},
		{"context of unknown tenant", `INSERT INTO encryption.encryptions (id, tenant_id, algorithm, key_mode)
			VALUES ($1, $2, 'AES-256-GCM', 'PLATFORM')`, []any{uuid.New(), uuid.New()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := pool.Exec(ctx, tt.sql, tt.args...); err == nil {
				t.Errorf("%s: the database accepted it, want a constraint violation", tt.name)
			}
		})
	}
	// Deleting a context deletes its versions.
	if _, err := pool.Exec(ctx, "DELETE FROM encryption.encryptions WHERE id = $1", e.ID); err != nil {
		t.Fatalf("delete context: %v", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.encryption_key_versions"); n != 0 {
		t.Errorf("versions after deleting their context = %d, want 0", n)
	}
}
