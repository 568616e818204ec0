// Package config loads the encryption service's configuration from the environment.
//
// Every variable is documented in the README's configuration table; Load validates all of them
// before anything is wired, and reports every problem at once.
package config

import (
	"encoding/hex"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
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
	// GRPCMaxConnectionAge makes gRPC clients reconnect, and so find replicas added since, once
	// their connection is that old (ES_GRPC_MAX_CONNECTION_AGE, default 5m; 0 never).
	GRPCMaxConnectionAge time.Duration
	// MaxRequestBytes bounds a request body or message (ES_MAX_REQUEST_BYTES, default 4 MiB).
	MaxRequestBytes int
	// MaxDataBytes bounds the plaintext of one encryption (ES_MAX_DATA_BYTES, default 1 MiB).
	MaxDataBytes int
	// MaxBatchItems bounds the items of one batch call (ES_MAX_BATCH_ITEMS, default 1000).
	MaxBatchItems int
	// MaxEncryptionsPerVersion bounds the encryptions of every key version, after which it is
	// rotated (ES_MAX_ENCRYPTIONS_PER_VERSION, default and at most 2^31; see
	// keyring.DefaultMaxEncryptionsPerVersion).
	MaxEncryptionsPerVersion int64
	// MasterKeys are the platform master keys (ES_MASTER_KEYS, or files in ES_MASTER_KEY_DIR), and
	// ActiveMasterKeyID the one that wraps new keys (ES_ACTIVE_MASTER_KEY_ID; optional with one key).
	MasterKeys        []masterkey.Key
	ActiveMasterKeyID string
	// MasterKeyWarnings are non-fatal findings about the key files (e.g. readable by others).
	MasterKeyWarnings []string
	// AdminTokenHash is the SHA-256 of the admin-plane token (ES_ADMIN_TOKEN_HASH, 64 hex digits);
	// empty disables the admin plane.
	AdminTokenHash []byte
	// MetricsAddr, when set, serves Prometheus metrics at GET /metrics on a TLS listener that, like
	// every listener of the service, requires a client certificate (ES_METRICS_ADDR).
	MetricsAddr string
	// ProxyProtocolFrom lists the load balancers (IP addresses and CIDR ranges) that open every
	// connection with a PROXY protocol header carrying the client's address
	// (ES_PROXY_PROTOCOL_FROM, comma-separated; empty: none). Loopback may not be listed.
	ProxyProtocolFrom []netip.Prefix
	// AdminCNs restricts the admin plane to client certificates with these common names
	// (ES_ADMIN_CLIENT_CNS, comma-separated; empty allows any certificate the CA verifies).
	AdminCNs []string
}

// Database is the configuration of commands that only need the database (migrate, tenant …).
type Database struct {
	DatabaseURL string
	LogLevel    slog.Level
}

// LoadDatabase reads only ES_DATABASE_URL (or _FILE) and ES_LOG_LEVEL.
func LoadDatabase(getenv func(string) string) (Database, error) {
	e := &env{getenv: getenv}
	d := Database{DatabaseURL: e.secret("ES_DATABASE_URL", true), LogLevel: logLevel(e, "ES_LOG_LEVEL")}
	return d, e.err()
}

// Keys is the configuration of commands that need the database and the platform master keys
// (master-key rotate).
type Keys struct {
	Database
	MasterKeys        []masterkey.Key
	ActiveMasterKeyID string
	MasterKeyWarnings []string
}

// LoadKeys reads ES_DATABASE_URL (or _FILE), ES_LOG_LEVEL and the master keys as Load does
// (ES_MASTER_KEYS or ES_MASTER_KEY_DIR, ES_ACTIVE_MASTER_KEY_ID). Its error names every missing or
// invalid variable and never holds a key.
func LoadKeys(getenv func(string) string) (Keys, error) {
	e := &env{getenv: getenv}
	k := Keys{Database: Database{DatabaseURL: e.secret("ES_DATABASE_URL", true), LogLevel: logLevel(e, "ES_LOG_LEVEL")}}
	k.MasterKeys, k.MasterKeyWarnings = masterKeys(e)
	k.ActiveMasterKeyID = activeMasterKeyID(e, k.MasterKeys)
	return k, e.err()
}

