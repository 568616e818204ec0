package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callInfo is what the server learns about a call before its handler runs.
// One is stored in each RPC's (and each REST request's) context.
type callInfo struct {
	requestID string
	via       string // "grpc" or "gateway"; "http" for a REST request
	addr      string // the client's address; for REST calls, the HTTP client's
	// md is the call's incoming metadata, shared with the transport and never changed; without
	// the reserved keys when a network client sent them.
	md metadata.MD

	// Of a REST request to the gateway (via "http"): its key in Server.calls (0 for /healthz
	// and /readyz), whether it reached the gRPC interceptors (so has its access log line and
	// a status the services chose), and the first query parameter its route does not take.
	seq          uint64
	reached      atomic.Bool
	unknownQuery string
}

type callKey struct{}

func callFrom(ctx context.Context) *callInfo {
	c, _ := ctx.Value(callKey{}).(*callInfo)
	return c
}

// RequestID returns the id of the request whose context is ctx, or "" if
// ctx did not pass through the server's interceptors or HTTP handler.
//
// The id is the caller's x-request-id if it is 1 to 64 characters of
// [A-Za-z0-9._-], otherwise 32 hex digits unique to this call (a random
// prefix chosen when the process starts and a counter). It is sent back in
// the x-request-id response header (X-Request-Id over REST).
func RequestID(ctx context.Context) string {
	if c := callFrom(ctx); c != nil {
		return c.requestID
	}
	return ""
}

// RemoteAddr returns the network address of the caller of the RPC whose context is ctx: the
// gRPC peer's, or for REST calls the HTTP client's (as the in-process gateway reported it; the
// same metadata from any other connection is ignored). It reports false outside an RPC.
func RemoteAddr(ctx context.Context) (string, bool) {
	if c := callFrom(ctx); c != nil && c.addr != "" {
		return c.addr, true
	}
	return "", false
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

// Request ids need to be unique, not secret: a random per-process prefix
// keeps replicas apart and a counter keeps calls apart, without reading
// crypto/rand on every call.
var (
	requestIDPrefix  = randomHex64()
	requestIDCounter atomic.Uint64
)

func randomHex64() string {
	var b [8]byte
	rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

func newRequestID() string {
	var b [32]byte
	copy(b[:16], requestIDPrefix)
	n := requestIDCounter.Add(1)
	const digits = "0123456789abcdef"
	for i := 31; i >= 16; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// begin prepares an RPC's context: reserved keys are dropped unless the call
// comes from the gateway, and the call's request id and address are chosen
// and stored, with the metadata Incoming reads. It reads the metadata map the
// transport received (see tapMetadata) and copies it only when a network
// client sent reserved keys.
//
// For a gateway call it also marks the REST request it carries as reached and returns that
// request's callInfo (nil otherwise).
func (s *Server) begin(ctx context.Context) (context.Context, *callInfo, *callInfo) {
	md := tapped(ctx)
	c := &callInfo{via: "grpc", md: md}
	var rest *callInfo
	p, _ := peer.FromContext(ctx)
	if p != nil && isGateway(p) {
		c.via = "gateway"
		c.addr, _ = single(md, keyRemoteAddr)
		if id, ok := single(md, keyRequestID); ok && validRequestID(id) {
			c.requestID = id
		}
		if seq, ok := single(md, keyCall); ok {
			if n, err := strconv.ParseUint(seq, 10, 64); err == nil {
				if v, ok := s.calls.Load(n); ok {
					rest = v.(*callInfo)
					rest.reached.Store(true)
				}
			}
		}
	} else {
		if p != nil && p.Addr != nil {
			c.addr = p.Addr.String()
		}
		if hasReserved(md) {
			md = md.Copy() // the transport's map stays as it was
			dropReserved(md)
			c.md = md
			ctx = metadata.NewIncomingContext(ctx, md)
		}
	}
	if c.requestID == "" {
		if ids := md[requestIDHeaderKey]; len(ids) > 0 && validRequestID(ids[0]) {
			c.requestID = ids[0]
		} else {
			c.requestID = newRequestID()
		}
	}
	return context.WithValue(ctx, callKey{}, c), c, rest
}

// refuse returns the error that ends a call before its handler runs, or nil: a REST request
// whose query names a parameter its route does not take.
func refuse(rest *callInfo) error {
	if rest == nil || rest.unknownQuery == "" {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "query parameter %q: not a parameter of this request", rest.unknownQuery)
}

// observeUnary is the outermost interceptor: request id, access log and metrics, and the
// recovery of a panic below it into codes.Internal, which the access log then records.
func (s *Server) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	ctx, c, rest := s.begin(ctx)
	// Fails only if headers were already sent, which cannot be the case yet.
	_ = grpc.SetHeader(ctx, metadata.MD{requestIDHeaderKey: {c.requestID}})
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, s.recovered(ctx, info.FullMethod, p)
		}
		s.record(ctx, info.FullMethod, c, start, err)
	}()
	if err := refuse(rest); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// observeStream is observeUnary for streams.
func (s *Server) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	ctx, c, rest := s.begin(ss.Context())
	_ = ss.SetHeader(metadata.MD{requestIDHeaderKey: {c.requestID}})
	defer func() {
		if p := recover(); p != nil {
			err = s.recovered(ctx, info.FullMethod, p)
		}
		s.record(ctx, info.FullMethod, c, start, err)
	}()
	if err := refuse(rest); err != nil {
		return err
	}
	return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// record writes the access log line and observes the call in Metrics. The
// log holds the status message, which callers see anyway, but no metadata,
// payload or error cause. The line is handed to the handler directly: the
// logger's caller lookup would cost more than the rest of the line, and
// duration_us is an integer, which slog's JSON handler writes without
// encoding/json.
func (s *Server) record(ctx context.Context, method string, c *callInfo, start time.Time, err error) {
	elapsed := time.Since(start)
	code := codes.OK
	var st *status.Status
	if err != nil {
		st = status.Convert(err)
		code = st.Code()
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ObserveRPC(method, code, c.via, elapsed)
	}
	level := slog.LevelInfo
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	}
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, "rpc", 0)
	r.AddAttrs(
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Int64("duration_us", elapsed.Microseconds()),
		slog.String("request_id", c.requestID),
		slog.String("peer", c.addr),
		slog.String("via", c.via),
	)
	if st != nil {
		r.AddAttrs(slog.String("message", st.Message()))
	}
	_ = h.Handle(ctx, r) // a log line that cannot be written is not the caller's failure
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
