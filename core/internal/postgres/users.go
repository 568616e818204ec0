package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Roles of a tenant's user (User.Role).
const (
	RoleOwner  = "owner"  // manages the tenant, its users, keys and API keys; a tenant keeps at least one
	RoleAdmin  = "admin"  // manages users, keys and API keys
	RoleMember = "member" // uses their own vault
)

// Reasons the store gives sessions it revokes by itself.
const (
	RevokeUserDisabled     = "user disabled"
	RevokePasswordChanged  = "password changed"
	RevokeMFAChanged       = "MFA changed"
	RevokeRefreshTokenUsed = "refresh token reused"
	RevokeLifetimeOver     = "session lifetime over"
)

// Username and hint bounds, in characters; the migration checks the same.
const (
	minUsernameLen = 3
	maxUsernameLen = 64
	maxHintLen     = 200
	maxStampLen    = 200
)

// KDF holds the parameters with which clients derive keys from a password
// (Argon2id). They are not secret: prelogin hands them out.
type KDF struct {
	Salt                               []byte
	MemoryKiB, Iterations, Parallelism uint32 // each 1 … 2^31-1
}

// User is a person who logs in: a tenant's user with a role, or the
// platform admin, who belongs to no tenant.
type User struct {
	ID            uuid.UUID
	TenantID      uuid.UUID // uuid.Nil for the platform admin
	Username      string    // 3–64 characters, unique platform-wide, case-insensitively
	PlatformAdmin bool
	Role          string // RoleOwner, RoleAdmin or RoleMember; "" for the platform admin
	PasswordHash  string // Argon2id PHC string
	KDF           KDF
	PasswordHint  string // "" when none; at most 200 characters
	SecurityStamp string // bumped by password and MFA changes; tokens carry it
	DisabledAt    *time.Time
	// TOTPSecretSealed is the sealed TOTP secret: pending while TOTPEnabled
	// is false (an enrolment awaiting confirmation), active when true.
	TOTPSecretSealed []byte
	TOTPEnabled      bool
	TOTPLastStep     int64 // the last accepted time step; codes of it or older are replays
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

const userColumns = `id, tenant_id, username, platform_admin, role, password_hash, kdf_salt, kdf_memory_kib,
	kdf_iterations, kdf_parallelism, password_hint, security_stamp, disabled_at, totp_secret_sealed,
	totp_enabled_at IS NOT NULL, totp_last_step, created_at, updated_at`

func scanUser(row pgx.Row) (User, error) {
	var (
		u                               User
		tenantID                        *uuid.UUID
		role, hint                      *string
		memory, iterations, parallelism int64
	)
	err := row.Scan(&u.ID, &tenantID, &u.Username, &u.PlatformAdmin, &role, &u.PasswordHash, &u.KDF.Salt, &memory,
		&iterations, &parallelism, &hint, &u.SecurityStamp, &u.DisabledAt, &u.TOTPSecretSealed, &u.TOTPEnabled,
		&u.TOTPLastStep, &u.CreatedAt, &u.UpdatedAt)
	u.TenantID, u.Role, u.PasswordHint = deref(tenantID), deref(role), deref(hint)
	// The columns are positive int4s (checked by the migration): they fit.
	u.KDF.MemoryKiB, u.KDF.Iterations, u.KDF.Parallelism = uint32(memory), uint32(iterations), uint32(parallelism) //nolint:gosec // bounded: positive int4 columns (migration CHECKs)
	return u, err
}

func userNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "user %s not found", id)
}

// errLastOwner and errLastPlatformAdmin refuse a change that would leave a
// tenant without an enabled owner, or the platform without an enabled
// platform admin.
var (
	errLastOwner         = errs.E(errs.FailedPrecondition, "a tenant must keep at least one owner")
	errLastPlatformAdmin = errs.E(errs.FailedPrecondition, "the platform must keep at least one platform admin")
)

// platformAdminsLockKey serializes changes that could remove the last
// enabled platform admin, as a tenant's row lock does for its owners.
var platformAdminsLockKey = advisoryLockKey("platform-admins")

