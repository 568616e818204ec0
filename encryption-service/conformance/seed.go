package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// transport checks that the target speaks only TLS 1.3 and only to clients with a certificate
// from its CA.
func (s *suite) transport(t *testing.T) {
	id := s.context(t)
	encryptBody := map[string]any{"encryptionId": id, "data": "transport check"}

	// A client that demands TLS 1.3 reaches every check only if the target speaks it: Run's first
	// request fails otherwise, saying so (tls12Hint). What is left to check is that the target
	// speaks nothing older.
	t.Run("tls12_refused", func(t *testing.T) {
		addr := s.c.addr()
		v, err := s.c.handshakeTLS12()
		if err != nil {
			t.Logf("TLS 1.2 handshake refused: %v", err)
			return
		}
		t.Errorf("\n  sent:     a TLS handshake to %s offering at most TLS 1.2, with the client certificate\n"+
			"  received: the handshake completed with %s\n"+
			"  expected: the handshake refused: every listener must be TLS 1.3 only", addr, tlsName(v))
	})

	// A client the service must turn away sends a request that would otherwise succeed.
	refused := func(t *testing.T, via string, cfg *tls.Config) {
		t.Helper()
		req := request{method: "POST", path: "/v1/encrypt", header: s.c.tenant(), body: encodeBody(encryptBody), via: via}
		resp, err := s.c.send(newHTTPClient(cfg, s.c.timeout), req)
		x := &exchange{c: s.c, req: req, resp: resp}
		switch {
		case err != nil:
			t.Logf("refused in the TLS handshake: %v", err)
		case resp.status >= 400 && resp.status <= 499:
			t.Logf("refused with HTTP %d (a TLS-terminating proxy's way); refusing in the handshake is better", resp.status)
		default:
			x.fail(t, "the connection refused (TLS alert) or a 4xx answer: every listener requires a client certificate from its CA")
		}
	}
	t.Run("no_client_certificate_refused", func(t *testing.T) {
		refused(t, "without a client certificate", s.c.tls.config())
	})
	t.Run("untrusted_client_certificate_refused", func(t *testing.T) {
		cert, err := selfSignedClientCert()
		if err != nil {
			t.Fatalf("make a self-signed client certificate: %v", err)
		}
		cfg := s.c.tls.config()
		// Sent whatever CAs the server asks for: crypto/tls would otherwise send no certificate.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		refused(t, "with a self-signed client certificate", cfg)
	})
}

// selfSignedClientCert makes a client certificate that no CA vouches for.
func selfSignedClientCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "conformance untrusted client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// auth checks that every seed endpoint answers 401 to a missing or wrong tenant credential, the
// same whatever was wrong.
func (s *suite) auth(t *testing.T) {
	id := s.context(t)
	it := s.encrypt(t, s.c.tenant(), id, "auth check data")
	tenantID, secret := s.target.TenantID, s.target.TenantSecret
	// Same length, last character changed: catches comparisons of a prefix only.
	last := byte('A')
	if secret[len(secret)-1] == last {
		last = 'B'
	}
	wrong := secret[:len(secret)-1] + string(last)

	creds := []struct {
		name   string
		header map[string]string
	}{
		{"wrong_secret", map[string]string{hdrTenantID: tenantID, hdrTenantSecret: wrong}},
		{"no_credential", map[string]string{}},
		{"tenant_id_without_secret", map[string]string{hdrTenantID: tenantID}},
		{"secret_without_tenant_id", map[string]string{hdrTenantSecret: secret}},
		{"unknown_tenant", map[string]string{hdrTenantID: newUUID(), hdrTenantSecret: secret}},
		{"malformed_tenant_id", map[string]string{hdrTenantID: "not-a-uuid", hdrTenantSecret: secret}},
	}
	ops := []struct {
		name, path string
		body       any
	}{
		{"encrypt", "/v1/encrypt", map[string]any{"encryptionId": id, "data": "auth check data"}},
		{"decrypt", "/v1/decrypt", it.decryptBody()},
		{"rotate", "/v1/rotate", map[string]any{"encryptionId": id}},
	}
	answers := map[string]*exchange{}
	for _, cred := range creds {
		for _, op := range ops {
			t.Run(cred.name+"/"+op.name, func(t *testing.T) {
				x := s.c.do(t, "POST", op.path, cred.header, op.body)
				answers[cred.name+"/"+op.name] = x
				x.status(t, http.StatusUnauthorized)
				checkNoLeak(t, x, "tenant secret", secret, wrong)
				checkNoLeak(t, x, "data", "auth check data")
			})
		}
	}
	// A wrong secret and an unknown tenant must look alike, or tenant ids can be enumerated.
	for _, op := range ops {
		t.Run("same_answer_for_unknown_tenant_and_wrong_secret/"+op.name, func(t *testing.T) {
			a, b := answers["wrong_secret/"+op.name], answers["unknown_tenant/"+op.name]
			if a == nil || b == nil {
				t.Skip("an earlier check stopped before both answers came")
			}
			if !sameAnswer(a, b, a.req.header[hdrTenantID], b.req.header[hdrTenantID]) {
				t.Errorf("\n  sent:     %s\n  received: %s\n  and sent: %s\n  received: %s\n"+
					"  expected: the same status and body for both (tenant ids and per-call fields such as a request id aside), so that tenant ids cannot be probed",
					a.sent(), a.received(), b.sent(), b.received())
			}
		})
	}
}

