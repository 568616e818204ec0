package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// newGatewayMux returns the REST mux: camelCase JSON, unknown fields
// refused (400), only allow-listed headers forwarded, and the caller's
// identity passed in reserved metadata.
func (s *Server) newGatewayMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(s.matchHeader),
		runtime.WithMetadata(gatewayMetadata),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: &runtime.JSONPb{
				// Default values, but no null for unset message fields: a failed batch item is then
				// exactly {"error": {...}} (EmitUnpopulated would add "metadata": null to it).
				MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
			},
		}),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, bodyError(err))
		}),
	)
}

// protoValueError matches protojson's message for a JSON value of the wrong
// kind: where it is, the field's type and name, and the value itself.
// protojson separates its "proto:" prefix by a space or, at random per build,
// a no-break space (so that callers do not match on messages; this one is
// covered by a test).
var protoValueError = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\): invalid value for (\w+) field (\w+): `)

// protoSyntaxToken matches the token protojson quotes after a syntax error.
var protoSyntaxToken = regexp.MustCompile(`(syntax error \(line \d+:\d+\): (?:unexpected token|invalid value)) .*$`)

// bodyError rewrites the gateway's own JSON decoding errors so that they
// name the field and what it should hold, without echoing the value or token
// sent (which may be long, or data the caller meant to protect). Every other
// error passes unchanged.
func bodyError(err error) error {
	st, ok := status.FromError(err)
	msg, isProto := strings.CutPrefix(st.Message(), "proto:")
	if !ok || st.Code() != codes.InvalidArgument || !isProto {
		return err
	}
	if m := protoValueError.FindStringSubmatch(st.Message()); m != nil {
		want := m[3]
		switch m[3] {
		case "bytes":
			want = "standard base64"
		case "string":
			want = "a string"
		case "bool":
			want = "true or false"
		case "enum":
			want = "one of the documented values"
		default:
			if strings.Contains(m[3], "int") || m[3] == "float" || m[3] == "double" {
				want = "a number"
			}
		}
		return status.Errorf(codes.InvalidArgument, "%s: invalid value (want %s) at line %s, column %s of the request body", m[4], want, m[1], m[2])
	}
	msg = "request body: " + strings.TrimLeft(msg, " \u00a0")
	// A syntax error quotes the token it stopped at, which may be an unquoted password or datum.
	msg = protoSyntaxToken.ReplaceAllString(msg, "$1 (not shown)")
	if len(msg) > 200 {
		msg = strings.ToValidUTF8(msg[:200], "") + "…"
	}
	return status.Error(codes.InvalidArgument, msg)
}

// matchHeader forwards exactly the allow-listed headers. The gateway passes
// Authorization on its own, so it is never matched here (that would send it
// twice); httpHandler deletes it instead when it is not allowed.
func (s *Server) matchHeader(key string) (string, bool) {
	k := strings.ToLower(key)
	if k == "authorization" || !s.forward[k] {
		return "", false
	}
	return k, true
}

// httpHandler serves /healthz and /readyz and passes everything else to the
// gateway. Every response carries X-Request-Id and Cache-Control: no-store,
// since API responses hold secrets and plaintext.
func (s *Server) httpHandler(gateway http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		h := w.Header()
		h.Set("X-Request-Id", id)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		r = r.WithContext(context.WithValue(r.Context(), callKey{}, &callInfo{requestID: id, via: "http"}))

		switch r.URL.Path {
		case "/healthz":
			if allowGet(w, r) {
				writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			}
		case "/readyz":
			if allowGet(w, r) {
				s.serveReadyz(w, r)
			}
		default:
			s.serveAPI(w, r, gateway)
		}
	})
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed")
	return false
}

// serveReadyz answers 200 when Ready passes and 503 otherwise. The reason
// is generic; the error itself is logged.
func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "shutting down"})
		return
	}
	if err := s.checkReady(r.Context()); err != nil {
		reason := "dependencies not ready"
		if errors.Is(err, context.DeadlineExceeded) {
			reason = "readiness check timed out"
		}
		s.log.Warn("server: readiness check failed", "error", err, "request_id", RequestID(r.Context()))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// serveAPI bounds the request body, then hands the request to the gateway.
// The body is read here, not by the gateway, so that an oversize body gets a
// 413 naming the limit instead of a decoding error.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, gateway http.Handler) {
	limit := int64(s.cfg.MaxRequestBytes)
	tooLarge := fmt.Sprintf("request body too large: the limit is %d bytes", limit)
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, tooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
			writeError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, tooLarge)
			return
		}
		writeError(w, http.StatusBadRequest, codes.InvalidArgument, "cannot read request body")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))

	// The gateway turns these into metadata whatever the header matcher
	// says; X-Forwarded-* is rebuilt by it from the connection.
	if !s.forward["authorization"] {
		r.Header.Del("Authorization")
	}
	r.Header.Del("X-Forwarded-For")
	r.Header.Del("X-Forwarded-Host")
	gateway.ServeHTTP(w, r)
}

// writeError writes an error in the gateway's format.
func writeError(w http.ResponseWriter, httpStatus int, code codes.Code, message string) {
	writeJSON(w, httpStatus, struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{int(code), message, []any{}})
}

func writeJSON(w http.ResponseWriter, httpStatus int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(append(b, '\n')) // a client that went away has nothing more to receive
}
