// Package auth logs people in and keeps their credentials: zero-knowledge prelogin, password login
// with optional TOTP, rotating refresh tokens, logout, password change, TOTP enrolment, password
// hints; and it authenticates every request, by access token or by API key.
//
// Failed logins are throttled per account and per client address, with separate counters for
// passwords and TOTP codes, in the database so that every replica sees them. Unknown and known
// usernames get the same answers, after the same work.
//
// All errors are *errs.Error values; none holds a password, code, token or secret.
package auth

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/apikey"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/token"
	"github.com/custos-platform/custos/core/internal/totp"
)

// Store is what auth needs from the database.
type Store interface {
	GetUser(ctx context.Context, id uuid.UUID) (postgres.User, error)
	GetUserByUsername(ctx context.Context, username string) (postgres.User, error)
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
	ChangePassword(ctx context.Context, id uuid.UUID, passwordHash string, hint *string, newStamp string, keepSession uuid.UUID, keyContext *uuid.UUID, audit postgres.AuditEvent) error
	SetPendingTOTP(ctx context.Context, id uuid.UUID, sealed []byte) error
	EnableTOTP(ctx context.Context, id uuid.UUID, confirmed []byte, step int64, recoveryHashes [][]byte, newStamp string, audit postgres.AuditEvent) error
	DisableTOTP(ctx context.Context, id uuid.UUID, newStamp string, audit postgres.AuditEvent) error
	AdvanceTOTPStep(ctx context.Context, id uuid.UUID, step int64) (bool, error)
	UseRecoveryCode(ctx context.Context, userID uuid.UUID, hash []byte) (bool, error)
	CreateSession(ctx context.Context, userID uuid.UUID, stamp string, refreshHash []byte, expiresAt time.Time, origin postgres.SessionOrigin) (postgres.Session, error)
	RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt time.Time, maxAge time.Duration) (postgres.Session, error)
	RevokeSessionByRefreshToken(ctx context.Context, hash []byte, all bool, reason string, audit postgres.AuditEvent) error
	RevokeUserSessions(ctx context.Context, userID uuid.UUID, reason string, except uuid.UUID, audit postgres.AuditEvent) error
	ListOpenSessions(ctx context.Context, userID uuid.UUID) ([]postgres.OpenSession, error)
	RevokeSession(ctx context.Context, userID, sessionID uuid.UUID, reason string, audit postgres.AuditEvent) error
	AccessState(ctx context.Context, userID, sessionID uuid.UUID) (postgres.AccessState, error)
	GetAPIKeyByKeyID(ctx context.Context, keyID string) (postgres.APIKey, error)
	TouchAPIKey(ctx context.Context, id uuid.UUID, at time.Time) error
	RehashPassword(ctx context.Context, id uuid.UUID, oldHash, newHash string) (bool, error)
	ThrottleTake(ctx context.Context, scope, key string, now time.Time, limit int, window, lockout time.Duration) (time.Time, error)
	ThrottleRefund(ctx context.Context, scope, key string, limit int) error
	ThrottleReset(ctx context.Context, scope, key string) error
	InsertAudit(ctx context.Context, e postgres.AuditEvent) error
}

var _ Store = (*postgres.Store)(nil)

// MasterKeyChanger rewraps a user's zero-knowledge keys from one client master key to another.
type MasterKeyChanger interface {
	// ChangeMasterKey moves the user's zero-knowledge key context from oldKey to newKey. It reports
	// whether the tenant is zero-knowledge and, if so, the context it moved (uuid.Nil: none yet).
	ChangeMasterKey(ctx context.Context, userID, tenantID uuid.UUID, oldKey, newKey []byte) (zeroKnowledge bool, moved uuid.UUID, err error)
}

// Limits are the throttling thresholds: after Limit failures within Window, Lockout.
type Limits struct {
	Limit   int
	Window  time.Duration
	Lockout time.Duration
}

// Options configure a Service; zero values take the defaults shown.
type Options struct {
	Issuer       string          // JWT iss (default "custos")
	Audience     string          // JWT aud (default "custos-api")
	AccessTTL    time.Duration   // default 15m
	RefreshTTL   time.Duration   // default 30 days, renewed by each refresh
	SessionTTL   time.Duration   // a session's lifetime from its login, however often refreshed (default 90 days)
	MFATTL       time.Duration   // default 5m
	Password     password.Params // default password.DefaultParams
	LoginAccount Limits          // default 5 in 15m → 15m
	LoginAddress Limits          // default 50 in 15m → 15m
	TOTPAccount  Limits          // default 5 in 15m → 15m
	TOTPAddress  Limits          // default 50 in 15m → 15m
	HintAddress  Limits          // default 10 in 1h → 1h
	Now          func() time.Time
	Rand         io.Reader
	Logger       *slog.Logger
	TOTPIssuer   string // shown in authenticator apps (default "Custos")
	PreloginSeed []byte // stable secret for fake prelogin parameters (derived from core's secret keys)
	SigningKeys  *token.Keys
	// ReloadKeys, when set, loads the signing keys in force; a token of a key this replica does
	// not know yet (rotated on another) triggers it, at most every KeyReloadGap.
	ReloadKeys func(context.Context) (*token.Keys, error)
	SecretBox  *secretbox.Box
	// MasterKeys moves a zero-knowledge user's keys to the master key of their new password.
	MasterKeys MasterKeyChanger
}

