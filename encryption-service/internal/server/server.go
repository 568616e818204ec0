// Package server runs a service's gRPC API and its REST gateway on two TLS
// 1.3 listeners, with shared interceptors, health and readiness, and a
// graceful drain.
//
// The gateway does not dial the network: the *grpc.Server is also served on
// an in-memory listener whose connections are marked as coming from the
// gateway, so REST calls pass through exactly the interceptors gRPC calls do,
// and PeerIdentity can trust the caller identity the gateway forwards only on
// those connections.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Defaults for the zero values of Config.
const (
	DefaultShutdownTimeout = 15 * time.Second
	DefaultMaxRequestBytes = 4 << 20
	DefaultReadyInterval   = 5 * time.Second
	DefaultReadyTimeout    = 2 * time.Second
)

// HTTP server limits. Calls may legitimately run long, so there is no write
// timeout; reading a request is bounded.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 60 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// gRPC listener limits, for network connections (the in-process gateway
// connection carries REST calls, which the HTTP server bounds already).
const (
	// MaxConcurrentStreams bounds the calls in flight on one gRPC connection;
	// a client opening more waits until one ends. It stays well above the 64
	// calls at once that the benchmark drives over one connection.
	MaxConcurrentStreams = 200
	// handshakeTimeout bounds a new connection's TLS handshake, like
	// readHeaderTimeout does for REST.
	handshakeTimeout = 10 * time.Second
	// pingMinTime is the shortest interval between a client's keepalive pings
	// that is tolerated (also on a connection without calls); a client pinging
	// more often is disconnected (GOAWAY "too_many_pings").
	pingMinTime = 10 * time.Second
)

// Config describes one binary's transport. GRPCAddr, HTTPAddr and TLS are
// required; every other zero value has a documented default.
//
// gRPC network connections also have fixed limits: MaxConcurrentStreams calls
// at once, request metadata of at most 64 KiB (as REST headers), 10 s for the
// TLS handshake, closed after two minutes without a call (as idle REST
// connections), keepalive pings tolerated down to one every 10 s.
type Config struct {
	GRPCAddr string // host:port of the gRPC listener; ":0" picks a free port
	HTTPAddr string // host:port of the REST listener; ":0" picks a free port

	// TLS is the server configuration of both listeners, as built by
	// mtls.NewServerConfig. Its MinVersion must be TLS 1.3.
	TLS *tls.Config

	Logger *slog.Logger // access log and server events; nil discards them

	// Register adds the services to the gRPC server; it may be nil. A request that is not a
	// valid message of its method passes the interceptors and is answered InvalidArgument.
	Register func(grpc.ServiceRegistrar)
	// RegisterGateway adds REST routes that call conn, an in-process
	// connection to the same gRPC server; it may be nil.
	RegisterGateway func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
	// Ready reports whether the service can take traffic (database reachable
	// and migrated, keys loaded...). Nil means always ready. Its error is
	// logged, never shown to callers.
	Ready func(ctx context.Context) error

	ReadyInterval   time.Duration // how often gRPC health follows Ready; default DefaultReadyInterval
	ReadyTimeout    time.Duration // bound on one Ready call; default DefaultReadyTimeout
	ShutdownTimeout time.Duration // bound on the whole drain; default DefaultShutdownTimeout
	MaxRequestBytes int           // largest gRPC message or REST body accepted; default DefaultMaxRequestBytes
	// MaxConnectionAge, when positive, asks each gRPC client to reconnect once its connection is
	// that old (HTTP/2 GOAWAY; calls in flight finish on the old connection, with no deadline).
	// Clients that balance over several replicas then see replicas added since they connected.
	MaxConnectionAge time.Duration

	// Interceptors run after the built-in ones (request id, access log,
	// panic recovery), in order.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor

	// ForwardHeaders lists the HTTP request headers (case-insensitive) the
	// gateway passes to gRPC as metadata under their lower-case name, e.g.
	// "x-tenant-id" or "authorization". No other header is forwarded;
	// "Grpc-Metadata-*" headers are never forwarded.
	ForwardHeaders []string

	// Metrics records every RPC and REST response; nil records nothing.
	Metrics Metrics
	// MetricsAddr, when set, is the host:port of a third listener that serves
	// MetricsHandler at GET /metrics over TLS, with MetricsTLS. ":0" picks a
	// free port.
	MetricsAddr string
	// MetricsTLS is the metrics listener's TLS configuration; nil means TLS,
	// the same as the other listeners'. Its MinVersion must be TLS 1.3.
	MetricsTLS *tls.Config
	// MetricsHandler answers scrapes on MetricsAddr, e.g. the Prometheus
	// handler of *telemetry.Metrics; required when MetricsAddr is set.
	MetricsHandler http.Handler

	// ProxyProtocolFrom lists the load balancers (addresses and ranges) that open every
	// connection to the gRPC and REST listeners with a PROXY protocol header, v1 or v2, whose
	// client address the service then uses. Connections from elsewhere are served directly and
	// cannot claim an address; loopback, where probes connect, should not be listed. Empty: no
	// PROXY protocol. The metrics listener never reads one.
	ProxyProtocolFrom []netip.Prefix

	// StatsHandler, when not nil, sees every RPC of the gRPC server (network
	// and gateway connections alike), e.g. OpenTelemetry's server handler that
	// continues the caller's trace. Nil adds no per-RPC cost.
	StatsHandler stats.Handler
}

