package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is an error answered by core: over REST the HTTP status and the body's gRPC code and
// message, over gRPC the status (and the HTTP status the REST mapping would have answered). A
// transport failure (core unreachable, TLS refused) is an Error with Code "UNAVAILABLE" and
// HTTPStatus 0, wrapping the cause; a call core did not answer within the client's timeout
// (WithTimeout), an Error with Code "DEADLINE_EXCEEDED" and HTTPStatus 0, over REST and gRPC
// alike. The caller's own cancellation or deadline is not an Error: it is reported as
// context.Canceled or context.DeadlineExceeded (wrapped). Input the client refuses before core
// sees it (an import file that is not an export, an id that is not a UUID, text that is not
// UTF-8) is the Error core would have answered: 400 INVALID_ARGUMENT.
type Error struct {
	HTTPStatus int    // e.g. 404; 0 when core could not be reached or did not answer in time
	Code       string // the gRPC code's canonical name, e.g. "NOT_FOUND", "ABORTED"
	Message    string // core's message, safe to show: it never holds data, keys or secrets
	err        error
}

// Error returns the message with the HTTP status and code, e.g. "item … not found (404 NOT_FOUND)".
func (e *Error) Error() string {
	if e.HTTPStatus == 0 {
		return e.Message
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.HTTPStatus, e.Code)
}

// Unwrap returns the transport error behind an UNAVAILABLE or DEADLINE_EXCEEDED error found by
// the client, if any.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether target is an *Error with the same Code (and the same HTTPStatus, when the
// target sets one), so that errors.Is(err, client.ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Code != e.Code {
		return false
	}
	return t.HTTPStatus == 0 || t.HTTPStatus == e.HTTPStatus
}

// Sentinels for errors.Is on errors answered by core.
var (
	ErrInvalidArgument    = &Error{Code: "INVALID_ARGUMENT"}    // 400: a bad field, named in the message
	ErrFailedPrecondition = &Error{Code: "FAILED_PRECONDITION"} // 400: not in a state that allows it
	ErrUnauthenticated    = &Error{Code: "UNAUTHENTICATED"}     // 401: wrong credentials, expired session, missing X-Master-Key
	ErrPermissionDenied   = &Error{Code: "PERMISSION_DENIED"}   // 403: role or scope missing, wrong master key
	ErrNotFound           = &Error{Code: "NOT_FOUND"}           // 404
	ErrAborted            = &Error{Code: "ABORTED"}             // 409: a stale revision, or lost a race with a concurrent change: send again
	ErrAlreadyExists      = &Error{Code: "ALREADY_EXISTS"}      // 409: a taken name; an imported item that changed since the export
	ErrResourceExhausted  = &Error{Code: "RESOURCE_EXHAUSTED"}  // 429: throttled, or too large
	ErrUnimplemented      = &Error{Code: "UNIMPLEMENTED"}       // 501: this release of core does not offer it
	ErrUnavailable        = &Error{Code: "UNAVAILABLE"}         // 503, or core unreachable
	ErrDeadlineExceeded   = &Error{Code: "DEADLINE_EXCEEDED"}   // core did not answer within the client's timeout
)

