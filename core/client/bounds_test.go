package client_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/custos-platform/custos/core/client"
)

// requestLog records the path of every request the fake gets, after login.
type requestLog struct {
	mu    sync.Mutex
	paths []string
}

func (l *requestLog) record(f *fakeCore) {
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.paths = append(l.paths, r.Method+" "+r.URL.Path)
		l.mu.Unlock()
		inner.ServeHTTP(w, r)
	})
}

func (l *requestLog) taken() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.paths
	l.paths = nil
	return out
}

// A record of an export longer than any record core writes (and than Import takes, 8 MiB) is
// refused as it is read, without reading it whole, and nothing of it is written: a broken or
// hostile core cannot make the client buffer an answer of any size, nor write a file Import would
// refuse.
func TestExportRefusesOversizedRecord(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/export" {
			inner.ServeHTTP(w, r)
			return
		}
		bw := bufio.NewWriter(w)
		_, _ = bw.WriteString(`{"result":{"record":{"id":"r1","cursor":"c1","cipherText":"Y2lwaGVy"}}}` + "\n")
		_, _ = bw.WriteString(`{"result":{"record":{"id":"r2","cursor":"c2","cipherText":"`)
		chunk := strings.Repeat("A", 1<<20)
		for range 32 {
			if _, err := bw.WriteString(chunk); err != nil {
				return // the client hung up
			}
		}
		_, _ = bw.WriteString(`"}}}` + "\n")
		_ = bw.Flush()
	})
	var out strings.Builder
	res, err := c.Export(context.Background(), &out)
	if err == nil || !strings.Contains(err.Error(), "record 2 is over") {
		t.Errorf("Export with a 32 MiB record = %+v, %v; want record 2 refused as over the limit", res, err)
	}
	if res.Records != 1 || strings.Count(out.String(), "\n") != 1 || out.Len() > 1<<10 {
		t.Errorf("Export wrote %d records (%d bytes), want only the first", res.Records, out.Len())
	}
}