// Service is the authentication service.
type Service struct {
	store  Store
	box    *secretbox.Box
	issuer *token.Issuer
	opts   Options
	// hashing bounds concurrent Argon2id computations: each takes tens of MiB and a core for
	// ~150 ms, so a burst of logins must queue rather than exhaust memory.
	hashing chan struct{}
	// reloaded is when ReloadKeys last ran for an unknown key (unix nanoseconds).
	reloaded atomic.Int64
}

// KeyReloadGap bounds how often tokens of unknown keys make a replica reload its signing keys, so
// that forged key ids cannot turn into a stream of database reads.
const KeyReloadGap = 5 * time.Second

// verify checks a token of purpose. A token of a key this replica does not know makes it reload
// the keys in force (at most every KeyReloadGap) and check again: after a rotation on another
// replica, the new key's tokens are accepted at once rather than at the next periodic reload.
func (s *Service) verify(ctx context.Context, tok, purpose string) (token.Claims, error) {
	claims, err := s.issuer.Verify(tok, purpose)
	if err == nil || !errors.Is(err, token.ErrUnknownKey) || s.opts.ReloadKeys == nil {
		return claims, err
	}
	last, now := s.reloaded.Load(), time.Now().UnixNano()
	if now-last < int64(KeyReloadGap) || !s.reloaded.CompareAndSwap(last, now) {
		return claims, err
	}
	keys, rerr := s.opts.ReloadKeys(ctx)
	if rerr != nil {
		s.opts.Logger.WarnContext(ctx, "reload signing keys for a token of an unknown key", "error", rerr)
		return claims, err
	}
	s.issuer.SetKeys(keys)
	return s.issuer.Verify(tok, purpose)
}

// withHashSlot runs fn while holding one of the hashing slots, or fails when ctx ends first.
func (s *Service) withHashSlot(ctx context.Context, fn func()) error {
	select {
	case s.hashing <- struct{}{}:
		defer func() { <-s.hashing }()
		fn()
		return nil
	case <-ctx.Done():
		return errs.E(errs.Unavailable, "too many logins at once: try again")
	}
}

// New returns a Service. It fails only for unusable options (no signing keys or secret box).
func New(store Store, opts Options) (*Service, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.AccessTTL, 15*time.Minute)
	def(&opts.RefreshTTL, 30*24*time.Hour)
	def(&opts.SessionTTL, 90*24*time.Hour)
	def(&opts.MFATTL, 5*time.Minute)
	lim := func(l *Limits, n int, w, lock time.Duration) {
		if l.Limit <= 0 {
			*l = Limits{Limit: n, Window: w, Lockout: lock}
		}
	}
	lim(&opts.LoginAccount, 5, 15*time.Minute, 15*time.Minute)
	lim(&opts.LoginAddress, 50, 15*time.Minute, 15*time.Minute)
	lim(&opts.TOTPAccount, 5, 15*time.Minute, 15*time.Minute)
	lim(&opts.TOTPAddress, 50, 15*time.Minute, 15*time.Minute)
	lim(&opts.HintAddress, 10, time.Hour, time.Hour)
	if opts.Issuer == "" {
		opts.Issuer = "custos"
	}
	if opts.Audience == "" {
		opts.Audience = "custos-api"
	}
	if opts.TOTPIssuer == "" {
		opts.TOTPIssuer = "Custos"
	}
	if opts.Password == (password.Params{}) {
		opts.Password = password.DefaultParams()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SecretBox == nil || opts.SigningKeys == nil || len(opts.PreloginSeed) == 0 {
		return nil, fmt.Errorf("auth: SecretBox, SigningKeys and PreloginSeed are required")
	}
	issuer, err := token.NewIssuer(opts.SigningKeys, opts.Issuer, opts.Audience, opts.AccessTTL, opts.MFATTL, opts.Now)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	slots := max(2, runtime.GOMAXPROCS(0))
	return &Service{store: store, box: opts.SecretBox, issuer: issuer, opts: opts, hashing: make(chan struct{}, slots)}, nil
}

// SetMasterKeyChanger sets what moves zero-knowledge keys on a password change (the vault, which
// is built after this service).
func (s *Service) SetMasterKeyChanger(m MasterKeyChanger) { s.opts.MasterKeys = m }

// SetKeys replaces the signing keys (after a rotation by any replica).
func (s *Service) SetKeys(k *token.Keys) { s.issuer.SetKeys(k) }

// JWKS returns the public keys that verify access tokens.
func (s *Service) JWKS() token.JWKS { return s.issuer.JWKS() }

