// Package app wires the encryption service together and runs it.
//
// Run is the whole program: cmd/encryption-service only gives it a context cancelled by SIGTERM or
// SIGINT and the process's arguments, environment and output streams, so tests run the real
// service in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"

	"github.com/custos-platform/custos/encryption-service/internal/config"
	"github.com/custos-platform/custos/encryption-service/internal/grpcapi"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
	"github.com/custos-platform/custos/encryption-service/internal/tenants"
)

// component names this binary in messages.
const component = "the encryption service"

// forwardHeaders are the HTTP headers the REST gateway passes on to the gRPC services.
// traceparent and tracestate carry a REST caller's trace (core's HTTPS client sends them) to the
// gRPC server's spans, as gRPC callers' metadata does.
var forwardHeaders = []string{
	"x-tenant-id", "x-tenant-secret", "x-master-key", "x-new-master-key", "x-admin-token", "x-request-id",
	"traceparent", "tracestate",
}

const usage = `usage: encryption-service [command]

commands:
  serve                                  serve gRPC and REST until SIGTERM or SIGINT (the default)
  migrate                                apply pending database migrations and exit
  tenant create NAME [--json]            create a tenant; prints its id and first secret (shown once)
  tenant list [--json]                   list tenants and their secrets' ids and states
  tenant rotate-secret TENANT_ID [--json]
                                         issue a new secret; the old ones keep working until revoked
  tenant revoke-secret TENANT_ID SECRET_ID
                                         make a secret stop working at once
  tenant destroy TENANT_ID --yes         erase every key of the tenant (all its data becomes
                                         unrecoverable) and revoke its secrets; cannot be undone
  version disable|enable|destroy TENANT_ID ENCRYPTION_ID VERSION_ID [--json]
                                         change a key version's state; destroy erases a DISABLED
                                         version's key (its data becomes unrecoverable)
  master-key rotate [--dry-run] [--batch-size N]
                                         rewrap every stored key to the active platform master
                                         key (ES_ACTIVE_MASTER_KEY_ID), online and resumable;
                                         --dry-run only counts what each master key wraps
  admin-token generate                   print a new admin token and the ES_ADMIN_TOKEN_HASH for it
  probe [--live | --ready] [--timeout D]
                                         check this service's own REST listener (exit 0 when
                                         healthy within D, default 3s), for container health
                                         checks and Kubernetes exec probes
  version                                print the version and exit
  help                                   print this help

serve reads ES_DATABASE_URL, ES_TLS_CERT_FILE, ES_TLS_KEY_FILE, ES_TLS_CLIENT_CA_FILE,
ES_MASTER_KEYS (or ES_MASTER_KEY_DIR) and the optional variables listed in the README.
migrate, tenant and version read only ES_DATABASE_URL; master-key reads ES_DATABASE_URL and the
master keys (ES_MASTER_KEYS or ES_MASTER_KEY_DIR, ES_ACTIVE_MASTER_KEY_ID).
`

// ErrUsage is returned (wrapped) for an unknown command or wrong arguments.
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
		if len(args) > 0 && cmd == "version" {
			return runVersion(ctx, args, getenv, stdout)
		}
		fmt.Fprintln(stdout, "encryption-service", version)
		return nil
	case "master-key":
		return runMasterKey(ctx, args, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "admin-token":
		if len(args) != 1 || args[0] != "generate" {
			return fmt.Errorf("%w: admin-token generate\n\n%s", ErrUsage, usage)
		}
		return generateAdminToken(stdout)
	case "tenant":
		return runTenant(ctx, args, getenv, stdout, stderr)
	case "probe":
		return probe(ctx, args, getenv, stderr, probeSettings{
			addrVar: "ES_HTTP_ADDR", certVar: "ES_PROBE_CERT_FILE", keyVar: "ES_PROBE_KEY_FILE",
			caVar: "ES_PROBE_CA_FILE", serverNameVar: "ES_PROBE_SERVER_NAME", certRequired: true,
		})
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
	tracing, err := telemetry.ParseTracingEnv(getenv, "encryption-service", version)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	return serve(ctx, cfg, tracing, version, newLogger(stderr, cfg.LogLevel, version))
}

