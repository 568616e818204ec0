package masterkey

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// maxKeyFileSize bounds what FromDir reads from one file: a key is 44
// characters of base64, so anything much larger is not a key file.
const maxKeyFileSize = 1024

// Provider supplies the platform master keys. It is the seam for key
// sources: [EnvProvider] and [DirProvider] here; a cloud KMS or Vault
// provider (fetching, or unwrapping with a remote key, the same 32-byte keys)
// can implement it later without changing the keyring's users.
type Provider interface {
	// Keys returns every master key the provider holds, or an error that
	// names no key bytes.
	Keys(ctx context.Context) ([]Key, error)
}

// Load builds a [Keyring] from p's keys with activeID active (see
// [NewKeyring]).
func Load(ctx context.Context, p Provider, activeID string) (*Keyring, error) {
	keys, err := p.Keys(ctx)
	if err != nil {
		return nil, err
	}
	return NewKeyring(keys, activeID)
}

// EnvProvider supplies the keys held in Value, in [FromEnv]'s format;
// typically the value of an environment variable.
type EnvProvider struct {
	Value string
}

var _ Provider = EnvProvider{}

// Keys returns FromEnv(p.Value).
func (p EnvProvider) Keys(context.Context) ([]Key, error) { return FromEnv(p.Value) }

// Format prints no part of the value, whatever the verb.
func (p EnvProvider) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "masterkey.EnvProvider{Value: [redacted]}")
}

// MarshalJSON encodes no part of the value.
func (p EnvProvider) MarshalJSON() ([]byte, error) { return []byte(`{"Value":"[redacted]"}`), nil }

// LogValue logs no part of the value.
func (p EnvProvider) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// DirProvider supplies the keys in the directory Dir, as [FromDir] reads
// them, passing each warning to OnWarning (nil drops them).
type DirProvider struct {
	Dir       string
	OnWarning func(string)
}

var _ Provider = DirProvider{}

// Keys returns the keys FromDir(p.Dir) finds, after passing its warnings to
// p.OnWarning.
func (p DirProvider) Keys(context.Context) ([]Key, error) {
	keys, warnings, err := FromDir(p.Dir)
	if p.OnWarning != nil {
		for _, w := range warnings {
			p.OnWarning(w)
		}
	}
	return keys, err
}

// FromEnv parses master keys written "id1:BASE64,id2:BASE64", each BASE64
// the standard or URL-safe base64 (padded or not) of [KeySize] bytes.
// Whitespace around entries, ids and keys is ignored, and so are empty
// entries, so the value may come from a file ending in a newline.
//
// It fails if no key is given, an entry has no ':', an id is malformed (see
// [ValidID]), a key is not base64 of 32 bytes or is all zeros, or an id
// appears twice. Errors name the entry by position and, once it is known to
// be well-formed, by id; they never contain key material.
func FromEnv(value string) ([]Key, error) {
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
			return nil, fmt.Errorf("master key entry #%d: want id:base64", pos)
		}
		id = strings.TrimSpace(id)
		if !ValidID(id) {
			return nil, fmt.Errorf("master key entry #%d: malformed id: %s", pos, idRule)
		}
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("master key %q appears twice (entries #%d and #%d)", id, first, pos)
		}
		seen[id] = pos
		b, err := decodeKey(encoded)
		if err != nil {
			return nil, fmt.Errorf("master key %q (entry #%d): %w", id, pos, err)
		}
		keys = append(keys, Key{ID: id, Bytes: b})
	}
	if len(keys) == 0 {
		return nil, errors.New("no master keys given: want id:base64[,id:base64…]")
	}
	return keys, nil
}

// FromDir reads master keys from dir: one file per key, named by the key's
// id, holding its base64 (as in [FromEnv]; a trailing newline is fine).
// Symbolic links are followed. Names starting with '.' are skipped, such as
// the ..data links and ..<timestamp> directories of a Kubernetes secret
// mount, and so are subdirectories (with a warning).
//
// A key file that other users may read does not fail; it yields a warning
// (safe to log) saying so. FromDir fails if dir cannot be read, holds no key
// file, a file is unreadable, larger than 1 KiB or not named by a valid id,
// or a key is not base64 of 32 bytes or is all zeros. Errors name the file,
// never its content.
func FromDir(dir string) ([]Key, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("master key directory: %w", err)
	}
	var (
		keys     []Key
		warnings []string
	)
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		info, err := os.Stat(path) // follows the links of secret mounts
		if err != nil {
			return nil, nil, fmt.Errorf("master key file %s: %w", path, err)
		}
		if info.IsDir() {
			warnings = append(warnings, fmt.Sprintf("master key directory %s: skipping subdirectory %q", dir, name))
			continue
		}
		if !info.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("master key file %s: not a regular file", path)
		}
		if !ValidID(name) {
			return nil, nil, fmt.Errorf("master key file %s: the file name is the key id, and %s", path, idRule)
		}
		if info.Size() > maxKeyFileSize {
			return nil, nil, fmt.Errorf("master key file %s: %d bytes, too large for a key (want base64 of %d bytes)",
				path, info.Size(), KeySize)
		}
		if perm := info.Mode().Perm(); perm&0o007 != 0 {
			warnings = append(warnings, fmt.Sprintf("master key file %s is accessible to other users (mode %04o): "+
				"restrict it to the service's user, e.g. mode 0400 (Kubernetes: defaultMode: 0400)", path, perm))
		}
		content, err := readLimited(path)
		if err != nil {
			return nil, nil, fmt.Errorf("master key file %s: %w", path, err)
		}
		b, err := decodeKey(string(content))
		clear(content)
		if err != nil {
			return nil, nil, fmt.Errorf("master key %q (file %s): %w", name, path, err)
		}
		keys = append(keys, Key{ID: name, Bytes: b})
	}
	if len(keys) == 0 {
		return nil, warnings, fmt.Errorf("master key directory %s holds no key files", dir)
	}
	return keys, warnings, nil
}

// readLimited reads the file at path, failing if it grew past maxKeyFileSize
// since it was checked.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileSize)
	}
	return b, nil
}

// encodings are the base64 forms accepted for a key, strict so that each key
// has one spelling per form.
var encodings = []*base64.Encoding{
	base64.StdEncoding.Strict(),
	base64.URLEncoding.Strict(),
	base64.RawStdEncoding.Strict(),
	base64.RawURLEncoding.Strict(),
}

// decodeKey decodes the base64 of a KeySize-byte key. Its errors never
// contain s.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty: want base64 of 32 bytes")
	}
	for _, enc := range encodings {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != KeySize {
			clear(b)
			return nil, fmt.Errorf("decodes to %d bytes, want %d", len(b), KeySize)
		}
		if allZero(b) {
			return nil, errors.New("all zeros: generate a random key")
		}
		return b, nil
	}
	return nil, errors.New("not valid base64 (standard or URL-safe): want base64 of 32 bytes")
}