// User returns a user by id.
func (s *Service) User(ctx context.Context, id uuid.UUID) (postgres.User, error) {
	return s.store.GetUser(ctx, id)
}

// PreloginSeed derives the stable secret behind fake prelogin parameters from a key of core's.
func PreloginSeed(key []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, key, nil, "custos/core/prelogin/v1", 32)
}

// Request describes the call, for throttling and the audit trail.
type Request struct {
	RemoteAddr string // host:port or host
	RequestID  string
	UserAgent  string // the client software as it named itself (recorded with a login's session)
}

func (r Request) host() string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// throttleAddr is the client address as throttling counts it: an IPv4 address, or the /64 prefix
// of an IPv6 one (one host usually holds a whole /64, so counting its addresses apart would give
// it unlimited attempts).
func (r Request) throttleAddr() string {
	h := r.host()
	a, err := netip.ParseAddr(h)
	if err != nil {
		return h
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return h
	}
	return p.String()
}

// Tokens is a successful login.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration
}

// LoginResult is tokens, or an MFA challenge.
type LoginResult struct {
	Tokens      Tokens
	MFARequired bool
	MFAToken    string
}

// errLogin is the one answer to every failed login, whether or not the user exists.
var errLogin = errs.E(errs.Unauthenticated, "invalid username or password")

// Prelogin returns the KDF parameters of username; an unknown username gets stable fake ones.
func (s *Service) Prelogin(ctx context.Context, username string) (password.ClientKDF, error) {
	u, err := s.store.GetUserByUsername(ctx, normalize(username))
	switch {
	case err == nil:
		return password.ClientKDF{Salt: u.KDF.Salt, MemoryKiB: u.KDF.MemoryKiB, Iterations: u.KDF.Iterations, Parallelism: u.KDF.Parallelism}, nil
	case errs.Is(err, errs.NotFound):
		k, err := password.FakeClientKDF(s.opts.PreloginSeed, normalize(username))
		if err != nil {
			return password.ClientKDF{}, errs.Wrap(errs.Internal, err, "prelogin parameters")
		}
		return k, nil
	default:
		return password.ClientKDF{}, err
	}
}

// Login checks username and password. Errors: Unauthenticated (the same for every failure),
// ResourceExhausted while the account or the client address is locked out.
func (s *Service) Login(ctx context.Context, r Request, username, pw string) (LoginResult, error) {
	name := normalize(username)
	a, err := s.try(ctx, s.loginKeys(r, name))
	if err != nil {
		return LoginResult{}, err
	}
	u, err := s.store.GetUserByUsername(ctx, name)
	if err != nil && !errs.Is(err, errs.NotFound) {
		a.void(ctx)
		return LoginResult{}, err
	}
	ok, rehash := false, false
	known := err == nil && u.DisabledAt == nil
	if err := s.withHashSlot(ctx, func() {
		if !known {
			password.DummyVerify(pw, s.opts.Password)
			return
		}
		var verr error
		if ok, rehash, verr = password.Verify(pw, u.PasswordHash, s.opts.Password); verr != nil {
			s.opts.Logger.ErrorContext(ctx, "stored password hash unusable", "user_id", u.ID, "error", verr)
			ok = false
		}
	}); err != nil {
		a.void(ctx)
		return LoginResult{}, err
	}
	if !ok {
		s.audit(ctx, r, nilIfZero(u.TenantID), "anonymous", nilIfZero(u.ID), "auth.login", "", "UNAUTHENTICATED")
		return LoginResult{}, errLogin
	}
	a.ok(ctx)
	if rehash {
		s.rehash(ctx, u, pw)
	}
	if u.TOTPEnabled {
		mfa, _, err := s.issuer.IssueMFA(u.ID.String(), u.SecurityStamp)
		if err != nil {
			return LoginResult{}, errs.Wrap(errs.Internal, err, "issue MFA token")
		}
		s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.login", "mfa required", "ok")
		return LoginResult{MFARequired: true, MFAToken: mfa}, nil
	}
	t, err := s.startSession(ctx, r, u, "")
	if err != nil {
		return LoginResult{}, err
	}
	s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.login", "", "ok")
	return LoginResult{Tokens: t}, nil
}

// rehash stores u's password, just checked, hashed again under the current parameters: after
// they change, every user's hash follows at their next login, so that the cost is the configured
// one and a known user's login takes as long as an unknown one's. Failures are logged: the old
// hash still works.
func (s *Service) rehash(ctx context.Context, u postgres.User, pw string) {
	var (
		h   string
		err error
	)
	if serr := s.withHashSlot(ctx, func() { h, err = password.Hash(pw, s.opts.Password, s.opts.Rand) }); serr != nil {
		return // busy: the next login tries again
	}
	if err == nil {
		_, err = s.store.RehashPassword(ctx, u.ID, u.PasswordHash, h)
	}
	if err != nil {
		s.opts.Logger.WarnContext(ctx, "store the password hash under the current parameters", "user_id", u.ID, "error", err)
	}
}

