package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/custos-platform/custos/core/internal/password"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// KDFParams are the Argon2id parameters prelogin answers for a username (DESIGN.md §4). They are
// not secret.
type KDFParams struct {
	KDF         string // always "argon2id"
	Salt        []byte
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint32
}

// The downgrade floor: parameters below it are refused.
const (
	FloorMemoryKiB   = password.FloorMemoryKiB
	FloorIterations  = password.FloorIterations
	FloorParallelism = password.FloorParallelism
	FloorSaltBytes   = 16
)

// Secrets are what a password derives to: AuthPassword is sent instead of the password,
// MasterKey as X-Master-Key in zero-knowledge tenants. Both are standard padded base64 of 32
// bytes. Their String and Format never print them.
type Secrets struct {
	AuthPassword string
	MasterKey    string
}

// String returns a placeholder: no part of the secrets.
func (Secrets) String() string { return "client.Secrets{[redacted]}" }

// Format prints what String does, whatever the verb.
func (s Secrets) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// DeriveSecrets performs the client side of the derivation (DESIGN.md §4):
//
//	secret       = Argon2id(password, p.Salt, p.Iterations, p.MemoryKiB, p.Parallelism, 32 bytes)
//	AuthPassword = base64(HKDF-SHA256(secret, salt = none, info = "custos/auth", 32 bytes))
//	MasterKey    = base64(HKDF-SHA256(secret, salt = none, info = "custos/master-key", 32 bytes))
//
// It refuses, with an error wrapping ErrKDFDowngrade, parameters below the floor (16 MiB, 2
// passes, 1 lane, a 16-byte salt), and with ErrKDFParams a KDF other than "argon2id" or costs above
// the platform's bounds (256 MiB, 10 passes, memory × passes at most 1 GiB·pass, 16 lanes, a
// 64-byte salt), so that a hostile server cannot stall the client.
func DeriveSecrets(p KDFParams, pw string) (Secrets, error) {
	if p.KDF != "argon2id" {
		return Secrets{}, fmt.Errorf("%w: kdf %q, want \"argon2id\"", ErrKDFParams, p.KDF)
	}
	k := password.ClientKDF{Salt: p.Salt, MemoryKiB: p.MemoryKiB, Iterations: p.Iterations, Parallelism: p.Parallelism}
	if !k.AboveFloor() {
		return Secrets{}, fmt.Errorf("%w: got m=%d KiB, t=%d, p=%d, %d-byte salt", ErrKDFDowngrade,
			p.MemoryKiB, p.Iterations, p.Parallelism, len(p.Salt))
	}
	s, err := k.Derive(pw)
	if err != nil {
		if errors.Is(err, password.ErrInvalidKDF) {
			return Secrets{}, fmt.Errorf("%w: %w", ErrKDFParams, err)
		}
		return Secrets{}, err
	}
	return Secrets{AuthPassword: s.AuthPassword, MasterKey: s.MasterKey}, nil
}

var preloginCall = call{method: corev1.AuthService_Prelogin_FullMethodName, verb: "POST", path: "/v1/auth/prelogin", body: true}

// Prelogin returns username's KDF parameters. Core answers every username, existing or not, with
// parameters of the same shape, so this says nothing about whether the user exists. It fails with
// an *Error when core refuses (for instance 429 while throttled) or cannot be reached.
func (c *Client) Prelogin(ctx context.Context, username string) (KDFParams, error) {
	resp := &corev1.PreloginResponse{}
	if err := c.invoke(ctx, preloginCall, &corev1.PreloginRequest{Username: username}, resp); err != nil {
		return KDFParams{}, err
	}
	salt, err := base64.StdEncoding.DecodeString(resp.GetSalt())
	if err != nil {
		return KDFParams{}, fmt.Errorf("%w: salt is not base64", ErrKDFParams)
	}
	return KDFParams{KDF: resp.GetKdf(), Salt: salt, MemoryKiB: resp.GetMemoryKib(),
		Iterations: resp.GetIterations(), Parallelism: resp.GetParallelism()}, nil
}

// Derive runs Prelogin for username and DeriveSecrets on its answer: the values a client sends
// for that user's password. Its errors are Prelogin's and DeriveSecrets'.
func (c *Client) Derive(ctx context.Context, username, pw string) (Secrets, error) {
	p, err := c.Prelogin(ctx, username)
	if err != nil {
		return Secrets{}, err
	}
	return DeriveSecrets(p, pw)
}

// KDFVector is a known answer of DeriveSecrets, for clients in other languages to test their
// derivation against.
type KDFVector struct {
	Name         string
	Password     string
	Params       KDFParams
	AuthPassword string // base64
	MasterKey    string // base64
}

// KDFTestVectors returns the known answers of the derivation (also listed in docs/cli.md). The
// Argon2id outputs were checked against the reference implementation (the argon2 command of
// P-H-C/phc-winner-argon2), the HKDF steps against RFC 5869 spelled out with HMAC-SHA256.
func KDFTestVectors() []KDFVector {
	rep := func(b byte, n int) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = b
		}
		return out
	}
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i + 1)
	}
	// Published known answers for a test password, not credentials.
	return []KDFVector{
		{ //nolint:gosec // a known answer, not a credential
			Name: "floor parameters", Password: "correct horse battery staple",
			Params:       KDFParams{KDF: "argon2id", Salt: rep(0x01, 32), MemoryKiB: 16 * 1024, Iterations: 2, Parallelism: 1},
			AuthPassword: "j6gr8iRDCSEMfedbIXK+PoWrPHSK1leYg/6s/4LDhm4=",
			MasterKey:    "qzezgmUoO8jB5leGkZLHHlgS7NhOmlp2nZXahl7/jfM=",
		},
		{ //nolint:gosec // a known answer, not a credential
			Name: "default parameters", Password: "correct horse battery staple",
			Params:       KDFParams{KDF: "argon2id", Salt: seq, MemoryKiB: 64 * 1024, Iterations: 3, Parallelism: 1},
			AuthPassword: "eNOyPOir/wR71m6DsiF7XC/MUTkO3VDHiKWPKHUuLTw=",
			MasterKey:    "X01+4B3lKXiLbfkQrpO03OXAcntZbs3DjBRCOco4JQA=",
		},
		{ //nolint:gosec // a known answer, not a credential
			Name: "UTF-8 password, 4 lanes, 16-byte salt", Password: "pässwörd 🔑 Ωμέγα",
			Params:       KDFParams{KDF: "argon2id", Salt: rep(0xa5, 16), MemoryKiB: 32 * 1024, Iterations: 2, Parallelism: 4},
			AuthPassword: "n7xbiSh+2jtO+dhowxK4hCP8V54EMY8uIWoHDNYs3s4=",
			MasterKey:    "4c6hpT2ho1fbtI++VZBhF/Q3TKFgXQFNm9Dt2HllzlI=",
		},
	}
}
