package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custos-platform/custos/core/internal/password"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// TOTPFunc is asked for a TOTP code (or a recovery code) when a login needs one: a prompt, an
// environment variable, an authenticator library.
type TOTPFunc func(ctx context.Context) (string, error)

// Me describes the caller, as GET /v1/me answers, and for people the key mode of their tenant.
type Me struct {
	PrincipalType string   `json:"principalType"` // "user" or "apikey"
	PrincipalID   string   `json:"principalId"`
	Username      string   `json:"username,omitempty"`
	TenantID      string   `json:"tenantId,omitempty"`
	Role          string   `json:"role,omitempty"`
	PlatformAdmin bool     `json:"platformAdmin,omitempty"`
	Scopes        []string `json:"scopes,omitempty"`
	MFAEnabled    bool     `json:"mfaEnabled"`
	KeyMode       string   `json:"keyMode,omitempty"` // PLATFORM or CLIENT; filled by Login, empty otherwise
}

var (
	loginCall  = call{method: corev1.AuthService_Login_FullMethodName, verb: "POST", path: "/v1/auth/login", body: true}
	verifyCall = call{method: corev1.AuthService_VerifyMfa_FullMethodName, verb: "POST", path: "/v1/auth/mfa/verify", body: true}
	logoutCall = call{method: corev1.AuthService_Logout_FullMethodName, verb: "POST", path: "/v1/auth/logout", body: true}
	meCall     = call{method: corev1.AuthService_GetCurrentUser_FullMethodName, verb: "GET", path: "/v1/me", auth: true}
	hintCall   = call{method: corev1.AuthService_GetPasswordHint_FullMethodName, verb: "POST", path: "/v1/auth/hint", body: true}
	// These four re-authenticate (the password, a code, or both): reauth, never sent twice.
	enrollCall   = call{method: corev1.AuthService_EnrollTotp_FullMethodName, verb: "POST", path: "/v1/auth/totp/enroll", body: true, auth: true, reauth: true}
	confirmCall  = call{method: corev1.AuthService_ConfirmTotp_FullMethodName, verb: "POST", path: "/v1/auth/totp/confirm", body: true, auth: true, reauth: true}
	disableTOTP  = call{method: corev1.AuthService_DisableTotp_FullMethodName, verb: "POST", path: "/v1/auth/totp/disable", body: true, auth: true, reauth: true}
	passwordCall = call{method: corev1.AuthService_ChangePassword_FullMethodName, verb: "POST", path: "/v1/auth/password", body: true, auth: true, reauth: true}
)

// Login logs a person in: Prelogin, DeriveSecrets (refusing downgraded parameters with
// ErrKDFDowngrade), the login itself with the derived password, and, when the account has TOTP on,
// a code from totp (ErrMFARequired if totp is nil). It then learns the tenant's key mode and, in a
// zero-knowledge tenant, keeps the master key in this Client's memory (never in the token store).
// The session is saved in the token store, naming this Client's core (Session.URL), and replaces
// whatever session the store held. Wrong credentials get an *Error with Code UNAUTHENTICATED,
// the same whether or not the user exists; a lockout RESOURCE_EXHAUSTED.
func (c *Client) Login(ctx context.Context, username, pw string, totp TOTPFunc) (Me, error) {
	s, err := c.Derive(ctx, username, pw)
	if err != nil {
		return Me{}, err
	}
	return c.login(ctx, username, s.AuthPassword, s.MasterKey, false, totp)
}

// LoginPlatformAdmin logs in the platform admin, whose password core sets at its first start
// from CORE_ADMIN_PASSWORD as it is, without the client derivation: it is sent as it is (over
// TLS), and the session remembers to do the same when re-authenticating. The platform admin
// belongs to no tenant and has no vault, so no master key is involved. Errors are Login's.
func (c *Client) LoginPlatformAdmin(ctx context.Context, username, pw string, totp TOTPFunc) (Me, error) {
	return c.login(ctx, username, pw, "", true, totp)
}