// VerifyMFA completes a login with a TOTP code (a replayed one is refused) or a single-use
// recovery code. An MFA token opens one session: used again, even with another right code, it is
// Unauthenticated ("MFA token already used").
func (s *Service) VerifyMFA(ctx context.Context, r Request, mfaToken, code string) (Tokens, error) {
	claims, err := s.verify(ctx, mfaToken, token.PurposeMFA)
	if err != nil {
		return Tokens{}, errs.E(errs.Unauthenticated, "MFA token rejected: log in again")
	}
	userID, err := uuid.Parse(claims.Subject)
	if err != nil {
		return Tokens{}, errs.E(errs.Unauthenticated, "MFA token rejected: log in again")
	}
	u, err := s.store.GetUser(ctx, userID)
	if err != nil || u.DisabledAt != nil || u.SecurityStamp != claims.SecurityStamp || !u.TOTPEnabled {
		return Tokens{}, errs.E(errs.Unauthenticated, "MFA token rejected: log in again")
	}
	if err := s.checkSecondFactor(ctx, r, u, code); err != nil {
		return Tokens{}, err
	}
	// One MFA token opens one session: a copy kept after its use opens none (CreateSession).
	t, err := s.startSession(ctx, r, u, claims.ID)
	if err != nil {
		return Tokens{}, err
	}
	s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.mfa", "", "ok")
	return t, nil
}

// checkSecondFactor accepts a current TOTP code, once, or an unused recovery code, under the TOTP
// throttle.
func (s *Service) checkSecondFactor(ctx context.Context, r Request, u postgres.User, code string) error {
	a, err := s.try(ctx, s.totpKeys(r, u))
	if err != nil {
		return err
	}
	ok, err := s.secondFactorOK(ctx, u, code)
	if err != nil {
		a.void(ctx)
		return err
	}
	if !ok {
		s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.mfa", "", "UNAUTHENTICATED")
		return errs.E(errs.Unauthenticated, "code rejected: wrong, expired or already used")
	}
	a.ok(ctx)
	return nil
}

func (s *Service) secondFactorOK(ctx context.Context, u postgres.User, code string) (bool, error) {
	if norm, ok := totp.NormalizeRecoveryCode(code); ok {
		h, err := totp.HashRecoveryCode(norm)
		if err != nil {
			return false, nil
		}
		return s.store.UseRecoveryCode(ctx, u.ID, h)
	}
	secret, err := s.box.Open(u.TOTPSecretSealed, totpAD(u.ID))
	if err != nil {
		return false, errs.Wrap(errs.Internal, err, "open TOTP secret")
	}
	step, err := totp.Validate(string(secret), code, s.opts.Now(), u.TOTPLastStep)
	if err != nil {
		return false, nil
	}
	// Compare-and-set: of two requests with the same code, one wins.
	return s.store.AdvanceTOTPStep(ctx, u.ID, step)
}

// Refresh exchanges a refresh token for new tokens; a used one revokes its whole family.
func (s *Service) Refresh(ctx context.Context, r Request, refreshToken string) (Tokens, error) {
	oldHash, err := token.HashRefreshToken(refreshToken)
	if err != nil {
		return Tokens{}, errs.E(errs.Unauthenticated, "refresh token rejected")
	}
	newToken, newHash, err := token.NewRefreshToken(s.opts.Rand)
	if err != nil {
		return Tokens{}, errs.Wrap(errs.Internal, err, "generate refresh token")
	}
	sess, err := s.store.RotateRefreshToken(ctx, oldHash, newHash, s.opts.Now().Add(s.opts.RefreshTTL), s.opts.SessionTTL)
	if err != nil {
		return Tokens{}, err
	}
	u, err := s.store.GetUser(ctx, sess.UserID)
	if err != nil || u.DisabledAt != nil {
		return Tokens{}, errs.E(errs.Unauthenticated, "refresh token rejected")
	}
	access, expires, err := s.issueAccess(u, sess.ID)
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{AccessToken: access, RefreshToken: newToken, ExpiresIn: expires}, nil
}

// Logout revokes the refresh token's family, or with all every session of the token's user —
// the refresh token is the proof, so a client that holds no valid access token can still end
// every session. Errors: Invalid for a value that is not a refresh token; Unauthenticated with all
// for a token core does not know (nothing was ended).
func (s *Service) Logout(ctx context.Context, r Request, refreshToken string, all bool) error {
	hash, err := token.HashRefreshToken(refreshToken)
	if err != nil {
		return errs.E(errs.Invalid, "refreshToken: not a refresh token")
	}
	action := "auth.logout"
	if all {
		action = "auth.logout.all"
	}
	return s.store.RevokeSessionByRefreshToken(ctx, hash, all, "logout", s.event(r, nil, "anonymous", nil, action, "", "ok"))
}

// Session is one of a person's open sessions, as ListSessions reports it.
type Session struct {
	postgres.OpenSession
	Current bool // the session of the calling access token
}

