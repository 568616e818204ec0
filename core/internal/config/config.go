// Package config loads core's configuration from the environment.
//
// Every variable is documented in the README's configuration table; Load validates all of them
// before anything is wired, and reports every problem at once.
package config

import (
	"log/slog"
	"net/netip"
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
	// SecretKeys seal core's own secrets at rest (TOTP secrets, signing keys, tenants' encryption
	// service secrets): CORE_SECRET_KEYS (secret, "id:base64,…"), with CORE_ACTIVE_SECRET_KEY_ID
	// choosing the sealing one when there are several.
	SecretKeys        string
	ActiveSecretKeyID string
	// Admin is the platform admin created at the first start, if any (CORE_ADMIN_USERNAME and
	// CORE_ADMIN_PASSWORD or _FILE); an existing admin is never changed.
	AdminUsername, AdminPassword string
	// Tokens configure access tokens.
	Tokens Tokens
	// Throttle bounds failed logins and TOTP codes per account.
	Throttle Throttle
	// MetricsAddr, when set, serves Prometheus metrics at GET /metrics on a TLS listener
	// (CORE_METRICS_ADDR) that requires a client certificate verified against
	// MetricsClientCAFile (CORE_METRICS_CLIENT_CA_FILE, required with CORE_METRICS_ADDR).
	MetricsAddr, MetricsClientCAFile string
	// ProxyProtocolFrom lists the load balancers (IP addresses and CIDR ranges) that open every
	// connection with a PROXY protocol header carrying the client's address
	// (CORE_PROXY_PROTOCOL_FROM, comma-separated; empty: none). Loopback may not be listed.
	ProxyProtocolFrom []netip.Prefix
	// PasswordMemoryKiB and PasswordIterations are the Argon2id cost of stored password hashes
	// (CORE_PASSWORD_MEMORY_KIB default 65536, from 8192 to 262144; CORE_PASSWORD_ITERATIONS
	// default 3, from 1 to 10; their product at most 1048576, password.MaxCostKiB).
	PasswordMemoryKiB, PasswordIterations int
}

// Throttle bounds failed attempts: after MaxFailures within Window, the account is locked out
// for Lockout (CORE_LOGIN_MAX_FAILURES default 5, CORE_LOGIN_WINDOW default 15m,
// CORE_LOGIN_LOCKOUT default 15m). Client addresses get ten times MaxFailures.
type Throttle struct {
	MaxFailures     int
	Window, Lockout time.Duration
}

// Tokens configure access tokens.
type Tokens struct {
	Issuer    string        // CORE_TOKEN_ISSUER, default "custos"
	Audience  string        // CORE_TOKEN_AUDIENCE, default "custos-api"
	AccessTTL time.Duration // CORE_ACCESS_TOKEN_TTL, default 15m, 1m to 1h: a stolen token stays usable that long
	// SessionTTL is how long a login lasts, however often its refresh token is exchanged
	// (CORE_SESSION_TTL, default 2160h = 90 days, 1h to 8760h); then the person logs in again.
	SessionTTL time.Duration
	// SigningKeyRotation is the age at which the replicas replace the access-token signing key
	// on their own (CORE_SIGNING_KEY_ROTATION, default 720h = 30 days, 24h to 8760h).
	SigningKeyRotation time.Duration
}

// Database is the configuration of commands that need only the database and core's secret keys.
type Database struct {
	DatabaseURL                   string
	SecretKeys, ActiveSecretKeyID string
	AdminUsername, AdminPassword  string
	LogLevel                      slog.Level
	// PasswordMemoryKiB and PasswordIterations are as in Config: the cost of the hash of a
	// platform admin created by a command.
	PasswordMemoryKiB, PasswordIterations int
	// AccessTTL is as in Config's Tokens: how long a rotated signing key must keep verifying.
	AccessTTL time.Duration
}

