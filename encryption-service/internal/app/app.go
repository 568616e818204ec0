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

	"google.golang.org/grpc"

	"github.com/custos-platform/custos/encryption-service/internal/config"
	"github.com/custos-platform/custos/encryption-service/internal/grpcapi"
	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/server"
)

// component names this binary in messages.
const component = "the encryption service"

// forwardHeaders are the HTTP headers the REST gateway passes on to the gRPC services.
var forwardHeaders = []string{
	"x-tenant-id", "x-tenant-secret", "x-master-key", "x-new-master-key", "x-admin-token", "x-request-id",
}

const usage = `usage: encryption-service [command]

commands:
  serve      serve gRPC and REST until SIGTERM or SIGINT (the default)
  migrate    apply pending database migrations and exit
  version    print the version and exit
  help       print this help

Configuration is read from the environment: ES_DATABASE_URL, ES_TLS_CERT_FILE, ES_TLS_KEY_FILE,
ES_TLS_CLIENT_CA_FILE and the optional variables listed in the README.
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
		fmt.Fprintln(stdout, "encryption-service", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	if cmd != "serve" && cmd != "migrate" {
		return fmt.Errorf("%w: unknown command %q\n\n%s", ErrUsage, cmd, usage)
	}
	if len(args) > 0 {
		return fmt.Errorf("%w: %s takes no arguments, got %q", ErrUsage, cmd, args)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).
		With("service", "encryption-service", "version", version)
	switch cmd {
	case "serve":
		return serve(ctx, cfg, logger)
	default: // migrate
		return postgres.Migrate(ctx, cfg.DatabaseURL, logger)
	}
}

func serve(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
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
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(cfg.DBMaxConns)))
	if err != nil {
		return err
	}
	defer pool.Close()

	services := grpcapi.Services{Encryption: &grpcapi.EncryptionServer{}, Admin: &grpcapi.AdminServer{}}
	unimplementedUnary, unimplementedStream := grpcapi.Unimplemented(component)
	srv, err := server.New(server.Config{
		GRPCAddr:           cfg.GRPCAddr,
		HTTPAddr:           cfg.HTTPAddr,
		TLS:                tlsConfig,
		Logger:             logger,
		Register:           services.Register,
		RegisterGateway:    grpcapi.RegisterGateway,
		Ready:              func(ctx context.Context) error { return postgres.CheckReady(ctx, pool) },
		ShutdownTimeout:    cfg.ShutdownTimeout,
		MaxRequestBytes:    cfg.MaxRequestBytes,
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{unimplementedUnary},
		StreamInterceptors: []grpc.StreamServerInterceptor{unimplementedStream},
		ForwardHeaders:     forwardHeaders,
	})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