// errPeopleOnly refuses a session call of a machine (the policy refuses them first).
var errPeopleOnly = errs.E(errs.PermissionDenied, "sessions belong to people: machine credentials have none")

// ListSessions lists the calling person's open sessions, newest first, marking the one their access
// token belongs to. Errors: PermissionDenied for a machine credential.
func (s *Service) ListSessions(ctx context.Context) ([]Session, error) {
	p := principal.FromContext(ctx)
	if !p.Human() {
		return nil, errPeopleOnly
	}
	open, err := s.store.ListOpenSessions(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	out := make([]Session, len(open))
	for i, o := range open {
		out[i] = Session{OpenSession: o, Current: o.ID == p.SessionID}
	}
	return out, nil
}

// RevokeSession ends one of the calling person's sessions at once (its current one too, which is
// then a logout). Errors: NotFound for a session that is not one of theirs, or already ended;
// PermissionDenied for a machine credential.
func (s *Service) RevokeSession(ctx context.Context, r Request, sessionID uuid.UUID) error {
	p := principal.FromContext(ctx)
	if !p.Human() {
		return errPeopleOnly
	}
	return s.store.RevokeSession(ctx, p.ID, sessionID, "revoked by the user",
		s.event(r, nilIfZero(p.TenantID), "user", &p.ID, "auth.session.revoke", "", "ok"))
}

// Hint returns a user's password hint; unknown users, users without a hint and tenants that
// switched hints off all get "". Throttled per client address.
func (s *Service) Hint(ctx context.Context, r Request, username string) (string, error) {
	// Every request counts against the address, and is never given back: hints are asked for
	// rarely.
	if _, err := s.take(ctx, throttleKey{"hint:address", r.throttleAddr(), s.opts.HintAddress}); err != nil {
		return "", err
	}
	u, err := s.store.GetUserByUsername(ctx, normalize(username))
	if errs.Is(err, errs.NotFound) || (err == nil && (u.DisabledAt != nil || u.PlatformAdmin)) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	t, err := s.store.GetTenant(ctx, u.TenantID)
	if err != nil {
		return "", err
	}
	if !t.PasswordHintsEnabled {
		return "", nil
	}
	return u.PasswordHint, nil
}

// ChangePassword replaces the caller's password and ends every other session. It returns tokens
// of a fresh session for the caller, since the change invalidates theirs too. In a zero-knowledge
// tenant oldKey and newKey are the master keys derived from the current and the new password: the
// user's keys are rewrapped from one to the other first, and back if the password cannot then be
// stored, so that the keys always follow the password in force.
func (s *Service) ChangePassword(ctx context.Context, r Request, current, next, hint string, oldKey, newKey []byte) (Tokens, error) {
	p := principal.FromContext(ctx)
	u, err := s.reauthenticate(ctx, r, p, current)
	if err != nil {
		return Tokens{}, err
	}
	if err := password.Validate(next); err != nil {
		return Tokens{}, errs.Wrap(errs.Invalid, err, "newPassword: "+err.Error())
	}
	if hint != "" {
		if err := s.hintAllowed(ctx, u, hint); err != nil {
			return Tokens{}, err
		}
	}
	var hash string
	if serr := s.withHashSlot(ctx, func() { hash, err = password.Hash(next, s.opts.Password, s.opts.Rand) }); serr != nil {
		return Tokens{}, serr
	}
	if err != nil {
		return Tokens{}, errs.Wrap(errs.Internal, err, "hash password")
	}
	rewrapped := false
	var keyContext *uuid.UUID // zero-knowledge: the context the new password's key opens
	if s.opts.MasterKeys != nil && !u.PlatformAdmin {
		zk, moved, err := s.opts.MasterKeys.ChangeMasterKey(ctx, u.ID, u.TenantID, oldKey, newKey)
		if err != nil {
			return Tokens{}, err
		}
		if zk {
			keyContext = &moved
		}
		rewrapped = moved != uuid.Nil && oldKey != nil && newKey != nil
	}
	stamp := newStamp()
	h := hint
	if err := s.store.ChangePassword(ctx, u.ID, hash, &h, stamp, uuid.Nil, keyContext, s.event(r, nilIfZero(u.TenantID), "user", &u.ID, "auth.password.change", "", "ok")); err != nil {
		if rewrapped {
			if _, _, rerr := s.opts.MasterKeys.ChangeMasterKey(context.WithoutCancel(ctx), u.ID, u.TenantID, newKey, oldKey); rerr != nil {
				s.opts.Logger.ErrorContext(ctx, "password change failed after the keys moved to the new master key, and moving them back failed too: the user's keys follow the NEW password",
					"user_id", u.ID, "error", rerr)
			}
		}
		return Tokens{}, err
	}
	u.SecurityStamp = stamp
	return s.startSession(ctx, r, u, "")
}

// Enrollment is a pending TOTP enrolment.
type Enrollment struct {
	Secret, URI string
	PNG         []byte
}

// EnrollTOTP starts TOTP enrolment after re-authentication with the password.
func (s *Service) EnrollTOTP(ctx context.Context, r Request, pw string) (Enrollment, error) {
	p := principal.FromContext(ctx)
	u, err := s.reauthenticate(ctx, r, p, pw)
	if err != nil {
		return Enrollment{}, err
	}
	if u.TOTPEnabled {
		return Enrollment{}, errs.E(errs.FailedPrecondition, "MFA is already enabled: disable it first to enrol a new authenticator")
	}
	key, err := totp.Generate(s.opts.TOTPIssuer, u.Username, s.opts.Rand)
	if err != nil {
		return Enrollment{}, errs.Wrap(errs.Internal, err, "generate TOTP secret")
	}
	sealed, err := s.box.Seal([]byte(key.Secret), totpAD(u.ID))
	if err != nil {
		return Enrollment{}, errs.Wrap(errs.Internal, err, "seal TOTP secret")
	}
	if err := s.store.SetPendingTOTP(ctx, u.ID, sealed); err != nil {
		return Enrollment{}, err
	}
	return Enrollment{Secret: key.Secret, URI: key.URI, PNG: key.PNG}, nil
}

// ConfirmTOTP enables TOTP with a first valid code and returns ten recovery codes. It ends every
// session of the user (the security stamp changes): log in again, now with the second factor.
func (s *Service) ConfirmTOTP(ctx context.Context, r Request, code string) ([]string, error) {
	p := principal.FromContext(ctx)
	u, err := s.store.GetUser(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if u.TOTPEnabled {
		return nil, errs.E(errs.FailedPrecondition, "MFA is already enabled")
	}
	if len(u.TOTPSecretSealed) == 0 {
		return nil, errs.E(errs.FailedPrecondition, "no enrolment pending: call POST /v1/auth/totp/enroll first")
	}
	secret, err := s.box.Open(u.TOTPSecretSealed, totpAD(u.ID))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "open TOTP secret")
	}
	a, err := s.try(ctx, s.totpKeys(r, u))
	if err != nil {
		return nil, err
	}
	step, err := totp.Validate(string(secret), code, s.opts.Now(), 0)
	if err != nil {
		s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.totp.enable", "", "INVALID_ARGUMENT")
		return nil, errs.E(errs.Invalid, "code: not the current code of the authenticator being enrolled")
	}
	a.ok(ctx)
	codes, hashes, err := totp.NewRecoveryCodes(10, s.opts.Rand)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "generate recovery codes")
	}
	if err := s.store.EnableTOTP(ctx, u.ID, u.TOTPSecretSealed, step, hashes, newStamp(), s.event(r, nilIfZero(u.TenantID), "user", &u.ID, "auth.totp.enable", "", "ok")); err != nil {
		return nil, err
	}
	return codes, nil
}

