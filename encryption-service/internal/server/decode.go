package server

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	protov2 "google.golang.org/protobuf/proto"
)

// A request that is not a valid message of its method (broken wire format, a string field that
// is not UTF-8) is the caller's mistake. grpc-go answers it with Internal, which these services
// keep for their own faults, straight from its decoding — before any interceptor, so without an
// access-log line or a metric. Instead, the server decodes with requestCodec, which lets such a
// message through empty and notes why it failed, and every service is registered through
// decodeCheckingRegistrar, whose handlers turn the note into InvalidArgument inside the
// interceptor chain: the call is authenticated, logged and counted like any other.

// decodeFailures maps a request message that did not decode (the pointer the handler gave the
// codec) to the decoding error, until the handler takes it: at once, in the same call.
var decodeFailures sync.Map

// requestCodec is the proto codec, except that a request that does not decode is left empty and
// noted in decodeFailures rather than failed.
type requestCodec struct{ encoding.CodecV2 }

func newRequestCodec() requestCodec { return requestCodec{encoding.GetCodecV2(proto.Name)} }

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(protov2.Message)
	if err == nil || !ok {
		return err
	}
	protov2.Reset(m)
	decodeFailures.Store(v, err)
	return nil
}

// takeDecodeFailure returns InvalidArgument when v did not decode, naming its type and the
// wire-format problem (never the data), and forgets the note; nil otherwise.
func takeDecodeFailure(v any) error {
	cause, ok := decodeFailures.LoadAndDelete(v)
	if !ok {
		return nil
	}
	name := "request"
	if m, ok := v.(protov2.Message); ok {
		name = string(protov2.MessageName(m))
	}
	return status.Error(codes.InvalidArgument, fmt.Sprintf("request: not a valid %s message (%v)", name, cause))
}

// decodeCheckingRegistrar registers services on s with handlers that take the decoding notes of
// their requests: unary handlers before their interceptors' handler runs (which also sees a
// request refused while being read, over the size limit), streaming ones at each RecvMsg.
type decodeCheckingRegistrar struct{ s *grpc.Server }

func (r decodeCheckingRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		d.Methods[i].Handler = checkUnaryDecode(d.Methods[i].Handler)
	}
	d.Streams = slices.Clone(desc.Streams)
	for i := range d.Streams {
		h := d.Streams[i].Handler
		d.Streams[i].Handler = func(srv any, ss grpc.ServerStream) error { return h(srv, decodeCheckingStream{ss}) }
	}
	r.s.RegisterService(&d, impl)
}

func checkUnaryDecode(h grpc.MethodHandler) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		var decodeErr error
		decode := func(v any) error {
			// A request refused while being read (over the size limit, or a second message where
			// one is due) has had its status sent already; it too passes the interceptors, to be
			// logged and counted. The note of a message that did not decode is taken either way:
			// left behind, it would never be.
			decodeErr = dec(v)
			if note := takeDecodeFailure(v); decodeErr == nil {
				decodeErr = note
			}
			return nil // the refusal is made inside the interceptors, below
		}
		return h(srv, ctx, decode, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if decodeErr != nil {
				handler = func(context.Context, any) (any, error) { return nil, decodeErr }
			}
			if ic == nil {
				return handler(ctx, req)
			}
			return ic(ctx, req, info, handler)
		})
	}
}

type decodeCheckingStream struct{ grpc.ServerStream }

func (s decodeCheckingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if note := takeDecodeFailure(m); err == nil { // taken whatever RecvMsg answered
		err = note
	}
	return err
}
