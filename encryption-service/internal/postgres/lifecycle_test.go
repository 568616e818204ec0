package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// mustClientContext creates a CLIENT context for tenantID.
func mustClientContext(tb testing.TB, s *postgres.Store, tenantID uuid.UUID) postgres.Encryption {
	tb.Helper()
	e := postgres.Encryption{ID: uuid.New(), TenantID: tenantID, Algorithm: postgres.AlgorithmAES256GCM,
		KeyMode: postgres.KeyModeClient, SealingPublicKey: mustRandom(tb, 32), SealingPrivateKey: wrapped(tb)}
	if err := s.CreateEncryption(tb.Context(), e, postgres.KeyVersion{ID: uuid.New(), Material: wrapped(tb)}, auditEvent("encryption.create")); err != nil {
		tb.Fatalf("CreateEncryption(CLIENT) = %v", err)
	}
	return e
}

func mustRotate(tb testing.TB, s *postgres.Store, tenantID, id uuid.UUID) postgres.KeyVersion {
	tb.Helper()
	v, err := s.Rotate(tb.Context(), tenantID, id, newVersionFunc(tb), auditEvent("encryption.rotate"))
	if err != nil {
		tb.Fatalf("Rotate() = %v", err)
	}
	return v
}

func TestSetVersionState(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	other, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)
	v1 := mustGet(t, s, tenant.ID, e.ID).Versions[0]
	v2 := mustRotate(t, s, tenant.ID, e.ID)

	// Steps run in order: each starts from the state the previous one left.
	steps := []struct {
		name      string
		tenant    uuid.UUID
		version   uuid.UUID
		to        string
		wantState string
		kind      errs.Kind // when wantState is ""
		message   string
	}{
		{"disable the active version", tenant.ID, v2.ID, postgres.StateDisabled, "", errs.FailedPrecondition, "rotate first"},
		{"destroy a decrypt-only version", tenant.ID, v1.ID, postgres.StateDestroyed, "", errs.FailedPrecondition, "disable it first"},
		{"destroy the active version", tenant.ID, v2.ID, postgres.StateDestroyed, "", errs.FailedPrecondition, "disable it first"},
		{"unknown target state", tenant.ID, v1.ID, postgres.StateActive, "", errs.Invalid, "state must be"},
		{"unknown version", tenant.ID, uuid.New(), postgres.StateDisabled, "", errs.NotFound, "not found"},
		{"other tenant", other.ID, v1.ID, postgres.StateDisabled, "", errs.NotFound, "key context " + e.ID.String() + " not found"},
		{"enable an active version", tenant.ID, v2.ID, postgres.StateDecryptOnly, postgres.StateActive, 0, ""},
		{"disable", tenant.ID, v1.ID, postgres.StateDisabled, postgres.StateDisabled, 0, ""},
		{"disable again", tenant.ID, v1.ID, postgres.StateDisabled, postgres.StateDisabled, 0, ""},
		{"enable", tenant.ID, v1.ID, postgres.StateDecryptOnly, postgres.StateDecryptOnly, 0, ""},
		{"disable once more", tenant.ID, v1.ID, postgres.StateDisabled, postgres.StateDisabled, 0, ""},
		{"destroy", tenant.ID, v1.ID, postgres.StateDestroyed, postgres.StateDestroyed, 0, ""},
		{"destroy again", tenant.ID, v1.ID, postgres.StateDestroyed, postgres.StateDestroyed, 0, ""},
		{"enable a destroyed version", tenant.ID, v1.ID, postgres.StateDecryptOnly, "", errs.FailedPrecondition, "unrecoverable"},
		{"disable a destroyed version", tenant.ID, v1.ID, postgres.StateDisabled, "", errs.FailedPrecondition, "unrecoverable"},
	}
	for _, st := range steps {
		got, err := s.SetVersionState(ctx, st.tenant, e.ID, st.version, st.to, auditEvent("version.state"))
		if st.wantState == "" {
			wantKind(t, "SetVersionState("+st.name+")", err, st.kind, st.message)
			continue
		}
		if err != nil || got.State != st.wantState || got.ID != st.version {
			t.Errorf("SetVersionState(%s) = %+v, %v; want version %s %s", st.name, got, err, st.version, st.wantState)
		}
	}

	// Crypto-shredding: the destroyed version's row holds no key material and no master key id.
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions
		 WHERE id = $1 AND key_material IS NULL AND master_key_id IS NULL AND state = 'DESTROYED'`, v1.ID); n != 1 {
		t.Errorf("destroyed version row still holds key material or its master key id")
	}
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions WHERE id = $1 AND key_material IS NOT NULL`, v2.ID); n != 1 {
		t.Errorf("the active version lost its key material")
	}
	if got := mustGet(t, s, tenant.ID, e.ID).Versions[0]; got.Material != nil || got.State != postgres.StateDestroyed {
		t.Errorf("GetEncryption after destroy: version 1 = %+v, want DESTROYED without material", got)
	}
	// Audited: every successful step, no-ops included.
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'version.state'"); n != 7 {
		t.Errorf("audit events of state changes = %d, want 7", n)
	}
}

