package esclient

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// Defaults of RouterOptions.
const (
	DefaultTimeout          = 5 * time.Second
	DefaultRetries          = 2
	DefaultBreakerFailures  = 5
	DefaultBreakerCooldown  = 5 * time.Second
	DefaultCacheTTL         = time.Minute
	DefaultMaxResponseBytes = 16 << 20
)

// TenantLookup reads a tenant with its encryption endpoint; *postgres.Store is one.
type TenantLookup interface {
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
}

var _ TenantLookup = (*postgres.Store)(nil)

// RouterOptions tune the clients a Router builds. Zero values mean the defaults.
type RouterOptions struct {
	// DialOptions are added to the connections to tenant-hosted services (tracing, client metrics).
	DialOptions []grpc.DialOption
	// Timeout bounds each attempt of a call (DefaultTimeout); the caller's context bounds the
	// whole call, retries included.
	Timeout time.Duration
	// Logger receives breaker state changes and retries; never secrets. Nil discards.
	Logger *slog.Logger
	// Retries is how many further attempts an idempotent call makes after an attempt that found
	// the service unavailable (DefaultRetries); negative means none.
	Retries int
	// BreakerFailures is how many consecutive unavailable attempts open an endpoint's circuit
	// breaker (DefaultBreakerFailures); BreakerCooldown how long it stays open before one probe
	// call may try again (DefaultBreakerCooldown).
	BreakerFailures int
	BreakerCooldown time.Duration
	// CacheTTL is how long a tenant's Client is reused before its tenant record is read again
	// (DefaultCacheTTL).
	CacheTTL time.Duration
	// MaxResponseBytes bounds an answer from a hosted service (DefaultMaxResponseBytes).
	MaxResponseBytes int64
	// RequestID returns the id of the request a call serves (server.RequestID); it is sent as
	// x-request-id (X-Request-Id over HTTPS), so that both services log the same id for it. Nil,
	// or an empty id, sends none.
	RequestID func(context.Context) string
	// ObserveHTTPS, when not nil, is called after every attempt of a call to a hosted service over
	// HTTPS with the contract's method name ("Encrypt"), the gRPC code the attempt ended with and
	// how long it took: OK; the code the service's answer names, else the one its HTTP status
	// stands for; Unavailable or DeadlineExceeded when it could not be reached in time; Internal
	// for a fault of core's side or its configuration (an untrusted certificate, a redirect, a
	// malformed answer). Core passes telemetry.Metrics.ObserveESCall with TransportHTTPS. gRPC
	// connections are measured by an interceptor in DialOptions instead.
	ObserveHTTPS func(method string, code codes.Code, elapsed time.Duration)
	// Tracing, when not nil, gives every HTTPS attempt a client span and sends its trace context
	// along as W3C traceparent and tracestate headers (*telemetry.Tracing is one). gRPC
	// connections get theirs from DialOptions instead.
	Tracing HTTPSTracing
}

// HTTPSTracing is what the HTTPS client needs of tracing.
type HTTPSTracing interface {
	// Tracer returns the tracer of the client spans.
	Tracer(name string) trace.Tracer
	// Propagator returns the propagator that writes the trace context into the request headers.
	Propagator() propagation.TextMapPropagator
}

func (o RouterOptions) withDefaults() RouterOptions {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = DefaultBreakerFailures
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = DefaultBreakerCooldown
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	return o
}

// Router gives each tenant the Client of its encryption service: the platform's, over the gRPC
// connection it was given, or the tenant's hosted one, over gRPC or HTTPS. It pools one
// connection (and one circuit breaker) per distinct endpoint and caches each tenant's Client for
// RouterOptions.CacheTTL. Safe for concurrent use.
type Router struct {
	platform *endpoint // nil when core has no platform encryption service
	tenants  TenantLookup
	box      *secretbox.Box
	opts     RouterOptions
	hooks    httpsHooks // of every HTTPS client

	mu        sync.Mutex
	closed    bool
	clients   map[uuid.UUID]cachedClient
	swept     time.Time
	endpoints map[string]*endpoint // hosted ones, by endpointKey
}

type cachedClient struct {
	client  Client
	expires time.Time
}