// CreateUser stores u. The database sets CreatedAt and UpdatedAt; DisabledAt
// and the TOTP fields are ignored (a new user is enabled, without MFA).
//
// Errors: Invalid for a zero id, a username that is not 3–64 characters
// without control characters, a platform admin with a tenant or role or a
// tenant user without them, an unknown role, an empty password hash,
// security stamp or KDF salt, a KDF parameter of 0 or above 2^31-1, or a
// hint over 200 characters; NotFound ("tenant <id> not found") for an
// unknown tenant; Conflict ("username %q is taken") when another user has
// the username, compared case-insensitively, or ("user %s already exists")
// the id.
func (s *Store) CreateUser(ctx context.Context, u User, audit AuditEvent) error {
	if err := validateUser(u); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO users (id, tenant_id, username, platform_admin, role, password_hash, kdf_salt, kdf_memory_kib,
				kdf_iterations, kdf_parallelism, password_hint, security_stamp)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			u.ID, nullIfNil(u.TenantID), u.Username, u.PlatformAdmin, nullIfEmpty(u.Role), u.PasswordHash, u.KDF.Salt,
			int64(u.KDF.MemoryKiB), int64(u.KDF.Iterations), int64(u.KDF.Parallelism), nullIfEmpty(u.PasswordHint),
			u.SecurityStamp)
		constraint, dup := uniqueViolation(err)
		_, noTenant := foreignKeyViolation(err)
		switch {
		case dup && constraint == "users_username_key":
			return errs.E(errs.Conflict, "username %q is taken", u.Username)
		case dup:
			return errs.E(errs.Conflict, "user %s already exists", u.ID)
		case noTenant:
			return tenantNotFound(u.TenantID)
		case err != nil:
			return fmt.Errorf("insert user: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(nullIfNil(u.TenantID), "user:"+u.ID.String()))
	})
	return fail("create user", err)
}

func validateUser(u User) error {
	switch {
	case u.ID == uuid.Nil:
		return errs.E(errs.Invalid, "user id is required")
	case !validText(u.Username, minUsernameLen, maxUsernameLen):
		return errs.E(errs.Invalid, "username must be %d to %d characters without control characters", minUsernameLen, maxUsernameLen)
	case u.PlatformAdmin && (u.TenantID != uuid.Nil || u.Role != ""):
		return errs.E(errs.Invalid, "the platform admin belongs to no tenant and has no role")
	case !u.PlatformAdmin && u.TenantID == uuid.Nil:
		return errs.E(errs.Invalid, "a user's tenant is required")
	case !u.PlatformAdmin && !validRole(u.Role):
		return errs.E(errs.Invalid, "role must be %s, %s or %s", RoleOwner, RoleAdmin, RoleMember)
	case u.PasswordHash == "":
		return errs.E(errs.Invalid, "password hash is required")
	case len(u.KDF.Salt) == 0:
		return errs.E(errs.Invalid, "KDF salt is required")
	case !validKDFParam(u.KDF.MemoryKiB) || !validKDFParam(u.KDF.Iterations) || !validKDFParam(u.KDF.Parallelism):
		return errs.E(errs.Invalid, "KDF memory, iterations and parallelism must be 1 to %d", math.MaxInt32)
	}
	if err := validateStamp(u.SecurityStamp); err != nil {
		return err
	}
	return validateHint(u.PasswordHint)
}

func validRole(role string) bool {
	return role == RoleOwner || role == RoleAdmin || role == RoleMember
}

func validKDFParam(n uint32) bool { return n >= 1 && n <= math.MaxInt32 }

func validateStamp(stamp string) error {
	if !validText(stamp, 1, maxStampLen) {
		return errs.E(errs.Invalid, "security stamp must be 1 to %d characters", maxStampLen)
	}
	return nil
}

func validateHint(hint string) error {
	if !validText(hint, 0, maxHintLen) {
		return errs.E(errs.Invalid, "password hint must be at most %d characters without control characters", maxHintLen)
	}
	return nil
}

// GetUser returns user id.
//
// Errors: NotFound ("user <id> not found").
func (s *Store) GetUser(ctx context.Context, id uuid.UUID) (User, error) {
	u, err := getUser(ctx, s.pool, id, "")
	if err != nil {
		return User{}, fail("get user", err)
	}
	return u, nil
}

// getUser reads user id, with lock ("FOR UPDATE", …) appended if set.
func getUser(ctx context.Context, q querier, id uuid.UUID, lock string) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1 "+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, userNotFound(id)
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// GetUserByUsername returns the user named username, compared
// case-insensitively.
//
// Errors: NotFound ("user %q not found"). Callers that must not reveal
// whether a username exists answer the same way for NotFound as for a wrong
// password.
func (s *Store) GetUserByUsername(ctx context.Context, username string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE lower(username) = lower($1)", username))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, errs.E(errs.NotFound, "user %q not found", username)
	}
	if err != nil {
		return User{}, fail("get user by username", err)
	}
	return u, nil
}

