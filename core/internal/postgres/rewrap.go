package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/secretbox"
)

// Kinds of sealed values core stores, as CountSealed and RewrapSealed name them.
const (
	SealedKindTOTP           = "totp-secret"     // users.totp_secret_sealed
	SealedKindSigningKey     = "signing-key"     // signing_keys.private_key_sealed, of unretired keys
	SealedKindTenantSecret   = "tenant-secret"   // tenants.es_tenant_secret_sealed
	SealedKindClientKey      = "client-key"      // tenants.es_client_key_sealed
	SealedKindPlatformSecret = "platform-secret" // platform_secrets.value_sealed
)

// sealedColumn is a column of sealed values: where they are, and the associated data each row's
// value was sealed with.
type sealedColumn struct {
	kind     string
	table    string
	key      string // the primary key column; read as text
	keyType  string // its SQL type
	column   string
	where    string // which rows count, besides a non-NULL value ("" for all)
	ad       func(key string) ([]byte, error)
	describe string // what a row is, in messages: "user", "tenant" …
}

// TOTPSecretAD is the associated data that binds a user's sealed TOTP secret to the user.
func TOTPSecretAD(userID uuid.UUID) []byte {
	return []byte("custos/core/totp-secret/v1\x00" + userID.String())
}

// SigningKeyAD is the associated data that binds a sealed access-token signing key to its id.
func SigningKeyAD(id string) []byte { return []byte("custos/core/signing-key/v1\x00" + id) }

// sealedColumns are every sealed value core stores, with the associated data the packages that
// seal them use — one definition each, in this package: TOTPSecretAD (auth), SigningKeyAD
// (signing), EndpointSecretAD (directory, esclient) and PlatformSecretAD (app).
//
// Retired signing keys are left out: nothing opens them again, so their secret key may go.
var sealedColumns = []sealedColumn{
	{kind: SealedKindTOTP, table: "users", key: "id", keyType: "uuid", column: "totp_secret_sealed", describe: "user",
		ad: func(k string) ([]byte, error) {
			id, err := uuid.Parse(k)
			if err != nil {
				return nil, fmt.Errorf("user id %q: %w", k, err)
			}
			return TOTPSecretAD(id), nil
		}},
	{kind: SealedKindSigningKey, table: "signing_keys", key: "id", keyType: "text", column: "private_key_sealed",
		where: "retired_at IS NULL", describe: "signing key",
		ad: func(k string) ([]byte, error) { return SigningKeyAD(k), nil }},
	{kind: SealedKindTenantSecret, table: "tenants", key: "id", keyType: "uuid", column: "es_tenant_secret_sealed", describe: "tenant",
		ad: endpointAD(SealedTenantSecret)},
	{kind: SealedKindClientKey, table: "tenants", key: "id", keyType: "uuid", column: "es_client_key_sealed", describe: "tenant",
		ad: endpointAD(SealedClientKey)},
	{kind: SealedKindPlatformSecret, table: "platform_secrets", key: "name", keyType: "text", column: "value_sealed",
		describe: "platform secret", ad: func(k string) ([]byte, error) { return PlatformSecretAD(k), nil }},
}

func endpointAD(field string) func(string) ([]byte, error) {
	return func(k string) ([]byte, error) {
		id, err := uuid.Parse(k)
		if err != nil {
			return nil, fmt.Errorf("tenant id %q: %w", k, err)
		}
		return EndpointSecretAD(id, field), nil
	}
}

// keyIDExpr is the SQL for the key id a sealed value names (see package secretbox: version byte 1,
// a length byte, the id), as bytea; NULL for a value of another format. It lets the database count
// and select by key without any key: keep it in step with secretbox's format.
func keyIDExpr(column string) string {
	return fmt.Sprintf("CASE WHEN length(%[1]s) >= 2 AND get_byte(%[1]s, 0) = 1 THEN substring(%[1]s FROM 3 FOR get_byte(%[1]s, 1)) END", column)
}

// SealedCount is how many values of one kind are sealed under one secret key.
type SealedCount struct {
	Kind  string // SealedKindTOTP …
	KeyID string // the secret key's id as the values name it; "" for values of an unknown format
	Count int64
}

