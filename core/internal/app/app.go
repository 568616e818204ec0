// Package app wires core together and runs it.
//
// Run is the whole program: cmd/core only gives it a context cancelled by SIGTERM or
// SIGINT and the process's arguments, environment and output streams, so tests run the real
// service in-process.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/auth"
	"github.com/custos-platform/custos/core/internal/config"
	"github.com/custos-platform/custos/core/internal/directory"
	"github.com/custos-platform/custos/core/internal/erasure"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/export"
	"github.com/custos-platform/custos/core/internal/grpcapi"
	"github.com/custos-platform/custos/core/internal/mtls"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/reencrypt"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/server"
	"github.com/custos-platform/custos/core/internal/signing"
	"github.com/custos-platform/custos/core/internal/telemetry"
	"github.com/custos-platform/custos/core/internal/token"
	"github.com/custos-platform/custos/core/internal/vault"
)

// component names this binary in messages.
const component = "core"

// forwardHeaders are the HTTP headers the REST gateway passes on to the gRPC services.
var forwardHeaders = []string{
	"authorization", "x-api-key", "x-api-secret", "x-master-key", "x-new-master-key", "x-request-id",
}

const usage = `usage: core [command]

commands:
  serve                serve gRPC and REST until SIGTERM or SIGINT (the default)
  migrate              apply pending database migrations and exit
  admin bootstrap      create the platform admin from CORE_ADMIN_USERNAME and CORE_ADMIN_PASSWORD
                       (or _FILE) unless one exists
  signing-key rotate   add a new access-token signing key; the previous one keeps verifying
  secret-keys status   how many stored secrets each CORE_SECRET_KEYS key seals
  secret-keys rewrap [--dry-run]
                       re-seal every stored secret under the active key, so that the others can
                       be retired (resumable; --dry-run is status)
  erasures list        the key contexts and tenants core still has to have destroyed on encryption
                       services (deleted users and tenants), with the last error of each
  erasures forget ID --yes
                       stop trying to destroy ID, once an operator destroyed it by other means
  probe [--live|--ready] [--timeout D]
                       check this service's own REST listener (exit 0 when healthy within D,
                       default 3s)
  version              print the version and exit
  help                 print this help

serve reads CORE_DATABASE_URL, CORE_SECRET_KEYS, CORE_TLS_CERT_FILE, CORE_TLS_KEY_FILE,
CORE_ES_CA_FILE, CORE_ES_CLIENT_CERT_FILE, CORE_ES_CLIENT_KEY_FILE and the optional variables
listed in the README. migrate and erasures need only CORE_DATABASE_URL; admin, signing-key and
secret-keys need CORE_DATABASE_URL and CORE_SECRET_KEYS (and CORE_ACTIVE_SECRET_KEY_ID with
several keys). admin bootstrap also needs CORE_ADMIN_USERNAME and CORE_ADMIN_PASSWORD and reads
CORE_PASSWORD_MEMORY_KIB and CORE_PASSWORD_ITERATIONS; signing-key rotate reads
CORE_ACCESS_TOKEN_TTL (how long the previous key must keep verifying). probe reads CORE_HTTP_ADDR
and CORE_PROBE_*.
`

// ErrUsage is returned (wrapped) for an unknown command or stray arguments.
var ErrUsage = errors.New("usage")