// ListUsers returns up to pageSize users of tenant tenantID (100 if pageSize
// <= 0, at most 1000) whose id sorts after after (uuid.Nil: from the start),
// ordered by id. The next page starts after the last id returned; a short
// page is the last. An unknown tenant has no users: the result is empty. It
// returns no error of its own.
func (s *Store) ListUsers(ctx context.Context, tenantID uuid.UUID, pageSize int, after uuid.UUID) ([]User, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+userColumns+" FROM users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
		tenantID, after, clampPageSize(pageSize))
	if err != nil {
		return nil, fail("list users", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return scanUser(row) })
	if err != nil {
		return nil, fail("list users", err)
	}
	if users == nil {
		users = []User{}
	}
	return users, nil
}

// CountPlatformAdmins returns how many platform admins exist, disabled ones
// included. It returns no error of its own.
func (s *Store) CountPlatformAdmins(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM users WHERE platform_admin").Scan(&n); err != nil {
		return 0, fail("count platform admins", err)
	}
	return n, nil
}

// lockUserForChange prepares a change that could take away an enabled owner
// of a tenant or an enabled platform admin: it takes, in this fixed order so
// that such changes cannot deadlock, the tenant's row lock (or, for a
// platform admin, the platform admins' advisory lock) and then the user's
// row lock, and returns the user. Two such changes to one tenant therefore
// run one after the other, and each sees the other's result when it counts
// the remaining owners.
//
// The tenant row is locked FOR NO KEY UPDATE, which does not block the
// KEY SHARE locks of foreign-key checks: users can still be added meanwhile.
func lockUserForChange(ctx context.Context, tx pgx.Tx, id uuid.UUID, mayChange ...func(User) error) (User, error) {
	var tenantID *uuid.UUID
	err := tx.QueryRow(ctx, "SELECT tenant_id FROM users WHERE id = $1", id).Scan(&tenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, userNotFound(id)
	}
	if err != nil {
		return User{}, fmt.Errorf("find user's tenant: %w", err)
	}
	if tenantID == nil {
		if err := lockAdvisory(ctx, tx, platformAdminsLockKey); err != nil {
			return User{}, err
		}
	} else if _, err := tx.Exec(ctx, "SELECT FROM tenants WHERE id = $1 FOR NO KEY UPDATE", *tenantID); err != nil {
		return User{}, fmt.Errorf("lock tenant: %w", err)
	}
	// The user may have gone or changed while we waited: read it again, locked, and let the
	// caller's checks decide on what it is now.
	u, err := getUser(ctx, tx, id, "FOR UPDATE")
	if err != nil {
		return User{}, err
	}
	for _, check := range mayChange {
		if err := check(u); err != nil {
			return User{}, err
		}
	}
	return u, nil
}

// ensureSuccessor refuses, with errLastOwner or errLastPlatformAdmin, to let
// u stop being an enabled owner (or enabled platform admin) when no other
// one would remain. The caller holds lockUserForChange's locks.
func ensureSuccessor(ctx context.Context, tx pgx.Tx, u User) error {
	if u.DisabledAt != nil {
		return nil // not counted as one now: nothing is taken away
	}
	var (
		others bool
		err    error
	)
	switch {
	case u.PlatformAdmin:
		err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM users
			 WHERE platform_admin AND disabled_at IS NULL AND id <> $1)`, u.ID).Scan(&others)
		if err == nil && !others {
			return errLastPlatformAdmin
		}
	case u.Role == RoleOwner:
		err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM users
			 WHERE tenant_id = $1 AND role = 'owner' AND disabled_at IS NULL AND id <> $2)`, u.TenantID, u.ID).Scan(&others)
		if err == nil && !others {
			return errLastOwner
		}
	}
	if err != nil {
		return fmt.Errorf("count remaining owners: %w", err)
	}
	return nil
}

