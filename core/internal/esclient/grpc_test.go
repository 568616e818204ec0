package esclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/testcerts"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// scriptedES is an in-process gRPC encryption service whose answers a test scripts: it counts
// calls per method and records their metadata, so that retries and credentials can be checked
// exactly, which the real service cannot be made to do on demand. The real service is exercised
// in es_test.go.
type scriptedES struct {
	encryptionv1.UnimplementedEncryptionServiceServer
	// fail returns the error of the nth call (from 1) of method, or nil to answer normally.
	fail func(method string, n int) error
	// delay returns how long the nth call of method waits before answering.
	delay func(method string, n int) time.Duration
	// rewrap answers RewrapBatch; nil leaves it unimplemented.
	rewrap func(*encryptionv1.RewrapBatchRequest) *encryptionv1.RewrapBatchResponse

	mu    sync.Mutex
	calls map[string]int
	md    map[string]metadata.MD // of the last call of each method
}

func (s *scriptedES) handle(ctx context.Context, method string) error {
	s.mu.Lock()
	if s.calls == nil {
		s.calls, s.md = map[string]int{}, map[string]metadata.MD{}
	}
	s.calls[method]++
	n := s.calls[method]
	s.md[method], _ = metadata.FromIncomingContext(ctx)
	s.mu.Unlock()
	if s.delay != nil {
		if d := s.delay(method, n); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if s.fail != nil {
		return s.fail(method, n)
	}
	return nil
}

func (s *scriptedES) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

func (s *scriptedES) metadata(method string) metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.md[method]
}

func testMetadata() *encryptionv1.CipherMetadata {
	return &encryptionv1.CipherMetadata{FormatVersion: 1, Nonce: []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}
}

func (s *scriptedES) CreateEncryption(ctx context.Context, req *encryptionv1.CreateEncryptionRequest) (*encryptionv1.CreateEncryptionResponse, error) {
	if err := s.handle(ctx, "CreateEncryption"); err != nil {
		return nil, err
	}
	return &encryptionv1.CreateEncryptionResponse{EncryptionId: "e1", EncryptionVersionId: "v1", KeyMode: req.GetKeyMode()}, nil
}

func (s *scriptedES) Encrypt(ctx context.Context, req *encryptionv1.EncryptRequest) (*encryptionv1.EncryptResponse, error) {
	if err := s.handle(ctx, "Encrypt"); err != nil {
		return nil, err
	}
	return &encryptionv1.EncryptResponse{CipherText: []byte("ct"), EncryptionId: req.GetEncryptionId(), EncryptionVersionId: "v1",
		Algorithm: "AES-256-GCM", Metadata: testMetadata()}, nil
}

func (s *scriptedES) Decrypt(ctx context.Context, req *encryptionv1.DecryptRequest) (*encryptionv1.DecryptResponse, error) {
	if err := s.handle(ctx, "Decrypt"); err != nil {
		return nil, err
	}
	if !proto.Equal(req.GetMetadata(), testMetadata()) {
		return nil, status.Error(codes.InvalidArgument, "metadata changed on the way")
	}
	return &encryptionv1.DecryptResponse{Data: "plain"}, nil
}

func (s *scriptedES) Rotate(ctx context.Context, _ *encryptionv1.RotateRequest) (*encryptionv1.RotateResponse, error) {
	if err := s.handle(ctx, "Rotate"); err != nil {
		return nil, err
	}
	return &encryptionv1.RotateResponse{NewVersionId: "v2"}, nil
}

func (s *scriptedES) GetEncryption(ctx context.Context, req *encryptionv1.GetEncryptionRequest) (*encryptionv1.GetEncryptionResponse, error) {
	if err := s.handle(ctx, "GetEncryption"); err != nil {
		return nil, err
	}
	return &encryptionv1.GetEncryptionResponse{Encryption: &encryptionv1.Encryption{EncryptionId: req.GetEncryptionId(),
		KeyMode: "PLATFORM", ActiveVersionId: "v1", Versions: []*encryptionv1.KeyVersion{{VersionId: "v1", Version: 1, State: "ACTIVE"}}}}, nil
}

func (s *scriptedES) RewrapBatch(ctx context.Context, req *encryptionv1.RewrapBatchRequest) (*encryptionv1.RewrapBatchResponse, error) {
	if err := s.handle(ctx, "RewrapBatch"); err != nil {
		return nil, err
	}
	if s.rewrap == nil {
		return s.UnimplementedEncryptionServiceServer.RewrapBatch(ctx, req)
	}
	return s.rewrap(req), nil
}