// CountSealed counts the sealed values core stores by kind and by the id of the secret key that
// sealed them, reading only the ids the values carry (no key is needed). It costs a scan of the
// tables holding them (users, tenants, signing_keys, platform_secrets). It returns no error of its
// own.
func (s *Store) CountSealed(ctx context.Context) ([]SealedCount, error) {
	var out []SealedCount
	for _, c := range sealedColumns {
		where := c.column + " IS NOT NULL"
		if c.where != "" {
			where += " AND " + c.where
		}
		rows, err := s.pool.Query(ctx, fmt.Sprintf("SELECT %s AS kid, count(*) FROM %s WHERE %s GROUP BY kid",
			keyIDExpr(c.column), c.table, where))
		if err != nil {
			return nil, fail("count sealed values", fmt.Errorf("%s: %w", c.kind, err))
		}
		var (
			kid []byte
			n   int64
		)
		_, err = pgx.ForEachRow(rows, []any{&kid, &n}, func() error {
			out = append(out, SealedCount{Kind: c.kind, KeyID: sealedKeyID(kid), Count: n})
			return nil
		})
		if err != nil {
			return nil, fail("count sealed values", fmt.Errorf("%s: %w", c.kind, err))
		}
	}
	return out, nil
}

// sealedKeyID is the key id a value names, or "" if it is not a well-formed one.
func sealedKeyID(b []byte) string {
	if !secretbox.ValidID(string(b)) {
		return ""
	}
	return string(b)
}

// Rewrapper re-seals values under its active key: a *secretbox.Box.
type Rewrapper interface {
	// ActiveID is the id of the key that seals.
	ActiveID() string
	// Rewrap opens blob, sealed with ad, and seals its plaintext again under the active key with ad.
	Rewrap(blob, ad []byte) ([]byte, error)
}

// RewrapFailure is a value RewrapSealed could not re-seal.
type RewrapFailure struct {
	Kind  string // SealedKindTOTP …
	Row   string // what holds it: "user 0193…", "tenant …", "signing key …", "platform secret …"
	KeyID string // the key id it names ("" if malformed)
	Err   error  // why (secretbox's errors, which hold no secret)
}

// RewrapResult is what RewrapSealed did.
type RewrapResult struct {
	Rewrapped map[string]int64 // values re-sealed, by kind
	Failed    []RewrapFailure  // values that did not open, at most maxRewrapFailures of them
	Failures  int64            // how many did not open in all
}

// maxRewrapFailures bounds RewrapResult.Failed.
const maxRewrapFailures = 100

// RewrapSealed re-seals every value of CountSealed's that is sealed under a key other than box's
// active one, with the same associated data, so that the other keys can be retired. It walks
// each column in primary-key order, batch rows at a time (at most 1000; 100 if batch <= 0), each
// batch in a transaction of its own holding the rows' locks (FOR NO KEY UPDATE, so a concurrent
// change of the same value waits and is never lost), and calls progress (if not nil) after each
// committed batch with its kind and size. It is idempotent and resumable: values already under the
// active key are not touched, and an interrupted run leaves every value sealed under one key or
// the other, so running it again finishes the work.
//
// A value that does not open (its key is not in box, it is malformed or was altered) is skipped
// and reported in the result; the rest are still re-sealed. Errors: Invalid for a box without an
// active key; Unavailable or Internal for the database (batches committed before stay done).
func (s *Store) RewrapSealed(ctx context.Context, box Rewrapper, batch int, progress func(kind string, n int)) (RewrapResult, error) {
	res := RewrapResult{Rewrapped: map[string]int64{}}
	active := box.ActiveID()
	if active == "" {
		return res, errs.E(errs.Invalid, "rewrap: no active secret key")
	}
	if batch <= 0 {
		batch = 100
	}
	batch = min(batch, 1000)
	for _, c := range sealedColumns {
		after, first := "", true
		for {
			var (
				n        int
				last     string
				failures []RewrapFailure
			)
			err := s.inTx(ctx, func(tx pgx.Tx) error {
				var err error
				n, last, failures, err = rewrapBatch(ctx, tx, c, box, active, after, first, batch)
				return err
			})
			if err != nil {
				return res, fail("rewrap sealed values", fmt.Errorf("%s: %w", c.kind, err))
			}
			if last == "" {
				break
			}
			after, first = last, false
			res.Rewrapped[c.kind] += int64(n)
			res.Failures += int64(len(failures))
			res.Failed = append(res.Failed, failures[:min(len(failures), maxRewrapFailures-len(res.Failed))]...)
			if progress != nil && n > 0 {
				progress(c.kind, n)
			}
		}
	}
	return res, nil
}

