package esclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Ciphertext is what core stores for an item: never plaintext. Every field is as the encryption
// service returned it from Encrypt or a rewrap, and goes back to it unchanged for Decrypt.
type Ciphertext struct {
	CipherText   string // base64 of the ciphertext
	EncryptionID string // the key context
	VersionID    string // the key version that encrypted it
	Algorithm    string // AES-256-GCM, XCHACHA20-POLY1305 or RSA-OAEP-3072-SHA256
	// Metadata is the JSON object the service returned (format version, nonce, …); nil if it
	// returned none.
	Metadata json.RawMessage
}

// Context describes a key context.
type Context struct {
	ActiveVersionID string
	Versions        []Version // oldest first
	KeyMode         string    // PLATFORM or CLIENT
	Algorithm       string
}

// Version is one version of a key context.
type Version struct {
	ID      string
	Version int    // 1 for the first, then consecutive
	State   string // ACTIVE, DECRYPT_ONLY, DISABLED or DESTROYED
}

// RewrapResult is one item's result of RewrapBatch: its new ciphertext under the active version,
// or Err (an *errs.Error, see Client) and nothing else.
type RewrapResult struct {
	Ciphertext Ciphertext
	Err        error
}

// Client is one tenant's view of its encryption service. Its implementations (gRPC for the
// platform's and gRPC-hosted services, HTTPS/JSON for services that follow the seed's REST
// contract) are safe for concurrent use; Router gives the right one for a tenant.
//
// A masterKey is the client master key of a CLIENT (zero-knowledge) key context, exactly 32 bytes,
// or nil for a PLATFORM context. It is sent with the call that needs it and kept nowhere.
//
// Every error is an *errs.Error whose message is safe to show and never holds plaintext,
// ciphertext, keys or secrets:
//   - Unavailable "the encryption service is unavailable; try again": it cannot be reached, timed
//     out, answered 5xx, or its circuit breaker is open after repeated failures (then the cause
//     is ErrBreakerOpen and no call was made);
//   - PermissionDenied "wrong master key";
//   - Unauthenticated "this tenant's keys need the client master key: send X-Master-Key" when a
//     CLIENT context is used without masterKey;
//   - Internal when the service rejects core's credential for the tenant (an operator must fix
//     the tenant's endpoint), answers something malformed, or fails internally;
//   - NotFound for an unknown key context or version (or another tenant's);
//   - Invalid and FailedPrecondition with the service's own message (malformed input, ciphertext
//     that does not authenticate, a disabled version, …); FailedPrecondition also when the service
//     lacks the method (said per method);
//   - Conflict, Aborted, ResourceExhausted as the service answered them.
type Client interface {
	// CreateContext creates a key context in keyMode (PLATFORM or CLIENT; empty means the
	// service's default) with the service's default algorithm and returns its id. A CLIENT
	// context needs masterKey. A hosted service that implements only the seed's three endpoints
	// gets FailedPrecondition: it must support key contexts. Never retried.
	CreateContext(ctx context.Context, keyMode string, masterKey []byte) (encryptionID string, err error)
	// Encrypt encrypts data (valid UTF-8; binary data travels base64-encoded) under the
	// context's active version. Invalid for data that is not UTF-8 or a masterKey of the wrong
	// size. Retried on Unavailable: a duplicate ciphertext is harmless.
	Encrypt(ctx context.Context, encryptionID string, data string, masterKey []byte) (Ciphertext, error)
	// Decrypt returns the data c was made from, byte for byte. Retried on Unavailable.
	Decrypt(ctx context.Context, c Ciphertext, masterKey []byte) (string, error)
	// Rotate makes a new active version and returns its id; the previous one becomes
	// DECRYPT_ONLY. Needs no master key, even for a CLIENT context. Never retried.
	Rotate(ctx context.Context, encryptionID string) (newVersionID string, err error)
	// GetContext describes a key context. Retried on Unavailable.
	GetContext(ctx context.Context, encryptionID string) (Context, error)
	// RewrapBatch turns each item's ciphertext into one under its context's active version
	// without the plaintext leaving the service, with one result per item, in order; a bad item
	// does not fail the others. The items are sent in one call, not split: it must stay within
	// the service's batch limit (1000 items by default) and its limit on a request
	// (ES_MAX_REQUEST_BYTES, DefaultServiceMaxRequestBytes by default; over gRPC the message,
	// over HTTPS the body, either mostly the ciphertexts). Over either, ResourceExhausted and
	// nothing is rewrapped: callers bound their batches by the ciphertexts' size and split a
	// refused batch. FailedPrecondition "the encryption service cannot rewrap" when the service
	// lacks the method. Retried on Unavailable.
	RewrapBatch(ctx context.Context, items []Ciphertext, masterKey []byte) ([]RewrapResult, error)
	// DisableVersion makes a version refuse decryption and rewrap; FailedPrecondition for the
	// active version. Disabling a disabled version changes nothing. Never retried.
	DisableVersion(ctx context.Context, encryptionID, versionID string) error
	// EnableVersion returns a disabled version to DECRYPT_ONLY, so that it decrypts again;
	// enabling a version that is not disabled changes nothing. FailedPrecondition for a destroyed
	// version, or when the service lacks the method. Never retried.
	EnableVersion(ctx context.Context, encryptionID, versionID string) error
	// ChangeMasterKey rewraps every version of a CLIENT context from oldKey to newKey (sent as
	// X-Master-Key and X-New-Master-Key); afterwards oldKey gets PermissionDenied. No data is
	// touched. Never retried.
	ChangeMasterKey(ctx context.Context, encryptionID string, oldKey, newKey []byte) error
	// DestroyContext erases every version of a key context on the service (crypto-shredding):
	// whatever was encrypted under it can never be decrypted again. Needs no master key. NotFound
	// when the service does not know the context (never created, or already destroyed), which
	// callers that want it gone may take as success; FailedPrecondition when the service lacks
	// the method. Retried on Unavailable: a repeat finds it gone.
	DestroyContext(ctx context.Context, encryptionID string) error
}