// endpoint is one encryption service as core reaches it: a gRPC connection or an HTTP client,
// with the caller (breaker, timeouts, retries) that every tenant on it shares.
type endpoint struct {
	caller *caller
	rpc    encryptionv1.EncryptionServiceClient // gRPC
	conn   *grpc.ClientConn                     // a hosted gRPC endpoint's, owned by the Router
	http   *http.Client                         // HTTPS
	base   string                               // HTTPS
}

// NewRouter returns a Router. platform is the connection to the platform's encryption service,
// already dialled with core's mTLS identity (see Dial), and stays the caller's to close; it may be
// nil when core has none. box opens the tenants' sealed endpoint secrets.
func NewRouter(platform *grpc.ClientConn, tenants TenantLookup, box *secretbox.Box, opts RouterOptions) *Router {
	r := &Router{
		tenants:   tenants,
		box:       box,
		opts:      opts.withDefaults(),
		clients:   make(map[uuid.UUID]cachedClient),
		endpoints: make(map[string]*endpoint),
	}
	r.hooks.observe = r.opts.ObserveHTTPS
	if r.opts.Tracing != nil {
		r.hooks.tracer = r.opts.Tracing.Tracer(tracerName)
		r.hooks.propagator = r.opts.Tracing.Propagator()
	}
	if platform != nil {
		r.platform = &endpoint{caller: r.newCaller("platform"), rpc: encryptionv1.NewEncryptionServiceClient(platform)}
		r.platform.caller.onProbe = platform.ResetConnectBackoff
	}
	return r
}

func (r *Router) newCaller(name string) *caller {
	log := r.opts.Logger
	return &caller{
		endpoint: name,
		breaker: newBreaker(r.opts.BreakerFailures, r.opts.BreakerCooldown, func(from, to breakerState) {
			level := slog.LevelInfo
			if to == open {
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "esclient: circuit breaker "+to.String(), "endpoint", name, "from", from.String())
		}),
		timeout:   r.opts.Timeout,
		retries:   r.opts.Retries,
		log:       log,
		requestID: r.opts.RequestID,
	}
}

// For returns the Client of tenant tenantID.
//
// Errors: those of TenantLookup.GetTenant (NotFound for an unknown tenant); Internal when the
// tenant's endpoint cannot be used — its secret or client key does not open with core's secret
// keys, its CA bundle or client certificate is malformed, or it is on the platform's service and
// core has none — or after Close.
func (r *Router) For(ctx context.Context, tenantID uuid.UUID) (Client, error) {
	now := time.Now()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errs.E(errs.Internal, "the encryption-service router is closed")
	}
	if c, ok := r.clients[tenantID]; ok && now.Before(c.expires) {
		r.mu.Unlock()
		return c.client, nil
	}
	r.mu.Unlock()

	t, err := r.tenants.GetTenant(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	secret, err := r.box.Open(t.ES.TenantSecretSealed, postgres.EndpointSecretAD(t.ID, postgres.SealedTenantSecret))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, fmt.Sprintf(
			"core cannot open tenant %s's encryption-service secret: an operator must check core's secret keys", t.ID))
	}
	cred := credential{tenantID: t.ES.TenantID.String(), secret: string(secret)}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errs.E(errs.Internal, "the encryption-service router is closed")
	}
	ep, err := r.endpointLocked(t)
	if err != nil {
		return nil, err
	}
	var c Client
	if ep.http != nil {
		c = &httpsClient{base: ep.base, http: ep.http, cred: cred, call: ep.caller, maxResponse: r.opts.MaxResponseBytes,
			hooks: r.hooks}
	} else {
		c = &grpcClient{rpc: ep.rpc, cred: cred, call: ep.caller}
	}
	if now.Sub(r.swept) > r.opts.CacheTTL {
		for id, cc := range r.clients {
			if !now.Before(cc.expires) {
				delete(r.clients, id)
			}
		}
		r.swept = now
	}
	r.clients[tenantID] = cachedClient{client: c, expires: now.Add(r.opts.CacheTTL)}
	return c, nil
}