func newLogger(w io.Writer, level slog.Level, version string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).
		With("service", "encryption-service", "version", version)
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
	for _, w := range cfg.MasterKeyWarnings {
		logger.Warn("master keys: " + w)
	}
	masterKeys, err := masterkey.NewKeyring(cfg.MasterKeys, cfg.ActiveMasterKeyID)
	if err != nil {
		return fmt.Errorf("master keys: %w", err)
	}
	tlsConfig, err := mtls.NewServerConfig(mtls.ServerOptions{
		CertFile:     cfg.TLSCertFile,
		KeyFile:      cfg.TLSKeyFile,
		ClientCAFile: cfg.TLSClientCAFile,
		ClientAuth:   mtls.RequireClientCert,
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	if cfg.MigrateOnStart {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := postgres.Migrate(mctx, cfg.DatabaseURL, logger)
		cancel()
		if err != nil {
			return err
		}
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(cfg.DBMaxConns))) //nolint:gosec // bounded above: config limits the pool size
	if err != nil {
		return err
	}
	defer pool.Close()
	store := postgres.NewStore(pool)

	keys := keyring.New(store, masterKeys, keyring.Options{
		MaxDataBytes:             cfg.MaxDataBytes,
		MaxEncryptionsPerVersion: cfg.MaxEncryptionsPerVersion,
		Logger:                   logger,
		CacheHits:                metrics.KeyCacheHits(),
		CacheMisses:              metrics.KeyCacheMisses(),
	})
	tenantSvc := tenants.New(store, nil)
	if err := metrics.WatchChangeListener(keys.Listening); err != nil {
		return err
	}

	// Caches follow changes made by every replica: the database notifies each of them.
	listenCtx, stopListening := context.WithCancel(ctx)
	listening := make(chan error, 1)
	go func() {
		listening <- postgres.Listen(listenCtx, cfg.DatabaseURL, logger,
			func(kind string, id uuid.UUID) {
				switch kind {
				case "encryption":
					keys.Invalidate(id)
				case "tenant":
					tenantSvc.Invalidate(id)
					keys.InvalidateTenant(id) // a destroyed tenant's contexts are destroyed too
				}
			},
			func() {
				keys.ResetCache()
				tenantSvc.ResetCache()
				keys.Hearing(true)
				tenantSvc.Hearing(true)
			},
			func() {
				keys.Hearing(false)
				tenantSvc.Hearing(false)
			})
	}()
	// Encryption counts per key version are written to the database once a second, and versions
	// they show due for rotation are rotated.
	counting := make(chan struct{})
	go func() {
		keys.RunCounter(listenCtx, time.Second)
		close(counting)
	}()
	defer func() {
		stopListening()
		if err := <-listening; err != nil {
			logger.Error("listen for cache invalidations", "err", err)
		}
		<-counting
	}()

	auth := &grpcapi.Auth{Tenants: tenantSvc, AdminTokenHash: cfg.AdminTokenHash, AdminCNs: cfg.AdminCNs}
	if len(cfg.AdminTokenHash) == 0 {
		logger.Warn("admin plane disabled: ES_ADMIN_TOKEN_HASH is not set (tenants can still be managed with the tenant command)")
	}
	services := grpcapi.Services{
		Encryption: &grpcapi.EncryptionServer{Keys: keys, MaxBatchItems: cfg.MaxBatchItems, Log: logger},
		Admin: &grpcapi.AdminServer{Tenants: tenantSvc, Audit: store, Keys: keys,
			MasterKeys: masterKeys, StoredKeys: store},
	}
	unary, stream := grpcapi.Interceptors(logger, auth, component)
	srv, err := server.New(server.Config{
		GRPCAddr:           cfg.GRPCAddr,
		HTTPAddr:           cfg.HTTPAddr,
		TLS:                tlsConfig,
		Metrics:            metrics,
		MetricsAddr:        cfg.MetricsAddr,
		ProxyProtocolFrom:  cfg.ProxyProtocolFrom,
		MetricsHandler:     metrics.Handler(),
		StatsHandler:       tracing.ServerHandler(),
		Logger:             logger,
		Register:           services.Register,
		RegisterGateway:    grpcapi.RegisterGateway,
		Ready:              func(ctx context.Context) error { return postgres.CheckReady(ctx, pool) },
		ShutdownTimeout:    cfg.ShutdownTimeout,
		MaxRequestBytes:    cfg.MaxRequestBytes,
		MaxConnectionAge:   cfg.GRPCMaxConnectionAge,
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{unary},
		StreamInterceptors: []grpc.StreamServerInterceptor{stream},
		ForwardHeaders:     forwardHeaders,
	})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
