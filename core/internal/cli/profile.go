package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/custos-platform/custos/core/client"
)

// A profile is a named set of settings (profiles/NAME.json) and a session (tokens/NAME.json, 0600)
// under $XDG_CONFIG_HOME/custos (else ~/.config/custos). Neither ever holds a password or master
// key.

// settings are a profile's non-secret settings, saved by login.
type settings struct {
	URL      string `json:"url"`
	CAFile   string `json:"caFile,omitempty"`
	GRPC     string `json:"grpc,omitempty"`
	Username string `json:"username,omitempty"`
}

var profileName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// profileName returns the profile in force: --profile, CUSTOS_PROFILE, else "default".
func (e *env) profileName() (string, error) {
	name := firstNonEmpty(e.profile, e.getenv("CUSTOS_PROFILE"), "default")
	if !profileName.MatchString(name) || name == "." || name == ".." {
		return "", usageErr("profile %q: 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	return name, nil
}

// configDir is $XDG_CONFIG_HOME/custos, else $HOME/.config/custos.
func (e *env) configDir() (string, error) {
	if x := e.getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "custos"), nil
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "custos"), nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory: set XDG_CONFIG_HOME or HOME")
	}
	return filepath.Join(d, "custos"), nil
}

func (e *env) profilePaths() (settingsPath, tokensPath string, err error) {
	name, err := e.profileName()
	if err != nil {
		return "", "", err
	}
	dir, err := e.configDir()
	if err != nil {
		return "", "", err
	}
	return filepath.Join(dir, "profiles", name+".json"), filepath.Join(dir, "tokens", name+".json"), nil
}

func (e *env) loadSettings() (settings, error) {
	path, _, err := e.profilePaths()
	if err != nil {
		return settings{}, err
	}
	var s settings
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read profile: %w", err)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("profile %s is not valid JSON: %w", path, err)
	}
	return s, nil
}

func (e *env) saveSettings(s settings) error {
	path, _, err := e.profilePaths()
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFile0600(path, append(raw, '\n'))
}

// writeFile0600 replaces path atomically with a file only its owner can read, in a directory only
// its owner can enter.
func writeFile0600(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := privateDir(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// On disk before the rename: a crash must not leave an empty or partial file in place of
	// the tokens (a spent refresh token would then be all that is left, or nothing).
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename in dir durable, where the system allows it (best effort: some
// filesystems and systems cannot sync a directory, and the file itself is already on disk).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// privateDir makes dir, a directory of custos's configuration (profiles/ or tokens/), if needed,
// and makes sure that only its owner can enter it or the custos directory above it: one left
// open to others (by an older custos, or by hand) is narrowed to 0700, one owned by another user
// refused.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
		if ownedByOther(fi) {
			return fmt.Errorf("%s belongs to another user: custos keeps profiles and tokens only in a directory of yours (check XDG_CONFIG_HOME and HOME)", d)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(d, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only
				return fmt.Errorf("restrict %s to its owner (0700): %w", d, err)
			}
		}
	}
	return nil
}

// fileStore keeps a profile's session in a 0600 file; refreshes lock a file beside it, so that
// custos processes running at once never spend the same refresh token twice.
type fileStore struct {
	path string
	// url and grpc are the core the profile was saved with: a session written before sessions
	// named their core (client.Session.URL) belongs to it.
	url, grpc string
}

var (
	_ client.TokenStore  = fileStore{}
	_ client.TokenLocker = fileStore{}
)

// Load reads the session; the zero Session when there is none.
func (f fileStore) Load(context.Context) (client.Session, error) {
	var s client.Session
	raw, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return client.Session{}, fmt.Errorf("%s is not a session: %w", f.path, err)
	}
	if s.LoggedIn() && s.URL == "" {
		s.URL, s.GRPC = f.url, f.grpc
	}
	return s, nil
}

// Save writes s (0600), or removes the file for the zero Session.
func (f fileStore) Save(_ context.Context, s client.Session) error {
	if s == (client.Session{}) {
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	raw, err := json.MarshalIndent(s, "", "  ") //nolint:gosec // this 0600 file is where the tokens are meant to be
	if err != nil {
		return err
	}
	return writeFile0600(f.path, append(raw, '\n'))
}

// LockTokens takes an exclusive lock on the profile's lock file.
func (f fileStore) LockTokens(ctx context.Context) (func(), error) {
	if err := privateDir(filepath.Dir(f.path)); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(f.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(ctx, lf); err != nil {
		lf.Close()
		return nil, err
	}
	return func() { unlockFile(lf); lf.Close() }, nil
}
