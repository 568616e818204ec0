package postgres

// MigrateFS exposes migrateFS to the external test package, which can use
// testdb (testdb imports this package, so internal tests cannot).
var MigrateFS = migrateFS
