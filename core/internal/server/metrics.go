package server

import (
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

// observeHTTP wraps h so that every response is recorded in s.cfg.Metrics.
func (s *Server) observeHTTP(h http.Handler) http.Handler {
	if s.cfg.Metrics == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		s.cfg.Metrics.ObserveHTTP(handlerName(r.URL.Path), rec.statusCode(), time.Since(start))
	})
}

// statusRecorder remembers the status a handler wrote. Unwrap lets
// http.ResponseController reach the underlying writer (Flush, deadlines).
type statusRecorder struct {
	http.ResponseWriter
	status int
}

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