// roundTripData are the data the seed section encrypts and expects back byte for byte.
func roundTripData() []struct{ name, data string } {
	bin := make([]byte, 300)
	rand.Read(bin)
	return []struct{ name, data string }{
		{"ascii", "conformance check: hello, world"},
		{"unicode", "héllo wörld — ñ, 日本語, Ελληνικά, العربية, emoji 🔐👩‍💻, nbsp\u00a0, combining e\u0301, BOM \ufeff"},
		{"empty", ""},
		{"whitespace", "  leading and trailing spaces, tab\t, newline\n, CRLF\r\n  "},
		{"control_characters", "nul \x00, bell \x07, escape \x1b, delete \x7f"},
		{"json_and_html_syntax", `{"a":[1,"b"],"c":null} <script>alert('x')</script> &amp; \ / \u0041`},
		{"base64_binary", base64.StdEncoding.EncodeToString(bin)},
		{"one_MiB", oneMiB()},
	}
}

// oneMiB returns exactly 1 MiB of UTF-8 text mixing one-, two-, three- and four-byte characters.
func oneMiB() string {
	const size = 1 << 20
	unit := "0123456789 abcdef ü é — 日本 🔐 "
	var b strings.Builder
	b.Grow(size)
	for b.Len()+len(unit) <= size {
		b.WriteString(unit)
	}
	b.WriteString(strings.Repeat("x", size-b.Len()))
	return b.String()
}

// seed checks the seed's three endpoints: exact names and types, round trips, the version asked
// for, rotation, tampering and the error codes.
func (s *suite) seed(t *testing.T) {
	ten := s.c.tenant()
	id := s.context(t)
	const data = "conformance: the seed's encrypt"
	first := s.c.do(t, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data})
	t.Run("encrypt", func(t *testing.T) { checkEncryptAnswer(t, first, id, "", data) })
	v1 := mustItem(t, first, data)

	t.Run("encrypt/same_data_twice_differs", func(t *testing.T) {
		again := s.encrypt(t, ten, id, data)
		if again.cipherText == v1.cipherText {
			again.answer.fail(t, "a cipherText different from the first encryption of the same data (%s…): a fresh nonce every time", v1.cipherText[:min(16, len(v1.cipherText))])
		}
	})
	t.Run("decrypt", func(t *testing.T) { checkDecrypted(t, s.decrypt(t, ten, v1), data) })

	for _, rt := range roundTripData() {
		t.Run("round_trip/"+rt.name, func(t *testing.T) {
			it := s.encrypt(t, ten, id, rt.data)
			checkDecrypted(t, s.decrypt(t, ten, it), rt.data)
		})
	}
	t.Run("round_trip/json_escapes", func(t *testing.T) {
		// The same characters as JSON escapes, a surrogate pair among them.
		body := `{"encryptionId":"` + id + `","data":"\u00e9\ud83d\udd10\n\t\"\\\/"}`
		x := s.c.do(t, "POST", "/v1/encrypt", ten, body)
		want := "é🔐\n\t\"\\/"
		checkDecrypted(t, s.decrypt(t, ten, mustItem(t, x, want)), want)
	})

	t.Run("encryption_version_id/active_version_used", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data, "encryptionVersionId": v1.versionID})
		if x.status(t, http.StatusOK) {
			if v, _ := x.str("encryptionVersionId"); !strings.EqualFold(v, v1.versionID) {
				x.fail(t, `"encryptionVersionId": %q, the version asked for`, v1.versionID)
			}
		}
	})
	t.Run("encryption_version_id/unknown_version_refused", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data, "encryptionVersionId": newUUID()})
		x.status(t, http.StatusNotFound) // a version the context does not have
	})
	t.Run("encryption_version_id/malformed_400", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": data, "encryptionVersionId": "v2"})
		x.status(t, http.StatusBadRequest)
	})

	s.seedTamper(t, id, v1)
	s.seedRotate(t, id, v1)
	s.seedErrors(t, id, v1)
}