// Server serves one Config. Create it with New and start it with Run.
type Server struct {
	cfg     Config
	log     *slog.Logger
	forward map[string]bool // lower-case header names from Config.ForwardHeaders
	// grpc serves the network listener; gw, with the same services, interceptors and message
	// limit, the in-process gateway connection, without the per-connection limits meant for
	// network clients (REST calls are bounded by the HTTP server).
	grpc   *grpc.Server
	gw     *grpc.Server
	health *health.Server

	running  atomic.Bool
	draining atomic.Bool
	drained  chan struct{} // closed when the drain starts: ends health Watch streams
	started  chan struct{}
	// readiness is the outcome of the last Ready check (a *readiness), which /readyz answers
	// from; nil until the first check ends.
	readiness atomic.Pointer[readiness]

	// calls holds the REST requests in flight (callInfo.seq → *callInfo), so that the gRPC side
	// can tell the REST side that a request reached the interceptors.
	calls   sync.Map
	callSeq atomic.Uint64
	// queries caches the query parameters each gateway route accepts (queryRoute → *queryRule).
	queries sync.Map

	mu          sync.Mutex
	grpcAddr    string
	httpAddr    string
	metricsAddr string
}

// New validates cfg, fills in defaults and builds the gRPC server with the
// services cfg.Register adds. It does not listen; Run does.
//
// It fails when a required field is missing, TLS allows versions below 1.3, a
// limit is negative, MetricsAddr is set without MetricsHandler, or
// ForwardHeaders names a header that must not be forwarded (connection
// headers, "grpc-*", "x-forwarded-*", or the reserved "x-custos-gw-*" identity
// keys).
func New(cfg Config) (*Server, error) {
	if cfg.GRPCAddr == "" || cfg.HTTPAddr == "" {
		return nil, errors.New("server: GRPCAddr and HTTPAddr are required")
	}
	if cfg.TLS == nil {
		return nil, errors.New("server: TLS is required")
	}
	if cfg.TLS.MinVersion < tls.VersionTLS13 {
		return nil, errors.New("server: TLS.MinVersion must be TLS 1.3")
	}
	if cfg.MetricsTLS != nil && cfg.MetricsTLS.MinVersion < tls.VersionTLS13 {
		return nil, errors.New("server: MetricsTLS.MinVersion must be TLS 1.3")
	}
	if cfg.MetricsTLS == nil {
		cfg.MetricsTLS = cfg.TLS
	}
	if cfg.MaxRequestBytes < 0 || cfg.MaxConnectionAge < 0 || cfg.ShutdownTimeout < 0 || cfg.ReadyInterval < 0 || cfg.ReadyTimeout < 0 {
		return nil, errors.New("server: limits and durations must not be negative")
	}
	if cfg.MetricsAddr != "" && cfg.MetricsHandler == nil {
		return nil, errors.New("server: MetricsAddr needs a MetricsHandler")
	}
	cfg.MaxRequestBytes = orDefault(cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.ReadyInterval = orDefault(cfg.ReadyInterval, DefaultReadyInterval)
	cfg.ReadyTimeout = orDefault(cfg.ReadyTimeout, DefaultReadyTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	forward, err := forwardSet(cfg.ForwardHeaders)
	if err != nil {
		return nil, err
	}

	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		forward: forward,
		health:  health.NewServer(),
		drained: make(chan struct{}),
		started: make(chan struct{}),
	}
	opts := []grpc.ServerOption{
		grpc.Creds(serverCreds{tls: credentials.NewTLS(cfg.TLS)}),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.InTapHandle(tapMetadata),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{s.observeUnary}, cfg.UnaryInterceptors...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{s.observeStream}, cfg.StreamInterceptors...)...),
	}
	if cfg.StatsHandler != nil {
		opts = append(opts, grpc.StatsHandler(cfg.StatsHandler))
	}
	s.gw = grpc.NewServer(opts...)
	// A network client cannot hold more than a bounded amount of the server with one connection:
	// calls, metadata, a handshake, or a connection left idle.
	s.grpc = grpc.NewServer(append(slices.Clip(opts),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idleTimeout, MaxConnectionAge: cfg.MaxConnectionAge}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: pingMinTime, PermitWithoutStream: true}),
	)...)
	// Not serving until Ready has passed once.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for _, g := range []*grpc.Server{s.grpc, s.gw} {
		// Every service goes through the registrar: requestCodec's notes must all be taken.
		r := decodeCheckingRegistrar{g}
		healthpb.RegisterHealthServer(r, drainingHealth{Server: s.health, drained: s.drained})
		if cfg.Register != nil {
			cfg.Register(r)
		}
	}
	return s, nil
}

// drainingHealth is the health service, whose Watch streams end when the drain starts: the gRPC
// server's graceful stop waits for every call to end, and a Watch stream would not end by itself.
type drainingHealth struct {
	*health.Server
	drained <-chan struct{}
}

// Watch streams the serving status like health.Server's until the client leaves or the drain
// starts, which sets NOT_SERVING first; then it ends with Unavailable, so that a watcher learns
// of the drain even if the stream ended before it could send the new status.
func (h drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-h.drained:
			cancel()
		case <-done:
		}
	}()
	err := h.Server.Watch(req, watchStream{Health_WatchServer: stream, ctx: ctx})
	select {
	case <-h.drained:
		return status.Error(codes.Unavailable, "server: shutting down")
	default:
		return err
	}
}

// watchStream is a Watch stream with a context the drain cancels.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// forwardSet validates the header allow-list and returns it lower-cased.
func forwardSet(headers []string) (map[string]bool, error) {
	refused := map[string]bool{
		"connection": true, "content-length": true, "content-type": true, "host": true, "keep-alive": true,
		"proxy-connection": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
		"x-forwarded-for": true, "x-forwarded-host": true,
	}
	set := make(map[string]bool, len(headers))
	for _, h := range headers {
		k := strings.ToLower(strings.TrimSpace(h))
		switch {
		case k == "" || strings.ContainsFunc(k, func(r rune) bool {
			return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.')
		}):
			return nil, fmt.Errorf("server: ForwardHeaders: %q is not a valid metadata key", h)
		case refused[k] || strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, "grpcgateway-") ||
			strings.HasPrefix(k, reservedPrefix) || strings.HasSuffix(k, "-bin"):
			return nil, fmt.Errorf("server: ForwardHeaders: %q must not be forwarded", h)
		}
		set[k] = true
	}
	return set, nil
}

// Started is closed once every listener is bound; GRPCAddr, HTTPAddr and
// MetricsAddr are valid from then on. It is never closed if Run fails before
// listening.
func (s *Server) Started() <-chan struct{} { return s.started }

// GRPCAddr returns the bound address of the gRPC listener, or "" before
// Started is closed.
func (s *Server) GRPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpcAddr
}

// HTTPAddr returns the bound address of the REST listener, or "" before
// Started is closed.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// MetricsAddr returns the bound address of the metrics listener, or "" before
// Started is closed or when Config.MetricsAddr is empty.
func (s *Server) MetricsAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}

