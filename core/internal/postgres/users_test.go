package postgres_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestCreateUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "")

	member := newUser(t, tn.ID, postgres.RoleMember, "Alice.Example@example.com")
	member.PasswordHint = strings.Repeat("ü", 200)
	admin := newUser(t, uuid.Nil, "", "root")
	for _, want := range []postgres.User{member, admin} {
		if err := s.CreateUser(ctx, want, auditEvent("user.create")); err != nil {
			t.Fatalf("CreateUser(%q) = %v", want.Username, err)
		}
		got := mustGetUser(t, s, want.ID)
		if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
			t.Errorf("GetUser() times = %v, %v, want both set and equal", got.CreatedAt, got.UpdatedAt)
		}
		want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetUser() = %+v\nwant %+v", got, want)
		}
	}
	if got := auditActions(t, s, &tn.ID); !slices.Equal(got, []string{"tenant.create", "user.create"}) {
		t.Errorf("tenant's audit = %v, want the tenant's and the member's creation", got)
	}
	n, err := s.CountPlatformAdmins(ctx)
	if err != nil || n != 1 {
		t.Errorf("CountPlatformAdmins() = %d, %v, want 1", n, err)
	}
}

func TestCreateUserRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	taken := newUser(t, tn.ID, postgres.RoleOwner, "Bob")
	if err := s.CreateUser(ctx, taken, auditEvent("user.create")); err != nil {
		t.Fatal(err)
	}
	unknownTenant := uuid.New()

	tests := []struct {
		name    string
		change  func(*postgres.User)
		kind    errs.Kind
		message string
	}{
		{"username taken, other case", func(u *postgres.User) { u.Username = "bOB" }, errs.Conflict, `username "bOB" is taken`},
		{"username taken by another tenant's user", func(u *postgres.User) { u.TenantID = mustTenant(t, s, "").ID; u.Username = "BOB" },
			errs.Conflict, "is taken"},
		{"id taken", func(u *postgres.User) { u.ID = taken.ID }, errs.Conflict, "already exists"},
		{"unknown tenant", func(u *postgres.User) { u.TenantID = unknownTenant }, errs.NotFound, fmt.Sprintf("tenant %s not found", unknownTenant)},
		{"nil id", func(u *postgres.User) { u.ID = uuid.Nil }, errs.Invalid, "user id is required"},
		{"short username", func(u *postgres.User) { u.Username = "ab" }, errs.Invalid, "username"},
		{"long username", func(u *postgres.User) { u.Username = strings.Repeat("a", 65) }, errs.Invalid, "username"},
		{"control character", func(u *postgres.User) { u.Username = "ab\tc" }, errs.Invalid, "username"},
		{"no tenant", func(u *postgres.User) { u.TenantID = uuid.Nil }, errs.Invalid, "tenant is required"},
		{"unknown role", func(u *postgres.User) { u.Role = "root" }, errs.Invalid, "role"},
		{"no role", func(u *postgres.User) { u.Role = "" }, errs.Invalid, "role"},
		{"platform admin with tenant", func(u *postgres.User) { u.PlatformAdmin, u.Role = true, "" }, errs.Invalid, "belongs to no tenant"},
		{"platform admin with role", func(u *postgres.User) { u.PlatformAdmin, u.TenantID = true, uuid.Nil }, errs.Invalid, "belongs to no tenant"},
		{"no password hash", func(u *postgres.User) { u.PasswordHash = "" }, errs.Invalid, "password hash"},
		{"no salt", func(u *postgres.User) { u.KDF.Salt = nil }, errs.Invalid, "salt"},
		{"zero memory", func(u *postgres.User) { u.KDF.MemoryKiB = 0 }, errs.Invalid, "KDF"},
		{"huge iterations", func(u *postgres.User) { u.KDF.Iterations = 1 << 31 }, errs.Invalid, "KDF"},
		{"zero parallelism", func(u *postgres.User) { u.KDF.Parallelism = 0 }, errs.Invalid, "KDF"},
		{"no stamp", func(u *postgres.User) { u.SecurityStamp = "" }, errs.Invalid, "security stamp"},
		{"long hint", func(u *postgres.User) { u.PasswordHint = strings.Repeat("h", 201) }, errs.Invalid, "hint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUser(t, tn.ID, postgres.RoleMember, "")
			tt.change(&u)
			err := s.CreateUser(ctx, u, auditEvent("user.create"))
			wantKind(t, fmt.Sprintf("CreateUser(%q)", u.Username), err, tt.kind, tt.message)
		})
	}
	if n := count(t, pool, "SELECT count(*) FROM core.users"); n != 1 {
		t.Errorf("users after refused creations = %d, want 1", n)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'user.create'"); n != 1 {
		t.Errorf("user.create audit events after refused creations = %d, want 1", n)
	}
}

func TestGetUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := newUser(t, mustTenant(t, s, "").ID, postgres.RoleMember, "Carol_01")
	if err := s.CreateUser(ctx, u, auditEvent("user.create")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Carol_01", "carol_01", "CAROL_01"} {
		got, err := s.GetUserByUsername(ctx, name)
		if err != nil || got.ID != u.ID || got.Username != "Carol_01" {
			t.Errorf("GetUserByUsername(%q) = %+v, %v, want user %s named as created", name, got, err, u.ID)
		}
	}
	_, err := s.GetUserByUsername(ctx, "carol_02")
	wantKind(t, "GetUserByUsername(unknown)", err, errs.NotFound, `user "carol_02" not found`)
	id := uuid.New()
	_, err = s.GetUser(ctx, id)
	wantKind(t, "GetUser(unknown)", err, errs.NotFound, fmt.Sprintf("user %s not found", id))
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn, other := mustTenant(t, s, ""), mustTenant(t, s, "")
	var want []uuid.UUID
	for range 5 {
		want = append(want, mustUser(t, s, tn.ID, postgres.RoleMember).ID)
		mustUser(t, s, other.ID, postgres.RoleMember)
	}
	mustUser(t, s, uuid.Nil, "")
	slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })

	var all []uuid.UUID
	after := uuid.Nil
	for {
		page, err := s.ListUsers(ctx, tn.ID, 2, after)
		if err != nil {
			t.Fatalf("ListUsers(2, %s) = %v", after, err)
		}
		for _, u := range page {
			all = append(all, u.ID)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(all, want) {
		t.Errorf("ListUsers pages = %v, want %v", all, want)
	}
	none, err := s.ListUsers(ctx, uuid.New(), 0, uuid.Nil)
	if err != nil || none == nil || len(none) != 0 {
		t.Errorf("ListUsers(unknown tenant) = %v, %v, want an empty slice", none, err)
	}
}

// TestOwnerRule: every way of taking away a tenant's last enabled owner is
// refused, and a second enabled owner — but not a disabled one — allows it.
func TestOwnerRule(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)

	ops := []struct {
		name string
		do   func(id uuid.UUID) error
	}{
		{"demote to admin", func(id uuid.UUID) error {
			_, err := s.SetUserRole(ctx, id, postgres.RoleAdmin, auditEvent("user.role"))
			return err
		}},
		{"demote to member", func(id uuid.UUID) error {
			_, err := s.SetUserRole(ctx, id, postgres.RoleMember, auditEvent("user.role"))
			return err
		}},
		{"disable", func(id uuid.UUID) error {
			_, err := s.SetUserDisabled(ctx, id, true, "stamp-2", auditEvent("user.disable"))
			return err
		}},
		{"delete", func(id uuid.UUID) error { _, err := s.DeleteUser(ctx, id, auditEvent("user.delete")); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			tn := mustTenant(t, s, "")
			owner := mustUser(t, s, tn.ID, postgres.RoleOwner)
			mustUser(t, s, tn.ID, postgres.RoleAdmin)
			second := mustUser(t, s, tn.ID, postgres.RoleOwner)
			if _, err := s.SetUserDisabled(ctx, second.ID, true, "", auditEvent("user.disable")); err != nil {
				t.Fatalf("SetUserDisabled(second owner) = %v", err)
			}
			wantKind(t, op.name+" of the last enabled owner", op.do(owner.ID), errs.FailedPrecondition,
				"a tenant must keep at least one owner")
			if got := mustGetUser(t, s, owner.ID); got.Role != postgres.RoleOwner || got.DisabledAt != nil {
				t.Errorf("last owner after refused %s = %+v, want an enabled owner", op.name, got)
			}

			if _, err := s.SetUserDisabled(ctx, second.ID, false, "", auditEvent("user.enable")); err != nil {
				t.Fatalf("SetUserDisabled(second owner, enable) = %v", err)
			}
			if err := op.do(owner.ID); err != nil {
				t.Errorf("%s of an owner with another enabled owner = %v, want nil", op.name, err)
			}
		})
	}

	// Users who are not enabled owners are not protected by the rule,
	// even in a tenant that has no owner yet.
	tn := mustTenant(t, s, "")
	member := mustUser(t, s, tn.ID, postgres.RoleMember)
	for _, op := range ops { // the last one deletes
		if err := op.do(member.ID); err != nil {
			t.Errorf("%s of a member in a tenant without owners = %v, want nil", op.name, err)
		}
	}

	id := uuid.New()
	for _, op := range ops {
		wantKind(t, op.name+" of an unknown user", op.do(id), errs.NotFound, fmt.Sprintf("user %s not found", id))
	}
	_, err := s.SetUserRole(ctx, member.ID, "superuser", auditEvent("user.role"))
	wantKind(t, "SetUserRole(unknown role)", err, errs.Invalid, "role must be")
}