// seedRotate checks rotation: a new version, used by new encryptions, old data still readable.
func (s *suite) seedRotate(t *testing.T, id string, v1 item) {
	ten := s.c.tenant()
	rot := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
	rot.mustStatus(t, http.StatusOK)
	v2 := rot.mustStr(t, "newVersionId")
	t.Run("rotate/exactly_newVersionId", func(t *testing.T) {
		if ks := keysOf(rot.resp.obj); len(ks) != 1 || ks[0] != "newVersionId" || !isUUID(v2) {
			rot.fail(t, `exactly {"newVersionId": "<uuid>"}`)
		}
	})
	t.Run("rotate/new_version_differs", func(t *testing.T) {
		if strings.EqualFold(v2, v1.versionID) {
			rot.fail(t, `a "newVersionId" other than the version before, %q`, v1.versionID)
		}
	})
	var after item
	t.Run("rotate/new_encryptions_use_new_version", func(t *testing.T) {
		after = s.encrypt(t, ten, id, "after rotation")
		if !strings.EqualFold(after.versionID, v2) {
			after.answer.fail(t, `"encryptionVersionId": %q, the version the rotation made`, v2)
		}
	})
	t.Run("rotate/old_data_still_decrypts", func(t *testing.T) {
		checkDecrypted(t, s.decrypt(t, ten, v1), v1.data)
	})
	t.Run("rotate/new_data_decrypts", func(t *testing.T) {
		if after.answer == nil {
			t.Skip("no encryption after the rotation to decrypt")
		}
		checkDecrypted(t, s.decrypt(t, ten, after), after.data)
	})
	t.Run("rotate/old_version_asked_for", func(t *testing.T) {
		// The seed lets a caller name a version; a service may refuse to encrypt with a retired
		// one, but must never silently use another.
		x := s.c.do(t, "POST", "/v1/encrypt", ten, map[string]any{"encryptionId": id, "data": "x", "encryptionVersionId": v1.versionID})
		if x.resp.status == http.StatusOK {
			if v, _ := x.str("encryptionVersionId"); !strings.EqualFold(v, v1.versionID) {
				x.fail(t, "either a 4xx refusal or an encryption under the version asked for, %q", v1.versionID)
			}
		} else {
			x.refused(t, "the version asked for no longer encrypts")
		}
	})
	t.Run("rotate/ciphertext_under_wrong_version_refused", func(t *testing.T) {
		x := s.c.do(t, "POST", "/v1/decrypt", ten, v1.with("encryptionVersionId", v2))
		x.refused(t, "the ciphertext was made by another version")
		checkNoLeak(t, x, "data", v1.data)
	})
	t.Run("rotate/twice", func(t *testing.T) {
		again := s.c.do(t, "POST", "/v1/rotate", ten, map[string]any{"encryptionId": id})
		again.mustStatus(t, http.StatusOK)
		v3 := again.mustStr(t, "newVersionId")
		if strings.EqualFold(v3, v2) || strings.EqualFold(v3, v1.versionID) {
			again.fail(t, "a third version, other than %q and %q", v1.versionID, v2)
		}
		if it := s.encrypt(t, ten, id, "after two rotations"); !strings.EqualFold(it.versionID, v3) {
			it.answer.fail(t, `"encryptionVersionId": %q`, v3)
		}
		checkDecrypted(t, s.decrypt(t, ten, v1), v1.data)
	})
}