// SetUserDisabled disables (disabled true) or re-enables user id and, unless
// newStamp is "", replaces its security stamp. Disabling also revokes every
// session of the user (reason "user disabled"); disabling a disabled user
// keeps its original DisabledAt. It returns the user as updated.
//
// Errors: Invalid for a newStamp over 200 characters; NotFound ("user <id>
// not found"); FailedPrecondition ("a tenant must keep at least one owner")
// when disabling the tenant's last enabled owner, or ("the platform must keep
// at least one platform admin") the last enabled platform admin; and whatever
// error a mayChange check returns for the user as it is under the lock.
func (s *Store) SetUserDisabled(ctx context.Context, id uuid.UUID, disabled bool, newStamp string, audit AuditEvent, mayChange ...func(User) error) (User, error) {
	if newStamp != "" {
		if err := validateStamp(newStamp); err != nil {
			return User{}, err
		}
	}
	var u User
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := lockUserForChange(ctx, tx, id, mayChange...)
		if err != nil {
			return err
		}
		if disabled {
			if err := ensureSuccessor(ctx, tx, cur); err != nil {
				return err
			}
		}
		// A stamp change drops a pending TOTP enrolment, as a password change does.
		u, err = scanUser(tx.QueryRow(ctx, `
			UPDATE users SET disabled_at = CASE WHEN $2 THEN COALESCE(disabled_at, now()) END,
			       security_stamp = COALESCE($3, security_stamp), updated_at = now(),
			       totp_secret_sealed = CASE WHEN $3::text IS NOT NULL AND totp_enabled_at IS NULL THEN NULL
			                                 ELSE totp_secret_sealed END
			 WHERE id = $1
			RETURNING `+userColumns, id, disabled, nullIfEmpty(newStamp)))
		if err != nil {
			return fmt.Errorf("update user: %w", err)
		}
		if disabled {
			if err := revokeSessions(ctx, tx, id, uuid.Nil, RevokeUserDisabled); err != nil {
				return err
			}
		}
		return insertAudit(ctx, tx, audit.about(nullIfNil(u.TenantID), "user:"+id.String()))
	})
	if err != nil {
		return User{}, fail("set user disabled", err)
	}
	return u, nil
}

// SetUserRole gives user id the role role and returns the user as updated.
// A tenant always keeps at least one enabled owner: concurrent demotions are
// serialized on the tenant, so together they cannot remove the last one
// either.
//
// Errors: Invalid for an unknown role; NotFound ("user <id> not found");
// FailedPrecondition ("a tenant must keep at least one owner") when demoting
// the tenant's last enabled owner, or ("the platform admin has no tenant
// role") for the platform admin; and whatever error a mayChange check returns
// for the user as it is under the lock.
func (s *Store) SetUserRole(ctx context.Context, id uuid.UUID, role string, audit AuditEvent, mayChange ...func(User) error) (User, error) {
	if !validRole(role) {
		return User{}, errs.E(errs.Invalid, "role must be %s, %s or %s", RoleOwner, RoleAdmin, RoleMember)
	}
	var u User
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := lockUserForChange(ctx, tx, id, mayChange...)
		if err != nil {
			return err
		}
		if cur.PlatformAdmin {
			return errs.E(errs.FailedPrecondition, "the platform admin has no tenant role")
		}
		if role != RoleOwner {
			if err := ensureSuccessor(ctx, tx, cur); err != nil {
				return err
			}
		}
		u, err = scanUser(tx.QueryRow(ctx, `
			UPDATE users SET role = $2, updated_at = now() WHERE id = $1 RETURNING `+userColumns, id, role))
		if err != nil {
			return fmt.Errorf("update user role: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(&u.TenantID, "user:"+id.String()))
	})
	if err != nil {
		return User{}, fail("set user role", err)
	}
	return u, nil
}

// DeleteUser deletes user id with its sessions, refresh tokens, recovery
// codes, items and key context record (the database cascades them) and, in
// the same transaction, queues the erasure of its key context on the
// encryption service (see ClaimErasures). It returns that erasure, or nil when
// the user had no key context.
//
// Errors: NotFound ("user <id> not found"); FailedPrecondition ("a tenant
// must keep at least one owner") for the tenant's last enabled owner, or
// ("the platform must keep at least one platform admin") for the last
// enabled platform admin; and whatever error a mayChange check returns for the
// user as it is under the lock.
func (s *Store) DeleteUser(ctx context.Context, id uuid.UUID, audit AuditEvent, mayChange ...func(User) error) (*Erasure, error) {
	var erasure *Erasure
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		erasure = nil // a retried transaction starts over
		cur, err := lockUserForChange(ctx, tx, id, mayChange...)
		if err != nil {
			return err
		}
		if err := ensureSuccessor(ctx, tx, cur); err != nil {
			return err
		}
		// The user's row is locked, so no key context can be recorded for it meanwhile: a
		// concurrent PutKeyContext waits, then finds the user gone and queues its own.
		var encID, tenantID uuid.UUID
		err = tx.QueryRow(ctx, "SELECT encryption_id, tenant_id FROM key_contexts WHERE user_id = $1", id).Scan(&encID, &tenantID)
		switch {
		case err == nil:
			if err := queueErasure(ctx, tx, encID, tenantID, id, ErasureUserDeleted, ErasureGrace); err != nil {
				return err
			}
			erasure = &Erasure{EncryptionID: encID, TenantID: tenantID, UserID: id, Reason: ErasureUserDeleted}
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("read the user's key context: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM users WHERE id = $1", id); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		return insertAudit(ctx, tx, audit.about(nullIfNil(cur.TenantID), "user:"+id.String()))
	})
	if err != nil {
		return nil, fail("delete user", err)
	}
	return erasure, nil
}

