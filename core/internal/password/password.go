// Package password hashes and checks user passwords with Argon2id (RFC 9106)
// and describes the key-derivation parameters that clients use before
// login (DESIGN.md §4).
//
// What a client sends as its password is already derived (authPassword,
// 44 characters of base64), but a human calling the REST API directly sends
// a real password, so everything here treats the value as a password: it is
// hashed again with a memory-hard function, compared in constant time, and
// never appears in an error.
//
// Hashes are PHC strings, $argon2id$v=19$m=…,t=…,p=…$salt$hash, with the
// salt and hash in unpadded standard base64. Parsing is strict and bounded,
// so a stored hash cannot make a verification cost more than [MaxCostKiB]
// (memory × passes) and [MaxMemoryKiB] of memory.
package password

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Bounds on Argon2id parameters, for new hashes and for parsed ones alike,
// and (with the client floor) for client KDF parameters. They reject
// settings that would let one stored hash, one misconfigured deployment or
// one hostile prelogin answer tie up a server or a client: a verification
// cannot be cancelled once started, and a server has only a few hashing
// slots. MaxCostKiB bounds memory × passes, the work of one derivation, at
// 1 GiB·pass: 256 MiB × 4, 128 MiB × 8 or 64 MiB × 10 at most, about 5× the
// default cost (64 MiB × 3).
const (
	MaxMemoryKiB   = 256 * 1024 // 256 MiB
	MaxIterations  = 10
	MaxCostKiB     = 1 << 20 // MemoryKiB × Iterations; 1 GiB·pass
	MaxParallelism = 16
	MinSaltLen     = 16
	MaxSaltLen     = 64
	MinKeyLen      = 16
	MaxKeyLen      = 64
)

// Password policy bounds, in bytes (see [Validate]).
const (
	MinLen = 12
	MaxLen = 1024
)

// Errors. Every error this package returns wraps one of these; none carries
// a password, a salt or a hash.
var (
	// ErrPolicy is wrapped by every error of [Validate]; ErrTooShort,
	// ErrTooLong and ErrInvalidCharacters say which rule failed.
	ErrPolicy            = errors.New("password does not meet the policy")
	ErrTooShort          = fmt.Errorf("%w: shorter than %d bytes", ErrPolicy, MinLen)
	ErrTooLong           = fmt.Errorf("%w: longer than %d bytes", ErrPolicy, MaxLen)
	ErrInvalidCharacters = fmt.Errorf("%w: not valid UTF-8 or contains NUL", ErrPolicy)

	// ErrInvalidParams: Argon2id parameters outside the bounds above.
	ErrInvalidParams = errors.New("invalid argon2id parameters")
	// ErrMalformedHash: a stored hash that is not a well-formed PHC string
	// of this package's format, or whose parameters are out of bounds.
	ErrMalformedHash = errors.New("malformed password hash")
	// ErrRandom: the random source failed.
	ErrRandom = errors.New("reading random bytes")
)

// Params are Argon2id parameters for server-side password hashes.
type Params struct {
	MemoryKiB   uint32 // m, in KiB; at least 8×Parallelism
	Iterations  uint32 // t, passes over memory
	Parallelism uint32 // p, lanes
	SaltLen     uint32 // bytes of random salt
	KeyLen      uint32 // bytes of output
}

// DefaultParams returns the production parameters: 64 MiB, 3 passes,
// 2 lanes (one per core of the reference machine), 16-byte salt, 32-byte
// hash. This is above the OWASP and RFC 9106 "second recommended" settings
// for Argon2id; measure with BenchmarkHashDefault before changing it.
func DefaultParams() Params {
	return Params{MemoryKiB: 64 * 1024, Iterations: 3, Parallelism: 2, SaltLen: 16, KeyLen: 32}
}

// TestParams returns cheap parameters (8 MiB, 1 pass, 1 lane) for tests of
// other packages that need real hashes without paying for production
// settings. Never use them in a deployment.
func TestParams() Params {
	return Params{MemoryKiB: 8 * 1024, Iterations: 1, Parallelism: 1, SaltLen: 16, KeyLen: 32}
}