func (s *scriptedES) DisableVersion(ctx context.Context, _ *encryptionv1.DisableVersionRequest) (*encryptionv1.DisableVersionResponse, error) {
	if err := s.handle(ctx, "DisableVersion"); err != nil {
		return nil, err
	}
	return &encryptionv1.DisableVersionResponse{Version: &encryptionv1.KeyVersion{State: "DISABLED"}}, nil
}

func (s *scriptedES) ChangeMasterKey(ctx context.Context, req *encryptionv1.ChangeMasterKeyRequest) (*encryptionv1.ChangeMasterKeyResponse, error) {
	if err := s.handle(ctx, "ChangeMasterKey"); err != nil {
		return nil, err
	}
	return &encryptionv1.ChangeMasterKeyResponse{EncryptionId: req.GetEncryptionId(), VersionsRewrapped: 1}, nil
}

const scriptedSecret = "cts_scripted-secret-value"

// startScripted serves es over mutual TLS on loopback and returns a Client of a hosted tenant on
// it, built by a Router with opts.
func startScripted(t *testing.T, es *scriptedES, opts RouterOptions) Client {
	t.Helper()
	certs := testcerts.New(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(certs.ServerConfig())))
	encryptionv1.RegisterEncryptionServiceServer(srv, es)
	go func() { _ = srv.Serve(lis) }() // returns when the cleanup stops the server
	t.Cleanup(srv.Stop)

	box := mustBox(t)
	tenant := hostedTenant(t, box, "grpc", lis.Addr().String(), certs, "7b0c5a52-8f0e-4a43-9a37-3f4c8c1f7a10", scriptedSecret)
	r := NewRouter(nil, tenants(tenant), box, opts)
	t.Cleanup(func() { r.Close() })
	return mustFor(t, r, tenant.ID)
}

func unavailable(string, int) error { return status.Error(codes.Unavailable, "connection refused") }

func TestGRPCCredentialMetadata(t *testing.T) {
	es := &scriptedES{}
	c := startScripted(t, es, RouterOptions{})
	mk, nk := randomBytes(t, 32), randomBytes(t, 32)
	// A caller's context carrying metadata of the same names must not replace the credential.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-tenant-secret", "forged", "x-request-id", "req-1")

	if _, err := c.Encrypt(ctx, "e1", "data", mk); err != nil {
		t.Fatalf("Encrypt = %v", err)
	}
	if _, err := c.Rotate(ctx, "e1"); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	if err := c.ChangeMasterKey(ctx, "e1", mk, nk); err != nil {
		t.Fatalf("ChangeMasterKey = %v", err)
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		method            string
		masterKey, newKey []string
	}{
		{"Encrypt", []string{b64(mk)}, nil},
		{"Rotate", nil, nil},
		{"ChangeMasterKey", []string{b64(mk)}, []string{b64(nk)}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			md := es.metadata(tc.method)
			if got := md.Get("x-tenant-id"); len(got) != 1 || got[0] != "7b0c5a52-8f0e-4a43-9a37-3f4c8c1f7a10" {
				t.Errorf("x-tenant-id = %q", got)
			}
			if got := md.Get("x-tenant-secret"); len(got) != 1 || got[0] != scriptedSecret {
				t.Errorf("x-tenant-secret = %q, want the tenant's one secret", got)
			}
			if got := md.Get("x-master-key"); !equalStrings(got, tc.masterKey) {
				t.Errorf("x-master-key = %q, want %q", got, tc.masterKey)
			}
			if got := md.Get("x-new-master-key"); !equalStrings(got, tc.newKey) {
				t.Errorf("x-new-master-key = %q, want %q", got, tc.newKey)
			}
			if got := md.Get("x-request-id"); len(got) != 1 || got[0] != "req-1" {
				t.Errorf("x-request-id = %q, want the caller's metadata kept", got)
			}
		})
	}
}

