package esclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/errs"
)

// Backoff between retries: exponential from backoffBase, at most backoffMax, each delay drawn
// from its upper half (jitter, so that many clients retrying at once spread out).
const (
	backoffBase = 50 * time.Millisecond
	backoffMax  = 400 * time.Millisecond
)

// msgUnavailable is the message of every Unavailable error: the vault answers it as 503.
const msgUnavailable = "the encryption service is unavailable; try again"

// op describes one method of the contract for the call machinery.
type op struct {
	name       string // the contract's method name, for logs
	idempotent bool   // may be retried after an attempt that may have reached the service
	// unsupported is the message (FailedPrecondition) for a service that lacks the method.
	unsupported string
	// routeOnly404: over HTTPS, a 404 or 405 can only mean that the service lacks the method.
	routeOnly404 bool
}

var (
	opCreate = op{name: "CreateEncryption", routeOnly404: true,
		unsupported: "the hosted encryption service must support key contexts (POST /v1/encryptions) to hold this tenant's keys"}
	opEncrypt = op{name: "Encrypt", idempotent: true}
	opDecrypt = op{name: "Decrypt", idempotent: true}
	opRotate  = op{name: "Rotate"}
	opGet     = op{name: "GetEncryption", idempotent: true,
		unsupported: "the encryption service cannot describe key contexts (GET /v1/encryptions/{encryptionId})"}
	opRewrap = op{name: "RewrapBatch", idempotent: true, routeOnly404: true,
		unsupported: "the encryption service cannot rewrap (POST /v1/rewrap:batch)"}
	opDisable = op{name: "DisableVersion",
		unsupported: "the encryption service cannot disable key versions"}
	opEnable = op{name: "EnableVersion",
		unsupported: "the encryption service cannot enable key versions"}
	opChangeKey = op{name: "ChangeMasterKey",
		unsupported: "the encryption service cannot change a client master key"}
	opDestroy = op{name: "DestroyEncryption", idempotent: true,
		unsupported: "the encryption service cannot destroy key contexts (DELETE /v1/encryptions/{encryptionId})"}
)

// remoteError is a failed attempt in transport-neutral form: the gRPC code the service answered
// (or the one that stands for what happened: Unavailable when it could not be reached) and its
// message, which the encryption-service contract guarantees never to hold plaintext, keys or
// secrets.
// wireCode is the code of an item error as the service sent it; a value outside the gRPC codes is
// Unknown, so that a malformed one cannot wrap around into a meaningful code.
func wireCode(c int64) codes.Code {
	if c < 0 || c > int64(codes.Unauthenticated) {
		return codes.Unknown
	}
	return codes.Code(c)
}

type remoteError struct {
	code    codes.Code
	message string // sanitized
	status  int    // the HTTP status, for the HTTPS transport
	err     error  // the transport's error, if any
}

func (e *remoteError) Error() string {
	s := "encryption service: " + e.code.String()
	if e.status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.status)
	}
	if e.message != "" {
		s += ": " + e.message
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *remoteError) Unwrap() error { return e.err }