// Validate reports whether p lies within the package's bounds, including
// the [MaxCostKiB] budget on memory × iterations. It returns an error
// wrapping [ErrInvalidParams] that names the offending field.
func (p Params) Validate() error {
	switch {
	case p.Parallelism < 1 || p.Parallelism > MaxParallelism:
		return fmt.Errorf("%w: parallelism %d not in [1, %d]", ErrInvalidParams, p.Parallelism, MaxParallelism)
	case p.Iterations < 1 || p.Iterations > MaxIterations:
		return fmt.Errorf("%w: iterations %d not in [1, %d]", ErrInvalidParams, p.Iterations, MaxIterations)
	case p.MemoryKiB < 8*p.Parallelism || p.MemoryKiB > MaxMemoryKiB:
		// Argon2 needs 8 KiB per lane; x/crypto would silently raise it,
		// the reference implementation refuses: refuse too.
		return fmt.Errorf("%w: memory %d KiB not in [%d, %d]", ErrInvalidParams, p.MemoryKiB, 8*p.Parallelism, MaxMemoryKiB)
	case overBudget(p.MemoryKiB, p.Iterations):
		return fmt.Errorf("%w: memory %d KiB × %d iterations over the budget of %d KiB·passes", ErrInvalidParams, p.MemoryKiB, p.Iterations, MaxCostKiB)
	case p.SaltLen < MinSaltLen || p.SaltLen > MaxSaltLen:
		return fmt.Errorf("%w: salt length %d not in [%d, %d]", ErrInvalidParams, p.SaltLen, MinSaltLen, MaxSaltLen)
	case p.KeyLen < MinKeyLen || p.KeyLen > MaxKeyLen:
		return fmt.Errorf("%w: key length %d not in [%d, %d]", ErrInvalidParams, p.KeyLen, MinKeyLen, MaxKeyLen)
	}
	return nil
}

// Validate checks a new password against the policy: 12 to 1024 bytes of
// valid UTF-8 without NUL. (Clients that follow DESIGN.md §4 send 44
// characters of base64 and always pass; humans calling the API directly
// must choose a long password.) It returns nil or an error wrapping
// [ErrPolicy] and one of [ErrTooShort], [ErrTooLong], [ErrInvalidCharacters].
// Existing passwords are not re-checked at login: policy applies when a
// password is set.
func Validate(password string) error {
	switch {
	case len(password) < MinLen:
		return ErrTooShort
	case len(password) > MaxLen:
		return ErrTooLong
	case !utf8.ValidString(password) || strings.IndexByte(password, 0) >= 0:
		return ErrInvalidCharacters
	}
	return nil
}

// Hash returns the PHC string of password's Argon2id hash under p, with a
// fresh salt read from rand. It fails with an error wrapping
// [ErrInvalidParams] if p is out of bounds, or [ErrRandom] if rand fails.
// It does not apply the policy: call [Validate] first for new passwords.
func Hash(password string, p Params, rand io.Reader) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	salt := make([]byte, p.SaltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return "", fmt.Errorf("%w: salt: %w", ErrRandom, err)
	}
	return encode(p, salt, derive(password, salt, p)), nil
}

// Verify reports whether password matches the PHC string phc, comparing in
// constant time, and whether phc should be replaced by a new hash under
// want (its parameters, salt or key length differ from want's). rehash is
// meaningful only when ok is true; hash again with [Hash] then.
//
// A mismatch is ok == false with a nil error. The error is non-nil, wrapping
// [ErrMalformedHash], only when phc is not a well-formed, in-bounds Argon2id
// PHC string: a corrupt record, not a wrong password. A password longer than
// [MaxLen] never matches (it could not have been set) and is refused before
// any hashing work.
func Verify(password, phc string, want Params) (ok, rehash bool, err error) {
	got, salt, key, err := decode(phc)
	if err != nil {
		return false, false, err
	}
	if len(password) > MaxLen {
		return false, false, nil
	}
	if subtle.ConstantTimeCompare(key, derive(password, salt, got)) != 1 {
		return false, false, nil
	}
	return true, got != want, nil
}

