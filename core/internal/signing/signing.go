// Package signing keeps the Ed25519 keys that sign core's access tokens: stored in the database,
// sealed under core's secret keys, shared by every replica, rotated with the previous key still
// verifying.
package signing

import (
	"context"
	"crypto/ed25519"
	"io"
	"time"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/secretbox"
	"github.com/custos-platform/custos/core/internal/token"
)

// Store is what signing needs from the database.
type Store interface {
	ListSigningKeys(ctx context.Context) ([]postgres.SigningKey, error)
	EnsureSigningKey(ctx context.Context, make func() (postgres.SigningKey, error)) ([]postgres.SigningKey, error)
	RotateSigningKey(ctx context.Context, make func() (postgres.SigningKey, error), keep, due time.Duration) (string, error)
}

var _ Store = (*postgres.Store)(nil)

// Keys loads the signing keys in force, creating the first one if there is none (once, whichever
// replica gets there first). The newest key signs; the others only verify.
func Keys(ctx context.Context, store Store, box *secretbox.Box, rand io.Reader) (*token.Keys, error) {
	rows, err := store.EnsureSigningKey(ctx, func() (postgres.SigningKey, error) { return newRow(box, rand) })
	if err != nil {
		return nil, err
	}
	return fromRows(rows, box)
}

// ReloadInterval is how often every replica reloads the keys in force (see Reload): a new key
// signs on a replica within it at the latest.
const ReloadInterval = time.Minute

// Rotate adds a new signing key, which signs from the next reload of each replica on (within
// ReloadInterval; a replica that meets a token of a key it does not know yet reloads at once),
// and returns its id. Older keys keep verifying while tokens they signed may still be valid: a
// key is retired once its successor has been in force for keep (the access-token lifetime; the
// replicas' reload interval and the clock leeway are added here). So rotating twice within an
// access token's lifetime cuts no valid token short.
func Rotate(ctx context.Context, store Store, box *secretbox.Box, rand io.Reader, keep time.Duration) (string, error) {
	return store.RotateSigningKey(ctx, func() (postgres.SigningKey, error) { return newRow(box, rand) }, retention(keep), 0)
}

// RotateIfDue is Rotate when the signing key is older than every, for replicas that rotate on a
// schedule: of those finding it due at once, one rotates. It returns the new key's id, or "" when
// none was due.
func RotateIfDue(ctx context.Context, store Store, box *secretbox.Box, rand io.Reader, keep, every time.Duration) (string, error) {
	if every <= 0 {
		return "", errs.E(errs.Invalid, "signing key rotation: the interval must be positive")
	}
	return store.RotateSigningKey(ctx, func() (postgres.SigningKey, error) { return newRow(box, rand) }, retention(keep), every)
}

// retention is how long a replaced key must keep verifying: the tokens it signed until every
// replica signs with its successor live for keep more, within the clock leeway.
func retention(keep time.Duration) time.Duration { return keep + ReloadInterval + token.Leeway }

func newRow(box *secretbox.Box, rand io.Reader) (postgres.SigningKey, error) {
	k, err := token.GenerateSigningKey(rand, time.Now())
	if err != nil {
		return postgres.SigningKey{}, errs.Wrap(errs.Internal, err, "generate signing key")
	}
	sealed, err := box.Seal(k.Private, ad(k.ID))
	if err != nil {
		return postgres.SigningKey{}, errs.Wrap(errs.Internal, err, "seal signing key")
	}
	return postgres.SigningKey{ID: k.ID, PrivateKeySealed: sealed}, nil
}

func fromRows(rows []postgres.SigningKey, box *secretbox.Box) (*token.Keys, error) {
	if len(rows) == 0 {
		return nil, errs.E(errs.Internal, "no signing key in force")
	}
	keys := make([]token.SigningKey, 0, len(rows))
	for _, r := range rows {
		priv, err := box.Open(r.PrivateKeySealed, ad(r.ID))
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "open signing key "+r.ID+" (is its secret key still in CORE_SECRET_KEYS?)")
		}
		if len(priv) != ed25519.PrivateKeySize {
			return nil, errs.E(errs.Internal, "signing key %s has a bad length", r.ID)
		}
		keys = append(keys, token.SigningKey{ID: r.ID, Private: ed25519.PrivateKey(priv)})
	}
	return token.NewKeys(keys[0], keys[1:]...)
}

// Reload loads the keys in force without creating any.
func Reload(ctx context.Context, store Store, box *secretbox.Box) (*token.Keys, error) {
	rows, err := store.ListSigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	return fromRows(rows, box)
}

func ad(id string) []byte { return postgres.SigningKeyAD(id) }
