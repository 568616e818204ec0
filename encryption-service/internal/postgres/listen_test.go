package postgres_test

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// eventWait bounds how long a test waits for a notification that must come;
// it is a guard against hanging, not a timing assertion.
const eventWait = 20 * time.Second

type change struct {
	kind string
	id   uuid.UUID
}

// listening runs Listen on url until the test ends and returns its changes,
// resets and losses of the connection.
func listening(t *testing.T, url string) (<-chan change, <-chan struct{}, <-chan struct{}) {
	t.Helper()
	changes := make(chan change, 100)
	resets := make(chan struct{}, 100)
	losses := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- postgres.Listen(ctx, url, slog.New(slog.NewTextHandler(testWriter{t}, nil)),
			func(kind string, id uuid.UUID) { changes <- change{kind, id} },
			func() { resets <- struct{}{} },
			func() { losses <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen() after cancel = %v, want nil", err)
		}
	})
	return changes, resets, losses
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func waitReset(t *testing.T, resets <-chan struct{}) { t.Helper(); waitCall(t, resets, "onReset") }

// waitCall waits for a call of Listen's callback name, signalled on calls.
func waitCall(t *testing.T, calls <-chan struct{}, name string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(eventWait):
		t.Fatalf("Listen did not call %s", name)
	}
}

func wantChange(t *testing.T, changes <-chan change, want change) {
	t.Helper()
	select {
	case got := <-changes:
		if got != want {
			t.Errorf("onChange(%q, %s), want onChange(%q, %s)", got.kind, got.id, want.kind, want.id)
		}
	case <-time.After(eventWait):
		t.Fatalf("no onChange(%q, %s)", want.kind, want.id)
	}
}

// TestListenAcrossStores plays two replicas: changes made through one Store
// reach the other replica's listener; a lost connection is replaced and
// reported with onReset.
func TestListenAcrossStores(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	writer, admin, url := mustStore(t)
	reader := postgres.NewStore(mustOpen(t, url)) // the other replica
	changes, resets, losses := listening(t, url)
	waitReset(t, resets)

	tenant, first := mustTenant(t, writer, "")
	wantChange(t, changes, change{postgres.ChangeTenant, tenant.ID})
	e := mustContext(t, writer, tenant.ID)
	wantChange(t, changes, change{postgres.ChangeEncryption, e.ID})
	if _, err := writer.Rotate(ctx, tenant.ID, e.ID, newVersionFunc(t), auditEvent("encryption.rotate")); err != nil {
		t.Fatal(err)
	}
	wantChange(t, changes, change{postgres.ChangeEncryption, e.ID})
	if _, err := reader.GetEncryption(ctx, tenant.ID, e.ID); err != nil {
		t.Fatalf("the other replica's GetEncryption() = %v", err)
	}

	// A refused change notifies nothing, and a stranger's malformed
	// notification is skipped: the next change seen is the next real one.
	if _, err := writer.RevokeTenantSecret(ctx, tenant.ID, first.ID, auditEvent("tenant.secret.revoke")); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("RevokeTenantSecret(last) = %v, want FailedPrecondition", err)
	}
	for _, payload := range []string{"garbage", "encryption:not-a-uuid", ":" + uuid.NewString()} {
		if _, err := admin.Exec(ctx, "SELECT pg_notify('custos_es_changes', $1)", payload); err != nil {
			t.Fatal(err)
		}
	}
	second := mustAddSecret(t, reader, tenant.ID)
	wantChange(t, changes, change{postgres.ChangeTenant, tenant.ID})
	if _, err := reader.RevokeTenantSecret(ctx, tenant.ID, second.ID, auditEvent("tenant.secret.revoke")); err != nil {
		t.Fatal(err)
	}
	wantChange(t, changes, change{postgres.ChangeTenant, tenant.ID})

	// Kill the listener's connection: it says the connection is lost, reconnects, says so, and
	// listens again.
	if len(losses) != 0 {
		t.Fatalf("%d losses reported while the connection was fine", len(losses))
	}
	terminateListener(t, admin)
	waitCall(t, losses, "onLost")
	waitReset(t, resets)
	if _, err := reader.Rotate(ctx, tenant.ID, e.ID, newVersionFunc(t), auditEvent("encryption.rotate")); err != nil {
		t.Fatal(err)
	}
	wantChange(t, changes, change{postgres.ChangeEncryption, e.ID})
}

// terminateListener ends the listener's backend, waiting for it to exist.
func terminateListener(t *testing.T, admin *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		n := count(t, admin, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			 WHERE datname = current_database() AND application_name = 'custos-encryption-service-listener') AS killed`)
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no listener connection to terminate")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListenRetriesWhileUnreachable(t *testing.T) {
	t.Parallel()
	// The database is unreachable at first: Listen keeps retrying without
	// calling anything, and returns nil once cancelled.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	called := false
	err := postgres.Listen(ctx, "postgres://custos@127.0.0.1:1/none?connect_timeout=1", nil,
		func(string, uuid.UUID) { called = true }, func() { called = true }, func() { called = true })
	if err != nil || called {
		t.Errorf("Listen(unreachable) = %v (callbacks called: %v), want nil and no calls", err, called)
	}
}

func TestListenBadURL(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Pa55"
	err := postgres.Listen(t.Context(), "postgres://u:"+secret+"@host:notaport/db", nil, nil, nil, nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Listen(bad URL) = %v, want an error without the password", err)
	}
}

// blackHole is a TCP proxy to a database whose open connections can be made to swallow everything
// in both directions without closing, as a half-open connection does (a peer or a network path
// gone silently); new connections are forwarded normally.
type blackHole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	holes  []*atomic.Bool
}

func newBlackHole(t *testing.T, target string) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close() })
	go b.serve(t)
	return b
}

func (b *blackHole) serve(t *testing.T) {
	for {
		client, err := b.ln.Accept()
		if err != nil {
			return // closed by the test's cleanup
		}
		server, err := net.Dial("tcp", b.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
		hole := new(atomic.Bool)
		b.mu.Lock()
		b.holes = append(b.holes, hole)
		b.mu.Unlock()
		go forward(server, client, hole)
		go forward(client, server, hole)
	}
}

// forward copies from src to dst until either closes, dropping everything once hole is set.
func forward(dst, src net.Conn, hole *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !hole.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// swallow makes every connection open so far a black hole.
func (b *blackHole) swallow() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range b.holes {
		h.Store(true)
	}
}

// TestListenNoticesAHalfOpenConnection cuts the listening connection silently: Listen must report
// it lost well before a cache would notice by itself, and listen again on a new connection.
func TestListenNoticesAHalfOpenConnection(t *testing.T) {
	t.Parallel()
	writer, _, dbURL := mustStore(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newBlackHole(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	changes, resets, losses := listening(t, u.String())
	waitReset(t, resets)

	proxy.swallow()
	// eventWait (20 s) is a guard, shorter than the 35 s a 30-second health check took.
	waitCall(t, losses, "onLost")
	waitReset(t, resets)
	tenant, _ := mustTenant(t, writer, "")
	wantChange(t, changes, change{postgres.ChangeTenant, tenant.ID})
}
