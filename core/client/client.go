// Package client is the Go SDK of Custos core: it logs people in with the zero-knowledge key
// derivation of the platform (prelogin, Argon2id, HKDF, refusing downgraded parameters), answers
// TOTP challenges, refreshes tokens, keeps a zero-knowledge user's master key in memory only and
// sends it as X-Master-Key where a call needs it, and wraps the REST API (or, with [WithGRPC], the
// gRPC API) of items, export and import, key rotation jobs, tenants, users, API keys and the audit
// trail.
//
// A person logs in with [Client.Login]; a machine is given its API key with [WithAPIKey] and needs
// no login. Every method that talks to core returns a *[Error] when core answered with an error,
// so callers can branch on [Error.Code] (or with errors.Is on the sentinels such as [ErrNotFound]);
// other failures (network, a malformed answer, a refused derivation) are plain errors wrapping
// their cause and, where one applies, one of this package's sentinel errors. Input core would
// refuse anyway is refused before anything is sent, with the INVALID_ARGUMENT *[Error] core
// would answer over either transport: an id that is not a UUID (a method's id argument is never
// spliced into a REST path as it is), text that is not UTF-8.
//
// Credentials go only where they belong: the Client never follows an HTTP redirect
// ([ErrRedirect]), and never sends a stored session to another core than the one it was opened
// at ([ErrOtherServer]).
//
// A Client is safe for concurrent use.
package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Client talks to one Custos core. Create it with [New]; call [Client.Close] when done.
type Client struct {
	base    *url.URL
	http    *http.Client
	conn    *grpc.ClientConn // set with WithGRPC: every call goes over gRPC
	store   TokenStore
	apiKey  string
	apiSec  string
	now     func() time.Time
	timeout time.Duration
	agent   string // User-Agent
	grpc    string // the gRPC address of WithGRPC, if any

	mu        sync.Mutex
	loaded    bool    // session has been read from store
	session   Session // the person's tokens and what Login learnt about them
	masterKey string  // zero-knowledge master key (base64), memory only

	refreshMu sync.Mutex
}

type options struct {
	tlsConfig  *tls.Config
	caFile     string
	httpClient *http.Client
	grpcAddr   string
	store      TokenStore
	apiKey     string
	apiSecret  string
	timeout    time.Duration
	agent      string
}

// Option configures a Client in [New].
type Option func(*options) error

// WithCAFile trusts the PEM certificates in path (besides none other) for core's certificate, as
// for a private CA such as the one `make run` creates.
func WithCAFile(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("WithCAFile: empty path")
		}
		o.caFile = path
		return nil
	}
}

// WithTLSConfig uses cfg (cloned) for TLS. Its MinVersion is raised to TLS 1.3 if lower: core
// speaks nothing older.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) error {
		if cfg == nil {
			return errors.New("WithTLSConfig: nil config")
		}
		o.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithHTTPClient sends REST calls through a copy of hc (hc itself is not changed). If its
// Transport is an *http.Transport, a clone of it is used with TLS 1.3 as the minimum (and
// WithCAFile's or WithTLSConfig's settings, if given); any other RoundTripper is used as it is.
// The copy never follows redirects, whatever hc.CheckRedirect says: see [ErrRedirect].
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error {
		if hc == nil {
			return errors.New("WithHTTPClient: nil client")
		}
		o.httpClient = hc
		return nil
	}
}

// WithTimeout bounds each unary call (default 60 seconds; exports, imports and WaitJob are
// bounded only by their context). A call core does not answer in time gets an *Error
// DEADLINE_EXCEEDED ([ErrDeadlineExceeded]), over REST and gRPC alike.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return errors.New("WithTimeout: want a positive duration")
		}
		o.timeout = d
		return nil
	}
}

// WithAPIKey authenticates every call with a machine credential (X-Api-Key, X-Api-Secret)
// instead of a person's session. Machines never log in and never touch the vault's plaintext.
func WithAPIKey(key, secret string) Option {
	return func(o *options) error {
		if key == "" || secret == "" {
			return errors.New("WithAPIKey: key and secret are both required")
		}
		o.apiKey, o.apiSecret = key, secret
		return nil
	}
}