// Run runs the command named by args[0] (default "serve"). It returns when the command is done or,
// for serve, after ctx is cancelled and the service has drained. Errors name what failed
// (configuration variable, file, database) and never contain secrets.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, "core", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "admin":
		if len(args) != 1 || args[0] != "bootstrap" {
			return fmt.Errorf("%w: admin bootstrap\n\n%s", ErrUsage, usage)
		}
		return adminBootstrap(ctx, getenv, stdout, stderr, version)
	case "probe":
		return probe(ctx, args, getenv, stderr, probeSettings{
			addrVar: "CORE_HTTP_ADDR", certVar: "CORE_PROBE_CERT_FILE", keyVar: "CORE_PROBE_KEY_FILE",
			caVar: "CORE_PROBE_CA_FILE", serverNameVar: "CORE_PROBE_SERVER_NAME",
		})
	case "signing-key":
		if len(args) != 1 || args[0] != "rotate" {
			return fmt.Errorf("%w: signing-key rotate\n\n%s", ErrUsage, usage)
		}
		return rotateSigningKey(ctx, getenv, stdout)
	case "erasures":
		return erasures(ctx, args, getenv, stdout)
	case "secret-keys":
		return secretKeys(ctx, args, getenv, stdout)
	case "serve", "migrate":
	default:
		return fmt.Errorf("%w: unknown command %q\n\n%s", ErrUsage, cmd, usage)
	}
	if len(args) > 0 {
		return fmt.Errorf("%w: %s takes no arguments, got %q", ErrUsage, cmd, args)
	}
	if cmd == "migrate" {
		db, err := config.LoadDatabase(getenv)
		if err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		return postgres.Migrate(ctx, db.DatabaseURL, newLogger(stderr, db.LogLevel, version))
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	tracing, err := telemetry.ParseTracingEnv(getenv, "core", version)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	return serve(ctx, cfg, tracing, version, newLogger(stderr, cfg.LogLevel, version))
}

func newLogger(w io.Writer, level slog.Level, version string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).
		With("service", "core", "version", version)
}

// rootSecrets loads the prelogin seed (behind unknown users' fake prelogin parameters) and the
// export integrity key, which live in the database sealed under core's secret keys, so that
// rotating those keys changes neither. The first start stores them (once, whichever replica gets
// there first), initialised as core derived them before it stored them — from the secret key with
// the smallest id (preloginSeed, exportKey) — so that earlier exports still import and prelogin
// answers stay the same.
func rootSecrets(ctx context.Context, store *postgres.Store, box *secretbox.Box, keys string) (seed, integrity []byte, err error) {
	derive := map[string]func(string) ([]byte, error){
		postgres.PlatformPreloginSeed: preloginSeed,
		postgres.PlatformExportKey:    exportKey,
	}
	sealed, err := store.EnsurePlatformSecrets(ctx, func(name string) ([]byte, error) {
		v, err := derive[name](keys)
		if err != nil {
			return nil, err
		}
		defer clear(v)
		return box.Seal(v, postgres.PlatformSecretAD(name))
	}, postgres.PlatformPreloginSeed, postgres.PlatformExportKey)
	if err != nil {
		return nil, nil, fmt.Errorf("load the platform secrets: %w", err)
	}
	open := func(name string) ([]byte, error) {
		v, err := box.Open(sealed[name], postgres.PlatformSecretAD(name))
		if err != nil {
			return nil, fmt.Errorf("open the platform secret %s (is its secret key still in CORE_SECRET_KEYS?): %w", name, err)
		}
		if len(v) != 32 {
			return nil, fmt.Errorf("the platform secret %s has %d bytes, want 32", name, len(v))
		}
		return v, nil
	}
	if seed, err = open(postgres.PlatformPreloginSeed); err != nil {
		return nil, nil, err
	}
	if integrity, err = open(postgres.PlatformExportKey); err != nil {
		return nil, nil, err
	}
	return seed, integrity, nil
}

// checkSecretKeys refuses to start when the database holds values sealed under a secret key that
// CORE_SECRET_KEYS lacks: they would fail one by one later (TOTP logins, tenants' encryption
// services), so the error names the keys and what to do.
func checkSecretKeys(ctx context.Context, store *postgres.Store, box *secretbox.Box) error {
	return store.CheckSealedKeys(ctx, box.IDs())
}

// preloginSeed derives the secret behind unknown users' fake prelogin parameters from the secret
// key with the smallest id, as core did before it stored the seed: rootSecrets stores this at the
// first start.
func preloginSeed(keys string) ([]byte, error) {
	parsed, err := secretbox.ParseKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("CORE_SECRET_KEYS: %w", err)
	}
	first := parsed[0]
	for _, k := range parsed[1:] {
		if k.ID < first.ID {
			first = k
		}
	}
	return auth.PreloginSeed(first.Bytes)
}