// RehashPassword replaces user id's password hash oldHash by newHash, a hash
// of the same password under the current parameters, after a login checked
// it. It changes nothing else (the password is the same: sessions stay), and
// only while the stored hash is still oldHash, so that a password change in
// between wins. It reports whether it replaced the hash.
//
// Errors: Invalid for an empty hash.
func (s *Store) RehashPassword(ctx context.Context, id uuid.UUID, oldHash, newHash string) (bool, error) {
	if oldHash == "" || newHash == "" {
		return false, errs.E(errs.Invalid, "password hash is required")
	}
	tag, err := s.pool.Exec(ctx, `UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2`, id, oldHash, newHash)
	if err != nil {
		return false, fail("rehash password", fmt.Errorf("update password hash: %w", err))
	}
	return tag.RowsAffected() == 1, nil
}

// ChangePassword replaces user id's password hash and security stamp, and
// its hint unless hint is nil (a pointer to "" removes it), drops a pending
// TOTP enrolment (one made with the old password must not be confirmed after
// it), and revokes every session of the user but keepSession (reason
// "password changed"; uuid.Nil keeps none). When keyContext is not nil, the
// user's key context must be *keyContext (uuid.Nil: none) — the one the caller
// moved to the new password's master key — or nothing is changed: a context
// recorded since (see PutKeyContextUnder) would stay bound to the old password.
//
// Errors: Invalid for an empty password hash, an empty or over-long
// newStamp, or a hint over 200 characters; NotFound ("user <id> not found");
// Aborted when the user's key context is not *keyContext.
func (s *Store) ChangePassword(ctx context.Context, id uuid.UUID, passwordHash string, hint *string, newStamp string,
	keepSession uuid.UUID, keyContext *uuid.UUID, audit AuditEvent,
) error {
	if passwordHash == "" {
		return errs.E(errs.Invalid, "password hash is required")
	}
	if err := validateStamp(newStamp); err != nil {
		return err
	}
	var hintArg *string // NULL: unchanged
	if hint != nil {
		if err := validateHint(*hint); err != nil {
			return err
		}
		hintArg = hint
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var tenantID *uuid.UUID
		err := tx.QueryRow(ctx, `
			UPDATE users SET password_hash = $2, security_stamp = $3, updated_at = now(),
			       password_hint = CASE WHEN $4::text IS NULL THEN password_hint ELSE NULLIF($4, '') END,
			       totp_secret_sealed = CASE WHEN totp_enabled_at IS NULL THEN NULL ELSE totp_secret_sealed END
			 WHERE id = $1
			RETURNING tenant_id`, id, passwordHash, newStamp, hintArg).Scan(&tenantID)
		if errors.Is(err, pgx.ErrNoRows) {
			return userNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("update password: %w", err)
		}
		if keyContext != nil {
			// The row lock the update took orders this after any context recorded meanwhile; the
			// statement sees it because inTx runs at READ COMMITTED (a snapshot per statement).
			var current uuid.UUID
			err := tx.QueryRow(ctx, "SELECT encryption_id FROM key_contexts WHERE user_id = $1", id).Scan(&current)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("read key context: %w", err)
			}
			if current != *keyContext {
				return errs.E(errs.Aborted, "your key context was created while the password changed: nothing was changed; change the password again")
			}
		}
		if err := revokeSessions(ctx, tx, id, keepSession, RevokePasswordChanged); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit.about(tenantID, "user:"+id.String()))
	})
	return fail("change password", err)
}