// DisableTOTP turns TOTP off after checking the password and a current code (or recovery code).
// It ends every session of the user.
func (s *Service) DisableTOTP(ctx context.Context, r Request, pw, code string) error {
	p := principal.FromContext(ctx)
	u, err := s.reauthenticate(ctx, r, p, pw)
	if err != nil {
		return err
	}
	if !u.TOTPEnabled {
		return errs.E(errs.FailedPrecondition, "MFA is not enabled")
	}
	if err := s.checkSecondFactor(ctx, r, u, code); err != nil {
		return err
	}
	return s.store.DisableTOTP(ctx, u.ID, newStamp(), s.event(r, nilIfZero(u.TenantID), "user", &u.ID, "auth.totp.disable", "", "ok"))
}

// AuthenticateBearer checks an access token and the state behind it: the user exists, is enabled,
// has the token's security stamp, and the session is not revoked.
func (s *Service) AuthenticateBearer(ctx context.Context, r Request, bearer string) (principal.Principal, error) {
	rejected := errs.E(errs.Unauthenticated, "access token rejected: log in or refresh")
	claims, err := s.verify(ctx, bearer, token.PurposeAccess)
	if err != nil {
		return principal.Principal{}, rejected
	}
	userID, err1 := uuid.Parse(claims.Subject)
	sessionID, err2 := uuid.Parse(claims.SessionID)
	if err1 != nil || err2 != nil {
		return principal.Principal{}, rejected
	}
	st, err := s.store.AccessState(ctx, userID, sessionID)
	if errs.Is(err, errs.NotFound) {
		return principal.Principal{}, rejected
	}
	if err != nil {
		return principal.Principal{}, err
	}
	if st.Disabled || st.SessionRevoked || st.SecurityStamp != claims.SecurityStamp {
		return principal.Principal{}, rejected
	}
	// The role is the one in force now, not the token's: a demotion takes effect at once.
	p := principal.Principal{
		Kind: principal.User, ID: userID, Role: st.Role, PlatformAdmin: claims.PlatformAdmin,
		SessionID: sessionID, RemoteAddr: r.RemoteAddr, SecurityStamp: claims.SecurityStamp,
	}
	if claims.TenantID != "" {
		if p.TenantID, err = uuid.Parse(claims.TenantID); err != nil {
			return principal.Principal{}, rejected
		}
	}
	return p, nil
}

