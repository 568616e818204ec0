// Package postgres owns the encryption service's PostgreSQL schema: its
// embedded migrations, the connection pool and the transaction helper.
//
// Every object lives in the schema named by [Schema], and the migration
// bookkeeping table is [Schema].schema_migrations, so this service and core
// (schema "core") can share one database without clashing.
//
// migrate.go, pool.go and tx.go are the same in both services
// (scripts/check-copies.sh); what differs is in this file.
package postgres

// Schema is the PostgreSQL schema that holds all of the service's tables.
const Schema = "encryption"

// OldestCompatibleVersion is the oldest schema version whose builds (those whose [LatestVersion]
// it is) can still serve against the schema this build migrates to. [Migrate] records it in
// Schema.schema_compatibility, and [CheckReady] and [Migrate] of an older build accept a newer
// schema when it is at least their version: during a rolling upgrade, old replicas then stay
// ready after the first new one has migrated.
//
// Leave it unchanged for additive migrations (new tables, nullable or defaulted columns, new
// indexes) that older builds can ignore. Raise it to the new [LatestVersion] in a release whose
// migrations break older builds: dropping or renaming what they read or write, a constraint they
// would violate. See migrations/README.md.
//
// 4 (0004_bound_public_keys): the platform wrapping of CLIENT contexts' sealing keys and RSA
// versions' key material binds their public keys, which builds before 4 cannot unwrap.
const OldestCompatibleVersion uint = 4

// defaultApplicationName is the application_name of the pool's connections (see [Open]).
const defaultApplicationName = "custos-encryption-service"
