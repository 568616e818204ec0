package esclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// realES is the real encryption service with three tenants on it, one per way core reaches a
// service: "platform" (core's own gRPC connection), "grpc" (a hosted endpoint over gRPC) and
// "https" (a hosted endpoint over the REST/JSON contract).
type realES struct {
	es      *estest.Service
	certs   *testcerts.Set
	router  *Router
	clients map[string]Client
	secrets [][]byte // the tenants' secrets, which no error may show
	logs    *logBuffer
}

var transports = []string{"platform", "grpc", "https"}

// startRealES starts the encryption service on its own database and a Router with opts whose
// tenants are stored in core's database through postgres.Store.
func startRealES(t *testing.T, opts RouterOptions) *realES {
	t.Helper()
	certs := testcerts.New(t)
	es := estest.Start(t, testdb.NewEmpty(t), certs)
	conn, err := Dial(Options{Addr: es.GRPCAddr, CAFile: certs.CAFile, ClientCertFile: certs.ClientCertFile,
		ClientKeyFile: certs.ClientKeyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	store := newStore(t)
	box := mustBox(t)
	f := &realES{es: es, certs: certs, clients: map[string]Client{}, logs: &logBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.router = NewRouter(conn, store, box, opts)
	t.Cleanup(func() { f.router.Close() })
	for _, name := range transports {
		remoteID, secret := es.CreateTenant(t, "core-"+name+"-"+uuid.NewString()[:8])
		var tenant postgres.Tenant
		switch name {
		case "platform":
			tenant = platformTenant(t, box, remoteID, secret)
		case "grpc":
			tenant = hostedTenant(t, box, "grpc", es.GRPCAddr, certs, remoteID, secret)
		case "https":
			tenant = hostedTenant(t, box, "https", "https://"+es.HTTPAddr, certs, remoteID, secret)
		}
		mustCreateTenant(t, store, tenant)
		f.clients[name] = mustFor(t, f.router, tenant.ID)
		f.secrets = append(f.secrets, []byte(secret))
	}
	return f
}

func newStore(t *testing.T) *postgres.Store {
	t.Helper()
	pool, err := postgres.Open(context.Background(), testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return postgres.NewStore(pool)
}

func mustCreateTenant(t *testing.T, store *postgres.Store, tenant postgres.Tenant) {
	t.Helper()
	err := store.CreateTenant(context.Background(), tenant, postgres.AuditEvent{ActorType: postgres.ActorSystem,
		Action: "tenant.create", Outcome: "ok"})
	if err != nil {
		t.Fatalf("CreateTenant(%s) = %v", tenant.Name, err)
	}
}

// logBuffer collects log output, safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestRealPlatformContext: the whole life of a PLATFORM key context on the real encryption
// service, through each transport.
func TestRealPlatformContext(t *testing.T) {
	f := startRealES(t, RouterOptions{})
	for _, name := range transports {
		t.Run(name, func(t *testing.T) {
			c := f.clients[name]
			ctx := ctxTimeout(t, time.Minute)
			const data = "private data ✓ \u0000 with a NUL"
			id, err := c.CreateContext(ctx, "PLATFORM", nil)
			if err != nil {
				t.Fatalf("CreateContext = %v", err)
			}
			ct1, err := c.Encrypt(ctx, id, data, nil)
			if err != nil {
				t.Fatalf("Encrypt = %v", err)
			}
			if ct1.EncryptionID != id || ct1.Algorithm != "AES-256-GCM" || !bytes.HasPrefix(ct1.Metadata, []byte("{")) {
				t.Errorf("Encrypt = %+v", ct1)
			}
			if got, err := c.Decrypt(ctx, ct1, nil); err != nil || got != data {
				t.Fatalf("Decrypt = %q, %v, want the data back", got, err)
			}
			info, err := c.GetContext(ctx, id)
			if err != nil || info.KeyMode != "PLATFORM" || info.ActiveVersionID != ct1.VersionID || len(info.Versions) != 1 ||
				info.Versions[0] != (Version{ID: ct1.VersionID, Version: 1, State: "ACTIVE"}) {
				t.Errorf("GetContext = %+v, %v", info, err)
			}

			v2, err := c.Rotate(ctx, id)
			if err != nil {
				t.Fatalf("Rotate = %v", err)
			}
			ct2, err := c.Encrypt(ctx, id, "after rotation", nil)
			if err != nil || ct2.VersionID != v2 {
				t.Fatalf("Encrypt after Rotate = %+v, %v, want version %s", ct2, err, v2)
			}
			if got, err := c.Decrypt(ctx, ct1, nil); err != nil || got != data {
				t.Errorf("Decrypt of the old version after Rotate = %q, %v", got, err)
			}
			info, err = c.GetContext(ctx, id)
			if err != nil || info.ActiveVersionID != v2 || len(info.Versions) != 2 ||
				info.Versions[0].State != "DECRYPT_ONLY" || info.Versions[1] != (Version{ID: v2, Version: 2, State: "ACTIVE"}) {
				t.Errorf("GetContext after Rotate = %+v, %v", info, err)
			}

			tampered := ct1
			raw, _ := base64.StdEncoding.DecodeString(ct1.CipherText)
			raw[0] ^= 1
			tampered.CipherText = base64.StdEncoding.EncodeToString(raw)
			_, err = c.Decrypt(ctx, tampered, nil)
			wantKind(t, "Decrypt(tampered)", err, errs.Invalid, "does not authenticate")

			res, err := c.RewrapBatch(ctx, []Ciphertext{ct1, tampered, ct2}, nil)
			if err != nil || len(res) != 3 {
				t.Fatalf("RewrapBatch = %v, %v", res, err)
			}
			for _, i := range []int{0, 2} {
				if res[i].Err != nil || res[i].Ciphertext.VersionID != v2 {
					t.Errorf("RewrapBatch result %d = %+v, want a ciphertext of %s", i, res[i], v2)
					continue
				}
				want := map[int]string{0: data, 2: "after rotation"}[i]
				if got, err := c.Decrypt(ctx, res[i].Ciphertext, nil); err != nil || got != want {
					t.Errorf("Decrypt(rewrapped %d) = %q, %v", i, got, err)
				}
			}
			wantKind(t, "RewrapBatch result 1 (tampered)", res[1].Err, errs.Invalid, "does not authenticate")

			err = c.DisableVersion(ctx, id, v2)
			wantKind(t, "DisableVersion(active)", err, errs.FailedPrecondition)
			if err := c.DisableVersion(ctx, id, ct1.VersionID); err != nil {
				t.Fatalf("DisableVersion(old) = %v", err)
			}
			_, err = c.Decrypt(ctx, ct1, nil)
			wantKind(t, "Decrypt(disabled version)", err, errs.FailedPrecondition)
			for range 2 { // enabling an enabled version changes nothing
				if err := c.EnableVersion(ctx, id, ct1.VersionID); err != nil {
					t.Fatalf("EnableVersion(disabled) = %v", err)
				}
			}
			if got, err := c.Decrypt(ctx, ct1, nil); err != nil || got != data {
				t.Errorf("Decrypt after EnableVersion = %q, %v, want the data back", got, err)
			}
			wantKind(t, "EnableVersion(unknown version)", c.EnableVersion(ctx, id, uuid.NewString()), errs.NotFound)
			wantKind(t, "EnableVersion(no version)", c.EnableVersion(ctx, id, ""), errs.Invalid, "versionId")
			if err := c.DisableVersion(ctx, id, ct1.VersionID); err != nil {
				t.Fatalf("DisableVersion(old, again) = %v", err)
			}

			_, err = c.Decrypt(ctx, ct2, randomBytes(t, 32))
			wantKind(t, "Decrypt(PLATFORM with a master key)", err, errs.Invalid, "X-Master-Key")
			_, err = c.GetContext(ctx, uuid.NewString())
			wantKind(t, "GetContext(unknown)", err, errs.NotFound)
			_, err = c.Encrypt(ctx, "not-a-uuid", "x", nil)
			wantKind(t, "Encrypt(malformed id)", err, errs.Invalid, "encryptionId")

			// Crypto-shredding: once destroyed, nothing under the context decrypts, and the
			// context is unknown (NotFound, which callers take as done) to a second destroy.
			if err := c.DestroyContext(ctx, id); err != nil {
				t.Fatalf("DestroyContext = %v", err)
			}
			_, err = c.Decrypt(ctx, ct2, nil)
			wantKind(t, "Decrypt(destroyed context)", err, errs.NotFound)
			wantKind(t, "DestroyContext(again)", c.DestroyContext(ctx, id), errs.NotFound)
			wantKind(t, "DestroyContext(unknown)", c.DestroyContext(ctx, uuid.NewString()), errs.NotFound)
			wantKind(t, "DestroyContext(empty id)", c.DestroyContext(ctx, ""), errs.Invalid, "encryptionId")
		})
	}
	if logs := f.logs.String(); strings.Contains(logs, "private data") {
		t.Errorf("the log holds plaintext:\n%s", logs)
	}
}

// TestRealClientContext: a zero-knowledge (CLIENT) context needs its master key on every call
// that opens a key, and only the right one.
func TestRealClientContext(t *testing.T) {
	f := startRealES(t, RouterOptions{})
	for _, name := range transports {
		t.Run(name, func(t *testing.T) {
			c := f.clients[name]
			ctx := ctxTimeout(t, time.Minute)
			mk, wrong, next := randomBytes(t, 32), randomBytes(t, 32), randomBytes(t, 32)
			const data = "zero-knowledge data"
			secrets := append([][]byte{mk, wrong, next, []byte(data), []byte(base64.StdEncoding.EncodeToString(mk))}, f.secrets...)

			_, err := c.CreateContext(ctx, "CLIENT", nil)
			wantKind(t, "CreateContext(CLIENT, no key)", err, errs.Unauthenticated, "send X-Master-Key")
			id, err := c.CreateContext(ctx, "CLIENT", mk)
			if err != nil {
				t.Fatalf("CreateContext(CLIENT) = %v", err)
			}
			ct, err := c.Encrypt(ctx, id, data, mk)
			if err != nil {
				t.Fatalf("Encrypt = %v", err)
			}
			secrets = append(secrets, []byte(ct.CipherText))
			if got, err := c.Decrypt(ctx, ct, mk); err != nil || got != data {
				t.Fatalf("Decrypt = %q, %v", got, err)
			}
			_, err = c.Decrypt(ctx, ct, wrong)
			wantKind(t, "Decrypt(wrong key)", err, errs.PermissionDenied, "wrong master key")
			wantNoLeak(t, "Decrypt(wrong key)", err, secrets...)
			_, err = c.Decrypt(ctx, ct, nil)
			wantKind(t, "Decrypt(no key)", err, errs.Unauthenticated, "this tenant's keys need the client master key: send X-Master-Key")
			_, err = c.Encrypt(ctx, id, data, nil)
			wantKind(t, "Encrypt(no key)", err, errs.Unauthenticated, "send X-Master-Key")
			wantNoLeak(t, "Encrypt(no key)", err, secrets...)

			v2, err := c.Rotate(ctx, id) // no master key needed
			if err != nil {
				t.Fatalf("Rotate(CLIENT) = %v", err)
			}
			if got, err := c.Decrypt(ctx, ct, mk); err != nil || got != data {
				t.Errorf("Decrypt of the old version after Rotate = %q, %v", got, err)
			}
			res, err := c.RewrapBatch(ctx, []Ciphertext{ct}, nil)
			if err != nil || res[0].Err == nil {
				t.Errorf("RewrapBatch(no key) = %+v, %v, want the item refused", res, err)
			} else {
				wantKind(t, "RewrapBatch(no key) item", res[0].Err, errs.Unauthenticated, "send X-Master-Key")
			}
			res, err = c.RewrapBatch(ctx, []Ciphertext{ct}, mk)
			if err != nil || res[0].Err != nil || res[0].Ciphertext.VersionID != v2 {
				t.Fatalf("RewrapBatch = %+v, %v, want a ciphertext of %s", res, err, v2)
			}

			if err := c.ChangeMasterKey(ctx, id, wrong, next); !errs.Is(err, errs.PermissionDenied) {
				t.Errorf("ChangeMasterKey(wrong old key) = %v, want PermissionDenied", err)
			}
			if err := c.ChangeMasterKey(ctx, id, mk, next); err != nil {
				t.Fatalf("ChangeMasterKey = %v", err)
			}
			for _, it := range []Ciphertext{ct, res[0].Ciphertext} {
				if got, err := c.Decrypt(ctx, it, next); err != nil || got != data {
					t.Errorf("Decrypt with the new key = %q, %v", got, err)
				}
				_, err := c.Decrypt(ctx, it, mk)
				wantKind(t, "Decrypt with the old key after the change", err, errs.PermissionDenied)
			}
		})
	}
	if logs := f.logs.String(); strings.Contains(logs, "zero-knowledge data") {
		t.Errorf("the log holds plaintext:\n%s", logs)
	}
}

// TestRealWrongCredential: a tenant secret the service does not know is an operator's problem,
// reported as Internal without the secret.
func TestRealWrongCredential(t *testing.T) {
	certs := testcerts.New(t)
	es := estest.Start(t, testdb.NewEmpty(t), certs)
	remoteID, _ := es.CreateTenant(t, "wrong-credential")
	box := mustBox(t)
	const forged = "cts_this-is-not-the-tenant-secret"
	list := []postgres.Tenant{
		hostedTenant(t, box, "grpc", es.GRPCAddr, certs, remoteID, forged),
		hostedTenant(t, box, "https", "https://"+es.HTTPAddr, certs, remoteID, forged),
	}
	r := NewRouter(nil, tenants(list...), box, RouterOptions{})
	defer r.Close()
	for _, tenant := range list {
		t.Run(tenant.ES.Protocol, func(t *testing.T) {
			_, err := mustFor(t, r, tenant.ID).CreateContext(context.Background(), "PLATFORM", nil)
			wantKind(t, "CreateContext", err, errs.Internal, "rejected core's credential for this tenant")
			wantNoLeak(t, "CreateContext", err, []byte(forged))
		})
	}
}

// TestRealOutage: with the service killed, calls fail at once with Unavailable (a refused
// connection, not a timeout); after BreakerFailures of them the breaker opens and calls fail
// without trying; after a restart and the cooldown, calls succeed again.
func TestRealOutage(t *testing.T) {
	const cooldown = 2 * time.Second
	f := startRealES(t, RouterOptions{Timeout: 20 * time.Second, Retries: 1, BreakerFailures: 3, BreakerCooldown: cooldown})
	ctx := ctxTimeout(t, 2*time.Minute)
	cts := map[string]Ciphertext{}
	for _, name := range transports {
		c := f.clients[name]
		id, err := c.CreateContext(ctx, "PLATFORM", nil)
		if err != nil {
			t.Fatalf("%s: CreateContext = %v", name, err)
		}
		if cts[name], err = c.Encrypt(ctx, id, "before the outage", nil); err != nil {
			t.Fatalf("%s: Encrypt = %v", name, err)
		}
	}

	f.es.Kill()
	for _, name := range transports {
		c := f.clients[name]
		_, err := c.Decrypt(ctx, cts[name], nil)
		wantKind(t, name+": Decrypt with the service down", err, errs.Unavailable, "the encryption service is unavailable; try again")
		var re *remoteError
		if errors.Is(err, ErrBreakerOpen) || !errors.As(err, &re) || re.code != codes.Unavailable {
			t.Errorf("%s: Decrypt with the service down = %v, want a refused connection (Unavailable), not a timeout", name, err)
		}
		// Two attempts per idempotent call: the breaker (3 failures) opens during the second call.
		_, err = c.Decrypt(ctx, cts[name], nil)
		wantKind(t, name+": second Decrypt", err, errs.Unavailable)
		_, err = c.Decrypt(ctx, cts[name], nil)
		wantKind(t, name+": Decrypt with the breaker open", err, errs.Unavailable, "the encryption service is unavailable")
		if !errors.Is(err, ErrBreakerOpen) {
			t.Errorf("%s: Decrypt after 4 failed attempts = %v, want the breaker open (ErrBreakerOpen)", name, err)
		}
		_, err = c.Rotate(ctx, cts[name].EncryptionID)
		if !errors.Is(err, ErrBreakerOpen) {
			t.Errorf("%s: Rotate with the breaker open = %v, want ErrBreakerOpen", name, err)
		}
	}

	f.es.Restart(t)
	time.Sleep(cooldown)
	for _, name := range transports {
		if got, err := f.clients[name].Decrypt(ctx, cts[name], nil); err != nil || got != "before the outage" {
			t.Errorf("%s: Decrypt after the restart and the cooldown = %q, %v", name, got, err)
		}
	}
	for _, want := range []string{"circuit breaker open", "circuit breaker half-open", "circuit breaker closed"} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
}

// TestRealRetryAcrossRestart: an idempotent call made while the service is down succeeds when it
// comes back within the retries.
func TestRealRetryAcrossRestart(t *testing.T) {
	f := startRealES(t, RouterOptions{Retries: 60, BreakerFailures: 1000})
	ctx := ctxTimeout(t, 2*time.Minute)
	cts := map[string]Ciphertext{}
	for _, name := range transports {
		c := f.clients[name]
		id, err := c.CreateContext(ctx, "PLATFORM", nil)
		if err != nil {
			t.Fatalf("%s: CreateContext = %v", name, err)
		}
		if cts[name], err = c.Encrypt(ctx, id, "across the restart", nil); err != nil {
			t.Fatalf("%s: Encrypt = %v", name, err)
		}
	}
	f.es.Kill()
	type result struct {
		name, data string
		err        error
	}
	results := make(chan result, len(transports))
	started := make(chan struct{}, len(transports))
	for _, name := range transports {
		go func() {
			started <- struct{}{}
			data, err := f.clients[name].Decrypt(ctx, cts[name], nil)
			results <- result{name, data, err}
		}()
	}
	for range transports {
		<-started
	}
	f.es.Restart(t)
	for range transports {
		r := <-results
		if r.err != nil || r.data != "across the restart" {
			t.Errorf("%s: Decrypt across the restart = %q, %v", r.name, r.data, r.err)
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "attempt failed; retrying") {
		t.Errorf("no retry was logged:\n%s", logs)
	}
	for _, s := range f.secrets {
		if strings.Contains(logs, string(s)) {
			t.Errorf("the log holds a tenant secret")
		}
	}
}