// DummyVerify spends the time a [Verify] against a hash made with p would,
// and returns nothing. Call it when a login names an unknown user (or one
// without a password) so that the answer takes as long as a real check and
// usernames cannot be told apart by timing. A p out of bounds is replaced by
// [DefaultParams].
func DummyVerify(password string, p Params) {
	if p.Validate() != nil {
		p = DefaultParams()
	}
	if len(password) > MaxLen {
		return // Verify would refuse it without hashing too.
	}
	// A fixed salt is fine: the output is discarded.
	salt := make([]byte, p.SaltLen)
	key := derive(password, salt, p)
	// Mirror Verify's comparison too; its cost is negligible but free.
	subtle.ConstantTimeCompare(key, make([]byte, len(key)))
}

// Inspect returns the parameters of the PHC string phc, or an error
// wrapping [ErrMalformedHash]. (SaltLen and KeyLen are those of the stored
// salt and hash.)
func Inspect(phc string) (Params, error) {
	p, _, _, err := decode(phc)
	return p, err
}

// derive is Argon2id itself; p must have passed Validate (Parallelism ≤ 16
// fits the uint8 the library takes).
func derive(password string, salt []byte, p Params) []byte {
	return argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, uint8(p.Parallelism), p.KeyLen) //nolint:gosec // bounded above: Validate limits Parallelism to 16
}

var b64 = base64.RawStdEncoding.Strict()

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// overBudget reports whether memoryKiB × iterations exceeds [MaxCostKiB];
// the product is taken in 64 bits so that it cannot wrap.
func overBudget(memoryKiB, iterations uint32) bool {
	return uint64(memoryKiB)*uint64(iterations) > MaxCostKiB
}

// maxPHCLen bounds the input before any parsing: the longest well-formed
// string (6-digit m, 2-digit t, 2-digit p, 64-byte salt and key) is ~210.
const maxPHCLen = 256

// decode parses a PHC string strictly: exactly the fields and order encode
// writes, canonical decimals, canonical unpadded base64, every value in
// bounds. Errors describe the defect, never quote the input.
func decode(phc string) (p Params, salt, key []byte, err error) {
	bad := func(what string) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("%w: %s", ErrMalformedHash, what)
	}
	if len(phc) > maxPHCLen {
		return bad("too long")
	}
	parts := strings.Split(phc, "$")
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, hash
	if len(parts) != 6 || parts[0] != "" {
		return bad("want $argon2id$v=19$m=…,t=…,p=…$salt$hash")
	}
	if parts[1] != "argon2id" {
		return bad("algorithm is not argon2id")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported argon2 version")
	}
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return bad("want parameters m=…,t=…,p=…")
	}
	var vals [3]uint32
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(fields[i], name+"=")
		if !ok {
			return bad("want parameters m=…,t=…,p=… in that order")
		}
		n, ok := canonicalUint32(v)
		if !ok {
			return bad("parameter " + name + " is not a canonical decimal number")
		}
		vals[i] = n
	}
	p = Params{MemoryKiB: vals[0], Iterations: vals[1], Parallelism: vals[2]}
	// Bound-check the encoded lengths before decoding anything.
	if len(parts[4]) > b64.EncodedLen(MaxSaltLen) || len(parts[5]) > b64.EncodedLen(MaxKeyLen) {
		return bad("salt or hash too long")
	}
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return bad("salt is not unpadded standard base64")
	}
	if key, err = b64.DecodeString(parts[5]); err != nil {
		return bad("hash is not unpadded standard base64")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key)) //nolint:gosec // bounded above: encoded lengths checked against MaxSaltLen/MaxKeyLen
	if err := p.Validate(); err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: %w", ErrMalformedHash, err)
	}
	return p, salt, key, nil
}

// canonicalUint32 parses a decimal without sign, leading zeros or
// surrounding space, so that each hash has exactly one spelling.
func canonicalUint32(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}
