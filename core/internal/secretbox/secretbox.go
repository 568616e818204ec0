// Package secretbox is core's encryption at rest for small secrets: TOTP
// secrets, token signing keys, tenant secrets for the encryption service,
// client keys of tenant-hosted endpoints, the prelogin seed and the export
// integrity key.
//
// Keys come from configuration (CORE_SECRET_KEYS = "id:base64,…", each a
// 32-byte AES-256 key), several at once by id with one active, like the
// encryption service's master keys: the active key seals, every key opens
// what it sealed, and [Box.Rewrap] moves a value to the active key after a rotation (core
// secret-keys rewrap does so for everything core stores).
//
// A sealed blob is self-describing:
//
//	version (1 byte, 1) || len(keyID) (1 byte) || keyID || nonce (12 bytes) || AES-256-GCM ciphertext and tag
//
// (the database reads the key id from this header to count values by key and find what to rewrap,
// in core/internal/postgres/rewrap.go: a new format version must be taught there too), and the GCM
// associated data is the header (version, length and key id)
// followed by the caller's associated data, so neither the key id nor the
// context can be changed without Open failing. Callers should pass
// associated data naming what the secret is and whose (for instance
// "totp-secret/" + userID), so that a blob copied to another row does not
// open.
package secretbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// MaxIDLen is the maximum length of a key id.
const MaxIDLen = 64

const (
	version   = 1
	nonceSize = 12
	tagSize   = 16
)

// Errors. None carries key bytes or plaintext.
var (
	// ErrOpen: a blob that does not open — truncated, altered, another
	// key's, other associated data, unknown format. ErrUnknownKey wraps it.
	ErrOpen = errors.New("secretbox: cannot open")
	// ErrUnknownKey: the blob names a key id not in the box (the error
	// names the id). Add the key back to open it.
	ErrUnknownKey = fmt.Errorf("%w: unknown key", ErrOpen)
	// ErrInvalidKeys: a key list, key or active id that cannot make a box,
	// or a CORE_SECRET_KEYS value that does not parse.
	ErrInvalidKeys = errors.New("secretbox: invalid keys")
)

// Key is a secret-box key.
type Key struct {
	ID    string // 1–64 characters of A–Z a–z 0–9 . _ -
	Bytes []byte // KeySize bytes
}

// String returns the key's id only.
func (k Key) String() string { return "secretbox.Key{ID: " + k.ID + ", Bytes: [redacted]}" }

// Format prints what String does, whatever the verb, so that no verb (%x,
// %d, %#v …) can print the key's bytes.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue logs the key's id only.
func (k Key) LogValue() slog.Value { return slog.GroupValue(slog.String("id", k.ID)) }

// ValidID reports whether id is 1–64 characters of A–Z, a–z, 0–9, '.',
// '_' and '-'.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

const idRule = "an id is 1–64 characters of A-Z a-z 0-9 . _ -"

// ParseKeys parses "id1:BASE64,id2:BASE64" (the value of CORE_SECRET_KEYS),
// each BASE64 the standard or URL-safe base64, padded or not, of 32 bytes.
// Whitespace around entries, ids and keys is ignored, and so are empty
// entries (a value read from a file may end in a newline).
//
// It fails, with an error wrapping [ErrInvalidKeys], if no key is given, an
// entry has no ':', an id is malformed, a key is not base64 of 32 bytes or
// is all zeros, or an id appears twice. Errors name the entry by position
// and, once it is known to be well-formed, by id; never by its key.
func ParseKeys(value string) ([]Key, error) {
	var keys []Key
	seen := map[string]int{}
	for i, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pos := i + 1
		id, encoded, ok := strings.Cut(entry, ":")
		if !ok {
			// Neither part echoed: the entry may be a bare key.
			return nil, fmt.Errorf("%w: entry #%d: want id:base64", ErrInvalidKeys, pos)
		}
		id = strings.TrimSpace(id)
		if !ValidID(id) {
			return nil, fmt.Errorf("%w: entry #%d: malformed id: %s", ErrInvalidKeys, pos, idRule)
		}
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice (entries #%d and #%d)", ErrInvalidKeys, id, first, pos)
		}
		seen[id] = pos
		b, err := decodeKey(strings.TrimSpace(encoded))
		if err != nil {
			return nil, fmt.Errorf("%w: key %q (entry #%d): %w", ErrInvalidKeys, id, pos, err)
		}
		keys = append(keys, Key{ID: id, Bytes: b})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys given: want id:base64[,id:base64…]", ErrInvalidKeys)
	}
	return keys, nil
}

