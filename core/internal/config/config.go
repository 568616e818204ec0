// Package config loads core's configuration from the environment.
//
// Every variable is documented in the README's configuration table; Load validates all of them
// before anything is wired, and reports every problem at once.
package config

import (
	"log/slog"
	"time"
)

// Config is core's whole configuration.
type Config struct {
	// GRPCAddr is where gRPC is served (CORE_GRPC_ADDR, default ":8444").
	GRPCAddr string
	// HTTPAddr is where REST, /healthz and /readyz are served (CORE_HTTP_ADDR, default ":8443").
	HTTPAddr string
	// DatabaseURL is the PostgreSQL URL (CORE_DATABASE_URL or CORE_DATABASE_URL_FILE, required).
	DatabaseURL string
	// DBMaxConns bounds the connection pool (CORE_DB_MAX_CONNS, default 20).
	DBMaxConns int
	// MigrateOnStart applies pending migrations at startup (CORE_MIGRATE_ON_START, default true).
	MigrateOnStart bool
	// TLSCertFile and TLSKeyFile are the server certificate (CORE_TLS_CERT_FILE, CORE_TLS_KEY_FILE).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile, when set, verifies client certificates that callers choose to present
	// (CORE_TLS_CLIENT_CA_FILE, optional: humans and machines authenticate with tokens and API keys).
	TLSClientCAFile string
	// ES is how core reaches the platform's encryption service.
	ES EncryptionService
	// LogLevel is debug, info, warn or error (CORE_LOG_LEVEL, default info).
	LogLevel slog.Level
	// ShutdownTimeout bounds the graceful drain on SIGTERM (CORE_SHUTDOWN_TIMEOUT, default 20s).
	ShutdownTimeout time.Duration
	// MaxRequestBytes bounds a request body or message (CORE_MAX_REQUEST_BYTES, default 4 MiB).
	MaxRequestBytes int
}

// EncryptionService is the platform encryption service's gRPC endpoint and core's mTLS identity.
type EncryptionService struct {
	// Addr is host:port of its gRPC listener (CORE_ES_ADDR, default "localhost:9444").
	Addr string
	// ServerName overrides the name checked in its certificate (CORE_ES_SERVER_NAME, default: Addr's host).
	ServerName string
	// CAFile verifies its certificate (CORE_ES_CA_FILE, required).
	CAFile string
	// ClientCertFile and ClientKeyFile are core's client certificate (CORE_ES_CLIENT_CERT_FILE,
	// CORE_ES_CLIENT_KEY_FILE, required).
	ClientCertFile, ClientKeyFile string
	// Timeout bounds each call (CORE_ES_TIMEOUT, default 5s).
	Timeout time.Duration
}

// Load reads the configuration through getenv. Its error lists every missing or invalid variable
// by name; it never contains a secret's value.
func Load(getenv func(string) string) (Config, error) {
	e := &env{getenv: getenv}
	c := Config{
		GRPCAddr:        e.address("CORE_GRPC_ADDR", ":8444"),
		HTTPAddr:        e.address("CORE_HTTP_ADDR", ":8443"),
		DatabaseURL:     e.secret("CORE_DATABASE_URL", true),
		DBMaxConns:      e.integer("CORE_DB_MAX_CONNS", 20, 1, 1000),
		MigrateOnStart:  e.boolean("CORE_MIGRATE_ON_START", true),
		TLSCertFile:     e.file("CORE_TLS_CERT_FILE", true),
		TLSKeyFile:      e.file("CORE_TLS_KEY_FILE", true),
		TLSClientCAFile: e.file("CORE_TLS_CLIENT_CA_FILE", false),
		ES: EncryptionService{
			Addr:           e.address("CORE_ES_ADDR", "localhost:9444"),
			ServerName:     e.str("CORE_ES_SERVER_NAME", ""),
			CAFile:         e.file("CORE_ES_CA_FILE", true),
			ClientCertFile: e.file("CORE_ES_CLIENT_CERT_FILE", true),
			ClientKeyFile:  e.file("CORE_ES_CLIENT_KEY_FILE", true),
			Timeout:        e.duration("CORE_ES_TIMEOUT", 5*time.Second, 100*time.Millisecond, 5*time.Minute),
		},
		ShutdownTimeout: e.duration("CORE_SHUTDOWN_TIMEOUT", 20*time.Second, time.Second, 10*time.Minute),
		MaxRequestBytes: e.integer("CORE_MAX_REQUEST_BYTES", 4<<20, 1<<10, 64<<20),
	}
	c.LogLevel = logLevel(e, "CORE_LOG_LEVEL")
	if c.GRPCAddr == c.HTTPAddr && c.GRPCAddr[len(c.GRPCAddr)-2:] != ":0" {
		e.fail("CORE_HTTP_ADDR", "must differ from CORE_GRPC_ADDR (%s)", c.GRPCAddr)
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