// TestOwnerRuleConcurrent: two owners taken away at the same time, by any
// mix of demotion, disabling and deletion, leave one: exactly one call wins.
func TestOwnerRuleConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	ops := []func(id uuid.UUID) error{
		func(id uuid.UUID) error {
			_, err := s.SetUserRole(ctx, id, postgres.RoleMember, auditEvent("user.role"))
			return err
		},
		func(id uuid.UUID) error {
			_, err := s.SetUserDisabled(ctx, id, true, "", auditEvent("user.disable"))
			return err
		},
		func(id uuid.UUID) error { _, err := s.DeleteUser(ctx, id, auditEvent("user.delete")); return err },
	}
	for round := range 3 * len(ops) {
		tn := mustTenant(t, s, "")
		owners := []postgres.User{mustUser(t, s, tn.ID, postgres.RoleOwner), mustUser(t, s, tn.ID, postgres.RoleOwner)}
		errc := make(chan error, 2)
		var wg sync.WaitGroup
		for i, o := range owners {
			wg.Go(func() { errc <- ops[(round+i)%len(ops)](o.ID) })
		}
		wg.Wait()
		close(errc)
		var wins int
		for err := range errc {
			if err == nil {
				wins++
			} else if !errs.Is(err, errs.FailedPrecondition) {
				t.Errorf("round %d: concurrent removal of an owner = %v, want nil or FailedPrecondition", round, err)
			}
		}
		if wins != 1 {
			t.Errorf("round %d: %d of 2 concurrent owner removals succeeded, want 1", round, wins)
		}
		n := count(t, pool, "SELECT count(*) FROM core.users WHERE tenant_id = $1 AND role = 'owner' AND disabled_at IS NULL", tn.ID)
		if n != 1 {
			t.Errorf("round %d: enabled owners left = %d, want 1", round, n)
		}
	}
}

