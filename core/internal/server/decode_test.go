package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/sourcecontextpb"

	"github.com/custos-platform/custos/core/internal/server"
)

// rawCodec sends the bytes it is given as the request, as a broken or hostile client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, errors.New("rawCodec marshals *[]byte")
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("rawCodec unmarshals into *[]byte")
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var undecodable = []struct {
	name string
	body []byte
}{
	{"string not UTF-8", []byte{0x0a, 0x02, 0xff, 0xfe}}, // field 1 (a string) = "\xff\xfe"
	{"truncated field", []byte{0x0a, 0x05, 'a'}},
	{"bad wire type", []byte{0x0f}},
}

// TestUndecodableRequestIsInvalidArgument: a request that is not a valid message of its method
// is the caller's mistake — InvalidArgument naming the message type, for unary and streaming
// methods alike — and, unlike grpc-go's own answer (Internal, before any interceptor), passes the
// interceptors: it has an access-log line with its code.
func TestUndecodableRequestIsInvalidArgument(t *testing.T) {
	e := mustStart(t, nil)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	call := func(t *testing.T, id, method string, body []byte) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-request-id", id), 5*time.Second)
		defer cancel()
		var out []byte
		if !strings.HasSuffix(method, "Stream") {
			return conn.Invoke(ctx, method, &body, &out, grpc.ForceCodec(rawCodec{}))
		}
		cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			return err
		}
		if err := cs.SendMsg(&body); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if err := cs.CloseSend(); err != nil {
			return err
		}
		return cs.RecvMsg(&out)
	}
	for _, m := range []struct{ method, message string }{
		{"/" + probeService + "/Echo", "google.protobuf.SourceContext"},
		{"/" + probeService + "/WhoamiStream", "google.protobuf.SourceContext"},
		{"/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"},
	} {
		for _, tt := range undecodable {
			t.Run(m.method+"/"+tt.name, func(t *testing.T) {
				id := "bad-" + strings.NewReplacer("/", "-", " ", "-", ".", "-").Replace(m.method+"-"+tt.name)
				err := call(t, id, m.method, tt.body)
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "not a valid "+m.message+" message") {
					t.Fatalf("%s(%x) = %v, want InvalidArgument naming %s", m.method, tt.body, err, m.message)
				}
				eventually(t, "the access-log line", func() error {
					for _, rec := range e.logs.records(t, "rpc") {
						if rec["request_id"] == id {
							if rec["code"] != "InvalidArgument" {
								return errors.New("logged with code " + rec["code"].(string))
							}
							return nil
						}
					}
					return errors.New("no access-log line for request " + id)
				})
			})
		}
	}
	// Valid requests of the same methods are served as before, and no note is left behind.
	out := &sourcecontextpb.SourceContext{}
	if err := conn.Invoke(context.Background(), "/"+probeService+"/Echo", &sourcecontextpb.SourceContext{FileName: "ok"}, out); err != nil || out.GetFileName() != "ok" {
		t.Errorf("Echo(valid) = %v, %v", out, err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Check(valid) = %v", err)
	}
	if n := server.PendingDecodeFailures(); n != 0 {
		t.Errorf("%d decoding notes left after the calls ended, want 0", n)
	}
}

// TestUndecodableSecondMessageLeavesNoNote: a unary call whose client sends a second message,
// one that does not decode, is refused by grpc-go itself (cardinality), after the codec noted the
// failure: the note is taken all the same, so such calls cannot pile notes up.
func TestUndecodableSecondMessageLeavesNoNote(t *testing.T) {
	e := mustStart(t, nil)
	conn := e.mustGRPC(t, e.certs.ClientConfig())
	for _, method := range []string{"/" + probeService + "/Echo", "/grpc.health.v1.Health/Check"} {
		for range 5 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method, grpc.ForceCodec(rawCodec{}))
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			first, second := []byte{}, []byte{0x0f}
			_ = cs.SendMsg(&first)
			_ = cs.SendMsg(&second)
			_ = cs.CloseSend()
			var out []byte
			if err := cs.RecvMsg(&out); err == nil {
				_ = cs.RecvMsg(&out)
			}
			cancel()
		}
	}
	eventually(t, "no decoding notes left", func() error {
		if n := server.PendingDecodeFailures(); n != 0 {
			return fmt.Errorf("%d decoding notes left after the calls ended", n)
		}
		return nil
	})
}