// decodeKey decodes any of the four base64 alphabets/paddings; its errors
// say what is wrong without quoting the input.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("want %d bytes, got %d", KeySize, len(b))
			}
			if allZero(b) {
				return nil, errors.New("all zeros: generate a random key")
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// Box seals with its active key and opens with any of its keys. It is
// immutable and safe for concurrent use.
type Box struct {
	aeads  map[string]cipher.AEAD
	ids    []string
	active string
	rand   io.Reader
}

// NewBox returns a box holding keys with activeID sealing; activeID may be
// "" only when there is exactly one key. It fails, with an error wrapping
// [ErrInvalidKeys] that names keys by id (or position, for a malformed id)
// and never holds key bytes, if there is no key, an id is malformed, a key
// is not 32 bytes or is all zeros, an id appears twice, or activeID is
// missing or unknown.
func NewBox(keys []Key, activeID string) (*Box, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrInvalidKeys)
	}
	b := &Box{aeads: make(map[string]cipher.AEAD, len(keys)), rand: rand.Reader}
	for i, k := range keys {
		switch {
		case !ValidID(k.ID):
			return nil, fmt.Errorf("%w: key #%d: malformed id: %s", ErrInvalidKeys, i+1, idRule)
		case len(k.Bytes) != KeySize:
			return nil, fmt.Errorf("%w: key %q: want %d bytes, got %d", ErrInvalidKeys, k.ID, KeySize, len(k.Bytes))
		case allZero(k.Bytes):
			return nil, fmt.Errorf("%w: key %q is all zeros", ErrInvalidKeys, k.ID)
		}
		if _, dup := b.aeads[k.ID]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrInvalidKeys, k.ID)
		}
		block, err := aes.NewCipher(k.Bytes) // copies the key schedule; the caller may clear k.Bytes
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrInvalidKeys, k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrInvalidKeys, k.ID, err)
		}
		b.aeads[k.ID] = aead
		b.ids = append(b.ids, k.ID)
	}
	switch {
	case activeID == "" && len(keys) == 1:
		b.active = keys[0].ID
	case activeID == "":
		return nil, fmt.Errorf("%w: %d keys (%s) but no active key id", ErrInvalidKeys, len(keys), strings.Join(b.ids, ", "))
	case b.aeads[activeID] == nil:
		if !ValidID(activeID) {
			return nil, fmt.Errorf("%w: active key id is malformed: %s", ErrInvalidKeys, idRule)
		}
		return nil, fmt.Errorf("%w: active key %q is not among the keys (%s)", ErrInvalidKeys, activeID, strings.Join(b.ids, ", "))
	default:
		b.active = activeID
	}
	return b, nil
}

// ActiveID returns the id of the key that seals.
func (b *Box) ActiveID() string { return b.active }

// IDs returns the ids of all keys, in the order given to NewBox.
func (b *Box) IDs() []string { return slices.Clone(b.ids) }

// Format prints the box's key ids only, whatever the verb.
func (b Box) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "secretbox.Box{IDs: [%s], Active: %s}", strings.Join(b.ids, " "), b.active)
}

// header returns version || len(id) || id.
func header(id string) []byte {
	h := make([]byte, 0, 2+len(id))
	return append(append(h, version, byte(len(id))), id...) //nolint:gosec // bounded above: key ids are at most MaxIDLen (64) bytes
}

// Seal encrypts plaintext under the active key with a fresh random nonce,
// binding ad, and returns the self-describing blob. It fails only if the
// random source does.
func (b *Box) Seal(plaintext, ad []byte) ([]byte, error) {
	hdr := header(b.active)
	out := make([]byte, len(hdr)+nonceSize, len(hdr)+nonceSize+len(plaintext)+tagSize)
	copy(out, hdr)
	nonce := out[len(hdr):]
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return nil, fmt.Errorf("secretbox: nonce: %w", err)
	}
	return b.aeads[b.active].Seal(out, nonce, plaintext, associated(hdr, ad)), nil
}

func associated(hdr, ad []byte) []byte {
	// The header is self-delimiting (its length byte), so hdr || ad is
	// unambiguous.
	return append(bytes.Clone(hdr), ad...)
}

// parse splits a blob, checking every length before slicing.
func parse(blob []byte) (id string, hdr, nonce, ct []byte, err error) {
	if len(blob) < 2 || blob[0] != version {
		return "", nil, nil, nil, fmt.Errorf("%w: unknown format", ErrOpen)
	}
	n := int(blob[1])
	if n == 0 || n > MaxIDLen || len(blob) < 2+n+nonceSize+tagSize {
		return "", nil, nil, nil, fmt.Errorf("%w: truncated or malformed", ErrOpen)
	}
	id = string(blob[2 : 2+n])
	if !ValidID(id) {
		return "", nil, nil, nil, fmt.Errorf("%w: malformed key id", ErrOpen)
	}
	return id, blob[:2+n], blob[2+n : 2+n+nonceSize], blob[2+n+nonceSize:], nil
}

// Open decrypts a blob made by Seal with the same ad. Any failure — a
// truncated, altered or unknown-format blob, other associated data, the
// wrong key under a known id — is an error wrapping [ErrOpen] that says no
// more; a blob sealed under a key id the box lacks is [ErrUnknownKey]
// (which wraps ErrOpen) naming that id.
func (b *Box) Open(blob, ad []byte) ([]byte, error) {
	id, hdr, nonce, ct, err := parse(blob)
	if err != nil {
		return nil, err
	}
	aead := b.aeads[id]
	if aead == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, id)
	}
	pt, err := aead.Open(nil, nonce, ct, associated(hdr, ad))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// KeyID returns the id of the key a blob was sealed with, or an error
// wrapping [ErrOpen] if the blob is malformed. It does not authenticate the
// blob.
func KeyID(blob []byte) (string, error) {
	id, _, _, _, err := parse(blob)
	return id, err
}

// NeedsRewrap reports whether blob was sealed with a key other than the
// active one, and should be opened and sealed again ([Box.Rewrap]). A
// malformed blob reports false: rewrapping cannot help it, and Open will
// say what is wrong.
func (b *Box) NeedsRewrap(blob []byte) bool {
	id, err := KeyID(blob)
	return err == nil && id != b.active
}

// Rewrap opens blob and seals its plaintext again under the active key
// with the same ad. It fails as Open and Seal do.
func (b *Box) Rewrap(blob, ad []byte) ([]byte, error) {
	pt, err := b.Open(blob, ad)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return b.Seal(pt, ad)
}
