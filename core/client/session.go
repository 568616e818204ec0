package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// Session is what a login yields and a TokenStore keeps: the tokens, and what the client learnt
// about the person at login. It never holds the password or the master key.
type Session struct {
	AccessToken  string    `json:"accessToken"`
	RefreshToken string    `json:"refreshToken"`
	Expiry       time.Time `json:"expiry"` // of the access token
	Username     string    `json:"username"`
	TenantID     string    `json:"tenantId,omitempty"`
	// ZeroKnowledge is true in CLIENT tenants: vault calls carry X-Master-Key.
	ZeroKnowledge bool `json:"zeroKnowledge,omitempty"`
	// PlainPassword is true for a session of the platform admin, whose password core set from its
	// configuration without the client derivation (see LoginPlatformAdmin): re-authentication
	// (TOTP, password change) sends it as it is.
	PlainPassword bool `json:"plainPassword,omitempty"`
}

// LoggedIn reports whether s holds tokens.
func (s Session) LoggedIn() bool { return s.AccessToken != "" }

// String returns a description without the tokens.
func (s Session) String() string {
	return fmt.Sprintf("client.Session{Username: %q, TenantID: %q, ZeroKnowledge: %v, Expiry: %s, tokens: [redacted]}",
		s.Username, s.TenantID, s.ZeroKnowledge, s.Expiry.Format(time.RFC3339))
}

// TokenStore keeps a Session between Clients (between processes, for a CLI). Load returns the
// zero Session when there is none; Save of the zero Session forgets it. Implementations must keep
// tokens where only their owner can read them (a 0600 file, a keychain).
type TokenStore interface {
	Load(ctx context.Context) (Session, error)
	Save(ctx context.Context, s Session) error
}

// TokenLocker is implemented by TokenStores shared between processes: a token refresh holds the
// lock from reading the session to saving the new one, so that two processes never present the
// same refresh token (which would revoke the whole session as a suspected theft).
type TokenLocker interface {
	LockTokens(ctx context.Context) (unlock func(), err error)
}

// MemoryTokenStore keeps the session in memory: the default.
type MemoryTokenStore struct {
	mu sync.Mutex
	s  Session
}

var _ TokenStore = (*MemoryTokenStore)(nil)

// Load returns the stored session. It never fails.
func (m *MemoryTokenStore) Load(context.Context) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s, nil
}

// Save stores s. It never fails.
func (m *MemoryTokenStore) Save(_ context.Context, s Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
	return nil
}

// refreshMargin: an access token this close to its expiry is refreshed before use.
const refreshMargin = 30 * time.Second

// Session returns the current session, read from the token store on first use. It fails only if
// the store does.
func (c *Client) Session(ctx context.Context) (Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		s, err := c.store.Load(ctx)
		if err != nil {
			return Session{}, fmt.Errorf("load the session: %w", err)
		}
		c.session, c.loaded = s, true
	}
	return c.session, nil
}

// liveSession returns a session whose access token is not about to expire, refreshing it if
// needed; ErrNotLoggedIn when there is none.
func (c *Client) liveSession(ctx context.Context) (Session, error) {
	s, err := c.Session(ctx)
	if err != nil {
		return Session{}, err
	}
	if !s.LoggedIn() {
		return Session{}, ErrNotLoggedIn
	}
	if !s.Expiry.IsZero() && c.now().Add(refreshMargin).After(s.Expiry) && s.RefreshToken != "" {
		if err := c.refresh(ctx, s.AccessToken); err != nil {
			return Session{}, err
		}
		return c.Session(ctx)
	}
	return s, nil
}

// setSession replaces the session in memory and in the store.
func (c *Client) setSession(ctx context.Context, s Session) error {
	c.mu.Lock()
	c.session, c.loaded = s, true
	c.mu.Unlock()
	if err := c.store.Save(ctx, s); err != nil {
		return fmt.Errorf("save the session: %w", err)
	}
	return nil
}

var refreshCall = call{method: corev1.AuthService_Refresh_FullMethodName, verb: "POST", path: "/v1/auth/refresh", body: true}

// refresh exchanges the refresh token for new tokens, unless the access token is no longer stale
// (another goroutine or process refreshed already). Refresh tokens are single-use: the new one
// replaces the old in the store at once.
func (c *Client) refresh(ctx context.Context, stale string) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if l, ok := c.store.(TokenLocker); ok {
		unlock, err := l.LockTokens(ctx)
		if err != nil {
			return fmt.Errorf("lock the session: %w", err)
		}
		defer unlock()
	}
	stored, err := c.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("load the session: %w", err)
	}
	if stored.LoggedIn() && stored.AccessToken != stale {
		c.mu.Lock()
		c.session, c.loaded = stored, true
		c.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s.AccessToken != stale && s.LoggedIn() {
		return nil
	}
	if s.RefreshToken == "" {
		return ErrSessionExpired
	}
	resp := &corev1.RefreshResponse{}
	if err := c.send(ctx, refreshCall, nil, &corev1.RefreshRequest{RefreshToken: s.RefreshToken}, resp); err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			s.AccessToken, s.RefreshToken, s.Expiry = "", "", time.Time{}
			_ = c.setSession(ctx, s)
			return fmt.Errorf("%w (%w)", ErrSessionExpired, err)
		}
		return err
	}
	s.AccessToken, s.RefreshToken = resp.GetAccessToken(), resp.GetRefreshToken()
	s.Expiry = c.expiry(resp.GetExpiresIn())
	return c.setSession(ctx, s)
}

func (c *Client) expiry(expiresIn int32) time.Time {
	if expiresIn <= 0 {
		return time.Time{}
	}
	return c.now().Add(time.Duration(expiresIn) * time.Second)
}
