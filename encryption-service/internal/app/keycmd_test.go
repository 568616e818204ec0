package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
	"github.com/custos-platform/custos/encryption-service/internal/testdb"
)

// The test master keys one by one (testMasterKeys holds both).
const (
	testKeyK1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	testKeyK2 = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
)

// cancelOnWrite is a command's standard output that cancels the command the first time it prints
// a line containing trigger.
type cancelOnWrite struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	trigger string
	cancel  context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.cancel != nil && bytes.Contains(p, []byte(w.trigger)) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runKeyCommand runs a command of the binary with the master keys of env.
func runKeyCommand(ctx context.Context, databaseURL string, env map[string]string, stdout io.Writer, args ...string) error {
	all := map[string]string{"ES_DATABASE_URL": databaseURL, "USER": "operator", "ES_MASTER_KEYS": testMasterKeys, "ES_ACTIVE_MASTER_KEY_ID": "k2"}
	for k, v := range env {
		all[k] = v
	}
	return Run(ctx, "test", args, func(k string) string { return all[k] }, stdout, io.Discard)
}

// masterKeyCounts returns GET /v1/admin/master-keys as id → [active, wrappedKeys].
func masterKeyCounts(r *rest) map[string][2]any {
	out := map[string][2]any{}
	for _, k := range r.must(200, "GET", "/v1/admin/master-keys", r.admin(), nil)["masterKeys"].([]any) {
		k := k.(map[string]any)
		out[k["keyId"].(string)] = [2]any{k["active"], k["wrappedKeys"]}
	}
	return out
}

