// Package errs is core's one error vocabulary. Packages below the API return
// *Error values with a Kind; grpcapi maps each Kind to a gRPC code (and so an HTTP status) in one
// table. An Error's Message is safe to show to the caller: it names what is wrong and never holds
// plaintext, keys or secrets. Err, the cause, is for logs only.
package errs

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds, in the order of the design's error table.
const (
	Internal           Kind = iota // a bug or an unexpected failure; the caller cannot fix it
	Invalid                        // malformed input; the message names the field
	Unauthenticated                // missing or wrong credential
	PermissionDenied               // authenticated, but not allowed; wrong client master key
	NotFound                       // unknown, or another tenant's (never told apart)
	Conflict                       // already exists
	Aborted                        // lost a race: stale revision, concurrent change; re-read and retry
	FailedPrecondition             // the state forbids it (last owner, MFA already on)
	ResourceExhausted              // over a size limit, or throttled
	Unavailable                    // a dependency cannot be reached; retrying may help
)

var kindNames = [...]string{"internal", "invalid", "unauthenticated", "permission denied", "not found",
	"conflict", "aborted", "failed precondition", "resource exhausted", "unavailable"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is an error with a Kind and a message safe for callers.
type Error struct {
	Kind    Kind
	Message string // shown to the caller
	Err     error  // the cause, for logs; may be nil
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// E returns an *Error of kind with a formatted message.
func E(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of kind with message, keeping cause for the logs.
func Wrap(kind Kind, cause error, message string) *Error {
	return &Error{Kind: kind, Message: message, Err: cause}
}

// KindOf returns the Kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err's chain holds an *Error of kind.
func Is(err error, kind Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}