// AuthenticateAPIKey checks a machine credential: format and checksum, then the stored hash
// (current secret, or the previous one within its overlap), expiry and revocation.
func (s *Service) AuthenticateAPIKey(ctx context.Context, r Request, keyID, secret string) (principal.Principal, error) {
	rejected := errs.E(errs.Unauthenticated, "API key rejected: check X-Api-Key and X-Api-Secret")
	if apikey.CheckFormat(secret) != nil {
		return principal.Principal{}, rejected
	}
	k, err := s.store.GetAPIKeyByKeyID(ctx, keyID)
	if errs.Is(err, errs.NotFound) {
		apikey.Verify(secret, make([]byte, 32)) // the same work as for a known key
		return principal.Principal{}, rejected
	}
	if err != nil {
		return principal.Principal{}, err
	}
	now := s.opts.Now()
	ok := apikey.Verify(secret, k.SecretHash)
	if !ok && k.PreviousSecretHash != nil && k.PreviousExpiresAt != nil && now.Before(*k.PreviousExpiresAt) {
		ok = apikey.Verify(secret, k.PreviousSecretHash)
	}
	if !ok || k.RevokedAt != nil || (k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)) {
		return principal.Principal{}, rejected
	}
	if err := s.store.TouchAPIKey(ctx, k.ID, now); err != nil {
		s.opts.Logger.WarnContext(ctx, "record API key use", "api_key_id", k.ID, "error", err)
	}
	return principal.Principal{
		Kind: principal.APIKey, ID: k.ID, TenantID: k.TenantID, Scopes: k.Scopes, RemoteAddr: r.RemoteAddr,
	}, nil
}

// startSession creates a refresh-token family and the first tokens of it, recording the client
// address and software of r.
// startSession opens a session of u; mfaTokenID is the jti of the MFA token whose second factor
// it follows, if any. Errors: CreateSession's.
func (s *Service) startSession(ctx context.Context, r Request, u postgres.User, mfaTokenID string) (Tokens, error) {
	refresh, hash, err := token.NewRefreshToken(s.opts.Rand)
	if err != nil {
		return Tokens{}, errs.Wrap(errs.Internal, err, "generate refresh token")
	}
	sess, err := s.store.CreateSession(ctx, u.ID, u.SecurityStamp, hash, s.opts.Now().Add(min(s.opts.RefreshTTL, s.opts.SessionTTL)),
		postgres.SessionOrigin{RemoteAddr: r.host(), UserAgent: r.UserAgent, MFATokenID: mfaTokenID})
	if err != nil {
		return Tokens{}, err
	}
	access, expires, err := s.issueAccess(u, sess.ID)
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{AccessToken: access, RefreshToken: refresh, ExpiresIn: expires}, nil
}

func (s *Service) issueAccess(u postgres.User, sessionID uuid.UUID) (string, time.Duration, error) {
	c := token.Claims{
		Subject:       u.ID.String(),
		Role:          u.Role,
		PlatformAdmin: u.PlatformAdmin,
		SecurityStamp: u.SecurityStamp,
		SessionID:     sessionID.String(),
	}
	if u.TenantID != uuid.Nil {
		c.TenantID = u.TenantID.String()
	}
	t, exp, err := s.issuer.Issue(c)
	if err != nil {
		return "", 0, errs.Wrap(errs.Internal, err, "issue access token")
	}
	return t, exp, nil
}

// reauthenticate checks the caller's password again before a sensitive change, under the login
// throttle of their account.
func (s *Service) reauthenticate(ctx context.Context, r Request, p principal.Principal, pw string) (postgres.User, error) {
	if !p.Human() {
		return postgres.User{}, errs.E(errs.PermissionDenied, "only people have passwords")
	}
	u, err := s.store.GetUser(ctx, p.ID)
	if err != nil {
		return postgres.User{}, err
	}
	a, err := s.try(ctx, s.loginKeys(r, normalize(u.Username)))
	if err != nil {
		return postgres.User{}, err
	}
	var ok bool
	if serr := s.withHashSlot(ctx, func() { ok, _, err = password.Verify(pw, u.PasswordHash, s.opts.Password) }); serr != nil {
		a.void(ctx)
		return postgres.User{}, serr
	}
	if err != nil || !ok {
		s.audit(ctx, r, nilIfZero(u.TenantID), "user", &u.ID, "auth.reauth", "", "UNAUTHENTICATED")
		return postgres.User{}, errs.E(errs.Unauthenticated, "password rejected")
	}
	a.ok(ctx)
	return u, nil
}

func (s *Service) hintAllowed(ctx context.Context, u postgres.User, hint string) error {
	if u.PlatformAdmin {
		return errs.E(errs.Invalid, "passwordHint: the platform admin cannot set a hint")
	}
	t, err := s.store.GetTenant(ctx, u.TenantID)
	if err != nil {
		return err
	}
	if !t.PasswordHintsEnabled {
		return errs.E(errs.Invalid, "passwordHint: this tenant has switched password hints off")
	}
	return ValidateHint(hint)
}