func TestDestroyEncryption(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	other, _ := mustTenant(t, s, "")
	platform := mustContext(t, s, tenant.ID)
	mustRotate(t, s, tenant.ID, platform.ID)
	client := mustClientContext(t, s, tenant.ID)
	kept := mustContext(t, s, tenant.ID)

	if _, err := s.DestroyEncryption(ctx, other.ID, platform.ID, auditEvent("encryption.destroy")); !errs.Is(err, errs.NotFound) {
		t.Errorf("DestroyEncryption(other tenant) = %v, want NotFound", err)
	}
	for name, tt := range map[string]struct {
		id   uuid.UUID
		want int
	}{"platform": {platform.ID, 2}, "client": {client.ID, 1}} {
		n, err := s.DestroyEncryption(ctx, tenant.ID, tt.id, auditEvent("encryption.destroy"))
		if err != nil || n != tt.want {
			t.Errorf("DestroyEncryption(%s) = %d, %v; want %d, nil", name, n, err, tt.want)
		}
		_, err = s.GetEncryption(ctx, tenant.ID, tt.id)
		wantKind(t, "GetEncryption(destroyed "+name+")", err, errs.NotFound, "not found")
		_, err = s.DestroyEncryption(ctx, tenant.ID, tt.id, auditEvent("encryption.destroy"))
		wantKind(t, "DestroyEncryption(destroyed "+name+")", err, errs.NotFound, "not found")
		_, err = s.Rotate(ctx, tenant.ID, tt.id, newVersionFunc(t), auditEvent("encryption.rotate"))
		wantKind(t, "Rotate(destroyed "+name+")", err, errs.NotFound, "not found")
	}
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions
		 WHERE encryption_id = ANY($1) AND (key_material IS NOT NULL OR master_key_id IS NOT NULL OR state <> 'DESTROYED')`,
		[]uuid.UUID{platform.ID, client.ID}); n != 0 {
		t.Errorf("%d versions of destroyed contexts still hold key material", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryptions
		 WHERE id = $1 AND destroyed_at IS NOT NULL AND sealing_private_key IS NULL AND sealing_master_key_id IS NULL
		   AND sealing_public_key IS NOT NULL`, client.ID); n != 1 {
		t.Errorf("destroyed CLIENT context still holds its wrapped sealing private key")
	}
	if got := mustGet(t, s, tenant.ID, kept.ID); got.Versions[0].Material == nil {
		t.Errorf("another context lost its key material")
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'encryption.destroy'"); n != 2 {
		t.Errorf("destroy audit events = %d, want 2", n)
	}
}

func TestDestroyTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	mustAddSecret(t, s, tenant.ID)
	neighbour, _ := mustTenant(t, s, "")
	var contexts []uuid.UUID
	for range 3 {
		contexts = append(contexts, mustContext(t, s, tenant.ID).ID)
	}
	contexts = append(contexts, mustClientContext(t, s, tenant.ID).ID)
	erased := mustContext(t, s, tenant.ID)
	if _, err := s.DestroyEncryption(ctx, tenant.ID, erased.ID, auditEvent("encryption.destroy")); err != nil {
		t.Fatal(err)
	}
	spared := mustContext(t, s, neighbour.ID)

	n, err := s.DestroyTenant(ctx, tenant.ID, auditEvent("tenant.destroy"))
	if err != nil || n != 4 {
		t.Fatalf("DestroyTenant() = %d, %v; want 4, nil", n, err)
	}
	// Each context it erased shows its erasure in its own trail, in the tenant's transaction; the
	// tenant's event lists first (newest).
	// (erased, destroyed before, is not erased again: its trail keeps its own erasure only.)
	for _, id := range append(contexts, erased.ID) {
		events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{EncryptionID: &id})
		if err != nil || len(events) != 2 {
			t.Fatalf("ListAuditEvents(context %s) = %d events, %v; want its creation and its erasure", id, len(events), err)
		}
		wantRequest := "req-tenant.destroy"
		if id == erased.ID {
			wantRequest = "req-encryption.destroy"
		}
		e := events[0]
		if e.Action != "encryption.destroy" || e.Actor != "test" || e.RequestID != wantRequest ||
			e.TenantID == nil || *e.TenantID != tenant.ID || e.VersionID != nil {
			t.Errorf("latest event of context %s = %+v, want encryption.destroy of tenant %s by test, request %s", id, e, tenant.ID, wantRequest)
		}
	}
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tenant.ID, PageSize: 6})
	if err != nil || len(events) != 6 || events[0].Action != "tenant.destroy" || events[0].EncryptionID != nil {
		t.Fatalf("ListAuditEvents(tenant) = %+v, %v; want tenant.destroy first, then 4 encryption.destroy", events, err)
	}
	for _, e := range events[1:5] {
		if e.Action != "encryption.destroy" || !e.OccurredAt.Equal(events[0].OccurredAt) {
			t.Errorf("event after tenant.destroy = %+v, want encryption.destroy at %v", e, events[0].OccurredAt)
		}
	}
	_, err = s.DestroyTenant(ctx, tenant.ID, auditEvent("tenant.destroy"))
	wantKind(t, "DestroyTenant(destroyed)", err, errs.NotFound, "not found")
	_, err = s.DestroyTenant(ctx, uuid.New(), auditEvent("tenant.destroy"))
	wantKind(t, "DestroyTenant(unknown)", err, errs.NotFound, "not found")
	_, err = s.GetTenant(ctx, tenant.ID)
	wantKind(t, "GetTenant(destroyed)", err, errs.NotFound, "not found")
	if secrets, err := s.ActiveSecrets(ctx, tenant.ID); err != nil || len(secrets) != 0 {
		t.Errorf("ActiveSecrets(destroyed) = %v, %v; want none", secrets, err)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.tenant_secrets WHERE tenant_id = $1 AND revoked_at IS NULL", tenant.ID); n != 0 {
		t.Errorf("destroyed tenant has %d unrevoked secrets", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryption_key_versions v JOIN encryption.encryptions e ON e.id = v.encryption_id
		 WHERE e.tenant_id = $1 AND v.key_material IS NOT NULL`, tenant.ID); n != 0 {
		t.Errorf("destroyed tenant has %d versions with key material", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM encryption.encryptions WHERE tenant_id = $1
		 AND (destroyed_at IS NULL OR sealing_private_key IS NOT NULL)`, tenant.ID); n != 0 {
		t.Errorf("destroyed tenant has %d live contexts or sealing keys", n)
	}
	e, _ := platformContext(t, tenant.ID)
	err = s.CreateEncryption(ctx, e, postgres.KeyVersion{ID: uuid.New(), Material: wrapped(t)}, auditEvent("encryption.create"))
	wantKind(t, "CreateEncryption(destroyed tenant)", err, errs.NotFound, "not found")
	if got := mustGet(t, s, neighbour.ID, spared.ID); got.Versions[0].Material == nil {
		t.Errorf("another tenant's context lost its key material")
	}
}

func TestRotateIfActive(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)
	v1 := mustGet(t, s, tenant.ID, e.ID).Versions[0]

	// Ten replicas find version 1 due at once: it is rotated once.
	var wg sync.WaitGroup
	var rotations, calls atomic.Int64
	for range 10 {
		wg.Go(func() {
			_, rotated, err := s.RotateIfActive(ctx, tenant.ID, e.ID, v1.ID, func(e postgres.Encryption, n int) (postgres.KeyVersion, error) {
				calls.Add(1)
				return newVersionFunc(t)(e, n)
			}, auditEvent("encryption.rotate.auto"))
			if err != nil {
				t.Errorf("RotateIfActive() = %v", err)
			}
			if rotated {
				rotations.Add(1)
			}
		})
	}
	wg.Wait()
	if rotations.Load() != 1 || calls.Load() != 1 {
		t.Errorf("10 concurrent RotateIfActive(version 1): %d rotations, %d key generations; want 1, 1", rotations.Load(), calls.Load())
	}
	if got := mustGet(t, s, tenant.ID, e.ID); len(got.Versions) != 2 || got.Versions[1].State != postgres.StateActive {
		t.Errorf("versions after RotateIfActive = %+v, want 2, the second ACTIVE", got.Versions)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'encryption.rotate.auto'"); n != 1 {
		t.Errorf("automatic rotation audit events = %d, want 1", n)
	}
	_, _, err := s.RotateIfActive(ctx, tenant.ID, e.ID, uuid.Nil, newVersionFunc(t), auditEvent("encryption.rotate.auto"))
	wantKind(t, "RotateIfActive(nil version)", err, errs.Invalid, "required")
}

func TestSetRotationPolicy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	e := mustContext(t, s, tenant.ID)

	if err := s.SetRotationPolicy(ctx, tenant.ID, e.ID, 48*time.Hour, 1000, auditEvent("policy")); err != nil {
		t.Fatalf("SetRotationPolicy() = %v", err)
	}
	if got := mustGet(t, s, tenant.ID, e.ID); got.RotationMaxAge != 48*time.Hour || got.RotationMaxEncryptions != 1000 {
		t.Errorf("policy = %v, %d; want 48h, 1000", got.RotationMaxAge, got.RotationMaxEncryptions)
	}
	if err := s.SetRotationPolicy(ctx, tenant.ID, e.ID, 0, 0, auditEvent("policy")); err != nil {
		t.Fatalf("SetRotationPolicy(none) = %v", err)
	}
	if got := mustGet(t, s, tenant.ID, e.ID); got.RotationMaxAge != 0 || got.RotationMaxEncryptions != 0 {
		t.Errorf("policy after clearing = %v, %d; want none", got.RotationMaxAge, got.RotationMaxEncryptions)
	}
	wantKind(t, "SetRotationPolicy(negative age)", s.SetRotationPolicy(ctx, tenant.ID, e.ID, -time.Hour, 0, auditEvent("policy")), errs.Invalid, "max age")
	wantKind(t, "SetRotationPolicy(negative count)", s.SetRotationPolicy(ctx, tenant.ID, e.ID, 0, -1, auditEvent("policy")), errs.Invalid, "max encryptions")
	wantKind(t, "SetRotationPolicy(unknown)", s.SetRotationPolicy(ctx, tenant.ID, uuid.New(), 0, 0, auditEvent("policy")), errs.NotFound, "not found")
}

func TestChangeSealingKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	client := mustClientContext(t, s, tenant.ID)
	platform := mustContext(t, s, tenant.ID)
	v1 := mustGet(t, s, tenant.ID, client.ID).Versions[0]
	v2 := mustRotate(t, s, tenant.ID, client.ID)
	v3 := mustRotate(t, s, tenant.ID, client.ID)
	for _, st := range []string{postgres.StateDisabled, postgres.StateDestroyed} {
		if _, err := s.SetVersionState(ctx, tenant.ID, client.ID, v1.ID, st, auditEvent("state")); err != nil {
			t.Fatal(err)
		}
	}

	change := postgres.SealingKeyChange{
		PublicKey:  mustRandom(t, 32),
		PrivateKey: postgres.WrappedKey{MasterKeyID: "mk-9", Blob: mustRandom(t, 90)},
		Versions:   map[uuid.UUID]postgres.WrappedKey{v2.ID: *wrapped(t), v3.ID: *wrapped(t)},
	}
	seen, err := s.ChangeSealingKey(ctx, tenant.ID, client.ID, func(e postgres.Encryption) (postgres.SealingKeyChange, error) {
		if !bytes.Equal(e.SealingPrivateKey.Blob, client.SealingPrivateKey.Blob) || len(e.Versions) != 3 {
			t.Errorf("change got sealing key %x and %d versions, want the stored ones", e.SealingPrivateKey.Blob, len(e.Versions))
		}
		return change, nil
	}, auditEvent("encryption.master-key.change"))
	if err != nil || len(seen.Versions) != 3 {
		t.Fatalf("ChangeSealingKey() = %+v, %v", seen, err)
	}
	got := mustGet(t, s, tenant.ID, client.ID)
	if !bytes.Equal(got.SealingPublicKey, change.PublicKey) || !reflect.DeepEqual(*got.SealingPrivateKey, change.PrivateKey) {
		t.Errorf("sealing key pair after ChangeSealingKey = %x, %+v; want %x, %+v",
			got.SealingPublicKey, got.SealingPrivateKey, change.PublicKey, change.PrivateKey)
	}
	for _, v := range got.Versions {
		want, live := change.Versions[v.ID]
		switch {
		case !live && v.Material != nil:
			t.Errorf("destroyed version %d has key material after ChangeSealingKey", v.Version)
		case live && !reflect.DeepEqual(*v.Material, want):
			t.Errorf("version %d material after ChangeSealingKey = %+v, want %+v", v.Version, v.Material, want)
		}
	}

	other := func(mutate func(*postgres.SealingKeyChange)) func(postgres.Encryption) (postgres.SealingKeyChange, error) {
		return func(postgres.Encryption) (postgres.SealingKeyChange, error) {
			ch := postgres.SealingKeyChange{PublicKey: mustRandom(t, 32), PrivateKey: *wrapped(t),
				Versions: map[uuid.UUID]postgres.WrappedKey{v2.ID: *wrapped(t), v3.ID: *wrapped(t)}}
			mutate(&ch)
			return ch, nil
		}
	}
	errWrong := errs.E(errs.PermissionDenied, "wrong client master key")
	refusals := []struct {
		name    string
		id      uuid.UUID
		change  func(postgres.Encryption) (postgres.SealingKeyChange, error)
		kind    errs.Kind
		message string
	}{
		{"platform context", platform.ID, other(func(*postgres.SealingKeyChange) {}), errs.FailedPrecondition, "no client master key"},
		{"unknown context", uuid.New(), other(func(*postgres.SealingKeyChange) {}), errs.NotFound, "not found"},
		{"wrong old key", client.ID, func(postgres.Encryption) (postgres.SealingKeyChange, error) {
			return postgres.SealingKeyChange{}, errWrong
		}, errs.PermissionDenied, "wrong client master key"},
		{"plain error", client.ID, func(postgres.Encryption) (postgres.SealingKeyChange, error) {
			return postgres.SealingKeyChange{}, errors.New("boom")
		}, errs.Internal, "cannot change"},
		{"no public key", client.ID, other(func(ch *postgres.SealingKeyChange) { ch.PublicKey = nil }), errs.Invalid, "required"},
		{"no private key", client.ID, other(func(ch *postgres.SealingKeyChange) { ch.PrivateKey = postgres.WrappedKey{} }), errs.Invalid, "required"},
		{"a live version left out", client.ID, other(func(ch *postgres.SealingKeyChange) { delete(ch.Versions, v2.ID) }), errs.Invalid, "version 2"},
		{"a destroyed version given", client.ID, other(func(ch *postgres.SealingKeyChange) { ch.Versions[v1.ID] = *wrapped(t) }), errs.Invalid, "destroyed"},
		{"an unknown version given", client.ID, other(func(ch *postgres.SealingKeyChange) { ch.Versions[uuid.New()] = *wrapped(t) }), errs.Invalid, "does not have"},
		{"empty material", client.ID, other(func(ch *postgres.SealingKeyChange) { ch.Versions[v3.ID] = postgres.WrappedKey{} }), errs.Invalid, "version 3"},
	}
	for _, tt := range refusals {
		_, err := s.ChangeSealingKey(ctx, tenant.ID, tt.id, tt.change, auditEvent("encryption.master-key.change"))
		wantKind(t, "ChangeSealingKey("+tt.name+")", err, tt.kind, tt.message)
	}
	if after := mustGet(t, s, tenant.ID, client.ID); !reflect.DeepEqual(after, got) {
		t.Errorf("refused changes altered the context:\n got %+v\nwant %+v", after, got)
	}
}