// activeMasterKeyID reads ES_ACTIVE_MASTER_KEY_ID and checks it against keys.
func activeMasterKeyID(e *env, keys []masterkey.Key) string {
	id := e.str("ES_ACTIVE_MASTER_KEY_ID", "")
	if len(keys) > 0 {
		if _, err := masterkey.NewKeyring(keys, id); err != nil {
			e.fail("ES_ACTIVE_MASTER_KEY_ID", "%v", err)
		}
	}
	return id
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
	c.GRPCMaxConnectionAge = e.duration("ES_GRPC_MAX_CONNECTION_AGE", 5*time.Minute, 0, 24*time.Hour)
	c.LogLevel = logLevel(e, "ES_LOG_LEVEL")
	c.ProxyProtocolFrom = e.prefixes("ES_PROXY_PROTOCOL_FROM")
	c.MaxDataBytes = e.integer("ES_MAX_DATA_BYTES", 1<<20, 1, c.MaxRequestBytes)
	c.MaxBatchItems = e.integer("ES_MAX_BATCH_ITEMS", 1000, 1, 100_000)
	c.MaxEncryptionsPerVersion = int64(e.integer("ES_MAX_ENCRYPTIONS_PER_VERSION", maxEncryptionsPerVersion, 1, maxEncryptionsPerVersion))
	c.MasterKeys, c.MasterKeyWarnings = masterKeys(e)
	c.ActiveMasterKeyID = activeMasterKeyID(e, c.MasterKeys)
	c.AdminTokenHash = adminTokenHash(e)
	if e.str("ES_METRICS_ADDR", "") != "" {
		c.MetricsAddr = e.address("ES_METRICS_ADDR", "")
	}
	for _, cn := range strings.Split(e.str("ES_ADMIN_CLIENT_CNS", ""), ",") {
		if cn = strings.TrimSpace(cn); cn != "" {
			c.AdminCNs = append(c.AdminCNs, cn)
		}
	}
	if c.GRPCAddr == c.HTTPAddr && c.GRPCAddr[len(c.GRPCAddr)-2:] != ":0" {
		e.fail("ES_HTTP_ADDR", "must differ from ES_GRPC_ADDR (%s)", c.GRPCAddr)
	}
	return c, e.err()
}

// maxEncryptionsPerVersion is the default and highest ES_MAX_ENCRYPTIONS_PER_VERSION: 2^31, half
// of NIST SP 800-38D's 2^32 limit on AES-GCM encryptions with random 96-bit nonces under one key,
// leaving margin for counts that reach the database only once a second from each replica.
const maxEncryptionsPerVersion = 1 << 31

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

// masterKeys reads the platform master keys from ES_MASTER_KEYS (secret: "id:base64,…") or the
// directory ES_MASTER_KEY_DIR (one file per key, named by its id). Exactly one source is required.
func masterKeys(e *env) ([]masterkey.Key, []string) {
	inline := e.secret("ES_MASTER_KEYS", false)
	dir := e.str("ES_MASTER_KEY_DIR", "")
	switch {
	case inline != "" && dir != "":
		e.fail("ES_MASTER_KEYS", "set either ES_MASTER_KEYS or ES_MASTER_KEY_DIR, not both")
	case inline != "":
		keys, err := masterkey.FromEnv(inline)
		if err != nil {
			e.fail("ES_MASTER_KEYS", "%v", err)
		}
		return keys, nil
	case dir != "":
		keys, warnings, err := masterkey.FromDir(dir)
		if err != nil {
			e.fail("ES_MASTER_KEY_DIR", "%v", err)
		}
		return keys, warnings
	default:
		e.fail("ES_MASTER_KEYS", "required (or ES_MASTER_KEYS_FILE, or ES_MASTER_KEY_DIR): the platform master keys, \"id:base64 of 32 bytes\"")
	}
	return nil, nil
}

// adminTokenHash reads ES_ADMIN_TOKEN_HASH: 64 hex digits, optionally prefixed "sha256:".
func adminTokenHash(e *env) []byte {
	s := strings.TrimPrefix(e.secret("ES_ADMIN_TOKEN_HASH", false), "sha256:")
	if s == "" {
		return nil
	}
	h, err := hex.DecodeString(s)
	if err != nil || len(h) != 32 {
		e.fail("ES_ADMIN_TOKEN_HASH", "want the SHA-256 of the admin token as 64 hex digits (see: encryption-service admin-token generate)")
		return nil
	}
	return h
}