// WithTokenStore keeps the session (access and refresh tokens, never the master key) in s, so
// that another Client (another process) can carry on without logging in again. The default is
// an in-memory store of this Client's own.
//
// A store shared by several Clients or processes must implement [TokenLocker] (as
// [MemoryTokenStore] does): refresh tokens are single-use, and two Clients refreshing at once with
// the same one make core revoke the whole session as a suspected theft.
func WithTokenStore(s TokenStore) Option {
	return func(o *options) error {
		if s == nil {
			return errors.New("WithTokenStore: nil store")
		}
		o.store = s
		return nil
	}
}

// DefaultUserAgent names this SDK to core, which records it with each login's session (people see
// it in their session list).
const DefaultUserAgent = "custos-go-client"

// WithUserAgent names the software using the client, e.g. "backup-tool/2.1"; core records it with
// each login's session (GET /v1/auth/sessions). Printable ASCII only. Default DefaultUserAgent.
func WithUserAgent(ua string) Option {
	return func(o *options) error {
		if ua == "" || len(ua) > 200 || strings.ContainsFunc(ua, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			return errors.New("WithUserAgent: want 1 to 200 printable ASCII characters")
		}
		o.agent = ua
		return nil
	}
}

// WithGRPC sends every call over core's gRPC API at addr (host:port) instead of REST, with the
// same TLS settings. baseURL then names the server in errors and in the sessions of Login (see
// Session.URL).
func WithGRPC(addr string) Option {
	return func(o *options) error {
		if addr == "" {
			return errors.New("WithGRPC: empty address")
		}
		o.grpcAddr = addr
		return nil
	}
}

const defaultTimeout = 60 * time.Second

// New returns a Client for core at baseURL (https://host:port, optionally with a path prefix).
// It fails when baseURL is not an https URL, an option is invalid or the CA file cannot be read;
// it does not contact the server.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want https://host:port", baseURL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("client: base URL %q: core serves TLS 1.3 only; use https://", baseURL)
	}
	o := options{timeout: defaultTimeout, agent: DefaultUserAgent}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	tlsCfg, err := o.tls()
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, store: o.store, apiKey: o.apiKey, apiSec: o.apiSecret, now: time.Now, timeout: o.timeout, agent: o.agent, grpc: o.grpcAddr}
	if c.store == nil {
		c.store = &MemoryTokenStore{}
	}
	c.http = o.buildHTTP(tlsCfg)
	if o.grpcAddr != "" {
		// Answers are bounded as over REST (maxAnswerBytes), not by gRPC's default of 4 MiB.
		conn, err := grpc.NewClient(o.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithUserAgent(o.agent),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAnswerBytes)))
		if err != nil {
			return nil, fmt.Errorf("client: gRPC %s: %w", o.grpcAddr, err)
		}
		c.conn = conn
	}
	return c, nil
}

func (o *options) tls() (*tls.Config, error) {
	cfg := o.tlsConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// buildHTTP returns the REST client: a copy of WithHTTPClient's (never the caller's own) or a new
// one, that never follows a redirect.
func (o *options) buildHTTP(tlsCfg *tls.Config) *http.Client {
	if o.httpClient != nil {
		hc := *o.httpClient
		hc.CheckRedirect = noRedirects
		if t, ok := hc.Transport.(*http.Transport); ok {
			t = t.Clone()
			if t.TLSClientConfig == nil || o.tlsConfig != nil || o.caFile != "" {
				t.TLSClientConfig = tlsCfg
			} else if t.TLSClientConfig.MinVersion < tls.VersionTLS13 {
				t.TLSClientConfig = t.TLSClientConfig.Clone()
				t.TLSClientConfig.MinVersion = tls.VersionTLS13
			}
			hc.Transport = t
		} else if hc.Transport == nil {
			hc.Transport = newTransport(tlsCfg)
		}
		return &hc
	}
	return &http.Client{Transport: newTransport(tlsCfg), CheckRedirect: noRedirects}
}

// noRedirects makes the http.Client hand back a redirect instead of following it: Go would send
// Authorization, X-Api-Secret and X-Master-Key along (even to plain http), and the login's body
// again on a 307 or 308. do turns the answer into ErrRedirect.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func newTransport(cfg *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.ForceAttemptHTTP2 = true
	return t
}

// Close releases the gRPC connection, if any. The session stays in the token store.
func (c *Client) Close() error {
	c.mu.Lock()
	c.masterKey = ""
	c.mu.Unlock()
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

// BaseURL returns the base URL the Client was created with.
func (c *Client) BaseURL() string { return c.base.String() }