func TestPlatformAdminRule(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	admin := mustUser(t, s, uuid.Nil, "")

	_, err := s.SetUserDisabled(ctx, admin.ID, true, "", auditEvent("user.disable"))
	wantKind(t, "SetUserDisabled(last platform admin)", err, errs.FailedPrecondition, "at least one platform admin")
	wantKind(t, "DeleteUser(last platform admin)", deleteErr(s.DeleteUser(ctx, admin.ID, auditEvent("user.delete"))),
		errs.FailedPrecondition, "at least one platform admin")
	_, err = s.SetUserRole(ctx, admin.ID, postgres.RoleOwner, auditEvent("user.role"))
	wantKind(t, "SetUserRole(platform admin)", err, errs.FailedPrecondition, "no tenant role")

	second := mustUser(t, s, uuid.Nil, "")
	if _, err := s.SetUserDisabled(ctx, admin.ID, true, "", auditEvent("user.disable")); err != nil {
		t.Errorf("SetUserDisabled(platform admin with another) = %v, want nil", err)
	}
	// A pointer to uuid.Nil, a platform admin's TenantID, records no tenant.
	audit := auditEvent("user.delete")
	audit.TenantID = &admin.TenantID
	wantKind(t, "DeleteUser(last enabled platform admin)", deleteErr(s.DeleteUser(ctx, second.ID, auditEvent("user.delete"))),
		errs.FailedPrecondition, "at least one platform admin")
	if _, err := s.DeleteUser(ctx, admin.ID, audit); err != nil {
		t.Errorf("DeleteUser(disabled platform admin) = %v, want nil", err)
	}
	if n, err := s.CountPlatformAdmins(ctx); err != nil || n != 1 {
		t.Errorf("CountPlatformAdmins() = %d, %v, want 1", n, err)
	}
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{Action: "user.delete"})
	if err != nil || len(events) != 1 || events[0].TenantID != nil || events[0].Target != "user:"+admin.ID.String() {
		t.Errorf("user.delete audit events = %+v, %v, want one of no tenant with target user:%s", events, err, admin.ID)
	}
}

func TestSetUserDisabled(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleAdmin)
	sessA, _ := mustSession(t, s, u.ID)
	sessB, _ := mustSession(t, s, u.ID)
	bystander := mustUser(t, s, tn.ID, postgres.RoleMember)
	sessC, _ := mustSession(t, s, bystander.ID)

	got, err := s.SetUserDisabled(ctx, u.ID, true, "stamp-disabled", auditEvent("user.disable"))
	if err != nil || got.DisabledAt == nil || got.SecurityStamp != "stamp-disabled" || !got.UpdatedAt.After(u.UpdatedAt) {
		t.Fatalf("SetUserDisabled(true) = %+v, %v, want disabled with the new stamp", got, err)
	}
	wantRevoked(t, pool, sessA.ID, postgres.RevokeUserDisabled)
	wantRevoked(t, pool, sessB.ID, postgres.RevokeUserDisabled)
	wantRevoked(t, pool, sessC.ID, "")
	_, err = s.CreateSession(ctx, u.ID, got.SecurityStamp, hash(t), got.UpdatedAt.Add(3600e9), postgres.SessionOrigin{RemoteAddr: "192.0.2.1"})
	wantKind(t, "CreateSession(disabled user)", err, errs.FailedPrecondition, "is disabled")

	again, err := s.SetUserDisabled(ctx, u.ID, true, "", auditEvent("user.disable"))
	if err != nil || !again.DisabledAt.Equal(*got.DisabledAt) || again.SecurityStamp != "stamp-disabled" {
		t.Errorf("SetUserDisabled(true) again = %+v, %v, want DisabledAt and stamp kept", again, err)
	}
	enabled, err := s.SetUserDisabled(ctx, u.ID, false, "", auditEvent("user.enable"))
	if err != nil || enabled.DisabledAt != nil || enabled.SecurityStamp != "stamp-disabled" {
		t.Errorf("SetUserDisabled(false) = %+v, %v, want enabled, stamp kept", enabled, err)
	}
	wantRevoked(t, pool, sessA.ID, postgres.RevokeUserDisabled) // re-enabling revives no session
	_, err = s.SetUserDisabled(ctx, u.ID, true, strings.Repeat("s", 201), auditEvent("user.disable"))
	wantKind(t, "SetUserDisabled(long stamp)", err, errs.Invalid, "security stamp")

	if got := auditActions(t, s, &tn.ID); !slices.Equal(got[len(got)-3:], []string{"user.disable", "user.disable", "user.enable"}) {
		t.Errorf("tenant's audit = %v, want it to end with two disables and an enable", got)
	}
}

func TestSetUserRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	for _, role := range []string{postgres.RoleAdmin, postgres.RoleOwner, postgres.RoleMember} {
		got, err := s.SetUserRole(ctx, u.ID, role, auditEvent("user.role"))
		if err != nil || got.Role != role || got.ID != u.ID {
			t.Errorf("SetUserRole(%q) = %+v, %v, want the user with role %q", role, got, err, role)
		}
		st, err := s.AccessState(ctx, u.ID, uuid.Nil)
		if err != nil || st.Role != role {
			t.Errorf("AccessState().Role after SetUserRole(%q) = %q, %v", role, st.Role, err)
		}
	}
}

func TestDeleteUserCascades(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	keep := mustUser(t, s, tn.ID, postgres.RoleMember)
	for _, id := range []uuid.UUID{u.ID, keep.ID} {
		sess, old := mustSession(t, s, id)
		if _, err := s.RotateRefreshToken(ctx, old, hash(t), sess.CreatedAt.Add(3600e9), 0); err != nil {
			t.Fatal(err)
		}
		mustSession(t, s, id)
		mustEnableTOTP(t, s, id, 3)
	}
	owned := func(id uuid.UUID) [3]int {
		return [3]int{
			count(t, pool, "SELECT count(*) FROM core.sessions WHERE user_id = $1", id),
			count(t, pool, "SELECT count(*) FROM core.refresh_tokens t JOIN core.sessions s ON s.id = t.session_id WHERE s.user_id = $1", id),
			count(t, pool, "SELECT count(*) FROM core.recovery_codes WHERE user_id = $1", id),
		}
	}
	if got, want := owned(u.ID), [3]int{2, 3, 3}; got != want {
		t.Fatalf("before deletion: sessions, refresh tokens, recovery codes = %v, want %v", got, want)
	}

	kc, err := s.PutKeyContext(ctx, postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: "PLATFORM"})
	if err != nil {
		t.Fatal(err)
	}

	erasure, err := s.DeleteUser(ctx, u.ID, auditEvent("user.delete"))
	if err != nil {
		t.Fatalf("DeleteUser() = %v", err)
	}
	// The key context's erasure is queued in the same transaction, left to the deleting request
	// for ErasureGrace.
	if erasure == nil || erasure.EncryptionID != kc.EncryptionID || erasure.TenantID != tn.ID || erasure.Reason != postgres.ErasureUserDeleted {
		t.Errorf("DeleteUser() erasure = %+v, want the key context %s, reason %s", erasure, kc.EncryptionID, postgres.ErasureUserDeleted)
	}
	if pending, err := s.GetErasure(ctx, kc.EncryptionID); err != nil || pending.UserID != u.ID || !pending.NextAttemptAt.After(pending.RequestedAt) {
		t.Errorf("GetErasure() = %+v, %v; want it queued for user %s, due after a grace", pending, err, u.ID)
	}
	if n := count(t, pool, "SELECT count(*) FROM core.key_contexts WHERE user_id = $1", u.ID); n != 0 {
		t.Errorf("key context records of the deleted user = %d, want 0", n)
	}
	if got := owned(u.ID); got != [3]int{} {
		t.Errorf("after deletion: sessions, refresh tokens, recovery codes = %v, want none", got)
	}
	if got, want := owned(keep.ID), [3]int{2, 3, 3}; got != want {
		t.Errorf("another user's sessions, refresh tokens, recovery codes = %v, want %v", got, want)
	}
	if e, err := s.DeleteUser(ctx, keep.ID, auditEvent("user.delete")); err != nil || e != nil {
		t.Errorf("DeleteUser(user without a key context) = %+v, %v; want no erasure", e, err)
	}
	_, err = s.GetUser(ctx, u.ID)
	wantKind(t, "GetUser(deleted)", err, errs.NotFound, "not found")
	wantKind(t, "DeleteUser(deleted)", deleteErr(s.DeleteUser(ctx, u.ID, auditEvent("user.delete"))), errs.NotFound, "not found")
	_, err = s.AccessState(ctx, u.ID, uuid.Nil)
	wantKind(t, "AccessState(deleted)", err, errs.NotFound, "not found")
	events, _, err := s.ListAuditEvents(ctx, postgres.AuditFilter{TenantID: &tn.ID, Action: "user.delete"})
	if err != nil || len(events) != 2 || events[1].Target != "user:"+u.ID.String() {
		t.Errorf("user.delete audit = %+v, %v, want two events, the first with target user:%s", events, err, u.ID)
	}
}

