package conformance_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/conformance"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

// TestKitReportsBrokenServices runs TestConformance, as a user would, in a child process of this
// test binary pointed at fakeES: a correct fake must pass, and each deliberately broken one must
// fail with the named checks, saying what was sent, received and expected, while unrelated checks
// still pass. So the suite is shown able to fail, and to fail precisely.
func TestKitReportsBrokenServices(t *testing.T) {
	tests := []struct {
		name   string
		full   bool     // the fake offers key contexts, rewrap, batches and lifecycle
		defect string   // "" for a correct fake
		stops  bool     // the run fails as a whole, before any check
		fail   []string // subtests of TestConformance that must fail
		pass   []string // subtests that must still pass
		says   []string // what the report must say
	}{
		{
			name: "correct seed-only service",
			pass: []string{"transport/tls12_refused", "auth/wrong_secret/encrypt", "seed/round_trip/one_MiB", "seed/rotate/old_data_still_decrypts"},
			says: []string{"sections skipped:", "contexts     the target does not create key contexts: POST /v1/encryptions answered 404"},
		},
		{
			name: "correct full service",
			full: true,
			pass: []string{"contexts/get/after_rotate", "rewrap/answer/encryptionVersionId_is_the_version", "batch/decrypt/bad_item_fails_alone",
				"batch/rewrap/bad_item_fails_alone", "lifecycle/destroy/data_unrecoverable", "lifecycle/destroy_context"},
			says: []string{"--- SKIP: TestConformance/contexts/algorithm/XCHACHA20-POLY1305", "client-mode  no client master key configured"},
		},
		{
			name:   "wrong field name",
			defect: defectWrongFieldName,
			fail:   []string{"seed/encrypt/exactly_the_seed_fields", "seed/encrypt/cipherText_is_base64"},
			pass:   []string{"transport/tls12_refused", "seed/encrypt/metadata_is_an_object"},
			says:   []string{`received: 200 {"algorithm":"AES-256-GCM","cipher_text":`, `expected: a JSON object with a string field "cipherText"`},
		},
		{
			name:   "decrypt alters data",
			defect: defectAlteredData,
			fail:   []string{"seed/round_trip/unicode", "seed/round_trip/one_MiB"},
			pass:   []string{"seed/round_trip/ascii", "seed/round_trip/empty"},
			says:   []string{"expected: data byte-for-byte as encrypted:"},
		},
		{
			name:   "rotate keeps the version",
			defect: defectRotateKeepsVersion,
			fail:   []string{"seed/rotate/new_version_differs", "seed/rotate/ciphertext_under_wrong_version_refused"},
			pass:   []string{"seed/rotate/exactly_newVersionId", "seed/rotate/old_data_still_decrypts"},
			says:   []string{`expected: a "newVersionId" other than the version before`},
		},
		{
			name:   "tampered ciphertext accepted",
			defect: defectAcceptsTampered,
			fail:   []string{"seed/tamper/cipherText_first_bit_flipped", "seed/tamper/metadata_nonce_altered"},
			pass:   []string{"seed/tamper/cipherText_not_base64", "seed/round_trip/unicode"},
			says:   []string{"expected: a 4xx refusal (the ciphertext or its metadata was altered)"},
		},
		{
			name:   "tenant secret not checked",
			defect: defectNoAuth,
			fail:   []string{"auth/wrong_secret/encrypt", "auth/no_credential/rotate"},
			pass:   []string{"seed/round_trip/ascii"},
			says:   []string{"X-Tenant-Secret: (redacted)", "expected: status 401 Unauthorized"},
		},
		{
			name:   "unknown JSON fields ignored",
			defect: defectLaxJSON,
			fail:   []string{"seed/errors/unknown_json_field_400/encrypt", "seed/errors/unknown_json_field_400/rotate"},
			pass:   []string{"seed/errors/malformed_json_400/encrypt"},
			says:   []string{`"plaintext":"x"`, "expected: status 400 Bad Request"},
		},
		{
			name:   "unknown context is 400",
			defect: defectUnknownIs400,
			fail:   []string{"seed/errors/unknown_encryption_id_404/encrypt", "seed/errors/unknown_encryption_id_404/rotate"},
			pass:   []string{"seed/errors/malformed_encryption_id_400/encrypt"},
			says:   []string{"expected: status 404 Not Found"},
		},
		{
			name:   "TLS 1.2 accepted",
			defect: defectTLS12,
			fail:   []string{"transport/tls12_refused"},
			pass:   []string{"transport/no_client_certificate_refused", "transport/untrusted_client_certificate_refused"},
			says:   []string{"received: the handshake completed with TLS 1.2"},
		},
		{
			name:   "TLS 1.2 only",
			defect: defectTLS12Only,
			stops:  true,
			says: []string{"the service does not speak TLS 1.3: a handshake offering at most TLS 1.2 completed with TLS 1.2",
				"--- FAIL: TestConformance "},
		},
		{
			name:   "unknown tenant told from wrong secret",
			defect: defectTenantOracle,
			fail: []string{"auth/same_answer_for_unknown_tenant_and_wrong_secret/encrypt",
				"auth/same_answer_for_unknown_tenant_and_wrong_secret/rotate"},
			pass: []string{"auth/wrong_secret/encrypt", "auth/unknown_tenant/encrypt"},
			says: []string{`"reason":"no such tenant"`, "expected: the same status and body for both"},
		},
		{
			name:   "unknown version is 400",
			defect: defectUnknownVersionIs400,
			fail:   []string{"seed/encryption_version_id/unknown_version_refused"},
			pass:   []string{"seed/encryption_version_id/active_version_used", "seed/encryption_version_id/malformed_400"},
			says:   []string{"expected: status 404 Not Found"},
		},
		{
			name:   "destroyed context is 400",
			full:   true,
			defect: defectDestroyedIs400,
			fail:   []string{"lifecycle/destroy_context"},
			pass:   []string{"lifecycle/destroy/data_unrecoverable", "lifecycle/unknown_version_404"},
			says:   []string{"expected: status 404 Not Found", "was destroyed"},
		},
		{
			name:   "destroyed context told from an unknown one",
			full:   true,
			defect: defectDestroyedToldApart,
			fail:   []string{"lifecycle/destroy_context"},
			pass:   []string{"lifecycle/destroy/data_unrecoverable"},
			says:   []string{"expected: the same answer (ids aside) for the destroyed context as for one that never existed"},
		},
		{
			name:   "client certificate not required",
			defect: defectNoClientCert,
			fail:   []string{"transport/no_client_certificate_refused"},
			pass:   []string{"transport/untrusted_client_certificate_refused", "transport/tls12_refused"},
			says:   []string{"(without a client certificate)", "expected: the connection refused (TLS alert) or a 4xx answer"},
		},
		{
			name:   "batch fails as a whole",
			full:   true,
			defect: defectBatchFailsAll,
			fail:   []string{"batch/encrypt/bad_item_fails_alone", "batch/decrypt/bad_item_fails_alone"},
			pass:   []string{"batch/decrypt/in_order"},
			says:   []string{`expected: status 200 and {"results": [...]} with 4 results, one per item, in order: a bad item fails alone`},
		},
		{
			name:   "disabled version still decrypts",
			full:   true,
			defect: defectDisableIgnored,
			fail:   []string{"lifecycle/disable/refuses_decrypt"},
			pass:   []string{"lifecycle/disable/answer", "lifecycle/destroy/data_unrecoverable"},
			says:   []string{"expected: status 400 Bad Request"},
		},
		{
			name:   "rewrap keeps the version",
			full:   true,
			defect: defectRewrapKeepsVersion,
			fail:   []string{"rewrap/answer/encryptionVersionId_is_the_version"},
			pass:   []string{"rewrap/decrypts_to_the_original", "rewrap/tampered_refused"},
			says:   []string{`expected: "encryptionVersionId": the version`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runKitAgainstFake(t, tt.full, tt.defect)
			t.Logf("TestConformance against the fake (go test -v shows it):\n%s", out)
			var exit *exec.ExitError
			broken := len(tt.fail) > 0 || tt.stops
			switch {
			case !broken && err != nil:
				t.Errorf("TestConformance against the correct fake = %v, want success; output:\n%s", err, out)
			case broken && !errors.As(err, &exit):
				t.Errorf("TestConformance against the fake with defect %s = %v, want a failing exit; output:\n%s", tt.defect, err, out)
			}
			for _, name := range tt.fail {
				if !strings.Contains(out, "--- FAIL: TestConformance/"+name+" ") {
					t.Errorf("output lacks the failure of %s; output:\n%s", name, out)
				}
			}
			for _, name := range tt.pass {
				if !strings.Contains(out, "--- PASS: TestConformance/"+name+" ") {
					t.Errorf("output lacks the pass of %s; output:\n%s", name, out)
				}
			}
			for _, s := range tt.says {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q; output:\n%s", s, out)
				}
			}
			if strings.Contains(out, fakeSecret) {
				t.Errorf("output shows the tenant secret")
			}
		})
	}
}