// seedTamper checks that a ciphertext or metadata changed in any way is refused with 4xx and
// never decrypts.
func (s *suite) seedTamper(t *testing.T, id string, good item) {
	ten := s.c.tenant()
	type tamper struct {
		name string
		body map[string]any
	}
	ct := good.cipherText
	flipFirst, _ := flipBit(ct, 0)
	flipLast, _ := flipBit(ct, -1)
	cases := []tamper{
		{"cipherText_first_bit_flipped", good.with("cipherText", flipFirst)},
		{"cipherText_last_bit_flipped", good.with("cipherText", flipLast)},
		{"cipherText_truncated_by_one_byte", good.with("cipherText", alterBase64(ct, func(b []byte) []byte { return b[:len(b)-1] }))},
		{"cipherText_extended_by_one_byte", good.with("cipherText", alterBase64(ct, func(b []byte) []byte { return append(b, 0) }))},
		{"cipherText_empty", good.with("cipherText", "")},
		{"cipherText_not_base64", good.with("cipherText", "@@not base64@@")},
		{"metadata_empty_object", good.with("metadata", map[string]any{})},
		{"metadata_missing", good.with("metadata", nil)},
		{"metadata_not_an_object", good.with("metadata", "nonce")},
	}
	// Every field of the metadata matters: flip a bit of each binary one, change each number.
	if meta, ok := good.metadata.(map[string]any); ok {
		var fields []string
		for k := range meta {
			fields = append(fields, k)
		}
		sort.Strings(fields)
		for _, k := range fields {
			changed := map[string]any{}
			for kk, vv := range meta {
				changed[kk] = vv
			}
			switch v := meta[k].(type) {
			case string:
				if f, ok := flipBit(v, 0); ok {
					changed[k] = f
				} else {
					changed[k] = v + "x"
				}
			case interface{ String() string }: // json.Number
				changed[k] = v.String() + "1"
			default:
				continue
			}
			cases = append(cases, tamper{"metadata_" + k + "_altered", good.with("metadata", changed)})
		}
	}
	for _, tc := range cases {
		t.Run("tamper/"+tc.name, func(t *testing.T) {
			x := s.c.do(t, "POST", "/v1/decrypt", ten, tc.body)
			x.refused(t, "the ciphertext or its metadata was altered")
			checkNoLeak(t, x, "data", good.data)
		})
	}
	t.Run("tamper/ciphertext_of_another_context", func(t *testing.T) {
		if ok, why := s.canCreate(t); !ok {
			t.Skip("needs a second key context: " + why)
		}
		other := s.context(t)
		otherItem := s.encrypt(t, ten, other, "other context")
		x := s.c.do(t, "POST", "/v1/decrypt", ten, good.with("encryptionId", other, "encryptionVersionId", otherItem.versionID))
		x.refused(t, "the ciphertext belongs to another key context")
		checkNoLeak(t, x, "data", good.data)
	})
}

// seedErrors checks the error codes of the seed's endpoints.
func (s *suite) seedErrors(t *testing.T, id string, good item) {
	ten := s.c.tenant()
	unknown := newUUID()
	const secretData = "conformance: never echo me" //nolint:gosec // test data that answers must not echo
	cases := []struct {
		name, path string
		body       any
		want       int
	}{
		{"unknown_encryption_id_404/encrypt", "/v1/encrypt", map[string]any{"encryptionId": unknown, "data": secretData}, 404},
		{"unknown_encryption_id_404/decrypt", "/v1/decrypt", good.with("encryptionId", unknown), 404},
		{"unknown_encryption_id_404/rotate", "/v1/rotate", map[string]any{"encryptionId": unknown}, 404},
		{"unknown_json_field_400/encrypt", "/v1/encrypt", map[string]any{"encryptionId": id, "data": secretData, "plaintext": "x"}, 400},
		{"unknown_json_field_400/decrypt", "/v1/decrypt", good.with("keyId", "x"), 400},
		{"unknown_json_field_400/rotate", "/v1/rotate", map[string]any{"encryptionId": id, "force": true}, 400},
		{"malformed_json_400/encrypt", "/v1/encrypt", `{"encryptionId":"` + id + `","data":`, 400},
		{"malformed_json_400/decrypt", "/v1/decrypt", `[1,2,3]`, 400},
		{"malformed_json_400/rotate", "/v1/rotate", `not json`, 400},
		{"malformed_encryption_id_400/encrypt", "/v1/encrypt", map[string]any{"encryptionId": "not-a-uuid", "data": secretData}, 400},
		{"malformed_encryption_id_400/decrypt", "/v1/decrypt", good.with("encryptionId", "not-a-uuid"), 400},
		{"malformed_encryption_id_400/rotate", "/v1/rotate", map[string]any{"encryptionId": "not-a-uuid"}, 400},
		{"missing_encryption_id_400/encrypt", "/v1/encrypt", map[string]any{"data": secretData}, 400},
		{"missing_encryption_id_400/rotate", "/v1/rotate", map[string]any{}, 400},
		{"wrong_json_type_400/encrypt", "/v1/encrypt", map[string]any{"encryptionId": id, "data": 42}, 400},
	}
	for _, tc := range cases {
		t.Run("errors/"+tc.name, func(t *testing.T) {
			x := s.c.do(t, "POST", tc.path, ten, tc.body)
			x.status(t, tc.want)
			checkNoLeak(t, x, "data", secretData, good.data)
		})
	}
}
