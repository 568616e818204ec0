package esclient

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/errs"
)

// TestHTTPErrorMapping: the statuses and bodies of error answers, from the encryption service's
// gateway ({"code": <gRPC code>, "message": …}) and from other services, and the kind each
// becomes.
func TestHTTPErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name   string
		op     op
		status int
		body   string
		kind   errs.Kind
		msg    string
	}{
		{"gateway invalid", opDecrypt, 400, `{"code":3,"message":"cipherText does not authenticate","details":[]}`,
			errs.Invalid, "cipherText does not authenticate"},
		{"gateway failed precondition is 400 too", opDecrypt, 400, `{"code":9,"message":"key version v1 is disabled"}`,
			errs.FailedPrecondition, "key version v1 is disabled"},
		{"gateway master key missing", opDecrypt, 401,
			`{"code":16,"message":"key context e is zero-knowledge (CLIENT): send its client master key in X-Master-Key"}`,
			errs.Unauthenticated, "send X-Master-Key"},
		{"gateway credential rejected", opEncrypt, 401, `{"code":16,"message":"tenant credential rejected"}`,
			errs.Internal, "an operator must check"},
		{"gateway wrong key", opDecrypt, 403, `{"code":7,"message":"wrong client master key for key context e"}`,
			errs.PermissionDenied, "wrong master key"},
		{"gateway not found", opGet, 404, `{"code":5,"message":"key context e not found"}`, errs.NotFound, "key context e not found"},
		{"gateway aborted", opEncrypt, 409, `{"code":10,"message":"concurrent change"}`, errs.Aborted, "concurrent change"},
		{"gateway internal", opEncrypt, 500, `{"code":13,"message":"internal error; quote request id r1"}`,
			errs.Internal, "the encryption service failed"},
		{"gateway unavailable", opEncrypt, 503, `{"code":14,"message":"database unreachable"}`, errs.Unavailable, msgUnavailable},
		{"gateway unimplemented", opRewrap, 501, `{"code":12,"message":"RewrapBatch is not implemented"}`,
			errs.FailedPrecondition, "the encryption service cannot rewrap"},

		{"plain 400", opEncrypt, 400, `bad request`, errs.Invalid, "refused the request as invalid"},
		{"seed error string", opEncrypt, 400, `{"error":"data is required"}`, errs.Invalid, "data is required"},
		{"plain 401", opEncrypt, 401, ``, errs.Internal, "rejected core's credential"},
		{"plain 403", opDecrypt, 403, ``, errs.PermissionDenied, "wrong master key"},
		{"plain 404 on a seed method", opDecrypt, 404, `not found`, errs.NotFound, "not found"},
		{"plain 404 on a method beyond the seed", opGet, 404, "404 page not found\n", errs.FailedPrecondition,
			"cannot describe key contexts"},
		{"any 404 on create", opCreate, 404, `{"code":5,"message":"Not Found"}`, errs.FailedPrecondition, "must support key contexts"},
		{"405 on rewrap", opRewrap, 405, ``, errs.FailedPrecondition, "cannot rewrap"},
		{"409", opCreate, 409, ``, errs.Conflict, "already exists"},
		{"412", opDecrypt, 412, ``, errs.FailedPrecondition, "current state"},
		{"413", opEncrypt, 413, ``, errs.ResourceExhausted, "limits"},
		{"429", opEncrypt, 429, `{"message":"slow down"}`, errs.ResourceExhausted, "slow down"},
		{"500", opEncrypt, 500, `oops`, errs.Unavailable, msgUnavailable},
		{"502", opEncrypt, 502, `<html>bad gateway</html>`, errs.Unavailable, msgUnavailable},
		{"redirect", opEncrypt, 307, ``, errs.Internal, "redirect"},
		{"gRPC code out of range is ignored", opEncrypt, 404, `{"code":404,"message":"no"}`, errs.NotFound, "no"},
		{"unknown 4xx", opEncrypt, 418, ``, errs.Internal, "the encryption service failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := toErrs(tc.op, httpErr(tc.op, tc.status, []byte(tc.body)))
			wantKind(t, "toErrs(httpErr)", err, tc.kind, tc.msg)
		})
	}
}

// TestRetryableHTTPErrors: only answers saying the service is unavailable are retried and count
// against the breaker.
func TestRetryableHTTPErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   outcome
	}{
		{503, ``, unreachable},
		{502, ``, unreachable},
		{504, ``, unreachable},
		{408, ``, unreachable},
		{500, `{"code":13,"message":"internal"}`, reachable},
		{400, ``, reachable},
		{429, ``, reachable},
		{401, ``, reachable},
	} {
		if got := classify(t.Context(), httpErr(opEncrypt, tc.status, []byte(tc.body))); got != tc.want {
			t.Errorf("classify(HTTP %d %s) = %v, want %v", tc.status, tc.body, got, tc.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"key context e not found", "key context e not found"},
		{"line\nbreak\x1b[31m", "line break [31m"},
		{"bad \xff utf8", "bad   utf8"},
		{strings.Repeat("a", 400), strings.Repeat("a", 300) + "…"},
	} {
		if got := sanitize(tc.in); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestToErrsPassesErrsThrough(t *testing.T) {
	in := errs.E(errs.Invalid, "data: required")
	if got := toErrs(opEncrypt, in); got != error(in) { //nolint:errorlint // identity is the point: the error must come back unchanged
		t.Errorf("toErrs(*errs.Error) = %v, want it unchanged", got)
	}
	wantKind(t, "toErrs(plain error)", toErrs(opEncrypt, errors.New("boom")), errs.Internal)
}

func TestCredentialRedacted(t *testing.T) {
	c := credential{tenantID: "t1", secret: "cts_very-secret"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(f, c); strings.Contains(got, "cts_very-secret") {
			t.Errorf("Sprintf(%q, credential) = %q: shows the secret", f, got)
		}
	}
}
