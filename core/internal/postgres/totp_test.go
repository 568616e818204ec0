package postgres_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

func TestTOTPLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	sess, _ := mustSession(t, s, u.ID)
	codes := [][]byte{hash(t), hash(t)}

	err := s.EnableTOTP(ctx, u.ID, nil, 100, codes, "stamp-on", auditEvent("user.mfa.enable"))
	wantKind(t, "EnableTOTP(nothing pending)", err, errs.FailedPrecondition, "no MFA enrolment is pending")
	wantKind(t, "DisableTOTP(not enabled)", s.DisableTOTP(ctx, u.ID, "stamp-off", auditEvent("user.mfa.disable")),
		errs.FailedPrecondition, "MFA is not enabled")

	first, pending := mustRandom(t, 48), mustRandom(t, 48)
	for _, secret := range [][]byte{first, pending} { // a new enrolment replaces a pending one
		if err := s.SetPendingTOTP(ctx, u.ID, secret); err != nil {
			t.Fatalf("SetPendingTOTP() = %v", err)
		}
	}
	got := mustGetUser(t, s, u.ID)
	if got.TOTPEnabled || !bytes.Equal(got.TOTPSecretSealed, pending) {
		t.Fatalf("after SetPendingTOTP: enabled %v, secret %x; want pending %x", got.TOTPEnabled, got.TOTPSecretSealed, pending)
	}
	wantRevoked(t, pool, sess.ID, "") // a pending enrolment changes no session

	// Confirming the replaced enrolment (its code was checked against it) enables nothing.
	wantKind(t, "EnableTOTP(replaced enrolment)", s.EnableTOTP(ctx, u.ID, first, 100, codes, "stamp-on", auditEvent("user.mfa.enable")),
		errs.FailedPrecondition, "replaced by a newer one")
	if got := mustGetUser(t, s, u.ID); got.TOTPEnabled || got.SecurityStamp == "stamp-on" {
		t.Fatalf("after confirming a replaced enrolment: %+v, want MFA still off", got)
	}
	wantRevoked(t, pool, sess.ID, "")

	if err := s.EnableTOTP(ctx, u.ID, pending, 100, codes, "stamp-on", auditEvent("user.mfa.enable")); err != nil {
		t.Fatalf("EnableTOTP() = %v", err)
	}
	got = mustGetUser(t, s, u.ID)
	if !got.TOTPEnabled || !bytes.Equal(got.TOTPSecretSealed, pending) || got.TOTPLastStep != 100 || got.SecurityStamp != "stamp-on" {
		t.Errorf("after EnableTOTP: %+v, want enabled with the pending secret, step 100, stamp-on", got)
	}
	wantRevoked(t, pool, sess.ID, postgres.RevokeMFAChanged)
	if n := count(t, pool, "SELECT count(*) FROM core.recovery_codes WHERE user_id = $1 AND used_at IS NULL", u.ID); n != 2 {
		t.Errorf("recovery codes = %d, want 2", n)
	}
	ok, err := s.AdvanceTOTPStep(ctx, u.ID, 100)
	if err != nil || ok {
		t.Errorf("AdvanceTOTPStep(confirming step) = %v, %v, want false: the confirming code is used", ok, err)
	}

	wantKind(t, "SetPendingTOTP(enabled)", s.SetPendingTOTP(ctx, u.ID, mustRandom(t, 48)),
		errs.FailedPrecondition, "MFA is already enabled")
	wantKind(t, "EnableTOTP(enabled)", s.EnableTOTP(ctx, u.ID, pending, 200, [][]byte{hash(t)}, "s", auditEvent("user.mfa.enable")),
		errs.FailedPrecondition, "MFA is already enabled")

	sess2, _ := mustSession(t, s, u.ID)
	if err := s.DisableTOTP(ctx, u.ID, "stamp-off", auditEvent("user.mfa.disable")); err != nil {
		t.Fatalf("DisableTOTP() = %v", err)
	}
	got = mustGetUser(t, s, u.ID)
	if got.TOTPEnabled || got.TOTPSecretSealed != nil || got.SecurityStamp != "stamp-off" || got.TOTPLastStep != 100 {
		t.Errorf("after DisableTOTP: %+v, want no secret, stamp-off, last step kept", got)
	}
	wantRevoked(t, pool, sess2.ID, postgres.RevokeMFAChanged)
	if n := count(t, pool, "SELECT count(*) FROM core.recovery_codes WHERE user_id = $1", u.ID); n != 0 {
		t.Errorf("recovery codes after DisableTOTP = %d, want 0", n)
	}
	if ok, err := s.UseRecoveryCode(ctx, u.ID, codes[0]); err != nil || ok {
		t.Errorf("UseRecoveryCode(code of disabled MFA) = %v, %v, want false", ok, err)
	}

	// Enabled again with an older step: the last step stays where it was.
	if err := s.SetPendingTOTP(ctx, u.ID, first); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableTOTP(ctx, u.ID, first, 50, [][]byte{hash(t)}, "stamp-on-2", auditEvent("user.mfa.enable")); err != nil {
		t.Fatal(err)
	}
	if got := mustGetUser(t, s, u.ID); got.TOTPLastStep != 100 {
		t.Errorf("last step after re-enabling at 50 = %d, want 100 kept", got.TOTPLastStep)
	}

	want := []string{"user.mfa.enable", "user.mfa.disable", "user.mfa.enable"}
	if got := auditActions(t, s, &tn.ID); fmt.Sprint(got[len(got)-3:]) != fmt.Sprint(want) {
		t.Errorf("tenant's audit = %v, want it to end with %v", got, want)
	}

	id := uuid.New()
	wantKind(t, "SetPendingTOTP(unknown)", s.SetPendingTOTP(ctx, id, []byte{1}), errs.NotFound, "not found")
	wantKind(t, "EnableTOTP(unknown)", s.EnableTOTP(ctx, id, []byte{1}, 1, [][]byte{hash(t)}, "s", auditEvent("x")), errs.NotFound, "not found")
	wantKind(t, "DisableTOTP(unknown)", s.DisableTOTP(ctx, id, "s", auditEvent("x")), errs.NotFound, "not found")
}

func TestEnableTOTPRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	pending := mustRandom(t, 48)
	if err := s.SetPendingTOTP(ctx, u.ID, pending); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "SetPendingTOTP(empty)", s.SetPendingTOTP(ctx, u.ID, nil), errs.Invalid, "secret is required")
	dup := hash(t)
	tests := []struct {
		name    string
		step    int64
		codes   [][]byte
		stamp   string
		message string
	}{
		{"no codes", 1, nil, "s", "recovery code hashes"},
		{"too many codes", 1, make([][]byte, 101), "s", "recovery code hashes"},
		{"short hash", 1, [][]byte{hash(t)[:31]}, "s", "32 bytes"},
		{"duplicate", 1, [][]byte{dup, hash(t), dup}, "s", "distinct"},
		{"negative step", -1, [][]byte{hash(t)}, "s", "step"},
		{"no stamp", 1, [][]byte{hash(t)}, "", "security stamp"},
	}
	for _, tt := range tests {
		err := s.EnableTOTP(ctx, u.ID, pending, tt.step, tt.codes, tt.stamp, auditEvent("user.mfa.enable"))
		wantKind(t, "EnableTOTP("+tt.name+")", err, errs.Invalid, tt.message)
	}
	if got := mustGetUser(t, s, u.ID); got.TOTPEnabled {
		t.Errorf("MFA enabled by a refused call")
	}
	wantKind(t, "DisableTOTP(no stamp)", s.DisableTOTP(ctx, u.ID, "", auditEvent("x")), errs.Invalid, "security stamp")
}

func TestAdvanceTOTPStep(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	other := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	for _, tt := range []struct {
		step int64
		want bool
	}{{5, true}, {5, false}, {4, false}, {6, true}, {100, true}, {99, false}, {100, false}} {
		if ok, err := s.AdvanceTOTPStep(ctx, u.ID, tt.step); err != nil || ok != tt.want {
			t.Errorf("AdvanceTOTPStep(%d) = %v, %v, want %v", tt.step, ok, err, tt.want)
		}
	}
	if ok, err := s.AdvanceTOTPStep(ctx, other.ID, 5); err != nil || !ok {
		t.Errorf("AdvanceTOTPStep(other user, 5) = %v, %v, want true: steps are per user", ok, err)
	}
	_, err := s.AdvanceTOTPStep(ctx, uuid.New(), 1)
	wantKind(t, "AdvanceTOTPStep(unknown user)", err, errs.NotFound, "not found")
}

// TestAdvanceTOTPStepConcurrent: one code sent ten times at once is
// accepted exactly once.
func TestAdvanceTOTPStepConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	for round := range 5 {
		step := int64(1000 + round)
		var accepted atomic.Int32
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				ok, err := s.AdvanceTOTPStep(ctx, u.ID, step)
				if err != nil {
					t.Errorf("AdvanceTOTPStep() = %v", err)
				}
				if ok {
					accepted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := accepted.Load(); n != 1 {
			t.Errorf("round %d: %d of 10 concurrent AdvanceTOTPStep(%d) accepted, want 1", round, n, step)
		}
	}
}

func TestUseRecoveryCode(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, pool, _ := mustStore(t)
	tn := mustTenant(t, s, "")
	u, other := mustUser(t, s, tn.ID, postgres.RoleMember), mustUser(t, s, tn.ID, postgres.RoleMember)
	codes := mustEnableTOTP(t, s, u.ID, 10)
	otherCodes := mustEnableTOTP(t, s, other.ID, 1)

	tests := []struct {
		name string
		user uuid.UUID
		code []byte
		want bool
	}{
		{"first use", u.ID, codes[3], true},
		{"second use", u.ID, codes[3], false},
		{"another code", u.ID, codes[4], true},
		{"another user's code", u.ID, otherCodes[0], false},
		{"own code for another user", other.ID, codes[5], false},
		{"unknown code", u.ID, hash(t), false},
		{"short hash", u.ID, codes[6][:16], false},
		{"nil", u.ID, nil, false},
	}
	for _, tt := range tests {
		if ok, err := s.UseRecoveryCode(ctx, tt.user, tt.code); err != nil || ok != tt.want {
			t.Errorf("UseRecoveryCode(%s) = %v, %v, want %v", tt.name, ok, err, tt.want)
		}
	}
	if n := count(t, pool, "SELECT count(*) FROM core.recovery_codes WHERE user_id = $1 AND used_at IS NULL", u.ID); n != 8 {
		t.Errorf("unused recovery codes = %d, want 8", n)
	}
}

// TestUseRecoveryCodeConcurrent: one recovery code used ten times at once
// works exactly once.
func TestUseRecoveryCodeConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	u := mustUser(t, s, mustTenant(t, s, "").ID, postgres.RoleMember)
	codes := mustEnableTOTP(t, s, u.ID, 5)
	for _, code := range codes {
		var accepted atomic.Int32
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				ok, err := s.UseRecoveryCode(ctx, u.ID, code)
				if err != nil {
					t.Errorf("UseRecoveryCode() = %v", err)
				}
				if ok {
					accepted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := accepted.Load(); n != 1 {
			t.Errorf("%d of 10 concurrent uses of one recovery code accepted, want 1", n)
		}
	}
}