// DefaultServiceMaxRequestBytes is the encryption service's default limit on one request
// (ES_MAX_REQUEST_BYTES): the most a RewrapBatch call may carry, unless the tenant's service was
// configured otherwise. Core cannot read a service's limit; it stays well below this one and
// splits a batch the service refuses as too large.
const DefaultServiceMaxRequestBytes = 4 << 20

// masterKeySize is the size of a client master key.
const masterKeySize = 32

// credential is how core authenticates as a tenant to its encryption service.
type credential struct {
	tenantID string // the tenant's id on that service
	secret   string
}

// String and GoString redact the secret, so that a credential printed by mistake reveals nothing.
func (c credential) String() string {
	return "credential{tenant " + c.tenantID + ", secret [redacted]}"
}

func (c credential) GoString() string { return c.String() }

// encodeMasterKey returns the header value of key: "" for nil, base64 of exactly 32 bytes, or
// Invalid naming the header (never the key).
func encodeMasterKey(header string, key []byte) (string, error) {
	if key == nil {
		return "", nil
	}
	if len(key) != masterKeySize {
		return "", errs.E(errs.Invalid, "%s: want exactly %d bytes, got %d", header, masterKeySize, len(key))
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

func checkData(data string) error {
	if !utf8.ValidString(data) {
		return errs.E(errs.Invalid, "data: not valid UTF-8: encode binary data as base64")
	}
	return nil
}

func checkID(field, id string) error {
	if id == "" {
		return errs.E(errs.Invalid, "%s: required", field)
	}
	return nil
}

// checkMetadata accepts nil or a JSON object.
func checkMetadata(m json.RawMessage) error {
	if m == nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m, &obj); err != nil || obj == nil {
		return errs.E(errs.Invalid, "metadata: not a JSON object")
	}
	return nil
}

// checkCiphertext bounds what the service answered as a ciphertext: key references and the
// ciphertext present, metadata an object. A service answering otherwise is faulty: Internal.
func checkCiphertext(c Ciphertext) error {
	if c.CipherText == "" || c.EncryptionID == "" || c.VersionID == "" {
		return errs.E(errs.Internal, "the encryption service answered a ciphertext without its key references")
	}
	if checkMetadata(c.Metadata) != nil {
		return errs.E(errs.Internal, "the encryption service answered metadata that is not a JSON object")
	}
	return nil
}
