package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// newGatewayMux returns the REST mux: camelCase JSON, unknown fields and
// anything after the JSON value refused (400), only allow-listed headers
// forwarded, and the caller's identity passed in reserved metadata.
func (s *Server) newGatewayMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(s.matchHeader),
		runtime.WithMetadata(s.gatewayMetadata),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: strictJSON{&runtime.JSONPb{
				// Default values, but no null for unset message fields: a failed batch item is then
				// exactly {"error": {...}} (EmitUnpopulated would add "metadata": null to it).
				MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
			}},
		}),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			// An error of a call that reached the services carries their own message; any other is
			// the gateway's, which may quote what the caller sent.
			if c := callFrom(r.Context()); c == nil || !c.reached.Load() {
				err = gatewayError(err)
			}
			runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
		}),
	)
}

// strictJSON is the gateway's JSON marshaler with a decoder that refuses a
// request body holding more than one JSON value (`{…} {…}` or `{…} garbage`):
// only whitespace may follow the value, which a client sending two would
// otherwise see half ignored. A body of several values (a client stream) is
// not for it: such a route decodes its body itself, as core's import does.
type strictJSON struct{ *runtime.JSONPb }

// Errors of strictJSON's decoder, which quote nothing the caller sent.
var (
	errTrailingData = errors.New("request body: only whitespace may follow the JSON value")
	errNotJSON      = errors.New("request body: not valid JSON")
)

// NewDecoder returns a decoder of one JSON value from r, which must hold
// nothing else but whitespace; an empty r gives io.EOF, which the gateway
// takes as an empty request.
func (j strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	d := json.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return err
			}
			// encoding/json quotes the characters it stopped at.
			if syn := (*json.SyntaxError)(nil); errors.As(err, &syn) {
				return fmt.Errorf("%w (at byte %d)", errNotJSON, syn.Offset)
			}
			return errNotJSON
		}
		if _, err := d.Token(); !errors.Is(err, io.EOF) {
			return errTrailingData
		}
		if err := j.JSONPb.NewDecoder(bytes.NewReader(raw)).Decode(v); err != nil {
			return wellKnownFieldError(err, raw, v)
		}
		return nil
	})
}

