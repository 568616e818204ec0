package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// maxRecoveryCodes bounds how many recovery codes one user may hold.
const maxRecoveryCodes = 100

var (
	errMFAEnabled    = errs.E(errs.FailedPrecondition, "MFA is already enabled")
	errMFANotEnabled = errs.E(errs.FailedPrecondition, "MFA is not enabled")
	errNoEnrolment   = errs.E(errs.FailedPrecondition, "no MFA enrolment is pending")
)

// SetPendingTOTP stores sealed as user id's pending TOTP secret, replacing a
// previous pending one: an enrolment that [Store.EnableTOTP] confirms.
//
// Errors: Invalid for an empty secret; NotFound ("user <id> not found");
// FailedPrecondition ("MFA is already enabled").
func (s *Store) SetPendingTOTP(ctx context.Context, id uuid.UUID, sealed []byte) error {
	if len(sealed) == 0 {
		return errs.E(errs.Invalid, "sealed TOTP secret is required")
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		u, err := getUser(ctx, tx, id, "FOR NO KEY UPDATE")
		if err != nil {
			return err
		}
		if u.TOTPEnabled {
			return errMFAEnabled
		}
		if _, err := tx.Exec(ctx, "UPDATE users SET totp_secret_sealed = $2, updated_at = now() WHERE id = $1", id, sealed); err != nil {
			return fmt.Errorf("store pending TOTP secret: %w", err)
		}
		return nil
	})
	return fail("set pending TOTP", err)
}

// EnableTOTP confirms user id's pending TOTP enrolment, confirmed, the sealed
// secret whose code the caller checked: MFA is on from now,
// step is recorded as the last accepted time step (so the confirming code
// cannot be replayed), recoveryHashes (SHA-256 of each recovery code)
// replace the user's recovery codes, newStamp replaces the security stamp,
// and every session of the user is revoked (reason "MFA changed").
//
// Errors: Invalid for an empty or over-long newStamp, a negative step, no
// recovery hashes or more than 100, one that is not 32 bytes, or duplicates;
// NotFound ("user <id> not found"); FailedPrecondition ("MFA is already
// enabled", "no MFA enrolment is pending" without a pending secret, or "the
// enrolment was replaced" when the pending secret is no longer confirmed: a
// newer enrolment must be confirmed with its own code).
func (s *Store) EnableTOTP(ctx context.Context, id uuid.UUID, confirmed []byte, step int64, recoveryHashes [][]byte, newStamp string, audit AuditEvent) error {
	if err := validateStamp(newStamp); err != nil {
		return err
	}
	if step < 0 {
		return errs.E(errs.Invalid, "TOTP time step must not be negative")
	}
	if err := validateRecoveryHashes(recoveryHashes); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		u, err := getUser(ctx, tx, id, "FOR NO KEY UPDATE")
		if err != nil {
			return err
		}
		switch {
		case u.TOTPEnabled:
			return errMFAEnabled
		case len(u.TOTPSecretSealed) == 0:
			return errNoEnrolment
		case !bytes.Equal(u.TOTPSecretSealed, confirmed):
			return errs.E(errs.FailedPrecondition, "the enrolment was replaced by a newer one meanwhile: confirm that one, with a code of its own secret")
		}
		_, err = tx.Exec(ctx, `
			UPDATE users SET totp_enabled_at = now(), totp_last_step = GREATEST(totp_last_step, $2),
			       security_stamp = $3, updated_at = now()
			 WHERE id = $1`, id, step, newStamp)
		if err != nil {
			return fmt.Errorf("enable TOTP: %w", err)
		}
		if err := replaceRecoveryCodes(ctx, tx, id, recoveryHashes); err != nil {
			return err
		}
		if err := revokeSessions(ctx, tx, id, uuid.Nil, RevokeMFAChanged); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(nullIfNil(u.TenantID), "user:"+id.String()))
	})
	return fail("enable TOTP", err)
}

