package grpcapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/tenants"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

func TestUnimplementedNamesTheMethod(t *testing.T) {
	// What a method that a service leaves unimplemented answers.
	_, generated := encryptionv1.UnimplementedEncryptionServiceServer{}.Rewrap(context.Background(), &encryptionv1.RewrapRequest{})
	err := unimplementedError("the encryption service", "/custos.encryption.v1.EncryptionService/Rewrap", generated)
	want := "custos.encryption.v1.EncryptionService/Rewrap is not implemented by this release of the encryption service"
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != want {
		t.Errorf("Rewrap() = %v, want Unimplemented %q", err, want)
	}
	// Other errors, including Unimplemented errors of the service's own making, pass unchanged.
	own := status.Error(codes.Unimplemented, "algorithm FOO is not supported")
	if got := unimplementedError("x", "/x.Y/Z", own); !errors.Is(got, own) {
		t.Errorf("unimplementedError changed %v into %v", own, got)
	}
	if got := unimplementedError("x", "/x.Y/Z", nil); got != nil {
		t.Errorf("unimplementedError(nil) = %v", got)
	}
}

type stubStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stubStream) Context() context.Context { return s.ctx }

// TestInterceptorsAuthenticateThenMapErrors checks the one interceptor's order: no handler runs
// for an unauthenticated data-plane call, and every error leaves as a gRPC status.
func TestInterceptorsAuthenticateThenMapErrors(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	unary, stream := Interceptors(log, &Auth{}, "the encryption service")
	called := false
	handler := func(ctx context.Context, req any) (any, error) {
		called = true
		return nil, errs.E(errs.NotFound, "key context %s not found", "x")
	}

	_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: dataPlanePrefix + "Encrypt"}, handler)
	if status.Code(err) != codes.Unauthenticated || called {
		t.Errorf("data plane without a tenant credential = %v (handler called: %v), want Unauthenticated before the handler", err, called)
	}
	err = stream(nil, stubStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: adminPlanePrefix + "ListTenants"},
		func(any, grpc.ServerStream) error { called = true; return nil })
	if status.Code(err) != codes.Unauthenticated || called {
		t.Errorf("admin plane stream without a certificate = %v (handler called: %v), want Unauthenticated before the handler", err, called)
	}

	// Outside both planes (gRPC health) calls pass to the handler, whose errors are mapped.
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, handler)
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "key context x not found" || !called {
		t.Errorf("handler's NotFound = %v, want NotFound with its message", err)
	}
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"},
		func(context.Context, any) (any, error) { return nil, errors.New("disk on fire at /secret/path") })
	if status.Code(err) != codes.Internal || status.Convert(err).Message() == "disk on fire at /secret/path" {
		t.Errorf("unclassified error = %v, want a generic Internal", err)
	}
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/List"},
		func(ctx context.Context, _ any) (any, error) {
			return encryptionv1.UnimplementedEncryptionServiceServer{}.Rewrap(ctx, nil)
		})
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != "grpc.health.v1.Health/List is not implemented by this release of the encryption service" {
		t.Errorf("generated Unimplemented = %v, want the method named", err)
	}
	resp, err := unary(context.Background(), "req", &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"},
		func(_ context.Context, req any) (any, error) { return req, nil })
	if err != nil || resp != "req" {
		t.Errorf("success = %v, %v; want the handler's answer", resp, err)
	}
}

// fakeTenants accepts one tenant id and secret.
type fakeTenants struct {
	id     uuid.UUID
	secret string
}

func (f fakeTenants) Authenticate(_ context.Context, id uuid.UUID, secret string) (uuid.UUID, error) {
	if id != f.id || secret != f.secret {
		return uuid.Nil, tenants.ErrBadCredential
	}
	return uuid.New(), nil
}

// TestInterceptorsClearTheClientMasterKeys checks that the decoded client master keys a handler
// saw are zero once the call has returned, whatever the handler answered.
func TestInterceptorsClearTheClientMasterKeys(t *testing.T) {
	f := fakeTenants{id: uuid.New(), secret: "cts_x"}
	unary, _ := Interceptors(slog.New(slog.DiscardHandler), &Auth{Tenants: f}, "the encryption service")
	oldKey, newKey := bytes.Repeat([]byte{0xA}, 32), bytes.Repeat([]byte{0xB}, 32)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		"x-tenant-id", f.id.String(), "x-tenant-secret", f.secret,
		"x-master-key", base64.StdEncoding.EncodeToString(oldKey), "x-new-master-key", base64.StdEncoding.EncodeToString(newKey)))
	for _, fail := range []bool{false, true} {
		var seen keyring.Caller
		_, err := unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: changeMasterKeyMethod}, func(ctx context.Context, _ any) (any, error) {
			c, err := callerFrom(ctx)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(c.MasterKey, oldKey) || !bytes.Equal(c.NewMasterKey, newKey) {
				t.Errorf("handler saw keys %x, %x; want the headers' keys", c.MasterKey, c.NewMasterKey)
			}
			seen = c
			if fail {
				return nil, errs.E(errs.PermissionDenied, "wrong client master key")
			}
			return "ok", nil
		})
		if (err != nil) != fail {
			t.Fatalf("call (handler fails: %v) = %v", fail, err)
		}
		zero := make([]byte, 32)
		if !bytes.Equal(seen.MasterKey, zero) || !bytes.Equal(seen.NewMasterKey, zero) {
			t.Errorf("after the call (handler fails: %v), the keys are %x, %x; want them cleared", fail, seen.MasterKey, seen.NewMasterKey)
		}
	}
}

// TestTenantCredentialAnswers checks that a missing credential is told as missing, and every other
// wrong one gets one and the same answer.
func TestTenantCredentialAnswers(t *testing.T) {
	f := fakeTenants{id: uuid.New(), secret: "cts_right"}
	unary, _ := Interceptors(slog.New(slog.DiscardHandler), &Auth{Tenants: f}, "the encryption service")
	call := func(pairs ...string) error {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(pairs...))
		_, err := unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: dataPlanePrefix + "Encrypt"},
			func(context.Context, any) (any, error) { return "ok", nil })
		return err
	}
	if err := call("x-tenant-id", f.id.String()); status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "missing") {
		t.Errorf("no secret = %v, want Unauthenticated saying it is missing", err)
	}
	var messages []string
	for _, pairs := range [][]string{
		{"x-tenant-id", "not-a-uuid", "x-tenant-secret", f.secret},
		{"x-tenant-id", uuid.NewString(), "x-tenant-secret", f.secret},
		{"x-tenant-id", f.id.String(), "x-tenant-secret", "cts_wrong"},
	} {
		err := call(pairs...)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%v = %v, want Unauthenticated", pairs, err)
		}
		messages = append(messages, status.Convert(err).Message())
	}
	for _, m := range messages[1:] {
		if m != messages[0] {
			t.Errorf("wrong credentials answered differently: %q", messages)
			break
		}
	}
	if err := call("x-tenant-id", f.id.String(), "x-tenant-secret", f.secret); err != nil {
		t.Errorf("right credential = %v", err)
	}
}
