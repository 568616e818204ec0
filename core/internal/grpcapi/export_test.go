package grpcapi

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/errs"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// fakeImportStream is the server side of an Import stream: Recv returns what recv does.
type fakeImportStream struct {
	grpc.ServerStream
	ctx  context.Context
	recv func() (*corev1.ImportRequest, error)
}

func (f *fakeImportStream) Context() context.Context                  { return f.ctx }
func (f *fakeImportStream) Recv() (*corev1.ImportRequest, error)      { return f.recv() }
func (f *fakeImportStream) SendAndClose(*corev1.ImportResponse) error { return nil }

// records returns a recv that sends n records, then ends the stream.
func records(n int, cipherText string) func() (*corev1.ImportRequest, error) {
	sent := 0
	return func() (*corev1.ImportRequest, error) {
		if sent == n {
			return nil, io.EOF
		}
		sent++
		return &corev1.ImportRequest{Record: &corev1.ExportRecord{
			Id: uuid.NewString(), CipherText: cipherText, Metadata: &structpb.Struct{},
			CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now(),
		}}, nil
	}
}

// TestImportReceiveIsBounded checks that an import's records are received in full before
// anything is stored, within the limits: a client that stops sending, or sends too much, ends
// the call without ever reaching the store (whose transaction it would hold open).
func TestImportReceiveIsBounded(t *testing.T) {
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	tests := []struct {
		name     string
		limits   ImportLimits
		recv     func() (*corev1.ImportRequest, error)
		wantN    int
		wantCode codes.Code
		wantMsg  string
	}{
		{"whole stream", ImportLimits{}, records(3, "c"), 3, codes.OK, ""},
		{"empty stream", ImportLimits{}, records(0, ""), 0, codes.OK, ""},
		{"client stops sending", ImportLimits{Idle: 50 * time.Millisecond}, func() (*corev1.ImportRequest, error) {
			<-stalled
			return nil, io.EOF
		}, 0, codes.DeadlineExceeded, "record 1: none came within 50ms"},
		{"client sends too slowly overall", ImportLimits{Receive: 50 * time.Millisecond}, func() (*corev1.ImportRequest, error) {
			time.Sleep(10 * time.Millisecond)
			return records(1, "c")()
		}, 0, codes.DeadlineExceeded, "must be sent within 50ms"},
		{"too many bytes", ImportLimits{MaxBytes: 10_000}, records(100, strings.Repeat("c", 1000)), 0, codes.ResourceExhausted, "at most 10000 bytes"},
		{"tiny records count as 256 bytes", ImportLimits{MaxBytes: 2560}, records(11, ""), 0, codes.ResourceExhausted, "record 11:"},
		{"no record", ImportLimits{}, func() (*corev1.ImportRequest, error) { return &corev1.ImportRequest{}, nil }, 0, codes.InvalidArgument, "record 1: record: required"},
		{"broken stream", ImportLimits{}, func() (*corev1.ImportRequest, error) {
			return nil, status.Error(codes.Canceled, "context canceled")
		}, 0, codes.Unavailable, "receive record 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewExportServer(nil, tt.limits)
			got, err := s.receive(&fakeImportStream{ctx: context.Background(), recv: tt.recv})
			code := status.Code(err)
			if e := (*errs.Error)(nil); errors.As(err, &e) {
				code = codeOf[e.Kind]
			}
			if code != tt.wantCode || len(got) != tt.wantN || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("receive() = %d records, %v; want %d, %v %q", len(got), err, tt.wantN, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

// TestImportSlots checks that a tenant, and the replica, run a bounded number of imports at once.
func TestImportSlots(t *testing.T) {
	s := NewExportServer(nil, ImportLimits{PerTenant: 2, PerReplica: 3})
	a, b := uuid.New(), uuid.New()
	mustAcquire := func(tenant uuid.UUID) func() {
		t.Helper()
		release, err := s.slots.acquire(tenant)
		if err != nil {
			t.Fatalf("acquire(%s) = %v, want a slot", tenant, err)
		}
		return release
	}
	refused := func(tenant uuid.UUID, want string) {
		t.Helper()
		if _, err := s.slots.acquire(tenant); !errs.Is(err, errs.ResourceExhausted) || !strings.Contains(err.Error(), want) {
			t.Errorf("acquire(%s) = %v, want ResourceExhausted %q", tenant, err, want)
		}
	}
	releaseA1 := mustAcquire(a)
	mustAcquire(a)
	refused(a, "this tenant has 2 imports in progress")
	mustAcquire(b)
	refused(b, "too many imports in progress")
	releaseA1()
	releaseA1() // a second release frees nothing more
	mustAcquire(b)
	refused(a, "too many imports in progress")
}