// TestSealingKeyChangesReadLockedVersions: ChangeSealingKey and BindLegacyKeys read a context's
// versions only once they hold their rows, so that a blob a platform master-key rotation rewrapped
// meanwhile (RewrapStoredKeys locks only version rows) is seen rewrapped, never written back as it
// was before.
func TestSealingKeyChangesReadLockedVersions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(ctx context.Context, s *postgres.Store, e postgres.Encryption, seen chan<- postgres.Encryption) error
	}{
		{"ChangeSealingKey", func(ctx context.Context, s *postgres.Store, e postgres.Encryption, seen chan<- postgres.Encryption) error {
			ch := postgres.SealingKeyChange{PublicKey: bytes.Repeat([]byte{1}, 32), PrivateKey: postgres.WrappedKey{MasterKeyID: "mk-2", Blob: []byte("new")}}
			_, err := s.ChangeSealingKey(ctx, e.TenantID, e.ID, func(cur postgres.Encryption) (postgres.SealingKeyChange, error) {
				seen <- cur
				ch.Versions = map[uuid.UUID]postgres.WrappedKey{cur.Versions[0].ID: {MasterKeyID: "mk-2", Blob: []byte("resealed")}}
				return ch, nil
			}, auditEvent("encryption.master-key.change"))
			return err
		}},
		{"BindLegacyKeys", func(ctx context.Context, s *postgres.Store, e postgres.Encryption, seen chan<- postgres.Encryption) error {
			_, err := s.BindLegacyKeys(ctx, e.TenantID, e.ID, func(cur postgres.Encryption) (postgres.LegacyBinding, error) {
				seen <- cur
				return postgres.LegacyBinding{}, nil
			}, auditEvent("encryption.legacy-binding"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s, pool, _ := mustStore(t)
			tenant, _ := mustTenant(t, s, "")
			e := mustClientContext(t, s, tenant.ID)
			rewrapped := postgres.WrappedKey{MasterKeyID: "mk-2", Blob: mustRandom(t, 60)}
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			t.Cleanup(free) // a failed test leaves no transaction waiting
			rotation := make(chan error, 1)
			go func() {
				_, err := s.RewrapStoredKeys(ctx, []string{"mk-1"}, 1, func(postgres.StoredKey) (postgres.WrappedKey, error) {
					close(entered)
					<-release
					return rewrapped, nil
				}, auditEvent("masterkey.rewrap"))
				rotation <- err
			}()
			<-entered // the rotation holds the version, about to rewrap it
			seen := make(chan postgres.Encryption, 2)
			changed := make(chan error, 1)
			go func() { changed <- tt.change(ctx, s, e, seen) }()
			waitLockWaiter(t, pool)
			free()
			if err := <-rotation; err != nil {
				t.Fatalf("RewrapStoredKeys() = %v", err)
			}
			if err := <-changed; err != nil {
				t.Fatalf("%s() = %v", tt.name, err)
			}
			if got := (<-seen).Versions[0].Material; !reflect.DeepEqual(got, &rewrapped) {
				t.Errorf("%s saw version 1 under master key %q, want it as the rotation committed it, under %q",
					tt.name, got.MasterKeyID, rewrapped.MasterKeyID)
			}
		})
	}
}

// TestBindLegacyKeys: a binding writes the blobs it is given and nothing else.
func TestBindLegacyKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	client := mustClientContext(t, s, tenant.ID)
	platform := mustContext(t, s, tenant.ID)
	v1 := mustGet(t, s, tenant.ID, client.ID).Versions[0]
	v2 := mustRotate(t, s, tenant.ID, client.ID)
	v3 := mustRotate(t, s, tenant.ID, client.ID)
	for _, st := range []string{postgres.StateDisabled, postgres.StateDestroyed} {
		if _, err := s.SetVersionState(ctx, tenant.ID, client.ID, v1.ID, st, auditEvent("state")); err != nil {
			t.Fatal(err)
		}
	}
	bindings := func() int {
		return count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'encryption.legacy-binding'")
	}
	bind := func(b postgres.LegacyBinding) func(postgres.Encryption) (postgres.LegacyBinding, error) {
		return func(postgres.Encryption) (postgres.LegacyBinding, error) { return b, nil }
	}

	before := mustGet(t, s, tenant.ID, client.ID)
	written, err := s.BindLegacyKeys(ctx, tenant.ID, client.ID, bind(postgres.LegacyBinding{}), auditEvent("encryption.legacy-binding"))
	if err != nil || written {
		t.Fatalf("BindLegacyKeys(nothing to bind) = %v, %v; want false, nil", written, err)
	}
	if got := mustGet(t, s, tenant.ID, client.ID); !reflect.DeepEqual(got, before) || bindings() != 0 {
		t.Errorf("an empty binding changed the context or was audited (%d events)", bindings())
	}

	sealing, bound := *wrapped(t), *wrapped(t)
	written, err = s.BindLegacyKeys(ctx, tenant.ID, client.ID, bind(postgres.LegacyBinding{
		SealingPrivateKey: &sealing, Versions: map[uuid.UUID]postgres.WrappedKey{v2.ID: bound},
	}), auditEvent("encryption.legacy-binding"))
	if err != nil || !written {
		t.Fatalf("BindLegacyKeys() = %v, %v; want true, nil", written, err)
	}
	got := mustGet(t, s, tenant.ID, client.ID)
	want := before
	want.SealingPrivateKey = &sealing
	want.Versions = slices.Clone(before.Versions)
	want.Versions[1].Material = &bound // the same row otherwise: updated_at kept
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after BindLegacyKeys:\n got %+v\nwant %+v (only the given blobs changed)", got, want)
	}
	if n := bindings(); n != 1 {
		t.Errorf("legacy-binding audit events = %d, want 1", n)
	}

	errWrong := errs.E(errs.PermissionDenied, "wrong client master key")
	refusals := []struct {
		name    string
		id      uuid.UUID
		bind    func(postgres.Encryption) (postgres.LegacyBinding, error)
		kind    errs.Kind
		message string
	}{
		{"platform context", platform.ID, bind(postgres.LegacyBinding{}), errs.FailedPrecondition, "no client master key"},
		{"unknown context", uuid.New(), bind(postgres.LegacyBinding{}), errs.NotFound, "not found"},
		{"wrong client master key", client.ID, func(postgres.Encryption) (postgres.LegacyBinding, error) {
			return postgres.LegacyBinding{}, errWrong
		}, errs.PermissionDenied, "wrong client master key"},
		{"plain error", client.ID, func(postgres.Encryption) (postgres.LegacyBinding, error) {
			return postgres.LegacyBinding{}, errors.New("boom")
		}, errs.Internal, "cannot bind"},
		{"incomplete sealing key", client.ID, bind(postgres.LegacyBinding{SealingPrivateKey: &postgres.WrappedKey{Blob: []byte("x")}}), errs.Invalid, "required"},
		{"a destroyed version", client.ID, bind(postgres.LegacyBinding{Versions: map[uuid.UUID]postgres.WrappedKey{v1.ID: *wrapped(t)}}), errs.Invalid, "destroyed"},
		{"an unknown version", client.ID, bind(postgres.LegacyBinding{Versions: map[uuid.UUID]postgres.WrappedKey{uuid.New(): *wrapped(t)}}), errs.Invalid, "does not have"},
		{"empty material", client.ID, bind(postgres.LegacyBinding{SealingPrivateKey: wrapped(t), Versions: map[uuid.UUID]postgres.WrappedKey{v3.ID: {}}}), errs.Invalid, "version 3"},
	}
	for _, tt := range refusals {
		_, err := s.BindLegacyKeys(ctx, tenant.ID, tt.id, tt.bind, auditEvent("encryption.legacy-binding"))
		wantKind(t, "BindLegacyKeys("+tt.name+")", err, tt.kind, tt.message)
	}
	if after := mustGet(t, s, tenant.ID, client.ID); !reflect.DeepEqual(after, got) || bindings() != 1 {
		t.Errorf("refused bindings altered the context or were audited:\n got %+v\nwant %+v", after, got)
	}
}