func TestPlatformMasterKeyRotation(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	pool := mustPool(t, url)
	// Before: every replica knows k1 and k2, k1 active.
	before := newREST(t, startInstanceWith(t, url, certs, map[string]string{"ES_ACTIVE_MASTER_KEY_ID": "k1"}))
	ten := before.newTenant("acme")
	withKey := ten.with("X-Master-Key", clientKey)
	type item struct {
		headers map[string]string
		body    string
		data    string
	}
	var items []item
	for _, alg := range []string{"AES-256-GCM", "XCHACHA20-POLY1305"} {
		for _, h := range []map[string]string{ten, withKey} {
			mode := "PLATFORM"
			if _, ok := h["X-Master-Key"]; ok {
				mode = "CLIENT"
			}
			id := before.must(200, "POST", "/v1/encryptions", h, map[string]string{"algorithm": alg, "keyMode": mode})["encryptionId"].(string)
			for i := range 2 {
				data := alg + "/" + mode + "/" + string(rune('1'+i))
				enc := before.must(200, "POST", "/v1/encrypt", h, map[string]any{"encryptionId": id, "data": data})
				items = append(items, item{h, mustJSON(t, decryptBody(id, enc)), data})
				if i == 0 {
					before.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
				}
			}
		}
	}
	// The operator makes k2 active (a replica restarted with the new configuration).
	after := newREST(t, startInstance(t, url, certs))
	if got := masterKeyCounts(after); got["k1"] != [2]any{false, "10"} || got["k2"] != [2]any{true, "0"} {
		t.Fatalf("GET /v1/admin/master-keys = %v, want k1: 10 stored keys, k2 active with none", got)
	}
	var out bytes.Buffer
	if err := runKeyCommand(context.Background(), url, nil, &out, "master-key", "rotate", "--dry-run"); err != nil ||
		!strings.Contains(out.String(), "k1") || !strings.Contains(out.String(), "10") || strings.Contains(out.String(), "rewrapped") {
		t.Fatalf("master-key rotate --dry-run = %q, %v; want the counts and no rewrapping", out.String(), err)
	}

	// Traffic continues on both replicas during the rotation.
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for _, r := range []*rest{before, after} {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				it := items[i%len(items)]
				code, got := r.call("POST", "/v1/decrypt", it.headers, it.body)
				calls.Add(1)
				if code != http.StatusOK || got["data"] != it.data {
					failures.Add(1)
					t.Errorf("decrypt during the rotation = %d %v", code, got)
				}
			}
		})
	}

	// Interrupted after its first batch.
	ctx, cancel := context.WithCancel(context.Background())
	progress := &cancelOnWrite{trigger: "rewrapped 3 ", cancel: cancel}
	err := runKeyCommand(ctx, url, nil, progress, "master-key", "rotate", "--batch-size", "3")
	if !errors.Is(err, context.Canceled) || !strings.Contains(progress.String(), "interrupted after rewrapping 3") {
		t.Fatalf("interrupted master-key rotate = %v, printed %q", err, progress.String())
	}
	if got := masterKeyCounts(after); got["k1"][1] != "7" || got["k2"][1] != "3" {
		t.Fatalf("master keys after the interruption = %v, want k1: 7, k2: 3", got)
	}
	// Resumed: it continues with what is left.
	out.Reset()
	if err := runKeyCommand(context.Background(), url, nil, &out, "master-key", "rotate", "--batch-size", "3"); err != nil ||
		!strings.Contains(out.String(), "done: rewrapped 7 stored keys") {
		t.Fatalf("resumed master-key rotate = %v, printed %q", err, out.String())
	}
	close(stop)
	wg.Wait()
	if calls.Load() == 0 || failures.Load() != 0 {
		t.Errorf("%d of %d decryptions during the rotation failed", failures.Load(), calls.Load())
	}
	if got := masterKeyCounts(after); got["k1"][1] != "0" || got["k2"][1] != "10" {
		t.Errorf("master keys after the rotation = %v, want k1: 0, k2: 10", got)
	}
	if n := countRows(t, pool, `SELECT (SELECT count(*) FROM encryption.encryption_key_versions WHERE master_key_id = 'k1')
		+ (SELECT count(*) FROM encryption.encryptions WHERE sealing_master_key_id = 'k1')`); n != 0 {
		t.Errorf("%d stored keys still under k1", n)
	}

	// k1 retired: a replica without it serves everything, PLATFORM and CLIENT.
	only := newREST(t, startInstanceWith(t, url, certs, map[string]string{"ES_MASTER_KEYS": testKeyK2, "ES_ACTIVE_MASTER_KEY_ID": ""}))
	for _, it := range items {
		if got := only.must(200, "POST", "/v1/decrypt", it.headers, it.body); got["data"] != it.data {
			t.Errorf("decrypt with only k2 = %v, want %q", got, it.data)
		}
		only.must(200, "POST", "/v1/rewrap", it.headers, it.body)
	}
	if got := masterKeyCounts(only); len(got) != 1 || got["k2"] != [2]any{true, "10"} {
		t.Errorf("master keys listed by a replica with only k2 = %v", got)
	}

	// A database that names a key the configuration lacks: the command says so and fails.
	out.Reset()
	if _, err := pool.Exec(context.Background(), `UPDATE encryption.encryption_key_versions SET master_key_id = 'k0'
		 WHERE id = (SELECT id FROM encryption.encryption_key_versions LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	err = runKeyCommand(context.Background(), url, nil, &out, "master-key", "rotate")
	if err == nil || !strings.Contains(err.Error(), "k0: 1") || !strings.Contains(out.String(), "NOT CONFIGURED") {
		t.Errorf("master-key rotate with a stranded key = %v, printed %q; want an error naming k0", err, out.String())
	}
}

func TestLifecycleCommands(t *testing.T) {
	certs := testcerts.New(t)
	url := testdb.New(t)
	r := newREST(t, startInstance(t, url, certs))
	ten := r.newTenant("acme")
	tid := ten["X-Tenant-Id"]
	id := r.must(200, "POST", "/v1/encryptions", ten, `{}`)["encryptionId"].(string)
	enc := r.must(200, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x"})
	v1 := enc["encryptionVersionId"].(string)
	v2 := r.must(200, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})["newVersionId"].(string)
	decrypt := mustJSON(t, decryptBody(id, enc))

	steps := []struct {
		args    []string
		printed string // "" when the command must fail
		err     string
		decrypt int // status of a decryption with v1 afterwards (0: not checked)
	}{
		{[]string{"version", "disable", tid, id, v2}, "", "rotate first", 0},
		{[]string{"version", "destroy", tid, id, v1}, "", "disable it first", 0},
		{[]string{"version", "disable", tid, id, v1}, "is DISABLED", "", 400},
		{[]string{"version", "enable", tid, id, v1, "--json"}, `"state":"DECRYPT_ONLY"`, "", 200},
		{[]string{"version", "disable", tid, id, v1}, "is DISABLED", "", 400},
		{[]string{"version", "destroy", tid, id, v1}, "unrecoverable", "", 400},
		{[]string{"version", "frob", tid, id, v1}, "", "unknown version subcommand", 0},
		{[]string{"version", "disable", tid, id}, "", "usage", 0},
		{[]string{"version", "disable", tid, id, "v1"}, "", "VERSION_ID must be a UUID", 0},
		{[]string{"version", "disable", "123e4567-e89b-12d3-a456-426614174000", id, v1}, "", "not found", 0},
	}
	for _, st := range steps {
		out, err := runCLI(t, url, st.args...)
		if st.printed == "" {
			if err == nil || !strings.Contains(err.Error(), st.err) {
				t.Errorf("%q = %q, %v; want an error mentioning %q", st.args, out, err, st.err)
			}
			continue
		}
		if err != nil || !strings.Contains(out, st.printed) {
			t.Errorf("%q = %q, %v; want it to print %q", st.args, out, err, st.printed)
		}
		if st.decrypt != 0 {
			// The running service follows at once (the database notifies it).
			eventually(t, "decrypt after "+strings.Join(st.args[:2], " "), func() bool {
				code, _ := r.call("POST", "/v1/decrypt", ten, decrypt)
				return code == st.decrypt
			})
		}
	}
	if _, err := runCLI(t, url, "master-key", "rotate", "--batch-size", "0"); !errors.Is(err, ErrUsage) {
		t.Errorf("master-key rotate --batch-size 0 = %v, want a usage error", err)
	}
	if _, err := runCLI(t, url, "master-key", "spin"); !errors.Is(err, ErrUsage) {
		t.Errorf("master-key spin = %v, want a usage error", err)
	}

	// tenant destroy needs --yes.
	if _, err := runCLI(t, url, "tenant", "destroy", tid); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("tenant destroy without --yes = %v, want a usage error asking for --yes", err)
	}
	r.must(200, "GET", "/v1/encryptions/"+id, ten, nil)
	out, err := runCLI(t, url, "tenant", "destroy", tid, "--yes")
	if err != nil || !strings.Contains(out, "1 key contexts erased") {
		t.Fatalf("tenant destroy --yes = %q, %v", out, err)
	}
	eventually(t, "destroyed tenant refused", func() bool {
		code, _ := r.call("GET", "/v1/encryptions/"+id, ten, "")
		return code == http.StatusUnauthorized
	})
	if _, err := runCLI(t, url, "tenant", "destroy", tid, "--yes"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("tenant destroy of a destroyed tenant = %v, want not found", err)
	}
	events := r.must(200, "GET", "/v1/admin/audit?tenantId="+tid, r.admin(), nil)["events"].([]any)
	if e := events[0].(map[string]any); e["action"] != "tenant.destroy" || e["actor"] != "cli:operator" {
		t.Errorf("latest audit event = %v, want tenant.destroy by cli:operator", e)
	}
}
