// Package config loads the encryption service's configuration from the environment.
//
// Every variable is documented in the README's configuration table; Load validates all of them
// before anything is wired, and reports every problem at once.
package config

import (
	"log/slog"
	"time"
)

// Config is the encryption service's whole configuration.
type Config struct {
	// GRPCAddr is where gRPC is served (ES_GRPC_ADDR, default ":9444").
	GRPCAddr string
	// HTTPAddr is where REST, /healthz and /readyz are served (ES_HTTP_ADDR, default ":9443").
	HTTPAddr string
	// DatabaseURL is the PostgreSQL URL (ES_DATABASE_URL or ES_DATABASE_URL_FILE, required).
	DatabaseURL string
	// DBMaxConns bounds the connection pool (ES_DB_MAX_CONNS, default 20).
	DBMaxConns int
	// MigrateOnStart applies pending migrations at startup (ES_MIGRATE_ON_START, default true).
	MigrateOnStart bool
	// TLSCertFile and TLSKeyFile are the server certificate (ES_TLS_CERT_FILE, ES_TLS_KEY_FILE).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile verifies client certificates, which every listener requires
	// (ES_TLS_CLIENT_CA_FILE).
	TLSClientCAFile string
	// LogLevel is debug, info, warn or error (ES_LOG_LEVEL, default info).
	LogLevel slog.Level
	// ShutdownTimeout bounds the graceful drain on SIGTERM (ES_SHUTDOWN_TIMEOUT, default 20s).
	ShutdownTimeout time.Duration
	// MaxRequestBytes bounds a request body or message (ES_MAX_REQUEST_BYTES, default 4 MiB).
	MaxRequestBytes int
}

// Load reads the configuration through getenv. Its error lists every missing or invalid variable
// by name; it never contains a secret's value.
func Load(getenv func(string) string) (Config, error) {
	e := &env{getenv: getenv}
	c := Config{
		GRPCAddr:        e.address("ES_GRPC_ADDR", ":9444"),
		HTTPAddr:        e.address("ES_HTTP_ADDR", ":9443"),
		DatabaseURL:     e.secret("ES_DATABASE_URL", true),
		DBMaxConns:      e.integer("ES_DB_MAX_CONNS", 20, 1, 1000),
		MigrateOnStart:  e.boolean("ES_MIGRATE_ON_START", true),
		TLSCertFile:     e.file("ES_TLS_CERT_FILE", true),
		TLSKeyFile:      e.file("ES_TLS_KEY_FILE", true),
		TLSClientCAFile: e.file("ES_TLS_CLIENT_CA_FILE", true),
		ShutdownTimeout: e.duration("ES_SHUTDOWN_TIMEOUT", 20*time.Second, time.Second, 10*time.Minute),
		MaxRequestBytes: e.integer("ES_MAX_REQUEST_BYTES", 4<<20, 1<<10, 64<<20),
	}
	c.LogLevel = logLevel(e, "ES_LOG_LEVEL")
	if c.GRPCAddr == c.HTTPAddr && c.GRPCAddr[len(c.GRPCAddr)-2:] != ":0" {
		e.fail("ES_HTTP_ADDR", "must differ from ES_GRPC_ADDR (%s)", c.GRPCAddr)
	}
	return c, e.err()
}

func logLevel(e *env, name string) slog.Level {
	switch e.oneOf(name, "info", "debug", "info", "warn", "error") {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}