// A REST call that core does not answer within the client's timeout (WithTimeout) is an *Error
// DEADLINE_EXCEEDED, as over gRPC (exit 9 in the CLI); the caller's own cancellation or deadline
// is reported as that, not as an error of core.
func TestRESTCallTimeout(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t, client.WithTimeout(200*time.Millisecond))
	mustLogin(t, f, c)
	slow := f.newClient(t) // the default timeout, longer than the caller's below
	mustLogin(t, f, slow)
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/me" {
			<-r.Context().Done() // never answers
			return
		}
		inner.ServeHTTP(w, r)
	})

	_, err := c.Me(context.Background())
	var ce *client.Error
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrDeadlineExceeded) || !strings.Contains(ce.Message, "did not answer within 200ms") {
		t.Errorf("Me with no answer within the timeout = %v (%T), want an *Error DEADLINE_EXCEEDED naming the timeout", err, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := slow.Me(ctx); !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
		t.Errorf("Me past the caller's deadline = %v, want the caller's context.DeadlineExceeded, not an *Error", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := slow.Me(ctx); !errors.Is(err, context.Canceled) || errors.As(err, &ce) {
		t.Errorf("Me cancelled by the caller = %v, want context.Canceled, not an *Error", err)
	}
}

// A REST answer over the client's cap (64 MiB) is refused as too large, not cut short and then
// reported as malformed.
func TestRESTAnswerTooLarge(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	f.wrap(func(inner http.Handler, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/me" {
			inner.ServeHTTP(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"username":"`)
		chunk := strings.Repeat("a", 1<<20)
		for range 65 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"}`)
	})
	_, err := c.Me(context.Background())
	if err == nil || !strings.Contains(err.Error(), "answer too large") || strings.Contains(err.Error(), "decode") {
		t.Errorf("Me answered with 65 MiB = %v, want an answer-too-large error", err)
	}
}

// Every method that takes an id refuses one that is not a UUID before sending anything, with the
// INVALID_ARGUMENT core would answer over gRPC, naming the field: over REST the id would
// otherwise become part of the path ("a/b"), and be answered 404 or worse.
func TestIDsMustBeUUIDs(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	var log requestLog
	log.record(f)
	const good = "3f2b6c1e-0000-4000-8000-000000000001"
	for _, bad := range []string{"a/b", "", "..", "3f2b6c1e000040008000000000000001", good + "/x"} {
		calls := []struct {
			name, field string
			call        func() error
		}{
			{"GetItem", "id", func() error { _, err := c.GetItem(ctx, bad); return err }},
			{"UpdateItem", "id", func() error { _, err := c.UpdateItem(ctx, bad, 1, "n", "d"); return err }},
			{"DeleteItem", "id", func() error { return c.DeleteItem(ctx, bad) }},
			{"GetJob", "jobId", func() error { _, err := c.GetJob(ctx, bad); return err }},
			{"WaitJob", "jobId", func() error { _, err := c.WaitJob(ctx, bad, time.Millisecond, nil); return err }},
			{"EnableKeyVersion", "encryptionId", func() error { _, err := c.EnableKeyVersion(ctx, bad, good); return err }},
			{"DisableKeyVersion", "versionId", func() error { _, err := c.DisableKeyVersion(ctx, good, bad); return err }},
			{"GetTenant", "tenantId", func() error { _, err := c.GetTenant(ctx, bad); return err }},
			{"UpdateTenant", "tenantId", func() error {
				name := "x"
				_, err := c.UpdateTenant(ctx, bad, client.TenantUpdate{Name: &name})
				return err
			}},
			{"DeleteTenant", "tenantId", func() error { _, err := c.DeleteTenant(ctx, bad, "acme"); return err }},
			{"CreateUser", "tenantId", func() error {
				_, err := c.CreateUser(ctx, bad, client.NewUser{Username: "bob", Password: "bob's long passphrase"})
				return err
			}},
			{"Users", "tenantId", func() error { _, err := client.Collect(c.Users(ctx, bad)); return err }},
			{"GetUser", "userId", func() error { _, err := c.GetUser(ctx, bad); return err }},
			{"DisableUser", "userId", func() error { _, err := c.DisableUser(ctx, bad); return err }},
			{"EnableUser", "userId", func() error { _, err := c.EnableUser(ctx, bad); return err }},
			{"SetUserRole", "userId", func() error { _, err := c.SetUserRole(ctx, bad, "admin"); return err }},
			{"DeleteUser", "userId", func() error { _, err := c.DeleteUser(ctx, bad); return err }},
			{"RotateAPIKey", "apiKeyId", func() error { _, err := c.RotateAPIKey(ctx, bad, time.Hour); return err }},
			{"RevokeAPIKey", "apiKeyId", func() error { return c.RevokeAPIKey(ctx, bad) }},
			{"RevokeSession", "sessionId", func() error { return c.RevokeSession(ctx, bad) }},
		}
		for _, tc := range calls {
			var ce *client.Error
			if err := tc.call(); !errors.As(err, &ce) || ce.Code != "INVALID_ARGUMENT" || !strings.HasPrefix(ce.Message, tc.field+": ") {
				t.Errorf("%s(%q) = %v, want INVALID_ARGUMENT naming %s", tc.name, bad, ce, tc.field)
			}
		}
		if sent := log.taken(); len(sent) != 0 {
			t.Errorf("calls with the id %q sent %q, want nothing sent", bad, sent)
		}
	}
}

// A request with text that is not UTF-8 (a name in Latin-1, say) is refused before it is sent,
// with INVALID_ARGUMENT naming the field and never its value: neither REST's JSON nor gRPC's
// protobuf can carry it, which used to end as an encoding error or a fake INTERNAL.
func TestRequestsMustBeUTF8(t *testing.T) {
	ctx := context.Background()
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	var log requestLog
	log.record(f)
	const id = "3f2b6c1e-0000-4000-8000-000000000001"
	tests := []struct {
		name, field string
		call        func() error
	}{
		{"PutItem name", "name", func() error { _, err := c.PutItem(ctx, "caf\xe9", "d"); return err }},
		{"PutItem data", "data", func() error { _, err := c.PutItem(ctx, "n", "secret \xff"); return err }},
		{"UpdateItem name", "name", func() error { _, err := c.UpdateItem(ctx, id, 1, "caf\xe9", "d"); return err }},
		{"CreateTenant", "name", func() error { _, err := c.CreateTenant(ctx, client.NewTenant{Name: "caf\xe9"}); return err }},
		{"CreateAPIKey scopes", "scopes[1]", func() error {
			_, err := c.CreateAPIKey(ctx, "k", []string{"export", "\xff"}, time.Time{})
			return err
		}},
	}
	for _, tc := range tests {
		err := tc.call()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "INVALID_ARGUMENT" || ce.Message != tc.field+": not UTF-8 text" {
			t.Errorf("%s = %v, want INVALID_ARGUMENT %q", tc.name, err, tc.field+": not UTF-8 text")
		}
		if err != nil && !utf8.ValidString(err.Error()) {
			t.Errorf("%s: the error %q shows the value", tc.name, err)
		}
	}
	if sent := log.taken(); len(sent) != 0 {
		t.Errorf("requests with text that is not UTF-8 sent %q, want nothing sent", sent)
	}
}

// An import line over 8 MiB is not an export record: INVALID_ARGUMENT (exit 7 in the CLI, over
// REST and gRPC alike), as core answers for any file that is not an export, and nothing is sent.
func TestImportRefusesOverlongLine(t *testing.T) {
	f := newFakeCore(t)
	f.keyMode = "PLATFORM"
	c := f.newClient(t)
	mustLogin(t, f, c)
	var log requestLog
	log.record(f)
	file := "{\"id\":\"1\"}\n" + strings.Repeat("x", 9<<20) + "\n"
	_, err := c.Import(context.Background(), strings.NewReader(file))
	if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "line 2 is over 8388608 bytes") {
		t.Errorf("Import with a 9 MiB line = %v, want INVALID_ARGUMENT naming line 2", err)
	}
	if sent := log.taken(); len(sent) != 0 {
		t.Errorf("Import with a 9 MiB line sent %q, want nothing", sent)
	}
}