func TestDueByEncryptions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	withPolicy := mustContext(t, s, tenant.ID)
	if err := s.SetRotationPolicy(ctx, tenant.ID, withPolicy.ID, 0, 10, auditEvent("policy")); err != nil {
		t.Fatal(err)
	}
	plain := mustContext(t, s, tenant.ID)
	old := mustContext(t, s, tenant.ID)
	oldV1 := mustGet(t, s, tenant.ID, old.ID).Versions[0]
	mustRotate(t, s, tenant.ID, old.ID)
	pv := mustGet(t, s, tenant.ID, withPolicy.ID).Versions[0]
	plv := mustGet(t, s, tenant.ID, plain.ID).Versions[0]
	if err := s.AddEncryptions(ctx, map[uuid.UUID]int64{pv.ID: 10, plv.ID: 50, oldV1.ID: 500}); err != nil {
		t.Fatal(err)
	}
	ids := []uuid.UUID{pv.ID, plv.ID, oldV1.ID}

	tests := []struct {
		name  string
		bound int64
		want  []uuid.UUID
	}{
		{"policy only", 0, []uuid.UUID{pv.ID}},
		{"bound above both", 1000, []uuid.UUID{pv.ID}},
		{"bound below the policy", 5, []uuid.UUID{pv.ID, plv.ID}},
		{"bound between", 50, []uuid.UUID{pv.ID, plv.ID}},
		{"bound just above the plain count", 51, []uuid.UUID{pv.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			due, err := s.DueByEncryptions(ctx, ids, tt.bound)
			if err != nil {
				t.Fatal(err)
			}
			got := map[uuid.UUID]bool{}
			for _, d := range due {
				got[d.VersionID] = true
				if d.TenantID != tenant.ID {
					t.Errorf("due version %s has tenant %s, want %s", d.VersionID, d.TenantID, tenant.ID)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("DueByEncryptions(bound %d) = %+v, want versions %v", tt.bound, due, tt.want)
			}
			for _, id := range tt.want {
				if !got[id] {
					t.Errorf("DueByEncryptions(bound %d) misses %s", tt.bound, id)
				}
			}
		})
	}
}