// endpointLocked returns the pooled endpoint of t, making it if new. r.mu is held.
func (r *Router) endpointLocked(t postgres.Tenant) (*endpoint, error) {
	es := t.ES
	switch es.Kind {
	case postgres.ESKindPlatform:
		if r.platform == nil {
			return nil, errs.E(errs.Internal, "tenant %s uses the platform's encryption service, and this core has none configured", t.ID)
		}
		return r.platform, nil
	case postgres.ESKindHosted:
	default:
		return nil, errs.E(errs.Internal, "tenant %s has an unknown kind of encryption service %q", t.ID, es.Kind)
	}
	key := endpointKey(es)
	if ep, ok := r.endpoints[key]; ok {
		return ep, nil
	}
	fail := func(err error, what string) error {
		return errs.Wrap(errs.Internal, err, fmt.Sprintf("tenant %s's encryption service: %s", t.ID, what))
	}
	var clientKeyPEM []byte
	if len(es.ClientKeySealed) > 0 {
		var err error
		if clientKeyPEM, err = r.box.Open(es.ClientKeySealed, postgres.EndpointSecretAD(t.ID, postgres.SealedClientKey)); err != nil {
			return nil, fail(err, "core cannot open its client key: an operator must check core's secret keys")
		}
	}
	var ep *endpoint
	switch es.Protocol {
	case postgres.ESProtocolGRPC:
		host, _, err := net.SplitHostPort(es.URL)
		if err != nil {
			return nil, fail(err, "its address is not host:port")
		}
		cfg, err := hostedTLS(es, clientKeyPEM, host)
		if err != nil {
			return nil, fail(err, "its TLS material is unusable")
		}
		conn, err := grpc.NewClient(es.URL, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithConnectParams(connectParams()), grpc.WithDefaultServiceConfig(roundRobin),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(int(r.opts.MaxResponseBytes)))}, r.opts.DialOptions...)...)
		if err != nil {
			return nil, fail(err, "cannot set up its connection")
		}
		ep = &endpoint{caller: r.newCaller(es.URL), rpc: encryptionv1.NewEncryptionServiceClient(conn), conn: conn}
		ep.caller.onProbe = conn.ResetConnectBackoff
	case postgres.ESProtocolHTTPS:
		base, err := baseURL(es.URL)
		if err != nil {
			return nil, fail(err, "its URL is not https://host[:port][/path]")
		}
		cfg, err := hostedTLS(es, clientKeyPEM, "")
		if err != nil {
			return nil, fail(err, "its TLS material is unusable")
		}
		ep = &endpoint{caller: r.newCaller(base), http: newHTTPClient(cfg), base: base}
	default:
		return nil, errs.E(errs.Internal, "tenant %s's encryption service has an unknown protocol %q", t.ID, es.Protocol)
	}
	r.endpoints[key] = ep
	return ep, nil
}

// endpointKey identifies a hosted endpoint: tenants with the same one share its connection.
// The client key is not part of it: the certificate determines it.
func endpointKey(es postgres.ESEndpoint) string {
	h := sha256.New()
	for _, s := range []string{es.Protocol, es.URL, es.CABundlePEM, es.ClientCertPEM} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// endpointAD is the associated data the tenant's endpoint secrets are sealed with; it must stay
// equal to the one in package directory, which seals them.

// hostedTLS is the TLS 1.3 client configuration of a hosted endpoint: its CA bundle as the only
// roots, its client certificate if it has one. serverName empty means the dialled host.
func hostedTLS(es postgres.ESEndpoint, clientKeyPEM []byte, serverName string) (*tls.Config, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(es.CABundlePEM)) {
		return nil, errors.New("the CA bundle holds no PEM certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: serverName}
	if es.ClientCertPEM != "" {
		cert, err := tls.X509KeyPair([]byte(es.ClientCertPEM), clientKeyPEM)
		if err != nil {
			// The error of X509KeyPair never holds key material.
			return nil, fmt.Errorf("client certificate and key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Close closes the connections of hosted endpoints (not the platform's, which is the caller's).
// Afterwards For fails; Clients already handed out fail with Unavailable or Internal.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errList []error
	for _, ep := range r.endpoints {
		if ep.conn != nil {
			if err := ep.conn.Close(); err != nil {
				errList = append(errList, err)
			}
		}
		if ep.http != nil {
			ep.http.CloseIdleConnections()
		}
	}
	clear(r.clients)
	return errors.Join(errList...)
}
