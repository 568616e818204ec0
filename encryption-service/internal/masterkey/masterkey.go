// Package masterkey holds the platform master keys: the key-encryption keys
// (KEKs) under which the encryption service wraps every key it stores.
//
// Several keys are known at once, each by an id recorded beside what it
// wraps, and one of them, the active key, wraps new material; the others
// stay to unwrap what they wrapped until it has been rewrapped. Keys come
// from a [Provider]: an environment variable ([FromEnv]) or a directory of
// files such as a Kubernetes secret mount ([FromDir]).
//
// Key bytes never appear in errors, logs or formatted output: [Key] and
// [Keyring] print only ids, and error messages name a key by its id or, when
// even the id is malformed, by its position.
package masterkey

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
)

// KeySize is the length of a master key in bytes (AES-256).
const KeySize = 32

// MaxIDLen is the maximum length of a key id.
const MaxIDLen = 64

// Key is a platform master key.
type Key struct {
	ID    string // 1–64 characters of A–Z a–z 0–9 . _ -
	Bytes []byte // KeySize bytes
}

// String returns the key's id only.
func (k Key) String() string { return "masterkey.Key{ID: " + k.ID + ", Bytes: [redacted]}" }

// Format prints k as String does, whatever the verb, so that no verb
// (%x, %d, %#v …) can print the key's bytes.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue logs the key's id only.
func (k Key) LogValue() slog.Value { return slog.GroupValue(slog.String("id", k.ID)) }

// MarshalJSON encodes the key's id only ({"id":"…"}), so that a
// configuration logged or dumped as JSON cannot carry key bytes.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID string `json:"id"`
	}{k.ID})
}

// ValidID reports whether id is a well-formed key id: 1–64 characters of
// A–Z, a–z, 0–9, '.', '_' and '-'.
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

// idRule describes a valid id for error messages.
const idRule = "an id must be 1–64 characters of A-Z a-z 0-9 . _ -"

// Keyring is an immutable set of master keys, one of them active. It is safe
// for concurrent use. The zero Keyring is empty; use [NewKeyring].
type Keyring struct {
	// Pointers, so that even reflection-based printing of a Keyring value
	// (fmt on unexported fields) shows addresses rather than key bytes.
	keys   map[string]*Key
	ids    []string // in the order given
	active string
}

// NewKeyring returns a keyring holding copies of keys, with key activeID
// active; activeID may be "" only when there is exactly one key.
//
// It fails if there is no key, an id is malformed (see [ValidID]), a key is
// not [KeySize] bytes or is all zeros, an id appears twice, or activeID is
// missing or unknown. Errors name a key by its id, or by its position when the
// id itself is malformed, and never contain key bytes.
func NewKeyring(keys []Key, activeID string) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no master keys")
	}
	kr := &Keyring{keys: make(map[string]*Key, len(keys)), ids: make([]string, 0, len(keys))}
	for i, k := range keys {
		if err := checkKey(k, i); err != nil {
			return nil, err
		}
		if _, dup := kr.keys[k.ID]; dup {
			return nil, fmt.Errorf("master key %q appears more than once", k.ID)
		}
		kr.keys[k.ID] = &Key{ID: k.ID, Bytes: bytes.Clone(k.Bytes)}
		kr.ids = append(kr.ids, k.ID)
	}
	switch {
	case activeID == "" && len(keys) == 1:
		kr.active = keys[0].ID
	case activeID == "":
		return nil, fmt.Errorf("%d master keys (%s) but no active key id: name the one that wraps new keys",
			len(keys), strings.Join(kr.ids, ", "))
	case !ValidID(activeID):
		return nil, fmt.Errorf("active master key id is malformed: %s", idRule)
	default:
		if _, ok := kr.keys[activeID]; !ok {
			return nil, fmt.Errorf("active master key %q is not among the master keys (%s)", activeID, strings.Join(kr.ids, ", "))
		}
		kr.active = activeID
	}
	return kr, nil
}

// checkKey validates the key at position i (0-based) of a list.
func checkKey(k Key, i int) error {
	if !ValidID(k.ID) {
		// Not echoed: a malformed id may be a key pasted in the wrong place.
		return fmt.Errorf("master key #%d: malformed id: %s", i+1, idRule)
	}
	if len(k.Bytes) != KeySize {
		return fmt.Errorf("master key %q: want %d bytes, got %d", k.ID, KeySize, len(k.Bytes))
	}
	if allZero(k.Bytes) {
		return fmt.Errorf("master key %q is all zeros: generate a random one", k.ID)
	}
	return nil
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// Active returns the key that wraps new material. The bytes are a copy.
func (k *Keyring) Active() Key {
	key, _ := k.Get(k.active)
	return key
}

// ActiveID returns the id of the active key.
func (k *Keyring) ActiveID() string { return k.active }

// Get returns the key with id, and whether there is one. The bytes are a
// copy: a caller may clear them.
func (k *Keyring) Get(id string) (Key, bool) {
	key := k.keys[id]
	if key == nil {
		return Key{}, false
	}
	return Key{ID: key.ID, Bytes: bytes.Clone(key.Bytes)}, true
}

// IDs returns the ids of all keys, in the order given to [NewKeyring].
func (k *Keyring) IDs() []string { return slices.Clone(k.ids) }

// Format prints the keyring's ids and active id only, whatever the verb.
func (k Keyring) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "masterkey.Keyring{IDs: [%s], Active: %s}", strings.Join(k.ids, " "), k.active)
}

// LogValue logs the keyring's ids and active id only.
func (k Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("ids", k.ids), slog.String("active", k.active))
}