// exportKey derives the key of export integrity tags from the secret key with the smallest id, as
// preloginSeed does, as core did before it stored the key: rootSecrets stores this at the first
// start.
func exportKey(keys string) ([]byte, error) {
	parsed, err := secretbox.ParseKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("CORE_SECRET_KEYS: %w", err)
	}
	first := parsed[0]
	for _, k := range parsed[1:] {
		if k.ID < first.ID {
			first = k
		}
	}
	return export.IntegrityKey(first.Bytes)
}

// secretBox opens core's secret keys.
func secretBox(keys, active string) (*secretbox.Box, error) {
	parsed, err := secretbox.ParseKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("CORE_SECRET_KEYS: %w", err)
	}
	box, err := secretbox.NewBox(parsed, active)
	if err != nil {
		return nil, fmt.Errorf("CORE_SECRET_KEYS / CORE_ACTIVE_SECRET_KEY_ID: %w", err)
	}
	return box, nil
}

func serve(ctx context.Context, cfg config.Config, tracingCfg telemetry.TracingConfig, version string, logger *slog.Logger) error {
	// The OpenTelemetry SDK reports failed exports through its one global handler; without this it
	// would print them as plain text among the JSON log lines.
	otel.SetErrorHandler(telemetry.NewErrorHandler(logger, time.Minute))
	metrics, err := telemetry.NewMetrics(prometheus.NewRegistry(), version)
	if err != nil {
		return err
	}
	tracing, err := telemetry.NewTracing(ctx, tracingCfg)
	if err != nil {
		return err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(c); err != nil {
			logger.Warn("flush traces", "error", err)
		}
	}()
	// Calls to encryption services carry the trace and are measured.
	esDial := append(tracing.DialOptions(), grpc.WithChainUnaryInterceptor(metrics.ESUnaryClientInterceptor()))
	// People and machines authenticate with tokens and API keys; a client certificate is verified
	// when one is presented and a CA is configured for it.
	clientAuth := mtls.NoClientCert
	if cfg.TLSClientCAFile != "" {
		clientAuth = mtls.VerifyClientCertIfGiven
	}
	tlsConfig, err := mtls.NewServerConfig(mtls.ServerOptions{
		CertFile:     cfg.TLSCertFile,
		KeyFile:      cfg.TLSKeyFile,
		ClientCAFile: cfg.TLSClientCAFile,
		ClientAuth:   clientAuth,
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	// Metrics show every tenant's activity: only a scraper with a client certificate gets them.
	var metricsTLS *tls.Config
	if cfg.MetricsAddr != "" {
		if metricsTLS, err = mtls.NewServerConfig(mtls.ServerOptions{
			CertFile:     cfg.TLSCertFile,
			KeyFile:      cfg.TLSKeyFile,
			ClientCAFile: cfg.MetricsClientCAFile,
			ClientAuth:   mtls.RequireClientCert,
			Logger:       logger,
		}); err != nil {
			return err
		}
	}
	if cfg.MigrateOnStart {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := postgres.Migrate(mctx, cfg.DatabaseURL, logger)
		cancel()
		if err != nil {
			return err
		}
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(cfg.DBMaxConns))) //nolint:gosec // bounded above: config allows 1..1000
	if err != nil {
		return err
	}
	defer pool.Close()

	box, err := secretBox(cfg.SecretKeys, cfg.ActiveSecretKeyID)
	if err != nil {
		return err
	}
	store := postgres.NewStore(pool)
	if err := checkSecretKeys(ctx, store, box); err != nil {
		return err
	}
	preloginSeed, integrityKey, err := rootSecrets(ctx, store, box, cfg.SecretKeys)
	if err != nil {
		return err
	}
	keys, err := signing.Keys(ctx, store, box, rand.Reader)
	if err != nil {
		return err
	}
	pwParams := password.DefaultParams()
	pwParams.MemoryKiB, pwParams.Iterations = uint32(cfg.PasswordMemoryKiB), uint32(cfg.PasswordIterations) //nolint:gosec // bounded above: config allows at most 256 MiB and 10 iterations
	authSvc, err := auth.New(store, auth.Options{
		Password: pwParams,
		Issuer:   cfg.Tokens.Issuer, Audience: cfg.Tokens.Audience, AccessTTL: cfg.Tokens.AccessTTL, SessionTTL: cfg.Tokens.SessionTTL,
		Logger: logger, SigningKeys: keys, SecretBox: box, PreloginSeed: preloginSeed,
		ReloadKeys:   func(ctx context.Context) (*token.Keys, error) { return signing.Reload(ctx, store, box) },
		LoginAccount: auth.Limits{Limit: cfg.Throttle.MaxFailures, Window: cfg.Throttle.Window, Lockout: cfg.Throttle.Lockout},
		TOTPAccount:  auth.Limits{Limit: cfg.Throttle.MaxFailures, Window: cfg.Throttle.Window, Lockout: cfg.Throttle.Lockout},
		LoginAddress: auth.Limits{Limit: 10 * cfg.Throttle.MaxFailures, Window: cfg.Throttle.Window, Lockout: cfg.Throttle.Lockout},
		TOTPAddress:  auth.Limits{Limit: 10 * cfg.Throttle.MaxFailures, Window: cfg.Throttle.Window, Lockout: cfg.Throttle.Lockout},
	})
	if err != nil {
		return err
	}

	es, err := esclient.Dial(esclient.Options{
		Addr:           cfg.ES.Addr,
		ServerName:     cfg.ES.ServerName,
		CAFile:         cfg.ES.CAFile,
		ClientCertFile: cfg.ES.ClientCertFile,
		ClientKeyFile:  cfg.ES.ClientKeyFile,
		Logger:         logger,
		DialOptions:    esDial,
	})
	if err != nil {
		return err
	}
	defer es.Close()
	ready := func(ctx context.Context) error {
		if err := postgres.CheckReady(ctx, pool); err != nil {
			return err
		}
		return esclient.CheckHealth(ctx, es)
	}

	var (
		provisioner directory.Provisioner
		esAdmin     erasure.Admin // destroys deleted tenants
	)
	if cfg.ES.AdminToken != "" {
		a := esclient.NewAdmin(es, cfg.ES.AdminToken, cfg.ES.Timeout)
		provisioner, esAdmin = a, a
	} else {
		logger.Warn("CORE_ES_ADMIN_TOKEN is not set: tenants can only be created with a hosted encryption endpoint")
	}
	dir := directory.New(store, box, provisioner, pwParams, preloginSeed)
	if cfg.AdminUsername != "" {
		created, err := dir.BootstrapPlatformAdmin(ctx, cfg.AdminUsername, cfg.AdminPassword)
		if err != nil {
			return fmt.Errorf("bootstrap the platform admin: %w", err)
		}
		if created {
			logger.Info("platform admin created", "username", cfg.AdminUsername)
		}
	}

	// Signing keys rotated by any replica (core signing-key rotate, or the schedule below) are
	// picked up within a minute, or at the first token of a key this replica does not know
	// (auth.Options.ReloadKeys). Every replica checks whether the signing key is older than
	// CORE_SIGNING_KEY_ROTATION; of those finding it due, one rotates.
	go func() {
		t := time.NewTicker(signing.ReloadInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if id, err := signing.RotateIfDue(ctx, store, box, rand.Reader, cfg.Tokens.AccessTTL, cfg.Tokens.SigningKeyRotation); err != nil {
					logger.Warn("scheduled signing key rotation", "error", err)
				} else if id != "" {
					logger.Info("signing key rotated on schedule", "key_id", id, "every", cfg.Tokens.SigningKeyRotation.String())
				}
				k, err := signing.Reload(ctx, store, box)
				if err != nil {
					logger.Warn("reload signing keys", "error", err)
					continue
				}
				authSvc.SetKeys(k)
			}
		}
	}()

	router := esclient.NewRouter(es, store, box, esclient.RouterOptions{Timeout: cfg.ES.Timeout, Logger: logger, DialOptions: esDial,
		RequestID: server.RequestID, Tracing: tracing,
		ObserveHTTPS: func(method string, code codes.Code, elapsed time.Duration) {
			metrics.ObserveESCall(method, code, telemetry.TransportHTTPS, elapsed)
		}})
	defer router.Close()
	vaultSvc := vault.New(store, router, vault.Limits{})
	vaultSvc.Log = logger
	authSvc.SetMasterKeyChanger(vaultSvc)
	// People of PLATFORM tenants get their key context with their account; those of CLIENT tenants
	// too when the creating request carried their master key, else at their first request carrying it.
	dir.AfterCreateUser = func(ctx context.Context, u postgres.User, masterKey []byte) {
		if _, err := vaultSvc.EnsureContext(ctx, u.ID, u.TenantID, masterKey, u.SecurityStamp); err != nil && !errs.Is(err, errs.Unauthenticated) {
			logger.Warn("create key context with the user; it will be created at their first vault request", "user_id", u.ID, "error", err)
		}
	}

	// Deleting a user crypto-shreds their key context, deleting a tenant the whole tenant on the
	// platform's encryption service: at once when it answers, else by the erasure worker, which
	// retries until it does.
	eraser := erasure.New(store, router, esAdmin, erasure.Options{Logger: logger, Metrics: erasure.Metrics{
		KeyErased: metrics.KeyErased, KeyErasureFailed: metrics.KeyErasureFailed,
	}})
	dir.EraseKeys, dir.EraseTenant = eraser.Erase, eraser.EraseTenant
	if err := metrics.WatchKeyErasures(eraser.Pending); err != nil {
		return err
	}

	keysSvc := reencrypt.New(store, router, reencrypt.Options{Logger: logger, Metrics: reencrypt.Metrics{
		ItemsMoved: metrics.ReencryptItemsMoved, ItemsSkipped: metrics.ReencryptItemsSkipped,
		ItemsFailed: metrics.ReencryptItemsFailed, JobFinished: metrics.ReencryptJobFinished, Retry: metrics.ReencryptRetry,
		JobParked: metrics.ReencryptJobParked,
	}})
	if err := metrics.WatchReencryptJobs(keysSvc.Running); err != nil {
		return err
	}
	// The re-encryption worker stops with serve and hands its jobs over before the pool closes.
	workerCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	erasureDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		_ = keysSvc.Run(workerCtx)
	}()
	go func() {
		defer close(erasureDone)
		_ = eraser.Run(workerCtx)
	}()
	defer func() {
		stopWorker()
		<-workerDone
		<-erasureDone
	}()

	services := grpcapi.Services{
		Export:  grpcapi.NewExportServer(export.New(store, integrityKey), grpcapi.ImportLimits{MaxBytes: cfg.MaxRequestBytes}),
		Keys:    &grpcapi.KeyServer{Keys: keysSvc},
		Vault:   &grpcapi.VaultServer{Vault: vaultSvc},
		Auth:    &grpcapi.AuthServer{Auth: authSvc},
		Tenants: &grpcapi.TenantServer{Directory: dir},
		Users:   &grpcapi.UserServer{Directory: dir},
		APIKeys: &grpcapi.ApiKeyServer{Directory: dir},
		Audit:   &grpcapi.AuditServer{Store: store},
	}
	guard := &grpcapi.Guard{Auth: authSvc, Audit: store}
	guardUnary, guardStream := guard.Interceptors()
	errorsUnary, errorsStream := grpcapi.ErrorInterceptors(logger)
	unimplementedUnary, unimplementedStream := grpcapi.Unimplemented(component)
	srv, err := server.New(server.Config{
		GRPCAddr:           cfg.GRPCAddr,
		HTTPAddr:           cfg.HTTPAddr,
		TLS:                tlsConfig,
		Metrics:            metrics,
		MetricsAddr:        cfg.MetricsAddr,
		ProxyProtocolFrom:  cfg.ProxyProtocolFrom,
		MetricsTLS:         metricsTLS,
		MetricsHandler:     metrics.Handler(),
		StatsHandler:       tracing.PublicServerHandler(),
		Logger:             logger,
		Register:           services.Register,
		RegisterGateway:    grpcapi.RegisterGateway,
		Ready:              ready,
		ShutdownTimeout:    cfg.ShutdownTimeout,
		MaxRequestBytes:    cfg.MaxRequestBytes,
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{unimplementedUnary, errorsUnary, guardUnary},
		StreamInterceptors: []grpc.StreamServerInterceptor{unimplementedStream, errorsStream, guardStream},
		ForwardHeaders:     forwardHeaders,
	})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