// rewrapBatch re-seals the next rows of c after the key after (from the first row if first),
// returning how many it re-sealed, the last key it looked at ("" when none was left) and the values
// that did not open.
func rewrapBatch(ctx context.Context, tx pgx.Tx, c sealedColumn, box Rewrapper, active, after string, first bool, limit int) (
	n int, last string, failed []RewrapFailure, err error,
) {
	where := fmt.Sprintf("%s IS NOT NULL AND %s IS DISTINCT FROM $1::bytea", c.column, keyIDExpr(c.column))
	if c.where != "" {
		where += " AND " + c.where
	}
	args := []any{[]byte(active), limit}
	if !first {
		where += fmt.Sprintf(" AND %s > $3::%s", c.key, c.keyType)
		args = append(args, after)
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %[1]s::text, %[2]s FROM %[3]s WHERE %[4]s ORDER BY %[1]s LIMIT $2 FOR NO KEY UPDATE",
		c.key, c.column, c.table, where), args...)
	if err != nil {
		return 0, "", nil, fmt.Errorf("select: %w", err)
	}
	type row struct {
		key    string
		sealed []byte
	}
	todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.key, &x.sealed)
		return x, err
	})
	if err != nil {
		return 0, "", nil, fmt.Errorf("select: %w", err)
	}
	for _, r := range todo {
		last = r.key
		ad, err := c.ad(r.key)
		var resealed []byte
		if err == nil {
			resealed, err = box.Rewrap(r.sealed, ad)
		}
		if err != nil {
			failed = append(failed, RewrapFailure{Kind: c.kind, Row: c.describe + " " + r.key, KeyID: keyIDOf(r.sealed), Err: err})
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s SET %s = $1 WHERE %s = $2::%s", c.table, c.column, c.key, c.keyType),
			resealed, r.key); err != nil {
			return 0, "", nil, fmt.Errorf("update %s %s: %w", c.describe, r.key, err)
		}
		n++
	}
	return n, last, failed, nil
}

// keyIDOf is the key id a sealed value names, "" if it is malformed.
func keyIDOf(sealed []byte) string {
	id, err := secretbox.KeyID(sealed)
	if err != nil {
		return ""
	}
	return id
}

// MissingKeyError reports stored values sealed under secret keys the box lacks: they cannot be
// opened until those keys are given back.
type MissingKeyError struct {
	Missing map[string]int64 // values by missing key id
}

// Error names each missing key, how many values it seals, and what to do.
func (e *MissingKeyError) Error() string {
	ids := make([]string, 0, len(e.Missing))
	for id := range e.Missing {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	msg := "the database holds secrets sealed under secret keys that CORE_SECRET_KEYS lacks:"
	for _, id := range ids {
		msg += fmt.Sprintf(" %q (%d values)", id, e.Missing[id])
	}
	return msg + "; put those keys back into CORE_SECRET_KEYS, run `core secret-keys rewrap`, " +
		"and remove them only once `core secret-keys status` shows that they seal nothing"
}

// CheckSealedKeys returns a *MissingKeyError if any value CountSealed counts names a secret key id
// not in known, and nil otherwise; values of an unknown format are left to the code that opens
// them. Its other errors are CountSealed's.
func (s *Store) CheckSealedKeys(ctx context.Context, known []string) error {
	counts, err := s.CountSealed(ctx)
	if err != nil {
		return err
	}
	missing := map[string]int64{}
	for _, c := range counts {
		if c.KeyID != "" && !slices.Contains(known, c.KeyID) {
			missing[c.KeyID] += c.Count
		}
	}
	if len(missing) > 0 {
		return &MissingKeyError{Missing: missing}
	}
	return nil
}