// deleteErr is DeleteUser's error alone.
func deleteErr(_ *postgres.Erasure, err error) error { return err }

func TestChangePassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := newUser(t, tn.ID, postgres.RoleMember, "")
	u.PasswordHint = "the first"
	if err := s.CreateUser(ctx, u, auditEvent("user.create")); err != nil {
		t.Fatal(err)
	}
	current, _ := mustSession(t, s, u.ID)
	other, _ := mustSession(t, s, u.ID)

	tests := []struct {
		name     string
		hint     *string
		keep     uuid.UUID
		wantHint string
	}{
		{"hint unchanged", nil, current.ID, "the first"},
		{"hint replaced", ptr("the second"), current.ID, "the second"},
		{"hint removed", ptr(""), uuid.Nil, ""},
	}
	for i, tt := range tests {
		stamp := fmt.Sprintf("stamp-%d", i)
		hashStr := fmt.Sprintf("$argon2id$new-%d", i)
		if err := s.ChangePassword(ctx, u.ID, hashStr, tt.hint, stamp, tt.keep, nil, auditEvent("user.password")); err != nil {
			t.Fatalf("%s: ChangePassword() = %v", tt.name, err)
		}
		got := mustGetUser(t, s, u.ID)
		if got.PasswordHash != hashStr || got.PasswordHint != tt.wantHint || got.SecurityStamp != stamp {
			t.Errorf("%s: user = hash %q, hint %q, stamp %q; want %q, %q, %q", tt.name,
				got.PasswordHash, got.PasswordHint, got.SecurityStamp, hashStr, tt.wantHint, stamp)
		}
		wantRevoked(t, pool, other.ID, postgres.RevokePasswordChanged)
		if tt.keep == current.ID {
			wantRevoked(t, pool, current.ID, "")
		} else {
			wantRevoked(t, pool, current.ID, postgres.RevokePasswordChanged)
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM core.users WHERE id = $1 AND password_hint IS NULL", u.ID); n != 1 {
		t.Errorf("removed hint is not NULL")
	}

	refusals := []struct {
		name, hash, stamp string
		hint              *string
		kind              errs.Kind
		message           string
	}{
		{"no hash", "", "s", nil, errs.Invalid, "password hash"},
		{"no stamp", "h", "", nil, errs.Invalid, "security stamp"},
		{"long hint", "h", "s", ptr(strings.Repeat("x", 201)), errs.Invalid, "hint"},
	}
	for _, tt := range refusals {
		err := s.ChangePassword(ctx, u.ID, tt.hash, tt.hint, tt.stamp, uuid.Nil, nil, auditEvent("user.password"))
		wantKind(t, "ChangePassword("+tt.name+")", err, tt.kind, tt.message)
	}
	id := uuid.New()
	err := s.ChangePassword(ctx, id, "h", nil, "s", uuid.Nil, nil, auditEvent("user.password"))
	wantKind(t, "ChangePassword(unknown user)", err, errs.NotFound, fmt.Sprintf("user %s not found", id))
	if n := count(t, pool, "SELECT count(*) FROM core.audit_events WHERE action = 'user.password'"); n != len(tests) {
		t.Errorf("user.password audit events = %d, want %d", n, len(tests))
	}
}

