package password

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ClientKDF holds the Argon2id parameters a client uses to derive its
// secrets from the user's password (DESIGN.md §4): prelogin returns them,
// the client computes Argon2id(password, Salt, …, 32 bytes). The server
// stores them per user; they are not secret.
type ClientKDF struct {
	Salt        []byte
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint32
}

// Client KDF defaults, and the floor below which clients must refuse
// parameters as a downgrade (DESIGN.md §4).
const (
	ClientSaltLen        = 32 // = an HMAC-SHA256 output, so fake salts look real
	ClientMemoryKiB      = 64 * 1024
	ClientIterations     = 3
	ClientParallelism    = 1 // single-threaded clients (browsers, WASM) derive at full strength
	FloorMemoryKiB       = 16 * 1024
	FloorIterations      = 2
	FloorParallelism     = 1
	minClientSaltLen     = 16
	minFakeServerKeySize = 32
)

// ErrInvalidKDF is wrapped by [ClientKDF.Validate]'s errors.
var ErrInvalidKDF = errors.New("invalid client KDF parameters")

// ErrServerSecret is returned by [FakeClientKDF] for a missing or short
// server secret.
var ErrServerSecret = errors.New("fake-KDF server secret must be at least 32 bytes")

// NewClientKDF returns the default client parameters with a fresh random
// salt read from rand, for a new user. It fails only if rand does, with an
// error wrapping [ErrRandom].
func NewClientKDF(rand io.Reader) (ClientKDF, error) {
	salt := make([]byte, ClientSaltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return ClientKDF{}, fmt.Errorf("%w: client KDF salt: %w", ErrRandom, err)
	}
	return defaultClientKDF(salt), nil
}

func defaultClientKDF(salt []byte) ClientKDF {
	return ClientKDF{Salt: salt, MemoryKiB: ClientMemoryKiB, Iterations: ClientIterations, Parallelism: ClientParallelism}
}

// FakeClientKDF returns the parameters prelogin answers for a username that
// does not exist: the default parameters with salt
// HMAC-SHA256(serverSecret, "prelogin/"+strings.ToLower(username)). They are
// stable (the same on every call and every replica sharing serverSecret)
// and, without serverSecret, indistinguishable from a real user's, so
// prelogin does not reveal which usernames exist.
//
// Indistinguishability holds as long as real users carry the current
// defaults; a user created under older defaults stands out until the
// client next re-derives. Pass the username exactly as received; case is
// folded here so that "Alice" and "alice" get the same answer, as they
// would for one real user if usernames are case-insensitive.
//
// It fails, with [ErrServerSecret], only if serverSecret is shorter than
// 32 bytes.
func FakeClientKDF(serverSecret []byte, username string) (ClientKDF, error) {
	if len(serverSecret) < minFakeServerKeySize {
		return ClientKDF{}, ErrServerSecret
	}
	m := hmac.New(sha256.New, serverSecret)
	m.Write([]byte("prelogin/" + strings.ToLower(username)))
	return defaultClientKDF(m.Sum(nil)), nil
}

// AboveFloor reports whether k is at least the downgrade floor of
// DESIGN.md §4: 16 MiB, 2 passes, 1 lane, and a salt of at least 16 bytes.
// Clients refuse parameters for which it is false.
func (k ClientKDF) AboveFloor() bool {
	return k.MemoryKiB >= FloorMemoryKiB && k.Iterations >= FloorIterations &&
		k.Parallelism >= FloorParallelism && len(k.Salt) >= minClientSaltLen
}

// Validate checks parameters that a client proposes (for instance when it
// registers a user with its own salt, and every client before it derives
// from a prelogin answer): at or above the floor, and within the same upper
// bounds as server hashes ([MaxMemoryKiB], [MaxIterations], the
// [MaxCostKiB] budget on memory × iterations, [MaxParallelism],
// [MaxSaltLen]), so that neither a stored record nor a hostile server can
// make a client do unbounded work. Errors wrap [ErrInvalidKDF] and name the
// field.
func (k ClientKDF) Validate() error {
	switch {
	case len(k.Salt) < minClientSaltLen || len(k.Salt) > MaxSaltLen:
		return fmt.Errorf("%w: salt length %d not in [%d, %d]", ErrInvalidKDF, len(k.Salt), minClientSaltLen, MaxSaltLen)
	case k.MemoryKiB < FloorMemoryKiB || k.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("%w: memory %d KiB not in [%d, %d]", ErrInvalidKDF, k.MemoryKiB, FloorMemoryKiB, MaxMemoryKiB)
	case k.Iterations < FloorIterations || k.Iterations > MaxIterations:
		return fmt.Errorf("%w: iterations %d not in [%d, %d]", ErrInvalidKDF, k.Iterations, FloorIterations, MaxIterations)
	case k.Parallelism < FloorParallelism || k.Parallelism > MaxParallelism:
		return fmt.Errorf("%w: parallelism %d not in [%d, %d]", ErrInvalidKDF, k.Parallelism, FloorParallelism, MaxParallelism)
	case k.MemoryKiB < 8*k.Parallelism:
		return fmt.Errorf("%w: memory %d KiB below 8 KiB per lane", ErrInvalidKDF, k.MemoryKiB)
	case overBudget(k.MemoryKiB, k.Iterations):
		return fmt.Errorf("%w: memory %d KiB × %d iterations over the budget of %d KiB·passes", ErrInvalidKDF, k.MemoryKiB, k.Iterations, MaxCostKiB)
	}
	return nil
}

// ClientSecrets are what a client derives from a password (DESIGN.md §4):
// AuthPassword is sent as the password, MasterKey as X-Master-Key. Both are
// standard padded base64 of 32 bytes (44 characters).
type ClientSecrets struct {
	AuthPassword string
	MasterKey    string
}

// Derive performs the client side of DESIGN.md §4 — secret =
// Argon2id(password, k.Salt, k's parameters, 32 bytes); AuthPassword =
// base64(HKDF-SHA256(secret, info "custos/auth")); MasterKey =
// base64(HKDF-SHA256(secret, info "custos/master-key")), HKDF without salt,
// 32-byte outputs — as the reference for SDKs, the CLI and tests. The server
// never calls it. It refuses, with an error wrapping [ErrInvalidKDF],
// parameters that fail [ClientKDF.Validate] (below the floor: a downgrade).
func (k ClientKDF) Derive(password string) (ClientSecrets, error) {
	if err := k.Validate(); err != nil {
		return ClientSecrets{}, err
	}
	secret := derive(password, k.Salt, Params{MemoryKiB: k.MemoryKiB, Iterations: k.Iterations, Parallelism: k.Parallelism, KeyLen: 32})
	auth, err := hkdf.Key(sha256.New, secret, nil, "custos/auth", 32)
	if err != nil {
		return ClientSecrets{}, fmt.Errorf("hkdf: %w", err)
	}
	master, err := hkdf.Key(sha256.New, secret, nil, "custos/master-key", 32)
	if err != nil {
		return ClientSecrets{}, fmt.Errorf("hkdf: %w", err)
	}
	return ClientSecrets{
		AuthPassword: base64.StdEncoding.EncodeToString(auth),
		MasterKey:    base64.StdEncoding.EncodeToString(master),
	}, nil
}

// String returns a placeholder: no part of the secrets.
func (s ClientSecrets) String() string { return "password.ClientSecrets{[redacted]}" }

// Format prints what String does, whatever the verb (%d, %x, %#v …), so no
// verb can print the secrets.
func (s ClientSecrets) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }
