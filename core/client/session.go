package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
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
	// URL is the base URL of the core that issued the tokens, and GRPC its gRPC address when the
	// login went over gRPC (WithGRPC). A Client never sends the tokens to another core: Session
	// fails with ErrOtherServer. Both are empty in sessions saved by older clients, which are
	// sent wherever the Client points.
	URL  string `json:"url,omitempty"`
	GRPC string `json:"grpc,omitempty"`
}

// LoggedIn reports whether s holds tokens.
func (s Session) LoggedIn() bool { return s.AccessToken != "" }

// String returns a description without the tokens.
func (s Session) String() string {
	return fmt.Sprintf("client.Session{Username: %q, TenantID: %q, ZeroKnowledge: %v, Expiry: %s, URL: %q, GRPC: %q, tokens: [redacted]}",
		s.Username, s.TenantID, s.ZeroKnowledge, s.Expiry.Format(time.RFC3339), s.URL, s.GRPC)
}

// server names the core of s, for errors.
func (s Session) server() string {
	if s.GRPC != "" {
		return s.URL + " (gRPC " + s.GRPC + ")"
	}
	return s.URL
}

// TokenStore keeps a Session between Clients (between processes, for a CLI). Load returns the
// zero Session when there is none; Save of the zero Session forgets it. Implementations must keep
// tokens where only their owner can read them (a 0600 file, a keychain).
type TokenStore interface {
	Load(ctx context.Context) (Session, error)
	Save(ctx context.Context, s Session) error
}

// TokenLocker is implemented by TokenStores shared between Clients or processes: a token refresh
// holds the lock from reading the session to saving the new one, so that two Clients never
// present the same refresh token (which would revoke the whole session as a suspected theft).
// LockTokens waits for the lock until ctx ends (then it fails with ctx's error).
type TokenLocker interface {
	LockTokens(ctx context.Context) (unlock func(), err error)
}

// MemoryTokenStore keeps the session in memory: the default. One MemoryTokenStore may be shared
// by several Clients of one process (WithTokenStore): it is a TokenLocker. The zero value is
// ready to use.
type MemoryTokenStore struct {
	mu   sync.Mutex
	s    Session
	lock chan struct{} // holds a value while a refresh is under way; made on first use
}

var (
	_ TokenStore  = (*MemoryTokenStore)(nil)
	_ TokenLocker = (*MemoryTokenStore)(nil)
)

// LockTokens waits until no other Client sharing m refreshes, or until ctx ends (ctx's error).
// unlock may be called more than once.
func (m *MemoryTokenStore) LockTokens(ctx context.Context) (unlock func(), err error) {
	m.mu.Lock()
	if m.lock == nil {
		m.lock = make(chan struct{}, 1)
	}
	lock := m.lock
	m.mu.Unlock()
	select {
	case lock <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-lock }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

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

// refreshTimeout bounds a refresh, which runs on even when the caller's context ends (see
// refresh).
const refreshTimeout = 20 * time.Second

// Session returns the current session, read from the token store on first use. It fails if the
// store does, or with ErrOtherServer when the session was opened at another core than this
// Client's (see Session.URL).
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
	if err := c.owns(c.session); err != nil {
		return Session{}, err
	}
	return c.session, nil
}

// owns returns nil if s may be sent to this Client's core: it was opened there (the same base URL
// and, over gRPC, the same gRPC address), or over REST at a base URL on the host of this Client's
// gRPC address. A session without a URL (saved by an older client) is taken as it is.
func (c *Client) owns(s Session) error {
	if !s.LoggedIn() || s.URL == "" {
		return nil
	}
	if sameBaseURL(s.URL, c.base) && (c.grpc == "" || c.grpc == s.GRPC || (s.GRPC == "" && sameHost(c.grpc, c.base))) {
		return nil
	}
	here := c.base.String()
	if c.grpc != "" {
		here += " (gRPC " + c.grpc + ")"
	}
	return fmt.Errorf("%w: it was opened at %s, and this client talks to %s", ErrOtherServer, s.server(), here)
}

// sameBaseURL reports whether raw names the core at u: the same scheme, host and port (443 when
// absent) and path, ignoring case in the host and a trailing slash.
func sameBaseURL(raw string, u *url.URL) bool {
	v, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return strings.EqualFold(v.Scheme, u.Scheme) && strings.EqualFold(hostPort(v), hostPort(u)) &&
		strings.TrimSuffix(v.EscapedPath(), "/") == strings.TrimSuffix(u.EscapedPath(), "/")
}

func hostPort(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// sameHost reports whether the gRPC address addr (host:port) is on the host of u.
func sameHost(addr string, u *url.URL) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && strings.EqualFold(host, u.Hostname())
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

// lockStore takes the token store's lock when it is a TokenLocker; unlock does nothing otherwise.
// It fails when the lock cannot be taken before ctx ends.
func (c *Client) lockStore(ctx context.Context) (unlock func(), err error) {
	l, ok := c.store.(TokenLocker)
	if !ok {
		return func() {}, nil
	}
	if unlock, err = l.LockTokens(ctx); err != nil {
		return nil, fmt.Errorf("lock the session: %w", err)
	}
	return unlock, nil
}

// saveNewSession saves a session core has just issued (a login, a password change) under the
// token store's lock, so that a refresh of the session it replaces, under way in another Client or
// process, cannot save that one over it afterwards. Core has issued the tokens already, so the
// save goes on when ctx ends meanwhile, bounded by refreshTimeout, as a refresh's does.
func (c *Client) saveNewSession(ctx context.Context, s Session) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	unlock, err := c.lockStore(sctx)
	if err != nil {
		return err
	}
	defer unlock()
	return c.setSession(sctx, s)
}

var refreshCall = call{method: corev1.AuthService_Refresh_FullMethodName, verb: "POST", path: "/v1/auth/refresh", body: true}

// refresh exchanges the refresh token for new tokens, unless the access token is no longer stale
// (another goroutine or process refreshed already). Refresh tokens are single-use: the new one
// replaces the old in the store at once.
//
// Once the refresh token is sent, the exchange is not cut short by ctx (Ctrl-C, a deadline):
// core may already have rotated the token, and an answer dropped on the way would leave the spent
// token in the store, whose next use revokes the whole session. It runs to its end, bounded by
// refreshTimeout, the answer is stored, and then the caller's cancellation is returned.
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
		if err := c.owns(stored); err != nil {
			return err
		}
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
	if err := ctxErr(ctx); err != nil {
		return err // nothing sent yet
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(c.timeout, refreshTimeout))
	defer cancel()
	resp := &corev1.RefreshResponse{}
	err = c.send(sctx, refreshCall, nil, &corev1.RefreshRequest{RefreshToken: s.RefreshToken}, resp)
	switch {
	case errors.Is(err, ErrUnauthenticated):
		s.AccessToken, s.RefreshToken, s.Expiry = "", "", time.Time{}
		_ = c.setSession(sctx, s)
		return fmt.Errorf("%w (%w)", ErrSessionExpired, err)
	case err != nil:
		if perr := ctxErr(ctx); perr != nil {
			return perr
		}
		return err
	}
	s.AccessToken, s.RefreshToken = resp.GetAccessToken(), resp.GetRefreshToken()
	s.Expiry = c.expiry(resp.GetExpiresIn())
	if err := c.setSession(sctx, s); err != nil {
		return err
	}
	return ctxErr(ctx)
}

func (c *Client) expiry(expiresIn int32) time.Time {
	if expiresIn <= 0 {
		return time.Time{}
	}
	return c.now().Add(time.Duration(expiresIn) * time.Second)
}