func TestGetEncryptions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	other, _ := mustTenant(t, s, "")
	a := mustContext(t, s, tenant.ID)
	mustRotate(t, s, tenant.ID, a.ID)
	b := mustClientContext(t, s, tenant.ID)
	foreign := mustContext(t, s, other.ID)
	gone := mustContext(t, s, tenant.ID)
	if _, err := s.DestroyEncryption(ctx, tenant.ID, gone.ID, auditEvent("encryption.destroy")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetEncryptions(ctx, tenant.ID, []uuid.UUID{a.ID, b.ID, foreign.ID, gone.ID, uuid.New()})
	if err != nil || len(got) != 2 {
		t.Fatalf("GetEncryptions() = %d contexts, %v; want 2", len(got), err)
	}
	for _, e := range got {
		if single := mustGet(t, s, tenant.ID, e.ID); len(single.Versions) != len(e.Versions) || e.KeyMode != single.KeyMode {
			t.Errorf("GetEncryptions() context %s = %+v, want as GetEncryption: %+v", e.ID, e, single)
		}
	}
}

func TestRewrapStoredKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	for range 3 {
		e := mustContext(t, s, tenant.ID)
		mustRotate(t, s, tenant.ID, e.ID)
	}
	client := mustClientContext(t, s, tenant.ID) // sealing key and version on mk-1
	if counts, err := s.CountWrappedKeys(ctx); err != nil || counts["mk-1"] != 8 || len(counts) != 1 {
		t.Fatalf("CountWrappedKeys() = %v, %v; want mk-1: 8", counts, err)
	}

	to := func(k postgres.StoredKey) (postgres.WrappedKey, error) {
		if k.Kind == postgres.StoredSealingKey && (k.EncryptionID != client.ID || k.VersionID != uuid.Nil) {
			t.Errorf("sealing key %+v, want the CLIENT context's, without a version", k)
		}
		if k.TenantID != tenant.ID || k.Algorithm != postgres.AlgorithmAES256GCM || k.Key.MasterKeyID != "mk-1" {
			t.Errorf("stored key %+v, want tenant, algorithm and mk-1", k)
		}
		return postgres.WrappedKey{MasterKeyID: "mk-2", Blob: append([]byte("re:"), k.Key.Blob...)}, nil
	}
	// Another transaction holds one version's row: it is skipped, not waited for.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var held uuid.UUID
	if err := tx.QueryRow(ctx, "SELECT id FROM encryption.encryption_key_versions WHERE master_key_id = 'mk-1' LIMIT 1 FOR UPDATE").Scan(&held); err != nil {
		t.Fatal(err)
	}
	total := 0
	for {
		n, err := s.RewrapStoredKeys(ctx, []string{"mk-1"}, 3, to, auditEvent("masterkey.rewrap"))
		if err != nil {
			t.Fatalf("RewrapStoredKeys() = %v", err)
		}
		if n > 3 {
			t.Fatalf("RewrapStoredKeys(limit 3) = %d", n)
		}
		if n == 0 {
			break
		}
		total += n
	}
	if total != 7 {
		t.Errorf("rewrapped %d while a row was held, want 7", total)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RewrapStoredKeys(ctx, []string{"mk-1"}, 3, to, auditEvent("masterkey.rewrap")); err != nil || n != 1 {
		t.Errorf("RewrapStoredKeys() after the row was released = %d, %v; want 1", n, err)
	}
	if counts, err := s.CountWrappedKeys(ctx); err != nil || counts["mk-2"] != 8 || len(counts) != 1 {
		t.Errorf("CountWrappedKeys() after rewrapping = %v, %v; want mk-2: 8", counts, err)
	}
	if got := mustGet(t, s, tenant.ID, client.ID); !bytes.HasPrefix(got.SealingPrivateKey.Blob, []byte("re:")) ||
		!bytes.HasPrefix(got.Versions[0].Material.Blob, []byte("re:")) {
		t.Errorf("CLIENT context after rewrapping = %+v, want both blobs rewritten", got)
	}

	bad := []struct {
		name   string
		from   []string
		limit  int
		rewrap func(postgres.StoredKey) (postgres.WrappedKey, error)
		kind   errs.Kind
	}{
		{"no ids", nil, 1, to, errs.Invalid},
		{"zero limit", []string{"mk-2"}, 0, to, errs.Invalid},
		{"still under an old key", []string{"mk-2"}, 5, func(k postgres.StoredKey) (postgres.WrappedKey, error) { return k.Key, nil }, errs.Invalid},
		{"rewrap fails", []string{"mk-2"}, 5, func(postgres.StoredKey) (postgres.WrappedKey, error) {
			return postgres.WrappedKey{}, errs.E(errs.Unavailable, "master key mk-2 not configured")
		}, errs.Unavailable},
	}
	for _, tt := range bad {
		_, err := s.RewrapStoredKeys(ctx, tt.from, tt.limit, tt.rewrap, auditEvent("masterkey.rewrap"))
		wantKind(t, "RewrapStoredKeys("+tt.name+")", err, tt.kind, "")
	}
	if counts, _ := s.CountWrappedKeys(ctx); counts["mk-2"] != 8 {
		t.Errorf("failed rewraps changed stored keys: %v", counts)
	}
	if n := count(t, pool, "SELECT count(*) FROM encryption.audit_events WHERE action = 'masterkey.rewrap'"); n != 4 {
		t.Errorf("rewrap audit events = %d, want 4 (one per call that rewrapped)", n)
	}
}