// sanitize bounds a message from the service before it is shown or logged: printable
// characters only, at most 300 of them.
func sanitize(msg string) string {
	const maxRunes = 300
	var b strings.Builder
	n := 0
	for _, r := range msg {
		if n == maxRunes {
			b.WriteString("…")
			break
		}
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// toErrs maps a failed call to core's error vocabulary (the table in Client's doc comment).
// *errs.Error values pass through.
func toErrs(o op, err error) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	var re *remoteError
	if !errors.As(err, &re) {
		return errs.Wrap(errs.Internal, err, "the encryption service call failed")
	}
	msg := func(fallback string) string {
		if re.message != "" {
			return re.message
		}
		return fallback
	}
	switch re.code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return errs.Wrap(errs.Unavailable, err, msgUnavailable)
	case codes.PermissionDenied:
		return errs.Wrap(errs.PermissionDenied, err, "wrong master key")
	case codes.Unauthenticated:
		if strings.Contains(strings.ToLower(re.message), "x-master-key") {
			return errs.Wrap(errs.Unauthenticated, err, "this tenant's keys need the client master key: send X-Master-Key")
		}
		return errs.Wrap(errs.Internal, err,
			"the encryption service rejected core's credential for this tenant: an operator must check the tenant's encryption-service id and secret")
	case codes.NotFound:
		return errs.Wrap(errs.NotFound, err, msg("key context or version not found on the encryption service"))
	case codes.InvalidArgument, codes.OutOfRange:
		return errs.Wrap(errs.Invalid, err, msg("the encryption service refused the request as invalid"))
	case codes.FailedPrecondition:
		return errs.Wrap(errs.FailedPrecondition, err, msg("the encryption service refused the request in the key's current state"))
	case codes.AlreadyExists:
		return errs.Wrap(errs.Conflict, err, msg("already exists on the encryption service"))
	case codes.Aborted:
		return errs.Wrap(errs.Aborted, err, msg("the encryption service aborted the request; try again"))
	case codes.ResourceExhausted:
		return errs.Wrap(errs.ResourceExhausted, err, msg("over the encryption service's limits"))
	case codes.Unimplemented:
		u := o.unsupported
		if u == "" {
			u = "the encryption service does not support " + o.name
		}
		return errs.Wrap(errs.FailedPrecondition, err, u)
	default: // Internal, Unknown, DataLoss: the service's fault; its detail is for the logs
		return errs.Wrap(errs.Internal, err, "the encryption service failed; see core's log for its request id")
	}
}

// classify says what err, the result of an attempt under the caller's ctx, says about the
// endpoint.
func classify(ctx context.Context, err error) outcome {
	if err == nil {
		return reachable
	}
	if ctx.Err() != nil {
		return abandoned
	}
	var re *remoteError
	if errors.As(err, &re) && (re.code == codes.Unavailable || re.code == codes.DeadlineExceeded) {
		return unreachable
	}
	return reachable
}

// caller runs the attempts of calls to one endpoint: its breaker, per-attempt deadline, retries.
type caller struct {
	endpoint string // for logs: "platform" or the hosted service's URL
	breaker  *breaker
	timeout  time.Duration
	retries  int // further attempts after the first, for idempotent calls
	log      *slog.Logger
	// onProbe runs before the half-open probe, e.g. to make the transport reconnect now.
	onProbe func()
	// requestID is RouterOptions.RequestID.
	requestID func(context.Context) string
}

// requestIDOf returns the id to send as x-request-id with a call made for ctx, or "".
func (c *caller) requestIDOf(ctx context.Context) string {
	if c.requestID == nil {
		return ""
	}
	return c.requestID(ctx)
}

// do runs attempt until it succeeds, fails for good, or the retries are spent, and returns nil
// or an *errs.Error. attempt gets a context bounded by the per-attempt timeout and whether it is
// the breaker's half-open probe (which may wait for the transport to connect).
func (c *caller) do(ctx context.Context, o op, attempt func(ctx context.Context, probe bool) error) error {
	for i := 0; ; i++ {
		probe, err := c.breaker.allow()
		if err != nil {
			return errs.Wrap(errs.Unavailable, err, msgUnavailable)
		}
		if probe && c.onProbe != nil {
			c.onProbe()
		}
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		err = attempt(actx, probe)
		cancel()
		out := classify(ctx, err)
		c.breaker.done(probe, out)
		if err == nil {
			return nil
		}
		if out != unreachable || !o.idempotent || i >= c.retries {
			return toErrs(o, err)
		}
		c.log.DebugContext(ctx, "esclient: attempt failed; retrying",
			"endpoint", c.endpoint, "method", o.name, "attempt", i+1, "error", err)
		if !sleep(ctx, retryDelay(i)) {
			return toErrs(o, err)
		}
	}
}

// retryDelay is the delay before retry i+1 (i from 0).
func retryDelay(i int) time.Duration {
	d := backoffMax
	if i < 4 && backoffBase<<i < backoffMax {
		d = backoffBase << i
	}
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not a secret
}

// sleep waits d, or until ctx is done (then false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
