package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

type requestIDKey struct{}

// RequestID returns the id of the request whose context is ctx, or "" if
// ctx did not pass through the server's interceptors or HTTP handler.
//
// The id is the caller's x-request-id if it is 1 to 64 characters of
// [A-Za-z0-9._-], otherwise 32 random hex digits. It is sent back in the
// x-request-id response header (X-Request-Id over REST).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// call is what the access log records about an RPC.
type call struct {
	requestID string
	via       string // "grpc" or "gateway"
	addr      string // the client's address; for REST calls, the HTTP client's
}

// begin prepares an RPC's context: reserved keys are dropped unless the call
// comes from the gateway, and the request id is chosen and stored.
func begin(ctx context.Context) (context.Context, call) {
	c := call{via: "grpc"}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.addr = p.Addr.String()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if fromGateway(ctx) {
		c.via = "gateway"
		c.addr, _ = single(md, keyRemoteAddr)
		if id, ok := single(md, keyRequestID); ok && validRequestID(id) {
			c.requestID = id
		}
	} else {
		ctx = withoutReserved(ctx)
	}
	if c.requestID == "" {
		if ids := md.Get(requestIDHeaderKey); len(ids) > 0 && validRequestID(ids[0]) {
			c.requestID = ids[0]
		} else {
			c.requestID = newRequestID()
		}
	}
	ctx = context.WithValue(ctx, remoteAddrKey{}, c.addr)
	return context.WithValue(ctx, requestIDKey{}, c.requestID), c
}

type remoteAddrKey struct{}

// RemoteAddr returns the network address of the caller of the RPC whose context is ctx: the
// gRPC peer's, or for REST calls the HTTP client's (as the in-process gateway reported it; the
// same metadata from any other connection is ignored). It reports false outside an RPC.
func RemoteAddr(ctx context.Context) (string, bool) {
	a, ok := ctx.Value(remoteAddrKey{}).(string)
	return a, ok && a != ""
}

// observeUnary is the outermost interceptor: request id, access log and metrics.
func (s *Server) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ctx, c := begin(ctx)
	// Fails only if headers were already sent, which cannot be the case yet.
	_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeaderKey, c.requestID))
	resp, err := handler(ctx, req)
	s.record(ctx, info.FullMethod, c, start, err)
	return resp, err
}

// observeStream is observeUnary for streams.
func (s *Server) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	ctx, c := begin(ss.Context())
	_ = ss.SetHeader(metadata.Pairs(requestIDHeaderKey, c.requestID))
	err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	s.record(ctx, info.FullMethod, c, start, err)
	return err
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// record writes the access log line and observes the call in Metrics. The
// log holds the status message, which callers see anyway, but no metadata,
// payload or error cause.
func (s *Server) record(ctx context.Context, method string, c call, start time.Time, err error) {
	elapsed := time.Since(start)
	st := status.Convert(err)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ObserveRPC(method, st.Code(), c.via, elapsed)
	}
	level := slog.LevelInfo
	switch st.Code() {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", st.Code().String()),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", c.requestID),
		slog.String("peer", c.addr),
		slog.String("via", c.via),
	}
	if err != nil {
		attrs = append(attrs, slog.String("message", st.Message()))
	}
	s.log.LogAttrs(ctx, level, "rpc", attrs...)
}

// recoverUnary turns a panic below it into codes.Internal. It runs inside
// observeUnary so the access log records the resulting code.
func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.recovered(ctx, info.FullMethod, p)
		}
	}()
	return handler(ctx, req)
}

// recoverStream is recoverUnary for streams.
func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.recovered(ss.Context(), info.FullMethod, p)
		}
	}()
	return handler(srv, ss)
}

// recovered logs a panic (value and stack, never the request) and returns
// the generic error the caller sees.
func (s *Server) recovered(ctx context.Context, method string, p any) error {
	s.log.LogAttrs(ctx, slog.LevelError, "panic in handler",
		slog.String("method", method),
		slog.String("request_id", RequestID(ctx)),
		slog.String("panic", fmt.Sprint(p)),
		slog.String("stack", string(debug.Stack())),
	)
	return status.Error(codes.Internal, "internal error")
}
