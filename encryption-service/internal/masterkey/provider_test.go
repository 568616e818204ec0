package masterkey_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	k1, k2, k3, k4 := testKey(0x11), testKey(0x22), testKey(0xfb), testKey(0xfe)
	value := " k1:" + base64.StdEncoding.EncodeToString(k1) +
		",\n k2 : " + base64.RawStdEncoding.EncodeToString(k2) +
		",k3:" + base64.URLEncoding.EncodeToString(k3) +
		",k4:" + base64.RawURLEncoding.EncodeToString(k4) + ",\n"
	keys, err := masterkey.FromEnv(value)
	if err != nil {
		t.Fatalf("FromEnv() = %v", err)
	}
	want := []masterkey.Key{{ID: "k1", Bytes: k1}, {ID: "k2", Bytes: k2}, {ID: "k3", Bytes: k3}, {ID: "k4", Bytes: k4}}
	if !slices.EqualFunc(keys, want, func(a, b masterkey.Key) bool { return a.ID == b.ID && bytes.Equal(a.Bytes, b.Bytes) }) {
		t.Errorf("FromEnv() = %v, want %v", keys, want)
	}
}

func TestFromEnvErrors(t *testing.T) {
	t.Parallel()
	key := testKey(0x5a)
	enc := base64.StdEncoding.EncodeToString(key)
	short := base64.StdEncoding.EncodeToString(key[:31])
	tests := []struct {
		name   string
		value  string
		wantIn []string
	}{
		{"empty", "", []string{"no master keys"}},
		{"only separators", " , ,\n", []string{"no master keys"}},
		{"bare key", enc, []string{"entry #1", "want id:base64"}},
		{"key then id", enc + ":k1", []string{"entry #1", "malformed id"}},
		{"empty id", ":" + enc, []string{"entry #1", "malformed id"}},
		{"bad id in second entry", "k1:" + enc + ",bad id:" + enc, []string{"entry #2", "malformed id"}},
		{"empty key", "k1:", []string{`"k1"`, "entry #1", "empty"}},
		{"not base64", "k1:" + strings.Repeat("*", 44), []string{`"k1"`, "not valid base64"}},
		{"31 bytes", "k1:" + short, []string{`"k1"`, "decodes to 31 bytes, want 32"}},
		{"33 bytes", "k1:" + base64.StdEncoding.EncodeToString(append(key, 1)), []string{`"k1"`, "33 bytes"}},
		{"zero key", "k1:" + base64.StdEncoding.EncodeToString(make([]byte, 32)), []string{`"k1"`, "all zeros"}},
		{"duplicate", "k1:" + enc + ",k2:" + enc + ",k1:" + enc, []string{`"k1"`, "entries #1 and #3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := masterkey.FromEnv(tt.value)
			if err == nil {
				t.Fatalf("FromEnv(%s) = %v, nil; want an error", tt.name, keys)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("FromEnv(%s) = %q, want it to mention %q", tt.name, err, s)
				}
			}
			if keyLeaks(err.Error(), key) || strings.Contains(err.Error(), enc) || strings.Contains(err.Error(), short) {
				t.Errorf("FromEnv(%s) = %q leaks the key", tt.name, err)
			}
		})
	}
}

func writeFile(tb testing.TB, path, content string, mode os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not subject to umask
		tb.Fatal(err)
	}
}

// kubernetesMount lays out dir as the kubelet mounts a secret: the files in a
// timestamped directory, a ..data link to it, and one link per key.
func kubernetesMount(tb testing.TB, dir string, files map[string]string, mode os.FileMode) {
	tb.Helper()
	ts := filepath.Join(dir, "..2026_03_01_12_00_00.123456789")
	if err := os.Mkdir(ts, 0o755); err != nil {
		tb.Fatal(err)
	}
	for name, content := range files {
		writeFile(tb, filepath.Join(ts, name), content, mode)
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestFromDir(t *testing.T) {
	t.Parallel()
	k1, k2 := testKey(0x31), testKey(0x32)
	t.Run("kubernetes secret mount", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		kubernetesMount(t, dir, map[string]string{
			"kek-1": base64.StdEncoding.EncodeToString(k1) + "\n",
			"kek-2": base64.RawURLEncoding.EncodeToString(k2),
		}, 0o400)
		keys, warnings, err := masterkey.FromDir(dir)
		if err != nil {
			t.Fatalf("FromDir() = %v", err)
		}
		if len(keys) != 2 || keys[0].ID != "kek-1" || !bytes.Equal(keys[0].Bytes, k1) || keys[1].ID != "kek-2" || !bytes.Equal(keys[1].Bytes, k2) {
			t.Errorf("FromDir() = %v, want kek-1 and kek-2 with their bytes", keys)
		}
		if len(warnings) != 0 {
			t.Errorf("FromDir() warnings = %q, want none", warnings)
		}
	})
	t.Run("readable by others", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "kek-1"), base64.StdEncoding.EncodeToString(k1), 0o644)
		writeFile(t, filepath.Join(dir, "kek-2"), base64.StdEncoding.EncodeToString(k2), 0o440)
		writeFile(t, filepath.Join(dir, ".hidden"), "not a key", 0o600)
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		keys, warnings, err := masterkey.FromDir(dir)
		if err != nil || len(keys) != 2 {
			t.Fatalf("FromDir() = %v, %v, want two keys", keys, err)
		}
		joined := strings.Join(warnings, "\n")
		if len(warnings) != 2 || !strings.Contains(joined, "kek-1 is accessible to other users (mode 0644)") ||
			!strings.Contains(joined, `subdirectory "sub"`) || strings.Contains(joined, "kek-2") {
			t.Errorf("FromDir() warnings = %q, want one about kek-1's mode and one about sub", warnings)
		}
		if keyLeaks(joined, k1) {
			t.Errorf("FromDir() warnings %q leak a key", warnings)
		}
	})
}

