package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// Metrics records what the server serves. *telemetry.Metrics is one; a nil
// Config.Metrics records nothing.
type Metrics interface {
	// ObserveRPC records one finished RPC: its full method
	// ("/package.Service/Method"), its status code, how it came in ("grpc",
	// or "gateway" for REST calls through the in-process gateway) and how long
	// the interceptors and handler took.
	ObserveRPC(method string, code codes.Code, via string, elapsed time.Duration)
	// ObserveHTTP records one response of the REST listener: the handler
	// ("api", "healthz" or "readyz"), the HTTP status and how long it took.
	ObserveHTTP(handler string, status int, elapsed time.Duration)
}

// Handler names of the REST listener, as passed to Metrics.ObserveHTTP.
const (
	HandlerAPI     = "api"
	HandlerHealthz = "healthz"
	HandlerReadyz  = "readyz"
)

// handlerName classifies a REST path into a small fixed set, so that the
// metric has bounded cardinality whatever paths clients send.
func handlerName(path string) string {
	switch path {
	case "/healthz":
		return HandlerHealthz
	case "/readyz":
		return HandlerReadyz
	}
	return HandlerAPI
}

// observeHTTP wraps h, the REST listener's handler: it chooses the request's
// id (the caller's X-Request-Id if valid) and stores its callInfo in the
// request's context, records every response in s.cfg.Metrics, and a REST request answered without reaching the gRPC interceptors (413,
// 404, 405, a malformed body or query, a failure of the gRPC transport) gets
// its access log line here, as "rpc" with via "http": the interceptors log
// every other. /healthz and /readyz are not logged (probes would flood the
// log); their responses are counted.
func (s *Server) observeHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		c := &callInfo{requestID: id, via: "http", addr: r.RemoteAddr}
		r = r.WithContext(context.WithValue(r.Context(), callKey{}, c))
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		elapsed := time.Since(start)
		handler := handlerName(r.URL.Path)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.ObserveHTTP(handler, rec.statusCode(), elapsed)
		}
		if handler == HandlerAPI && !c.reached.Load() {
			s.recordHTTP(r, c, rec, elapsed)
		}
	})
}

// recordHTTP writes the access log line of a REST request that never reached the gRPC
// interceptors, in their format: method is the HTTP method (no path, which may hold anything the
// client sent), code the gRPC code the answer carries, and message its message, which the
// server wrote without quoting the caller's input.
func (s *Server) recordHTTP(r *http.Request, c *callInfo, rec *statusRecorder, elapsed time.Duration) {
	ctx := r.Context()
	var answer struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
	}
	_ = json.Unmarshal(rec.head, &answer) // a body that is not an error answer logs as OK
	level := slog.LevelInfo
	switch answer.Code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	}
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	line := slog.NewRecord(time.Now(), level, "rpc", 0)
	line.AddAttrs(
		slog.String("method", r.Method),
		slog.String("code", knownCode(answer.Code).String()),
		slog.Int("status", rec.statusCode()),
		slog.Int64("duration_us", elapsed.Microseconds()),
		slog.String("request_id", c.requestID),
		slog.String("peer", c.addr),
		slog.String("via", c.via),
	)
	if answer.Message != "" {
		line.AddAttrs(slog.String("message", answer.Message))
	}
	_ = h.Handle(ctx, line) // a log line that cannot be written is not the caller's failure
}

// knownCode returns code if gRPC defines it, else codes.Unknown.
func knownCode(code codes.Code) codes.Code {
	if code > codes.Unauthenticated {
		return codes.Unknown
	}
	return code
}

// statusRecorder remembers the status a handler wrote and, of an error
// answer, its first bytes. Unwrap lets http.ResponseController reach the
// underlying writer (Flush, deadlines).
type statusRecorder struct {
	http.ResponseWriter
	status int
	head   []byte // up to maxErrorHead bytes of the body, when status is 400 or more
}

// maxErrorHead bounds what statusRecorder keeps of an error answer: the
// server's error answers are short.
const maxErrorHead = 1 << 10

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.status >= http.StatusBadRequest && len(r.head) < maxErrorHead {
		r.head = append(r.head, b[:min(len(b), maxErrorHead-len(r.head))]...)
	}
	return r.ResponseWriter.Write(b)
}

// Flush implements http.Flusher, which the gateway uses for streamed responses.
func (r *statusRecorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) statusCode() int {
	if r.status == 0 {
		return http.StatusOK // a handler that wrote nothing sends 200
	}
	return r.status
}

// metricsHandler serves cfg.MetricsHandler at GET /metrics and nothing else.
func (s *Server) metricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path != "/metrics" {
			writeError(w, http.StatusNotFound, codes.NotFound, "not found")
			return
		}
		if allowGet(w, r) {
			s.cfg.MetricsHandler.ServeHTTP(w, r)
		}
	})
}