// fakeSecret is the fake's tenant secret; no report may show it.
const fakeSecret = "cts_fake-secret-that-must-never-be-printed"

// runKitAgainstFake serves a fakeES over mutual TLS and runs TestConformance against it in a child
// process of this test binary, configured through the environment as a user would. It returns the
// child's verbose output and its exit error.
func runKitAgainstFake(t *testing.T, full bool, defect string) (string, error) {
	t.Helper()
	certs := testcerts.New(t)
	tenantID := fakeID()
	fake := newFakeES(tenantID, fakeSecret, full, defect)
	id, _ := fake.newContext()

	srv := httptest.NewUnstartedServer(fake.handler())
	srv.TLS = certs.ServerConfig()
	srv.TLS.NextProtos = []string{"http/1.1"}
	switch defect {
	case defectTLS12:
		srv.TLS.MinVersion = tls.VersionTLS12
	case defectNoClientCert:
		srv.TLS.ClientAuth = tls.VerifyClientCertIfGiven
	case defectTLS12Only:
		srv.TLS.MinVersion, srv.TLS.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)

	env := []string{
		conformance.EnvURL + "=" + srv.URL,
		conformance.EnvServerName + "=" + testcerts.ServerName,
		conformance.EnvCAFile + "=" + certs.CAFile,
		conformance.EnvClientCertFile + "=" + certs.ClientCertFile,
		conformance.EnvClientKeyFile + "=" + certs.ClientKeyFile,
		conformance.EnvTenantID + "=" + tenantID,
		conformance.EnvTenantSecret + "=" + fakeSecret,
	}
	if !full {
		env = append(env, conformance.EnvEncryptionID+"="+id)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONFORMANCE_") {
			env = append(env, kv)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestConformance$", "-test.v", "-test.count=1")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}