func TestFromDirErrors(t *testing.T) {
	t.Parallel()
	key := testKey(0x77)
	enc := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name   string
		files  map[string]string // name → content; "" content with a "/" suffix makes a directory
		dir    string            // overrides the directory
		wantIn []string
	}{
		{name: "missing directory", dir: filepath.Join(os.TempDir(), "custos-no-such-dir-7f3a"), wantIn: []string{"master key directory"}},
		{name: "empty directory", files: map[string]string{}, wantIn: []string{"holds no key files"}},
		{name: "only dotfiles", files: map[string]string{".k1": enc}, wantIn: []string{"holds no key files"}},
		{name: "bad file name", files: map[string]string{"k 1": enc}, wantIn: []string{"k 1", "the file name is the key id"}},
		{name: "not base64", files: map[string]string{"k1": "%%%%"}, wantIn: []string{`"k1"`, "not valid base64"}},
		{name: "empty file", files: map[string]string{"k1": "\n"}, wantIn: []string{`"k1"`, "empty"}},
		{name: "wrong length", files: map[string]string{"k1": base64.StdEncoding.EncodeToString(key[:20])}, wantIn: []string{`"k1"`, "20 bytes"}},
		{name: "zero key", files: map[string]string{"k1": base64.StdEncoding.EncodeToString(make([]byte, 32))}, wantIn: []string{`"k1"`, "all zeros"}},
		{name: "too large", files: map[string]string{"k1": enc + strings.Repeat("\n", 2000)}, wantIn: []string{"k1", "too large"}},
		{name: "key in a bad file among good", files: map[string]string{"a": enc, "b": "xx" + enc}, wantIn: []string{`"b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := tt.dir
			if dir == "" {
				dir = t.TempDir()
				for name, content := range tt.files {
					writeFile(t, filepath.Join(dir, name), content, 0o400)
				}
			}
			keys, _, err := masterkey.FromDir(dir)
			if err == nil {
				t.Fatalf("FromDir(%s) = %v, nil; want an error", tt.name, keys)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("FromDir(%s) = %q, want it to mention %q", tt.name, err, s)
				}
			}
			if keyLeaks(err.Error(), key) || strings.Contains(err.Error(), enc) {
				t.Errorf("FromDir(%s) = %q leaks the key", tt.name, err)
			}
		})
	}
	t.Run("dangling link", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.Symlink("..data/k1", filepath.Join(dir, "k1")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := masterkey.FromDir(dir); err == nil || !strings.Contains(err.Error(), "k1") {
			t.Errorf("FromDir(dangling link) = %v, want an error naming k1", err)
		}
	})
}

func TestProviders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k1, k2 := testKey(0x41), testKey(0x42)

	env := masterkey.EnvProvider{Value: "a:" + base64.StdEncoding.EncodeToString(k1) + ",b:" + base64.StdEncoding.EncodeToString(k2)}
	kr, err := masterkey.Load(ctx, env, "b")
	if err != nil || kr.Active().ID != "b" || !slices.Equal(kr.IDs(), []string{"a", "b"}) {
		t.Fatalf("Load(EnvProvider, b) = %v, %v, want keys a and b with b active", kr, err)
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "only"), base64.StdEncoding.EncodeToString(k1), 0o604)
	var warnings []string
	kr, err = masterkey.Load(ctx, masterkey.DirProvider{Dir: dir, OnWarning: func(w string) { warnings = append(warnings, w) }}, "")
	if err != nil || kr.Active().ID != "only" {
		t.Fatalf("Load(DirProvider) = %v, %v, want key only active", kr, err)
	}
	if len(warnings) != 1 {
		t.Errorf("DirProvider warnings = %q, want one about the mode", warnings)
	}

	if _, err := masterkey.Load(ctx, masterkey.EnvProvider{}, ""); err == nil {
		t.Error("Load(empty EnvProvider) = nil error, want one")
	}
	if _, err := masterkey.Load(ctx, env, "c"); err == nil || !strings.Contains(err.Error(), `"c"`) {
		t.Errorf("Load(EnvProvider, unknown active) = %v, want an error naming c", err)
	}
	if _, err := masterkey.Load(ctx, masterkey.DirProvider{Dir: filepath.Join(dir, "missing")}, ""); err == nil {
		t.Error("Load(DirProvider on a missing dir) = nil error, want one")
	}
}