// LoadDatabase reads CORE_DATABASE_URL (or _FILE, required), CORE_SECRET_KEYS (or _FILE, needed by
// the commands that seal or open secrets, which check it), CORE_ACTIVE_SECRET_KEY_ID, the admin
// variables, CORE_LOG_LEVEL, the password hash cost (CORE_PASSWORD_MEMORY_KIB,
// CORE_PASSWORD_ITERATIONS) and CORE_ACCESS_TOKEN_TTL.
func LoadDatabase(getenv func(string) string) (Database, error) {
	e := &env{getenv: getenv}
	d := Database{
		DatabaseURL:        e.secret("CORE_DATABASE_URL", true),
		SecretKeys:         e.secret("CORE_SECRET_KEYS", false),
		ActiveSecretKeyID:  e.str("CORE_ACTIVE_SECRET_KEY_ID", ""),
		AdminUsername:      e.str("CORE_ADMIN_USERNAME", ""),
		AdminPassword:      e.secret("CORE_ADMIN_PASSWORD", false),
		LogLevel:           logLevel(e, "CORE_LOG_LEVEL"),
		PasswordMemoryKiB:  e.integer("CORE_PASSWORD_MEMORY_KIB", 64*1024, 8*1024, 256*1024),
		PasswordIterations: e.integer("CORE_PASSWORD_ITERATIONS", 3, 1, 10),
		AccessTTL:          e.duration("CORE_ACCESS_TOKEN_TTL", 15*time.Minute, time.Minute, time.Hour),
	}
	passwordCost(e, d.PasswordMemoryKiB, d.PasswordIterations)
	return d, e.err()
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
	// AdminToken is the encryption service's admin-plane token, with which core provisions tenants
	// (CORE_ES_ADMIN_TOKEN or _FILE; without it, tenants need a hosted encryption endpoint).
	AdminToken string
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
			AdminToken:     e.secret("CORE_ES_ADMIN_TOKEN", false),
		},
		SecretKeys:        e.secret("CORE_SECRET_KEYS", true),
		ActiveSecretKeyID: e.str("CORE_ACTIVE_SECRET_KEY_ID", ""),
		AdminUsername:     e.str("CORE_ADMIN_USERNAME", ""),
		AdminPassword:     e.secret("CORE_ADMIN_PASSWORD", false),
		Tokens: Tokens{
			Issuer:             e.str("CORE_TOKEN_ISSUER", "custos"),
			Audience:           e.str("CORE_TOKEN_AUDIENCE", "custos-api"),
			AccessTTL:          e.duration("CORE_ACCESS_TOKEN_TTL", 15*time.Minute, time.Minute, time.Hour),
			SessionTTL:         e.duration("CORE_SESSION_TTL", 90*24*time.Hour, time.Hour, 365*24*time.Hour),
			SigningKeyRotation: e.duration("CORE_SIGNING_KEY_ROTATION", 30*24*time.Hour, 24*time.Hour, 365*24*time.Hour),
		},
		PasswordMemoryKiB:  e.integer("CORE_PASSWORD_MEMORY_KIB", 64*1024, 8*1024, 256*1024),
		PasswordIterations: e.integer("CORE_PASSWORD_ITERATIONS", 3, 1, 10),
		Throttle: Throttle{
			MaxFailures: e.integer("CORE_LOGIN_MAX_FAILURES", 5, 1, 1000),
			Window:      e.duration("CORE_LOGIN_WINDOW", 15*time.Minute, time.Second, 24*time.Hour),
			Lockout:     e.duration("CORE_LOGIN_LOCKOUT", 15*time.Minute, time.Second, 24*time.Hour),
		},
		ShutdownTimeout: e.duration("CORE_SHUTDOWN_TIMEOUT", 20*time.Second, time.Second, 10*time.Minute),
		MaxRequestBytes: e.integer("CORE_MAX_REQUEST_BYTES", 4<<20, 1<<10, 64<<20),
	}
	c.LogLevel = logLevel(e, "CORE_LOG_LEVEL")
	c.ProxyProtocolFrom = e.prefixes("CORE_PROXY_PROTOCOL_FROM")
	passwordCost(e, c.PasswordMemoryKiB, c.PasswordIterations)
	if e.str("CORE_METRICS_ADDR", "") != "" {
		c.MetricsAddr = e.address("CORE_METRICS_ADDR", "")
		c.MetricsClientCAFile = e.file("CORE_METRICS_CLIENT_CA_FILE", true)
	}
	if (c.AdminUsername == "") != (c.AdminPassword == "") {
		e.fail("CORE_ADMIN_USERNAME", "set CORE_ADMIN_USERNAME and CORE_ADMIN_PASSWORD (or _FILE) together")
	}
	if c.GRPCAddr == c.HTTPAddr && c.GRPCAddr[len(c.GRPCAddr)-2:] != ":0" {
		e.fail("CORE_HTTP_ADDR", "must differ from CORE_GRPC_ADDR (%s)", c.GRPCAddr)
	}
	return c, e.err()
}

// passwordCost refuses an Argon2id cost over the work budget of one password hash (memory ×
// iterations at most 1048576 KiB·passes, password.MaxCostKiB), which the password package would
// refuse to hash with and to verify: each variable in its own range is not enough.
func passwordCost(e *env, memoryKiB, iterations int) {
	if memoryKiB*iterations > 1<<20 {
		e.fail("CORE_PASSWORD_ITERATIONS", "CORE_PASSWORD_MEMORY_KIB × CORE_PASSWORD_ITERATIONS must be at most 1048576, got %d × %d",
			memoryKiB, iterations)
	}
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