func (c *Client) login(ctx context.Context, username, sent, masterKey string, plain bool, totp TOTPFunc) (Me, error) {
	resp := &corev1.LoginResponse{}
	if err := c.invoke(ctx, loginCall, &corev1.LoginRequest{Username: username, Password: sent}, resp); err != nil {
		return Me{}, err
	}
	access, refresh, expires := resp.GetAccessToken(), resp.GetRefreshToken(), resp.GetExpiresIn()
	if resp.GetMfaRequired() {
		if totp == nil {
			return Me{}, ErrMFARequired
		}
		code, err := totp(ctx)
		if err != nil {
			return Me{}, fmt.Errorf("TOTP code: %w", err)
		}
		v := &corev1.VerifyMfaResponse{}
		if err := c.invoke(ctx, verifyCall, &corev1.VerifyMfaRequest{MfaToken: resp.GetMfaToken(), Code: code}, v); err != nil {
			return Me{}, err
		}
		access, refresh, expires = v.GetAccessToken(), v.GetRefreshToken(), v.GetExpiresIn()
	}
	s := Session{AccessToken: access, RefreshToken: refresh, Expiry: c.expiry(expires), Username: username, PlainPassword: plain,
		URL: c.base.String(), GRPC: c.grpc}
	c.mu.Lock()
	c.session, c.loaded, c.masterKey = s, true, ""
	c.mu.Unlock()
	me, err := c.Me(ctx)
	if err != nil {
		return Me{}, fmt.Errorf("logged in, but GET /v1/me failed: %w", err)
	}
	// The calls above may have refreshed the tokens: carry on from the current session.
	if s, err = c.Session(ctx); err != nil {
		return Me{}, err
	}
	s.Username, s.TenantID, s.PlainPassword = me.Username, me.TenantID, plain
	if me.TenantID != "" {
		t, err := c.GetTenant(ctx, me.TenantID)
		if err != nil {
			return Me{}, fmt.Errorf("logged in, but reading the tenant's key mode failed: %w", err)
		}
		me.KeyMode = t.KeyMode
		if s, err = c.Session(ctx); err != nil {
			return Me{}, err
		}
		s.Username, s.TenantID, s.PlainPassword = me.Username, me.TenantID, plain
		s.ZeroKnowledge = t.KeyMode == "CLIENT"
	}
	if s.ZeroKnowledge {
		c.mu.Lock()
		c.masterKey = masterKey
		c.mu.Unlock()
	}
	if err := c.saveNewSession(ctx, s); err != nil {
		return Me{}, err
	}
	return me, nil
}

// Unlock derives the master key of the logged-in person from their password and keeps it in
// memory, for a Client that resumed a session from its token store (each run of a CLI). In a
// tenant that is not zero-knowledge it does nothing. A wrong password is not detected here: vault
// calls then fail with PERMISSION_DENIED. It fails with ErrNotLoggedIn without a session, or with
// Derive's errors.
func (c *Client) Unlock(ctx context.Context, pw string) error {
	s, err := c.Session(ctx)
	if err != nil {
		return err
	}
	if !s.LoggedIn() {
		return ErrNotLoggedIn
	}
	if !s.ZeroKnowledge {
		return nil
	}
	secrets, err := c.Derive(ctx, s.Username, pw)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.masterKey = secrets.MasterKey
	c.mu.Unlock()
	return nil
}

// Locked reports whether vault calls need Unlock first: the tenant is zero-knowledge and this
// Client holds no master key (a machine's never does). It fails as Session does.
func (c *Client) Locked(ctx context.Context) (bool, error) {
	if c.apiKey != "" {
		return false, nil
	}
	s, err := c.Session(ctx)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.ZeroKnowledge && c.masterKey == "", nil
}