// ValidateHint checks a password hint: at most 200 characters, no control characters.
func ValidateHint(h string) error {
	if len([]rune(h)) > 200 {
		return errs.E(errs.Invalid, "passwordHint: at most 200 characters")
	}
	for _, c := range h {
		if c < 0x20 || c == 0x7f {
			return errs.E(errs.Invalid, "passwordHint: control characters are not allowed")
		}
	}
	return nil
}

// throttleKey is one counter a credential attempt is throttled by.
type throttleKey struct {
	scope, key string
	limits     Limits
}

func (s *Service) loginKeys(r Request, account string) [2]throttleKey {
	return [2]throttleKey{{"login:account", account, s.opts.LoginAccount}, {"login:address", r.throttleAddr(), s.opts.LoginAddress}}
}

func (s *Service) totpKeys(r Request, u postgres.User) [2]throttleKey {
	return [2]throttleKey{{"totp:account", u.ID.String(), s.opts.TOTPAccount}, {"totp:address", r.throttleAddr(), s.opts.TOTPAddress}}
}

// attempt is one try of a credential, counted against an account and a client address before
// the credential is checked (see try). A wrong credential leaves it counted; ok and void give it
// back.
type attempt struct {
	s    *Service
	keys [2]throttleKey
}

// try counts an attempt against both keys before the credential is checked, so that requests
// sent together cannot all be checked before the first failure counts: at most the limit is ever
// checked per window. Errors: ResourceExhausted while either key is locked out (nothing stays
// counted); what the store answers when it cannot count (a login is not checked uncounted).
func (s *Service) try(ctx context.Context, keys [2]throttleKey) (*attempt, error) {
	if _, err := s.take(ctx, keys[0]); err != nil {
		return nil, err
	}
	if _, err := s.take(ctx, keys[1]); err != nil {
		s.refund(ctx, keys[0])
		return nil, err
	}
	return &attempt{s: s, keys: keys}, nil
}

// ok records a right credential: the account's count is forgotten (as after every success), the
// address's attempt given back.
func (a *attempt) ok(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.s.store.ThrottleReset(ctx, a.keys[0].scope, a.keys[0].key); err != nil {
		a.s.opts.Logger.WarnContext(ctx, "reset throttle", "scope", a.keys[0].scope, "error", err)
	}
	a.s.refund(ctx, a.keys[1])
}

// void gives the attempt back to both keys: the credential could not be checked.
func (a *attempt) void(ctx context.Context) {
	a.s.refund(ctx, a.keys[0])
	a.s.refund(ctx, a.keys[1])
}

// take counts an attempt against k. Errors: ResourceExhausted while k is locked out.
func (s *Service) take(ctx context.Context, k throttleKey) (time.Time, error) {
	now := s.opts.Now()
	until, err := s.store.ThrottleTake(ctx, k.scope, k.key, now, k.limits.Limit, k.limits.Window, k.limits.Lockout)
	if err != nil {
		return time.Time{}, err
	}
	if !until.IsZero() {
		return until, throttledError(until, now)
	}
	return time.Time{}, nil
}

// refund gives an attempt back to k. Errors are logged: the attempt then counts as a failure,
// which errs on the safe side.
func (s *Service) refund(ctx context.Context, k throttleKey) {
	// Even when the request is cancelled: a success must not count as a failure.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.store.ThrottleRefund(ctx, k.scope, k.key, k.limits.Limit); err != nil {
		s.opts.Logger.WarnContext(ctx, "give back a throttled attempt", "scope", k.scope, "error", err)
	}
}

func throttledError(until, now time.Time) error {
	secs := int(until.Sub(now).Seconds()) + 1
	return errs.E(errs.ResourceExhausted, "too many failed attempts: try again in %d seconds", secs)
}

func (s *Service) event(r Request, tenantID *uuid.UUID, actorType string, actorID *uuid.UUID, action, target, outcome string) postgres.AuditEvent {
	return postgres.AuditEvent{
		TenantID: tenantID, ActorType: actorType, ActorID: actorID, Action: action, Target: target,
		Outcome: outcome, RemoteAddr: r.host(), RequestID: r.RequestID,
	}
}

func (s *Service) audit(ctx context.Context, r Request, tenantID *uuid.UUID, actorType string, actorID *uuid.UUID, action, target, outcome string) {
	if err := s.store.InsertAudit(ctx, s.event(r, tenantID, actorType, actorID, action, target, outcome)); err != nil {
		s.opts.Logger.WarnContext(ctx, "write audit event", "action", action, "error", err)
	}
}

// normalize is how usernames are compared: case-insensitively, without surrounding space.
func normalize(username string) string { return strings.ToLower(strings.TrimSpace(username)) }

func nilIfZero(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

func newStamp() string { return uuid.NewString() }

func totpAD(userID uuid.UUID) []byte { return postgres.TOTPSecretAD(userID) }
