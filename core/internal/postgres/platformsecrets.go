package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Names of the platform secrets: root secrets of the whole installation, sealed under core's
// secret keys and stored once, so that rotating those keys changes neither.
const (
	// PlatformPreloginSeed is the seed of unknown users' fake prelogin parameters (and so of every
	// user's KDF salt, which prelogin answered before the user was created).
	PlatformPreloginSeed = "prelogin-seed"
	// PlatformExportKey is the key of export integrity tags.
	PlatformExportKey = "export-integrity-key"
)

// PlatformSecretAD is the associated data that binds a sealed platform secret to its name: one
// definition for who seals, who opens and who rewraps.
func PlatformSecretAD(name string) []byte {
	return []byte("custos/core/platform-secret/v1\x00" + name)
}

// validPlatformSecretName is the rule of the table's CHECK constraint.
var validPlatformSecretName = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// platformSecretsLockKey serializes the creation of platform secrets.
var platformSecretsLockKey = advisoryLockKey("platform-secrets")

// EnsurePlatformSecrets returns the sealed value of each named platform secret, by name, after
// storing one made by newSealed for each that is missing. Replicas starting together store one
// value per name: the check and the insertions run under an advisory lock. A stored value is never
// replaced. newSealed runs inside that transaction and may be called more than once for a name if
// the transaction is retried; it should only make and seal the value.
//
// Errors: Invalid for no names or a name that is not 1–64 characters of a–z, 0–9 and '-', or an
// empty sealed value; those of newSealed (an *errs.Error passes through, any other error becomes
// Internal "create platform secret").
func (s *Store) EnsurePlatformSecrets(ctx context.Context, newSealed func(name string) ([]byte, error), names ...string) (map[string][]byte, error) {
	if len(names) == 0 {
		return nil, errs.E(errs.Invalid, "no platform secret named")
	}
	for _, n := range names {
		if !validPlatformSecretName.MatchString(n) {
			return nil, errs.E(errs.Invalid, "platform secret name must be 1 to 64 characters of a-z, 0-9 and -")
		}
	}
	// The common case, every secret present, takes no lock.
	got, err := listPlatformSecrets(ctx, s.pool, names)
	if err != nil {
		return nil, fail("ensure platform secrets", err)
	}
	if len(got) == len(names) {
		return got, nil
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockAdvisory(ctx, tx, platformSecretsLockKey); err != nil {
			return err
		}
		if got, err = listPlatformSecrets(ctx, tx, names); err != nil {
			return err
		}
		for _, n := range names {
			if _, ok := got[n]; ok {
				continue
			}
			sealed, err := newSealed(n)
			if err != nil {
				var e *errs.Error
				if errors.As(err, &e) {
					return err
				}
				return errs.Wrap(errs.Internal, err, "create platform secret")
			}
			if len(sealed) == 0 {
				return errs.E(errs.Invalid, "sealed platform secret %q is empty", n)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO platform_secrets (name, value_sealed) VALUES ($1, $2)", n, sealed); err != nil {
				return fmt.Errorf("insert platform secret %q: %w", n, err)
			}
			got[n] = sealed
		}
		return nil
	})
	if err != nil {
		return nil, fail("ensure platform secrets", err)
	}
	return got, nil
}

func listPlatformSecrets(ctx context.Context, q querier, names []string) (map[string][]byte, error) {
	rows, err := q.Query(ctx, "SELECT name, value_sealed FROM platform_secrets WHERE name = ANY($1)", names)
	if err != nil {
		return nil, fmt.Errorf("list platform secrets: %w", err)
	}
	got := make(map[string][]byte, len(names))
	var (
		name   string
		sealed []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &sealed}, func() error {
		got[name] = sealed
		sealed = nil // ForEachRow scans into the same variables: keep each row's bytes
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list platform secrets: %w", err)
	}
	return got, nil
}