// Errors of the client itself.
var (
	// ErrKDFDowngrade: prelogin proposed Argon2id parameters below the floor of 16 MiB, 2 passes,
	// 1 lane and a 16-byte salt. The client refuses them: a server (or anyone in between) that
	// lowers them is trying to make the password cheap to guess.
	ErrKDFDowngrade = errors.New("refused KDF parameters below the floor (16 MiB, 2 passes, 1 lane, 16-byte salt): possible downgrade attack")
	// ErrKDFParams: prelogin proposed parameters the client cannot use (an unknown KDF, or
	// absurdly large costs).
	ErrKDFParams = errors.New("unusable KDF parameters")
	// ErrMFARequired: the account has TOTP on and Login was given no way to ask for a code.
	ErrMFARequired = errors.New("this account needs a TOTP code")
	// ErrNotLoggedIn: a call needs a session and there is none (and no API key).
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrSessionExpired: the refresh token was refused (expired, revoked, or the session ended by a
	// password or MFA change): log in again.
	ErrSessionExpired = errors.New("the session has ended: log in again")
	// ErrLocked: the tenant is zero-knowledge and this Client holds no master key: log in, or
	// call Unlock with the password.
	ErrLocked = errors.New("this tenant is zero-knowledge: the master key is needed (log in, or unlock with the password)")
	// ErrWeakPassword: a new password does not meet the policy (12 to 1024 bytes of UTF-8
	// without NUL). Core cannot check it: it only ever sees the derived value.
	ErrWeakPassword = errors.New("the new password does not meet the policy")
	// ErrRedirect: the server answered a REST call with a redirect (3xx). The client never
	// follows one, since the credentials (and the master key) would go along to wherever it
	// points: give New core's own address. The error names the Location.
	ErrRedirect = errors.New("the server answered with a redirect, which the client does not follow")
	// ErrOtherServer: the token store holds a session opened at another core (another base URL,
	// or another gRPC address) than this Client's, so its tokens are not sent. Log in to this
	// core with another token store (for the CLI, another profile).
	ErrOtherServer = errors.New("the stored session belongs to another server")
)

// codeInfo is the one table from gRPC codes to their canonical names and the HTTP status the REST
// mapping answers (as grpc-gateway maps them).
var codeInfo = map[codes.Code]struct {
	name string
	http int
}{
	codes.OK:                 {"OK", http.StatusOK},
	codes.Canceled:           {"CANCELLED", 499},
	codes.Unknown:            {"UNKNOWN", http.StatusInternalServerError},
	codes.InvalidArgument:    {"INVALID_ARGUMENT", http.StatusBadRequest},
	codes.DeadlineExceeded:   {"DEADLINE_EXCEEDED", http.StatusGatewayTimeout},
	codes.NotFound:           {"NOT_FOUND", http.StatusNotFound},
	codes.AlreadyExists:      {"ALREADY_EXISTS", http.StatusConflict},
	codes.PermissionDenied:   {"PERMISSION_DENIED", http.StatusForbidden},
	codes.ResourceExhausted:  {"RESOURCE_EXHAUSTED", http.StatusTooManyRequests},
	codes.FailedPrecondition: {"FAILED_PRECONDITION", http.StatusBadRequest},
	codes.Aborted:            {"ABORTED", http.StatusConflict},
	codes.OutOfRange:         {"OUT_OF_RANGE", http.StatusBadRequest},
	codes.Unimplemented:      {"UNIMPLEMENTED", http.StatusNotImplemented},
	codes.Internal:           {"INTERNAL", http.StatusInternalServerError},
	codes.Unavailable:        {"UNAVAILABLE", http.StatusServiceUnavailable},
	codes.DataLoss:           {"DATA_LOSS", http.StatusInternalServerError},
	codes.Unauthenticated:    {"UNAUTHENTICATED", http.StatusUnauthorized},
}

// codeForHTTP guesses a code from an HTTP status when the body carried none (a proxy's answer).
func codeForHTTP(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusConflict:
		return "ABORTED"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusNotImplemented:
		return "UNIMPLEMENTED"
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "UNAVAILABLE"
	}
	return "UNKNOWN"
}

// restError builds the Error of a non-2xx REST answer: the gateway's body is
// {"code":<gRPC code>,"message":…,"details":[…]}.
func restError(status int, body []byte) *Error {
	var b struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	}
	// A streaming call (export) wraps its error: {"error":{"code":…,"message":…}}.
	var wrapped struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &wrapped) == nil && len(wrapped.Error) > 0 {
		body = wrapped.Error
	}
	if json.Unmarshal(body, &b) == nil && b.Code != nil {
		var info struct {
			name string
			http int
		}
		ok := false
		if *b.Code >= 0 && *b.Code <= int(codes.Unauthenticated) {
			info, ok = codeInfo[codes.Code(uint32(*b.Code))]
		}
		name := info.name
		if !ok {
			name = codeForHTTP(status)
		}
		return &Error{HTTPStatus: status, Code: name, Message: b.Message}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 || msg == "" || strings.ContainsAny(msg, "<{") {
		msg = http.StatusText(status)
	}
	return &Error{HTTPStatus: status, Code: codeForHTTP(status), Message: msg}
}

// grpcError turns a gRPC error into an *Error.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: "UNAVAILABLE", Message: err.Error(), err: err}
	}
	info, ok := codeInfo[st.Code()]
	if !ok {
		info.name, info.http = "UNKNOWN", http.StatusInternalServerError
	}
	return &Error{HTTPStatus: info.http, Code: info.name, Message: st.Message()}
}

// invalidInput is an INVALID_ARGUMENT found by the client, as core would have answered it.
func invalidInput(format string, args ...any) *Error {
	return &Error{HTTPStatus: http.StatusBadRequest, Code: "INVALID_ARGUMENT", Message: fmt.Sprintf(format, args...)}
}

// unreachable wraps a transport failure.
func unreachable(where string, err error) *Error {
	return &Error{Code: "UNAVAILABLE", Message: fmt.Sprintf("cannot reach core at %s: %v", where, err), err: err}
}