// TestRewrapStoredKeysConcurrently runs rewraps from several goroutines at once: each blob is
// rewrapped exactly once.
func TestRewrapStoredKeysConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	for range 20 {
		mustContext(t, s, tenant.ID)
	}
	var seen sync.Map
	var dup atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				n, err := s.RewrapStoredKeys(context.Background(), []string{"mk-1"}, 2, func(k postgres.StoredKey) (postgres.WrappedKey, error) {
					if _, loaded := seen.LoadOrStore(k.VersionID, true); loaded {
						dup.Add(1)
					}
					return postgres.WrappedKey{MasterKeyID: "mk-2", Blob: k.Key.Blob}, nil
				}, auditEvent("masterkey.rewrap"))
				if err != nil {
					t.Errorf("RewrapStoredKeys() = %v", err)
					return
				}
				if n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if counts, err := s.CountWrappedKeys(ctx); err != nil || counts["mk-2"] != 20 || dup.Load() != 0 {
		t.Errorf("after concurrent rewraps: counts %v, %v, %d blobs rewrapped twice; want mk-2: 20 and none twice", counts, err, dup.Load())
	}
}

// TestSealingKeyCheck checks that only a destroyed CLIENT context may lack its wrapped private key.
func TestSealingKeyCheck(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tenant, _ := mustTenant(t, s, "")
	live := mustClientContext(t, s, tenant.ID)
	if _, err := pool.Exec(ctx, "UPDATE encryption.encryptions SET sealing_private_key = NULL, sealing_master_key_id = NULL WHERE id = $1", live.ID); err == nil {
		t.Errorf("a live CLIENT context without its private key: the database accepted it")
	}
	if _, err := pool.Exec(ctx, "UPDATE encryption.encryptions SET destroyed_at = now(), sealing_private_key = NULL WHERE id = $1", live.ID); err == nil {
		t.Errorf("a destroyed CLIENT context with a master key id but no private key: the database accepted it")
	}
	if _, err := pool.Exec(ctx, `UPDATE encryption.encryptions
		 SET destroyed_at = now(), sealing_private_key = NULL, sealing_master_key_id = NULL WHERE id = $1`, live.ID); err != nil {
		t.Errorf("a destroyed CLIENT context without its private key: %v, want accepted", err)
	}
}