// Run listens on its addresses and serves until ctx is cancelled, then
// drains: health turns NOT_SERVING (/readyz answers 503, health Watch streams
// end with Unavailable), the HTTP server shuts down (finishing
// in-flight REST calls), then the gRPC server stops gracefully, then the
// metrics listener closes; whatever is still running when ShutdownTimeout has
// passed is cut off.
//
// It returns nil after a drain started by ctx, an error if a listener cannot
// be bound, RegisterGateway fails, or a listener fails while serving (the
// other is drained first). Run may be called only once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	grpcLn, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("server: listen for gRPC on %s: %w", s.cfg.GRPCAddr, err)
	}
	httpLn, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("server: listen for HTTP on %s: %w", s.cfg.HTTPAddr, err)
	}
	var metricsLn net.Listener
	if s.cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			grpcLn.Close()
			httpLn.Close()
			return fmt.Errorf("server: listen for metrics on %s: %w", s.cfg.MetricsAddr, err)
		}
	}
	closeListeners := func() {
		grpcLn.Close()
		httpLn.Close()
		if metricsLn != nil {
			metricsLn.Close()
		}
	}

	gwLn := newPipeListener()
	conn, err := grpc.NewClient("passthrough:///gateway",
		grpc.WithContextDialer(gwLn.DialContext),
		grpc.WithTransportCredentials(gatewayCreds{}),
		// The server is this process; its replies are not size-limited.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		closeListeners()
		return fmt.Errorf("server: gateway connection: %w", err)
	}
	defer conn.Close()
	gwCtx, cancelGW := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelGW()
	mux := s.newGatewayMux()
	if s.cfg.RegisterGateway != nil {
		if err := s.cfg.RegisterGateway(gwCtx, mux, conn); err != nil {
			closeListeners()
			return fmt.Errorf("server: register gateway: %w", err)
		}
	}
	httpSrv := &http.Server{
		Handler:           s.observeHTTP(s.httpHandler(mux)),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Refused handshakes and broken clients are noise at info level.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}

	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = &http.Server{
			Handler:           s.metricsHandler(),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
	}

	s.mu.Lock()
	s.grpcAddr, s.httpAddr = grpcLn.Addr().String(), httpLn.Addr().String()
	if metricsLn != nil {
		s.metricsAddr = metricsLn.Addr().String()
	}
	metricsAddr := s.metricsAddr
	s.mu.Unlock()
	close(s.started)
	s.log.Info("server: listening", "grpc_addr", grpcLn.Addr().String(), "http_addr", httpLn.Addr().String(),
		"metrics_addr", metricsAddr)

	pending := 3
	if metricsSrv != nil {
		pending++
	}
	errc := make(chan error, pending)
	go func() { errc <- wrapServe("gRPC", s.grpc.Serve(proxyListener(grpcLn, s.cfg.ProxyProtocolFrom))) }()
	go func() { errc <- wrapServe("gateway", s.gw.Serve(gwLn)) }()
	go func() {
		err := httpSrv.Serve(tls.NewListener(proxyListener(httpLn, s.cfg.ProxyProtocolFrom), s.cfg.TLS))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- wrapServe("HTTP", err)
	}()
	if metricsSrv != nil {
		go func() {
			err := metricsSrv.Serve(tls.NewListener(metricsLn, s.cfg.MetricsTLS))
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- wrapServe("metrics", err)
		}()
	}
	readyCtx, stopReady := context.WithCancel(ctx)
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		s.followReadiness(readyCtx)
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		pending--
	}
	stopReady()
	<-readyDone
	s.drain(httpSrv, metricsSrv, conn)
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	s.log.Info("server: stopped")
	return runErr
}

func wrapServe(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("server: serve %s: %w", what, err)
}

// drain stops the servers within ShutdownTimeout. REST calls go through the
// gRPC server, so HTTP is drained first; metrics last, so that a scrape can
// still see the drain. metricsSrv may be nil.
func (s *Server) drain(httpSrv, metricsSrv *http.Server, gwConn *grpc.ClientConn) {
	s.draining.Store(true)
	s.health.Shutdown() // watchers are told NOT_SERVING...
	close(s.drained)    // ...and their streams end
	s.log.Info("server: draining", "timeout", s.cfg.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()

	if err := httpSrv.Shutdown(ctx); err != nil {
		s.log.Warn("server: HTTP drain cut short", "error", err)
		httpSrv.Close()
	}
	gwConn.Close()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		s.gw.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("server: gRPC drain cut short")
		s.grpc.Stop()
		s.gw.Stop()
		<-stopped
	}
	if metricsSrv != nil {
		if err := metricsSrv.Shutdown(ctx); err != nil {
			s.log.Warn("server: metrics drain cut short", "error", err)
			metricsSrv.Close()
		}
	}
}

// readiness is the outcome of one Ready check.
type readiness struct{ err error }

// followReadiness evaluates Ready now and every ReadyInterval, and sets the
// overall gRPC health status and what /readyz answers from it, until ctx is
// done. Only a change is logged.
func (s *Server) followReadiness(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.ReadyInterval)
	defer ticker.Stop()
	var last error
	first := true
	for {
		err := s.checkReady(ctx)
		if ctx.Err() != nil {
			return
		}
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		s.health.SetServingStatus("", st)
		s.readiness.Store(&readiness{err: err})
		if first || (err == nil) != (last == nil) {
			if err != nil {
				s.log.Warn("server: not ready", "error", err)
			} else {
				s.log.Info("server: ready")
			}
		}
		first, last = false, err
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// checkReady calls Ready bounded by ReadyTimeout.
func (s *Server) checkReady(ctx context.Context) error {
	if s.cfg.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	return s.cfg.Ready(ctx)
}