func TestGRPCSendsTheRequestID(t *testing.T) {
	es := &scriptedES{}
	c := startScripted(t, es, RouterOptions{RequestID: func(context.Context) string { return "core-req-7" }})
	if _, err := c.Rotate(context.Background(), "e1"); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	if got := es.metadata("Rotate").Get("x-request-id"); len(got) != 1 || got[0] != "core-req-7" {
		t.Errorf("x-request-id = %q, want the id of the request the call serves", got)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// calls runs each method of Client once against c, returning its error, by the service's method
// names.
func calls() map[string]func(c Client) error {
	return map[string]func(c Client) error{
		"CreateEncryption": func(c Client) error { _, err := c.CreateContext(context.Background(), "PLATFORM", nil); return err },
		"Encrypt":          func(c Client) error { _, err := c.Encrypt(context.Background(), "e1", "data", nil); return err },
		"Decrypt": func(c Client) error {
			_, err := c.Decrypt(context.Background(), Ciphertext{CipherText: "Y3Q=", EncryptionID: "e1", VersionID: "v1",
				Metadata: json.RawMessage(`{"formatVersion":1,"nonce":"AAECAwQFBgcICQoL"}`)}, nil)
			return err
		},
		"Rotate":        func(c Client) error { _, err := c.Rotate(context.Background(), "e1"); return err },
		"GetEncryption": func(c Client) error { _, err := c.GetContext(context.Background(), "e1"); return err },
		"RewrapBatch": func(c Client) error {
			_, err := c.RewrapBatch(context.Background(), []Ciphertext{{CipherText: "Y3Q=", EncryptionID: "e1", VersionID: "v1"}}, nil)
			return err
		},
		"DisableVersion": func(c Client) error { return c.DisableVersion(context.Background(), "e1", "v1") },
		"ChangeMasterKey": func(c Client) error {
			return c.ChangeMasterKey(context.Background(), "e1", make([]byte, 32), randomKey())
		},
	}
}

func randomKey() []byte {
	k := make([]byte, 32)
	k[0] = 1
	return k
}

// TestGRPCRetries: idempotent calls are retried on Unavailable and succeed when the service
// comes back; the others are made exactly once.
func TestGRPCRetries(t *testing.T) {
	for _, tc := range []struct {
		method     string
		idempotent bool
	}{
		{"Encrypt", true},
		{"Decrypt", true},
		{"GetEncryption", true},
		{"RewrapBatch", true},
		{"CreateEncryption", false},
		{"Rotate", false},
		{"DisableVersion", false},
		{"ChangeMasterKey", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			es := &scriptedES{
				fail: func(method string, n int) error {
					if n <= 2 {
						return status.Error(codes.Unavailable, "connection refused")
					}
					return nil
				},
				rewrap: func(req *encryptionv1.RewrapBatchRequest) *encryptionv1.RewrapBatchResponse {
					return &encryptionv1.RewrapBatchResponse{Results: []*encryptionv1.EncryptBatchResult{{Error: &encryptionv1.ItemError{
						Code: int32(codes.FailedPrecondition), Message: "version disabled"}}}}
				},
			}
			c := startScripted(t, es, RouterOptions{Retries: 2, BreakerFailures: 100})
			err := calls()[tc.method](c)
			if tc.idempotent {
				if err != nil {
					t.Errorf("%s after two Unavailable answers = %v, want success on the third attempt", tc.method, err)
				}
				if got := es.count(tc.method); got != 3 {
					t.Errorf("%s attempts = %d, want 3", tc.method, got)
				}
				return
			}
			wantKind(t, tc.method, err, errs.Unavailable, "the encryption service is unavailable")
			if got := es.count(tc.method); got != 1 {
				t.Errorf("%s attempts = %d, want 1: it must never be retried", tc.method, got)
			}
		})
	}
}

func TestGRPCRetriesSpent(t *testing.T) {
	es := &scriptedES{fail: unavailable}
	c := startScripted(t, es, RouterOptions{Retries: 3, BreakerFailures: 100})
	wantKind(t, "Decrypt", calls()["Decrypt"](c), errs.Unavailable, "the encryption service is unavailable; try again")
	if got := es.count("Decrypt"); got != 4 {
		t.Errorf("attempts = %d, want 1 + 3 retries", got)
	}
}

// TestGRPCRetriesTimeout: an attempt that outlives the per-attempt timeout is retried; the caller's
// own deadline is not extended.
func TestGRPCRetriesTimeout(t *testing.T) {
	es := &scriptedES{delay: func(_ string, n int) time.Duration {
		if n == 1 {
			return 10 * time.Second
		}
		return 0
	}}
	c := startScripted(t, es, RouterOptions{Timeout: 300 * time.Millisecond, BreakerFailures: 100})
	if err := calls()["GetEncryption"](c); err != nil {
		t.Fatalf("GetContext after one slow attempt = %v, want success on the retry", err)
	}
	if got := es.count("GetEncryption"); got != 2 {
		t.Errorf("attempts = %d, want 2", got)
	}
	// Rotate's first attempt is as slow: not retried, the call fails.
	wantKind(t, "Rotate", calls()["Rotate"](c), errs.Unavailable)
	if got := es.count("Rotate"); got != 1 {
		t.Errorf("Rotate attempts = %d, want 1", got)
	}
}

// TestGRPCNoRetryOfAnswers: an answer of the service itself is never retried.
func TestGRPCNoRetryOfAnswers(t *testing.T) {
	es := &scriptedES{fail: func(string, int) error { return status.Error(codes.InvalidArgument, "cipherText: not base64") }}
	c := startScripted(t, es, RouterOptions{})
	wantKind(t, "Decrypt", calls()["Decrypt"](c), errs.Invalid, "cipherText: not base64")
	if got := es.count("Decrypt"); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
}

func TestGRPCBreaker(t *testing.T) {
	es := &scriptedES{fail: unavailable}
	c := startScripted(t, es, RouterOptions{Retries: -1, BreakerFailures: 3, BreakerCooldown: time.Hour})
	for i := range 3 {
		err := calls()["Encrypt"](c)
		wantKind(t, "Encrypt", err, errs.Unavailable)
		if errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Encrypt #%d = %v: breaker open before %d failures", i+1, err, 3)
		}
	}
	err := calls()["Encrypt"](c)
	wantKind(t, "Encrypt with the breaker open", err, errs.Unavailable, "the encryption service is unavailable")
	if !errors.Is(err, ErrBreakerOpen) {
		t.Errorf("Encrypt with the breaker open = %v, want ErrBreakerOpen as the cause", err)
	}
	if got := es.count("Encrypt"); got != 3 {
		t.Errorf("attempts = %d, want 3: an open breaker makes no call", got)
	}
}

func TestGRPCErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		err    error
		kind   errs.Kind
		msg    string
	}{
		{"wrong master key", "Decrypt", status.Error(codes.PermissionDenied, "wrong client master key for key context e1"),
			errs.PermissionDenied, "wrong master key"},
		{"master key missing", "Decrypt", status.Error(codes.Unauthenticated,
			"key context e1 is zero-knowledge (CLIENT): send its client master key in X-Master-Key"),
			errs.Unauthenticated, "this tenant's keys need the client master key: send X-Master-Key"},
		{"credential rejected", "Encrypt", status.Error(codes.Unauthenticated,
			"tenant credential rejected: check X-Tenant-Id and X-Tenant-Secret"),
			errs.Internal, "rejected core's credential for this tenant"},
		{"not found", "GetEncryption", status.Error(codes.NotFound, "key context e1 not found"), errs.NotFound, "key context e1 not found"},
		{"disabled version", "Decrypt", status.Error(codes.FailedPrecondition, "key version v1 is disabled"),
			errs.FailedPrecondition, "key version v1 is disabled"},
		{"too large", "Encrypt", status.Error(codes.ResourceExhausted, "data over 1048576 bytes"), errs.ResourceExhausted, "data over"},
		{"internal", "Encrypt", status.Error(codes.Internal, "internal error; quote request id r1 to the operator"),
			errs.Internal, "the encryption service failed"},
		{"no rewrap", "RewrapBatch", status.Error(codes.Unimplemented, "RewrapBatch is not implemented yet"),
			errs.FailedPrecondition, "the encryption service cannot rewrap"},
		{"no create", "CreateEncryption", status.Error(codes.Unimplemented, "CreateEncryption is not implemented"),
			errs.FailedPrecondition, "must support key contexts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := &scriptedES{fail: func(string, int) error { return tc.err }}
			c := startScripted(t, es, RouterOptions{})
			wantKind(t, tc.method, calls()[tc.method](c), tc.kind, tc.msg)
		})
	}
}