// Logout ends the session on core (with allSessions, every session of the person) and forgets
// it, and the master key, locally. If core cannot be reached the session is forgotten locally all
// the same and the error returned. A session of another core (ErrOtherServer) is neither sent nor
// forgotten.
//
// A session that has already ended (expired, revoked) is forgotten, and for a logout of that
// session alone that is all there is to do: nil. A logout of every session, though, needs a live
// session to prove who asks: from an ended one core ends nothing, and Logout returns an *Error
// UNAUTHENTICATED saying so (the other sessions stay open: log in, then log out of every session
// again); without any session it returns ErrNotLoggedIn, for the same reason. Without a session,
// a logout of this session alone does nothing.
func (c *Client) Logout(ctx context.Context, allSessions bool) error {
	// The store's lock, and its latest tokens: a refresh under way elsewhere would otherwise
	// spend the refresh token sent here, or save the session again after it is forgotten.
	unlock, err := c.lockStore(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	c.mu.Lock()
	c.loaded = false
	c.mu.Unlock()
	s, err := c.Session(ctx)
	if err != nil {
		return err
	}
	var callErr error
	if s.RefreshToken != "" {
		callErr = c.invoke(ctx, logoutCall, &corev1.LogoutRequest{RefreshToken: s.RefreshToken, AllSessions: allSessions}, &corev1.LogoutResponse{})
		var e *Error
		switch {
		case !errors.As(callErr, &e) || e.Code != "UNAUTHENTICATED":
		case allSessions:
			callErr = &Error{HTTPStatus: e.HTTPStatus, Code: e.Code, Message: "this session had already ended (it expired or was revoked), " +
				"so no session was ended and the others stay open: log in, then log out of every session again"}
		default:
			callErr = nil // already over
		}
	} else if allSessions {
		callErr = fmt.Errorf("%w: no session was ended; log in, then log out of every session again", ErrNotLoggedIn)
	}
	c.mu.Lock()
	c.masterKey = ""
	c.mu.Unlock()
	if err := c.setSession(ctx, Session{}); err != nil {
		return err
	}
	return callErr
}

// Me describes the caller (a person's session or the API key). It fails with ErrNotLoggedIn
// without a credential, or an *Error.
func (c *Client) Me(ctx context.Context) (Me, error) {
	r := &corev1.GetCurrentUserResponse{}
	if err := c.invoke(ctx, meCall, &corev1.GetCurrentUserRequest{}, r); err != nil {
		return Me{}, err
	}
	return Me{PrincipalType: r.GetPrincipalType(), PrincipalID: r.GetPrincipalId(), Username: r.GetUsername(),
		TenantID: r.GetTenantId(), Role: r.GetRole(), PlatformAdmin: r.GetPlatformAdmin(), Scopes: r.GetScopes(),
		MFAEnabled: r.GetMfaEnabled()}, nil
}

// PasswordHint returns the hint username set, or "" (also for unknown users, and in tenants that
// switched hints off). Core limits it per client address (RESOURCE_EXHAUSTED).
func (c *Client) PasswordHint(ctx context.Context, username string) (string, error) {
	r := &corev1.GetPasswordHintResponse{}
	if err := c.invoke(ctx, hintCall, &corev1.GetPasswordHintRequest{Username: username}, r); err != nil {
		return "", err
	}
	return r.GetHint(), nil
}

// sent returns what the logged-in person sends for pw: the derived AuthPassword (and the master
// key), or pw itself for the platform admin.
func (c *Client) sent(ctx context.Context, pw string) (Session, Secrets, error) {
	s, err := c.Session(ctx)
	if err != nil {
		return Session{}, Secrets{}, err
	}
	if !s.LoggedIn() {
		return Session{}, Secrets{}, ErrNotLoggedIn
	}
	if s.PlainPassword {
		return s, Secrets{AuthPassword: pw}, nil
	}
	secrets, err := c.Derive(ctx, s.Username, pw)
	return s, secrets, err
}

// ChangePassword changes the logged-in person's password. It derives what both passwords give
// (in zero-knowledge tenants, core then moves the person's keys from the old master key to the
// new one, X-Master-Key and X-New-Master-Key; no item is re-encrypted), and keeps the new session
// and master key: every other session ends. newPassword must meet the policy (ErrWeakPassword):
// core cannot check it, it never sees it. A wrong current password gets UNAUTHENTICATED. There
// is no recovery: a forgotten password loses the data of a zero-knowledge tenant. Like every call
// that re-authenticates (EnrollTOTP, ConfirmTOTP, DisableTOTP), it is sent once: a 401 is the
// answer, not a reason to refresh the session and try again.
func (c *Client) ChangePassword(ctx context.Context, current, newPassword, newHint string) error {
	if err := password.Validate(newPassword); err != nil {
		return fmt.Errorf("%w: %w", ErrWeakPassword, err)
	}
	s, old, err := c.sent(ctx, current)
	if err != nil {
		return err
	}
	next := Secrets{AuthPassword: newPassword}
	if !s.PlainPassword {
		p, err := c.Prelogin(ctx, s.Username)
		if err != nil {
			return err
		}
		if next, err = DeriveSecrets(p, newPassword); err != nil {
			return err
		}
	}
	cl := passwordCall
	if s.ZeroKnowledge {
		cl.header = map[string]string{"X-Master-Key": old.MasterKey, "X-New-Master-Key": next.MasterKey}
	}
	r := &corev1.ChangePasswordResponse{}
	if err := c.invoke(ctx, cl, &corev1.ChangePasswordRequest{CurrentPassword: old.AuthPassword,
		NewPassword: next.AuthPassword, NewPasswordHint: newHint}, r); err != nil {
		return err
	}
	t := r.GetTokens()
	s.AccessToken, s.RefreshToken, s.Expiry = t.GetAccessToken(), t.GetRefreshToken(), c.expiry(t.GetExpiresIn())
	if s.ZeroKnowledge {
		c.mu.Lock()
		c.masterKey = next.MasterKey
		c.mu.Unlock()
	}
	return c.saveNewSession(ctx, s)
}

// TOTPEnrollment is a new TOTP secret, not yet active: confirm it with a first code.
type TOTPEnrollment struct {
	Secret string `json:"secret"` // base32
	URI    string `json:"otpauthUri"`
	QRPNG  []byte `json:"qrPng"` // the URI as a QR code
}

// EnrollTOTP starts TOTP enrolment, re-authenticating with the password (UNAUTHENTICATED if
// wrong, sent once: see ChangePassword). Confirm it with ConfirmTOTP.
func (c *Client) EnrollTOTP(ctx context.Context, pw string) (TOTPEnrollment, error) {
	_, secrets, err := c.sent(ctx, pw)
	if err != nil {
		return TOTPEnrollment{}, err
	}
	r := &corev1.EnrollTotpResponse{}
	if err := c.invoke(ctx, enrollCall, &corev1.EnrollTotpRequest{Password: secrets.AuthPassword}, r); err != nil {
		return TOTPEnrollment{}, err
	}
	return TOTPEnrollment{Secret: r.GetSecret(), URI: r.GetOtpauthUri(), QRPNG: r.GetQrPng()}, nil
}

// ConfirmTOTP turns TOTP on with a first code and returns the ten single-use recovery codes
// (shown only now). Core then ends every session of the person, this one too: the local session
// is forgotten, log in again (with a code). A wrong code gets UNAUTHENTICATED (sent once).
func (c *Client) ConfirmTOTP(ctx context.Context, code string) ([]string, error) {
	r := &corev1.ConfirmTotpResponse{}
	if err := c.invoke(ctx, confirmCall, &corev1.ConfirmTotpRequest{Code: code}, r); err != nil {
		return nil, err
	}
	return r.GetRecoveryCodes(), c.endLocalSession(ctx)
}

// DisableTOTP turns TOTP off, with the password and a current code (or a recovery code). Core
// ends every session of the person: log in again. A wrong password or code gets UNAUTHENTICATED
// (sent once).
func (c *Client) DisableTOTP(ctx context.Context, pw, code string) error {
	_, secrets, err := c.sent(ctx, pw)
	if err != nil {
		return err
	}
	if err := c.invoke(ctx, disableTOTP, &corev1.DisableTotpRequest{Password: secrets.AuthPassword, Code: code}, &corev1.DisableTotpResponse{}); err != nil {
		return err
	}
	return c.endLocalSession(ctx)
}

// endLocalSession forgets the tokens (which core no longer accepts), keeping who logged in.
func (c *Client) endLocalSession(ctx context.Context) error {
	s, err := c.Session(ctx)
	if err != nil {
		return err
	}
	s.AccessToken, s.RefreshToken, s.Expiry = "", "", time.Time{}
	c.mu.Lock()
	c.masterKey = ""
	c.mu.Unlock()
	return c.setSession(ctx, s)
}