func validateRecoveryHashes(hashes [][]byte) error {
	if len(hashes) == 0 || len(hashes) > maxRecoveryCodes {
		return errs.E(errs.Invalid, "1 to %d recovery code hashes are required", maxRecoveryCodes)
	}
	for i, h := range hashes {
		if len(h) != hashLen {
			return errs.E(errs.Invalid, "recovery code hash %d must be %d bytes (SHA-256), got %d", i, hashLen, len(h))
		}
	}
	sorted := slices.Clone(hashes)
	slices.SortFunc(sorted, bytes.Compare)
	if len(slices.CompactFunc(sorted, bytes.Equal)) != len(hashes) {
		return errs.E(errs.Invalid, "recovery code hashes must be distinct")
	}
	return nil
}

// replaceRecoveryCodes deletes user id's recovery codes and inserts hashes.
func replaceRecoveryCodes(ctx context.Context, tx pgx.Tx, id uuid.UUID, hashes [][]byte) error {
	if _, err := tx.Exec(ctx, "DELETE FROM recovery_codes WHERE user_id = $1", id); err != nil {
		return fmt.Errorf("delete recovery codes: %w", err)
	}
	rows := make([][]any, len(hashes))
	for i, h := range hashes {
		codeID, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new recovery code id: %w", err)
		}
		rows[i] = []any{codeID, id, h}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"recovery_codes"}, []string{"id", "user_id", "code_hash"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("insert recovery codes: %w", err)
	}
	return nil
}

// DisableTOTP turns MFA off for user id: it clears the TOTP secret and the
// recovery codes, replaces the security stamp with newStamp and revokes every
// session of the user (reason "MFA changed"). The last accepted time step is
// kept, so that codes already used stay refused if MFA is enabled again.
//
// Errors: Invalid for an empty or over-long newStamp; NotFound ("user <id>
// not found"); FailedPrecondition ("MFA is not enabled").
func (s *Store) DisableTOTP(ctx context.Context, id uuid.UUID, newStamp string, audit AuditEvent) error {
	if err := validateStamp(newStamp); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		u, err := getUser(ctx, tx, id, "FOR NO KEY UPDATE")
		if err != nil {
			return err
		}
		if !u.TOTPEnabled {
			return errMFANotEnabled
		}
		_, err = tx.Exec(ctx, `
			UPDATE users SET totp_secret_sealed = NULL, totp_enabled_at = NULL, security_stamp = $2, updated_at = now()
			 WHERE id = $1`, id, newStamp)
		if err != nil {
			return fmt.Errorf("disable TOTP: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM recovery_codes WHERE user_id = $1", id); err != nil {
			return fmt.Errorf("delete recovery codes: %w", err)
		}
		if err := revokeSessions(ctx, tx, id, uuid.Nil, RevokeMFAChanged); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(nullIfNil(u.TenantID), "user:"+id.String()))
	})
	return fail("disable TOTP", err)
}

// AdvanceTOTPStep records step as user id's last accepted TOTP time step if
// it is later than the one recorded, in one compare-and-set statement. It
// reports false when it is not — the code is a replay, or lost a race with a
// concurrent use of the same code — in which case the caller must refuse it.
//
// Errors: NotFound ("user <id> not found").
func (s *Store) AdvanceTOTPStep(ctx context.Context, id uuid.UUID, step int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2", id, step)
	if err != nil {
		return false, fail("advance TOTP step", err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	if _, err := s.GetUser(ctx, id); err != nil {
		return false, err
	}
	return false, nil
}

// UseRecoveryCode marks the unused recovery code of user userID whose
// SHA-256 is hash as used, in one compare-and-set statement, and reports
// whether it did. False means no such unused code: wrong, already used
// (concurrent uses of one code included: exactly one wins), or of another
// user. It returns no error of its own.
func (s *Store) UseRecoveryCode(ctx context.Context, userID uuid.UUID, hash []byte) (bool, error) {
	if len(hash) != hashLen {
		return false, nil // no stored hash has another length
	}
	var codeID uuid.UUID
	err := s.pool.QueryRow(ctx, `
		UPDATE recovery_codes SET used_at = now()
		 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
		RETURNING id`, userID, hash).Scan(&codeID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fail("use recovery code", err)
	}
	return true, nil
}