func TestGRPCRewrapBatchResults(t *testing.T) {
	es := &scriptedES{rewrap: func(req *encryptionv1.RewrapBatchRequest) *encryptionv1.RewrapBatchResponse {
		var res []*encryptionv1.EncryptBatchResult
		for _, it := range req.GetItems() {
			if it.GetEncryptionVersionId() == "disabled" {
				res = append(res, &encryptionv1.EncryptBatchResult{Error: &encryptionv1.ItemError{
					Code: int32(codes.FailedPrecondition), Message: "key version disabled is disabled"}})
				continue
			}
			ct, id, ver, alg := []byte("new"), it.GetEncryptionId(), "v2", "AES-256-GCM"
			res = append(res, &encryptionv1.EncryptBatchResult{CipherText: ct, EncryptionId: &id, EncryptionVersionId: &ver,
				Algorithm: &alg, Metadata: testMetadata()})
		}
		return &encryptionv1.RewrapBatchResponse{Results: res}
	}}
	c := startScripted(t, es, RouterOptions{})
	items := []Ciphertext{
		{CipherText: "b2xk", EncryptionID: "e1", VersionID: "v1", Metadata: json.RawMessage(`{"nonce":"AAAA"}`)},
		{CipherText: "b2xk", EncryptionID: "e1", VersionID: "disabled"},
		{CipherText: "b2xk", EncryptionID: "e1", VersionID: "v1", Metadata: json.RawMessage(`[1]`)}, // refused before sending
		{CipherText: "b2xk", EncryptionID: "e2", VersionID: "v1"},
	}
	res, err := c.RewrapBatch(context.Background(), items, nil)
	if err != nil {
		t.Fatalf("RewrapBatch = %v", err)
	}
	if len(res) != len(items) {
		t.Fatalf("RewrapBatch gave %d results for %d items", len(res), len(items))
	}
	for _, i := range []int{0, 3} {
		if res[i].Err != nil || res[i].Ciphertext.VersionID != "v2" || res[i].Ciphertext.EncryptionID != items[i].EncryptionID {
			t.Errorf("result %d = %+v, want a ciphertext of version v2 of its own context", i, res[i])
		}
		if string(res[i].Ciphertext.Metadata) != `{"formatVersion":1,"nonce":"AAECAwQFBgcICQoL"}` {
			t.Errorf("result %d metadata = %s", i, res[i].Ciphertext.Metadata)
		}
	}
	wantKind(t, "result 1", res[1].Err, errs.FailedPrecondition, "disabled")
	wantKind(t, "result 2", res[2].Err, errs.Invalid, "metadata")
	if got := es.count("RewrapBatch"); got != 1 {
		t.Errorf("RewrapBatch calls = %d, want 1", got)
	}
}

func TestGRPCInputChecks(t *testing.T) {
	es := &scriptedES{}
	c := startScripted(t, es, RouterOptions{})
	ctx := context.Background()
	_, err := c.Encrypt(ctx, "e1", "data", make([]byte, 31))
	wantKind(t, "Encrypt(31-byte key)", err, errs.Invalid, "X-Master-Key")
	_, err = c.Encrypt(ctx, "e1", "\xff\xfe", nil)
	wantKind(t, "Encrypt(not UTF-8)", err, errs.Invalid, "UTF-8")
	_, err = c.Encrypt(ctx, "", "data", nil)
	wantKind(t, "Encrypt(no context)", err, errs.Invalid, "encryptionId")
	_, err = c.Decrypt(ctx, Ciphertext{CipherText: "x", EncryptionID: "e1"}, nil)
	wantKind(t, "Decrypt(no version)", err, errs.Invalid, "encryptionVersionId")
	_, err = c.Decrypt(ctx, Ciphertext{CipherText: "not base64!", EncryptionID: "e1", VersionID: "v1"}, nil)
	wantKind(t, "Decrypt(cipherText not base64)", err, errs.Invalid, "cipherText")
	err = c.ChangeMasterKey(ctx, "e1", nil, randomKey())
	wantKind(t, "ChangeMasterKey(no old key)", err, errs.Invalid, "X-Master-Key")
	res, err := c.RewrapBatch(ctx, nil, nil)
	if err != nil || len(res) != 0 {
		t.Errorf("RewrapBatch(no items) = %v, %v, want no results", res, err)
	}
	for _, m := range []string{"Encrypt", "Decrypt", "ChangeMasterKey", "RewrapBatch"} {
		if n := es.count(m); n != 0 {
			t.Errorf("%s reached the service %d times with bad input", m, n)
		}
	}
}