// wellKnownFieldError rewrites err when it is protojson's error about the value of a well-known
// type (see protoWellKnownError), which quotes the value and not the field: the value gives way
// to the field's name (" in field rotationPolicy.maxAge"), found from the error's position in raw
// and the fields of v, the message decoded. Only names of fields are written, never a key the
// caller sent that names none (a map key). Any other error, or one whose field cannot be told,
// passes unchanged for bodyError.
func wellKnownFieldError(err error, raw []byte, v any) error {
	m := protoWellKnownError.FindStringSubmatch(err.Error())
	if m == nil || m[5] != "" {
		return err
	}
	var msg protoreflect.MessageDescriptor
	for rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil(); rv = rv.Elem() {
		if pm, ok := rv.Interface().(proto.Message); ok {
			msg = pm.ProtoReflect().Descriptor()
			break
		}
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	keys, ok := keysAt(raw, offsetOf(raw, line, col))
	if msg == nil || !ok {
		return err
	}
	field, ok := fieldPath(msg, keys)
	if !ok {
		return err
	}
	what := "invalid " + m[3] + " value"
	if m[4] != "" {
		what = m[4] + " value out of range"
	}
	return fmt.Errorf("proto: (line %d:%d): %s in field %s", line, col, what, field)
}

// offsetOf returns the byte offset of line:column (from 1, the column in characters) in raw, as
// protojson counts them; -1 when raw has no such place.
func offsetOf(raw []byte, line, col int) int {
	off := 0
	for range line - 1 {
		i := bytes.IndexByte(raw[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	for range col - 1 {
		if off >= len(raw) {
			return -1
		}
		_, size := utf8.DecodeRune(raw[off:])
		off += size
	}
	return off
}

// keysAt returns the object keys leading from the top of raw, a JSON value, to the value that
// starts at byte pos (an array adds none: its elements are its field's); false when no value
// starts there.
func keysAt(raw []byte, pos int) ([]string, bool) {
	type frame struct {
		object, wantKey bool
		key             string
	}
	var stack []frame
	d := json.NewDecoder(bytes.NewReader(raw))
	for {
		start := d.InputOffset() // the previous token's end: separators and space lead to this one
		tok, err := d.Token()
		if err != nil {
			return nil, false
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].wantKey {
			if key, ok := tok.(string); ok {
				stack[top].key, stack[top].wantKey = key, false
				continue
			}
		}
		if tok == json.Delim('}') || tok == json.Delim(']') {
			stack = stack[:top]
			if top > 0 && stack[top-1].object {
				stack[top-1].wantKey = true
			}
			continue
		}
		if int64(pos) >= start && int64(pos) < d.InputOffset() {
			var keys []string
			for _, f := range stack {
				if f.object {
					keys = append(keys, f.key)
				}
			}
			return keys, true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		default:
			if top >= 0 && stack[top].object {
				stack[top].wantKey = true
			}
		}
	}
}

// fieldPath returns the JSON names of the fields keys lead through from a message of msg, joined
// by dots ("rotationPolicy.maxAge"); a map field's key is the caller's data and is left out.
// False when a key names no field (protojson takes JSON and proto names).
func fieldPath(msg protoreflect.MessageDescriptor, keys []string) (string, bool) {
	var names []string
	for i := 0; i < len(keys); i++ {
		if msg == nil {
			return "", false
		}
		fd := msg.Fields().ByJSONName(keys[i])
		if fd == nil {
			fd = msg.Fields().ByTextName(keys[i])
		}
		if fd == nil {
			return "", false
		}
		names = append(names, fd.JSONName())
		msg = fd.Message()
		if fd.IsMap() {
			i++ // the map key
			msg = fd.MapValue().Message()
		}
	}
	return strings.Join(names, "."), len(names) > 0
}

// gatewayQueryError matches the gateway's errors about a query parameter, which quote its value
// after its name.
var gatewayQueryError = regexp.MustCompile(`^(parsing field|parsing list|parsing map key|parsing map value|too many values for field|duplicate field|field already set for oneof) "([^"]{1,100})"`)

// gatewayPathError matches the gateway's error about a path parameter, which quotes its value.
var gatewayPathError = regexp.MustCompile(`^type mismatch, parameter: ([A-Za-z0-9_.]{1,100}),`)

// SafeError marks err, an error a hand-written gateway route (see
// ServeMux.HandlePath) found itself, as written without quoting the caller's
// input: the gateway's error handler passes it unchanged, where it rewrites
// other errors of calls that did not reach the gRPC services (see
// gatewayError). It keeps err's gRPC status.
func SafeError(err error) error {
	if err == nil {
		return nil
	}
	return safeError{err}
}

type safeError struct{ error }

func (e safeError) GRPCStatus() *status.Status { return status.Convert(e.error) }
func (e safeError) Unwrap() error              { return e.error }

// gatewayError rewrites the gateway's own InvalidArgument errors (about the body, the query, the
// path or a header, found before the call reached the services) so that they name the field,
// parameter or header without quoting what was sent; a message it does not know becomes a generic
// one. Every other error passes unchanged.
func gatewayError(err error) error {
	if safe := (safeError{}); errors.As(err, &safe) {
		return safe.error
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	msg := st.Message()
	switch {
	case strings.HasPrefix(msg, "proto:"):
		return bodyError(err)
	case strings.HasPrefix(msg, errNotJSON.Error()) || msg == errTrailingData.Error():
		return err
	case strings.HasPrefix(msg, "invalid grpc-timeout"):
		return status.Error(codes.InvalidArgument, "Grpc-Timeout header: invalid value (want digits and a unit, such as 10S)")
	}
	if m := gatewayQueryError.FindStringSubmatch(msg); m != nil {
		what := "invalid value"
		if m[1] == "too many values for field" || m[1] == "duplicate field" {
			what = "given more than once"
		}
		return status.Errorf(codes.InvalidArgument, "query parameter %s: %s", lowerCamel(m[2]), what)
	}
	if m := gatewayPathError.FindStringSubmatch(msg); m != nil {
		return status.Errorf(codes.InvalidArgument, "path parameter %s: invalid value", lowerCamel(m[1]))
	}
	return status.Error(codes.InvalidArgument, "malformed request")
}

// lowerCamel returns a proto field name (page_size) as its JSON name (pageSize), the form the
// API documents; other names pass as they are.
func lowerCamel(name string) string {
	var b strings.Builder
	up := false
	for _, r := range name {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// protoValueError matches protojson's message for a JSON value of the wrong
// kind: where it is, the field's type and name, and the value itself.
// protojson separates its "proto:" prefix by a space or, at random per build,
// a no-break space (so that callers do not match on messages; this one is
// covered by a test).
var protoValueError = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\): invalid value for (\w+) field (\w+): `)

// protoSyntaxToken matches the token protojson quotes after a syntax error.
var protoSyntaxToken = regexp.MustCompile(`(syntax error \(line \d+:\d+\): (?:unexpected token|invalid value)) .*$`)

// protoWellKnownError matches protojson's message for a malformed or out-of-range value of a
// well-known type (google.protobuf.Timestamp, Duration…): where it is and the type, then the value
// itself, or " in field <name>" where strictJSON's decoder could tell the field (see
// wellKnownFieldError). The value follows a quote or a colon, so it cannot pass for a field.
var protoWellKnownError = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\): (?:invalid (google\.protobuf\.[A-Za-z]+)(?: value|:)|(google\.protobuf\.[A-Za-z]+) value out of range)(?: in field ([A-Za-z0-9_.]{1,200})$)?`)

// wellKnownWant says what a value of a well-known type should be, or "".
func wellKnownWant(typ string) string {
	switch typ {
	case "google.protobuf.Timestamp":
		return "; want an RFC 3339 time from year 1 to 9999, such as 2026-01-02T15:04:05Z"
	case "google.protobuf.Duration":
		return "; want seconds with the suffix s, such as 3600s or 0.5s"
	}
	return ""
}

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
	// A time or duration the caller sent may be anything, a secret too: its field and type only.
	if m := protoWellKnownError.FindStringSubmatch(st.Message()); m != nil {
		field, problem := "request body", "invalid "+m[3]+" value"
		if m[4] != "" {
			problem = m[4] + " value out of range"
		}
		if m[5] != "" {
			field = m[5]
		}
		return status.Errorf(codes.InvalidArgument, "%s: %s (not shown%s) at line %s, column %s of the request body",
			field, problem, wellKnownWant(m[3]+m[4]), m[1], m[2])
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
// gateway; it runs inside observeHTTP. Every response carries X-Request-Id and Cache-Control: no-store,
// since API responses hold secrets and plaintext.
func (s *Server) httpHandler(gateway http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := callFrom(r.Context()) // stored by observeHTTP
		h := w.Header()
		h.Set("X-Request-Id", c.requestID)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")

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
			// Known to the gRPC side while in flight, which marks it as reached (see begin).
			c.seq = s.callSeq.Add(1)
			s.calls.Store(c.seq, c)
			defer s.calls.Delete(c.seq)
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

// serveReadyz answers 200 when the last Ready check passed and 503 otherwise,
// as the gRPC health service does: it runs no check of its own (followReadiness
// checks every ReadyInterval and logs the changes), so that callers cannot
// make the service query its dependencies. The reason is generic.
func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	rd := s.readiness.Load()
	reason := ""
	switch {
	case s.draining.Load():
		reason = "shutting down"
	case rd == nil:
		reason = "starting"
	case errors.Is(rd.err, context.DeadlineExceeded):
		reason = "readiness check timed out"
	case rd.err != nil:
		reason = "dependencies not ready"
	}
	if reason != "" {
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
