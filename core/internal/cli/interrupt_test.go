package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Ctrl-C (the context ending, as signal.NotifyContext does in main) ends custos at once with exit
// 130 while it waits on standard input that never comes: a terminal or a stalled pipe, for an
// item's data, an import, a password from --password-stdin. Nothing is sent to core.
func TestCtrlCWhileReadingStandardInput(t *testing.T) {
	stub := newStubCore(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/items/") {
			w.WriteHeader(500)
			return
		}
		fmt.Fprintln(w, `{"id":"3f2b6c1e-0000-4000-8000-000000000001","name":"n","data":"d","revision":1}`)
	})
	dir := t.TempDir()
	mustSaveSession(t, dir, liveSession(stub.url))
	tests := []struct {
		name string
		args []string
	}{
		{"items put", []string{"items", "put", "--name", "n"}},
		{"items put --data-file -", []string{"items", "put", "--name", "n", "--data-file", "-"}},
		{"items edit", []string{"items", "edit", "3f2b6c1e-0000-4000-8000-000000000001"}},
		{"import", []string{"import"}},
		{"login --password-stdin", []string{"--profile", "other", "login", "-u", "alice", "--password-stdin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe() // stays open, as a terminal or a stalled producer would
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close(); r.Close() })
			if _, err := io.WriteString(w, "some"); err != nil { // a first part, then nothing
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			env := stub.env(dir)
			done := make(chan int, 1)
			go func() {
				done <- Run(ctx, "test", tc.args, func(k string) string { return env[k] }, r, io.Discard, io.Discard)
			}()
			time.Sleep(50 * time.Millisecond) // let it block on the read; the outcome is the same if it has not yet
			cancel()
			select {
			case code := <-done:
				if code != ExitInterrupted {
					t.Errorf("custos %s, Ctrl-C while reading standard input = exit %d, want %d", strings.Join(tc.args, " "), code, ExitInterrupted)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("custos %s still reads standard input 10s after Ctrl-C", strings.Join(tc.args, " "))
			}
		})
	}
	for _, req := range stub.requests() {
		if !strings.HasPrefix(req, "GET /v1/items/") {
			t.Errorf("requests = %q, want only items edit's read of the item", stub.requests())
			break
		}
	}
}