// mustEnableTOTP turns MFA on for user id with n recovery codes and returns
// their hashes.
func mustEnableTOTP(tb testing.TB, s *postgres.Store, id uuid.UUID, n int) [][]byte {
	tb.Helper()
	ctx := context.Background()
	secret := mustRandom(tb, 48)
	if err := s.SetPendingTOTP(ctx, id, secret); err != nil {
		tb.Fatalf("SetPendingTOTP() = %v", err)
	}
	codes := make([][]byte, n)
	for i := range codes {
		codes[i] = hash(tb)
	}
	if err := s.EnableTOTP(ctx, id, secret, 1000, codes, "stamp-mfa", auditEvent("user.mfa.enable")); err != nil {
		tb.Fatalf("EnableTOTP() = %v", err)
	}
	return codes
}

// TestRehashPassword: the hash is replaced only while it is still the one the login checked, and
// nothing else changes.
func TestRehashPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, "member")
	const newer = "$argon2id$v=19$m=65536,t=4,p=4$c2FsdA$bmV3ZXI"
	if ok, err := s.RehashPassword(ctx, u.ID, "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$c3RhbGU", newer); ok || err != nil {
		t.Errorf("RehashPassword(stale old hash) = %v, %v, want false, nil", ok, err)
	}
	if got := mustGetUser(t, s, u.ID); got.PasswordHash != u.PasswordHash {
		t.Errorf("hash after a stale rehash = %q, want it unchanged", got.PasswordHash)
	}
	if ok, err := s.RehashPassword(ctx, u.ID, u.PasswordHash, newer); !ok || err != nil {
		t.Fatalf("RehashPassword() = %v, %v, want true, nil", ok, err)
	}
	got := mustGetUser(t, s, u.ID)
	if got.PasswordHash != newer || got.SecurityStamp != u.SecurityStamp {
		t.Errorf("after RehashPassword: hash %q, stamp changed %v; want the new hash and the same stamp", got.PasswordHash, got.SecurityStamp != u.SecurityStamp)
	}
	_, err := s.RehashPassword(ctx, u.ID, "", newer)
	wantKind(t, "RehashPassword(no old hash)", err, errs.Invalid, "password hash")
}

// TestUserChangesCheckTheLockedUser: the checks a change is given run on the user as it is once
// locked, not as the caller read it earlier: a user promoted to owner meanwhile is refused to a
// check that only lets members be changed, and nothing is changed or audited.
func TestUserChangesCheckTheLockedUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	mustUser(t, s, tn.ID, postgres.RoleOwner)
	u := mustUser(t, s, tn.ID, postgres.RoleMember) // what the caller read
	sess, _ := mustSession(t, s, u.ID)
	if _, err := s.SetUserRole(ctx, u.ID, postgres.RoleOwner, auditEvent("user.role")); err != nil { // meanwhile
		t.Fatal(err)
	}
	membersOnly := func(cur postgres.User) error {
		if cur.Role != postgres.RoleMember {
			return errs.E(errs.PermissionDenied, "only members: %s is %s", cur.ID, cur.Role)
		}
		return nil
	}
	before := auditActions(t, s, &tn.ID)
	_, err := s.SetUserDisabled(ctx, u.ID, true, "stamp-x", auditEvent("user.disable"), membersOnly)
	wantKind(t, "SetUserDisabled(now an owner)", err, errs.PermissionDenied, "is owner")
	_, err = s.SetUserRole(ctx, u.ID, postgres.RoleAdmin, auditEvent("user.role"), membersOnly)
	wantKind(t, "SetUserRole(now an owner)", err, errs.PermissionDenied, "is owner")
	_, err = s.DeleteUser(ctx, u.ID, auditEvent("user.delete"), membersOnly)
	wantKind(t, "DeleteUser(now an owner)", err, errs.PermissionDenied, "is owner")

	got, err := s.GetUser(ctx, u.ID)
	if err != nil || got.DisabledAt != nil || got.Role != postgres.RoleOwner || got.SecurityStamp == "stamp-x" {
		t.Errorf("user after refused changes = %+v, %v, want the enabled owner as it was", got, err)
	}
	wantRevoked(t, pool, sess.ID, "")
	if after := auditActions(t, s, &tn.ID); len(after) != len(before) {
		t.Errorf("audit after refused changes = %v, want unchanged %v", after, before)
	}
}
