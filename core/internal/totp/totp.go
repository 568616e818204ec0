// Package totp provides the second factor of DESIGN.md §5: TOTP (RFC 6238;
// SHA-1, 6 digits, 30-second steps, 20-byte secrets — what every
// authenticator app supports) with replay protection, and single-use
// recovery codes.
//
// The package is pure: the caller stores the secret (encrypted at rest),
// the last accepted time step (updated with a compare-and-set, so that two
// concurrent logins cannot both use one code) and the recovery-code hashes.
package totp

import (
	"bytes"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Parameters of every key this package makes and checks.
const (
	Period     = 30 // seconds per time step
	Digits     = 6
	SecretSize = 20 // bytes (160 bits, as RFC 4226 recommends)
	Skew       = 1  // steps accepted either side of the current one
	QRSize     = 256
)

// minSecretSize is the shortest secret Validate accepts (RFC 4226: 128 bits).
const minSecretSize = 16

// maxLabelLen bounds the issuer and account name in the otpauth URI.
const maxLabelLen = 128

// Errors. None carries a secret or a code.
var (
	// ErrInvalidCode: not six ASCII digits (spaces allowed between them).
	ErrInvalidCode = errors.New("malformed TOTP code")
	// ErrMismatch: a well-formed code that matches no accepted time step.
	ErrMismatch = errors.New("wrong TOTP code")
	// ErrReplay: the code matches only time steps at or before the last
	// accepted one: it (or a later one) was already used. Answer the client
	// as for ErrMismatch; the difference is for the audit log.
	ErrReplay = errors.New("TOTP code already used")
	// ErrInvalidSecret: the stored secret is not base32 of at least 16 bytes.
	ErrInvalidSecret = errors.New("invalid TOTP secret")
	// ErrInvalidLabel: an issuer or account name unfit for an otpauth URI.
	ErrInvalidLabel = errors.New("invalid TOTP issuer or account name")
	// ErrRandom: the random source failed.
	ErrRandom = errors.New("reading random bytes")
)

// Key is a new TOTP enrolment, shown once to the user: Secret (base32,
// unpadded) for manual entry, URI (otpauth://totp/…) and PNG, a QR code of
// URI, QRSize pixels square.
type Key struct {
	Secret string
	URI    string
	PNG    []byte
}

// String describes the key without its secret.
func (k Key) String() string { return "totp.Key{Secret: [redacted], URI: [redacted]}" }

// Format prints what String does, whatever the verb, so that no verb can
// print the secret (the URI and the QR code carry it too).
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Generate makes a new key for account at issuer: a 20-byte secret read
// from rand, SHA-1, 6 digits, 30 seconds. It fails with an error wrapping
// [ErrInvalidLabel] if issuer or account is empty, longer than 128 bytes,
// not valid UTF-8, or contains a colon or a control character (the otpauth
// label is "issuer:account"), and with [ErrRandom] if rand fails.
func Generate(issuer, account string, rand io.Reader) (Key, error) {
	if err := checkLabel("issuer", issuer); err != nil {
		return Key{}, err
	}
	if err := checkLabel("account", account); err != nil {
		return Key{}, err
	}
	secret := make([]byte, SecretSize)
	if _, err := io.ReadFull(rand, secret); err != nil {
		return Key{}, fmt.Errorf("%w: TOTP secret: %w", ErrRandom, err)
	}
	k, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      Period,
		Secret:      secret,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return Key{}, fmt.Errorf("totp key: %w", err)
	}
	img, err := k.Image(QRSize, QRSize)
	if err != nil {
		return Key{}, fmt.Errorf("totp QR code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return Key{}, fmt.Errorf("totp QR code: %w", err)
	}
	return Key{Secret: b32.EncodeToString(secret), URI: k.String(), PNG: buf.Bytes()}, nil
}

func checkLabel(what, s string) error {
	if s == "" || len(s) > maxLabelLen || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be 1–%d bytes of UTF-8", ErrInvalidLabel, what, maxLabelLen)
	}
	for _, r := range s {
		if r == ':' || unicode.IsControl(r) {
			return fmt.Errorf("%w: %s must not contain a colon or control characters", ErrInvalidLabel, what)
		}
	}
	return nil
}

// Step returns the RFC 6238 time step of at: floor(unix seconds / 30).
func Step(at time.Time) int64 {
	s := at.Unix()
	if s < 0 {
		return (s - Period + 1) / Period
	}
	return s / Period
}

// Validate checks code against secret (base32, as Generate returns it) at
// time at. It accepts the codes of steps Step(at)-1, Step(at) and
// Step(at)+1, but only steps after lastStep (pass the value it returned
// last time, or -1 if no code was ever accepted), and returns the step
// matched: store it as the new lastStep, with a compare-and-set against the
// old one. All three candidate codes are computed and compared in constant
// time.
//
// Errors: [ErrInvalidCode] if code is not six ASCII digits (surrounding
// spaces and spaces between digits are ignored); [ErrReplay] if it matches
// only steps ≤ lastStep; [ErrMismatch] if it matches none; and
// [ErrInvalidSecret] if secret is not base32 of at least 16 bytes.
func Validate(secret, code string, at time.Time, lastStep int64) (int64, error) {
	code, ok := normalizeCode(code)
	if !ok {
		return 0, ErrInvalidCode
	}
	raw, err := b32.DecodeString(strings.ToUpper(strings.TrimRight(secret, "=")))
	if err != nil || len(raw) < minSecretSize {
		return 0, ErrInvalidSecret
	}
	secret = b32.EncodeToString(raw) // canonical for the library
	cur := Step(at)
	var (
		accepted int64 = -1 // smallest matching step after lastStep
		replayed int        // 1 if some match is at or before lastStep
	)
	for step := cur - Skew; step <= cur+Skew; step++ {
		if step < 0 {
			continue
		}
		want, err := totp.GenerateCodeCustom(secret, time.Unix(step*Period, 0), totp.ValidateOpts{
			Period: Period, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
		})
		if err != nil {
			return 0, ErrInvalidSecret
		}
		match := subtle.ConstantTimeCompare([]byte(want), []byte(code))
		fresh := match & boolInt(step > lastStep)
		if fresh == 1 && accepted < 0 {
			accepted = step
		}
		replayed |= match & (1 - fresh)
	}
	switch {
	case accepted >= 0:
		return accepted, nil
	case replayed == 1:
		return 0, ErrReplay
	default:
		return 0, ErrMismatch
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// normalizeCode strips spaces and checks for exactly Digits ASCII digits.
func normalizeCode(s string) (string, bool) {
	if len(s) > 32 {
		return "", false
	}
	s = strings.ReplaceAll(s, " ", "")
	if len(s) != Digits {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	return s, true
}
