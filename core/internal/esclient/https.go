package esclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/errs"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// httpsClient is a Client over the seed's REST/JSON contract, for tenant-hosted services with
// protocol https: POST /v1/encrypt, /v1/decrypt and /v1/rotate, and where the service has them
// POST /v1/encryptions, GET /v1/encryptions/{id}, POST /v1/rewrap:batch and the version and
// master-key methods of the encryption service's OpenAPI document.
type httpsClient struct {
	base        string // the service's URL, without a trailing slash
	http        *http.Client
	cred        credential
	call        *caller
	maxResponse int64
	hooks       httpsHooks
}

var _ Client = (*httpsClient)(nil)

// newHTTPClient returns an HTTP client for one hosted endpoint: TLS 1.3 only, trusting tlsConfig's
// roots, presenting its certificate if any, following no redirect (a redirect would carry the
// tenant's secret to wherever it points).
func newHTTPClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSClientConfig:       tlsConfig,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// headers are the optional headers of one request.
type headers struct {
	masterKey, newMasterKey []byte
}

// roundTrip calls method path with in as its JSON body (nil: none) and decodes a 2xx answer into
// out (nil: ignored).
func (h *httpsClient) roundTrip(ctx context.Context, o op, method, path string, hd headers, in, out any) error {
	mk, err := encodeMasterKey("X-Master-Key", hd.masterKey)
	if err != nil {
		return err
	}
	nk, err := encodeMasterKey("X-New-Master-Key", hd.newMasterKey)
	if err != nil {
		return err
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return errs.Wrap(errs.Internal, err, "encode the request to the encryption service")
		}
	}
	return h.call.do(ctx, o, func(ctx context.Context, _ bool) error {
		start := time.Now()
		ctx, span := h.hooks.startSpan(ctx, o, method, h.base+path)
		status, err := h.attempt(ctx, o, method, path, body, mk, nk, out)
		code := attemptCode(err)
		endSpan(span, status, code)
		if h.hooks.observe != nil {
			h.hooks.observe(o.name, code, time.Since(start))
		}
		return err
	})
}

// attempt makes one request and returns the HTTP status answered (0: none) with the attempt's
// error, a *remoteError or an *errs.Error.
func (h *httpsClient) attempt(ctx context.Context, o op, method, path string, body []byte, mk, nk string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, errs.Wrap(errs.Internal, err, "the tenant's encryption service URL is malformed")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Tenant-Id", h.cred.tenantID)
	req.Header.Set("X-Tenant-Secret", h.cred.secret)
	if id := h.call.requestIDOf(ctx); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	if mk != "" {
		req.Header.Set("X-Master-Key", mk)
	}
	if nk != "" {
		req.Header.Set("X-New-Master-Key", nk)
	}
	if h.hooks.propagator != nil {
		h.hooks.propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, transportErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return resp.StatusCode, httpErr(o, resp.StatusCode, b)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, h.maxResponse+1))
	if err != nil {
		return resp.StatusCode, transportErr(err)
	}
	if int64(len(b)) > h.maxResponse {
		return resp.StatusCode, errs.E(errs.Internal, "the encryption service's answer is over core's limit of %d bytes", h.maxResponse)
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, errs.Wrap(errs.Internal, err, "the encryption service answered malformed JSON")
	}
	return resp.StatusCode, nil
}

// attemptCode is the gRPC code an attempt ended with, for metrics and spans: that of its
// remoteError, Internal for the faults found on core's side (*errs.Error).
func attemptCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var re *remoteError
	if errors.As(err, &re) {
		return re.code
	}
	return codes.Internal
}

// tracerName names the tracer of the HTTPS client's spans.
const tracerName = "github.com/custos-platform/custos/core/internal/esclient"

// httpsHooks are what RouterOptions.ObserveHTTPS and Tracing give every HTTPS client; the zero
// value does nothing.
type httpsHooks struct {
	observe    func(method string, code codes.Code, elapsed time.Duration)
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

// startSpan starts the client span of one attempt, as otelgrpc does for each gRPC attempt; it
// returns nil without a tracer. The span carries the method and URL, never a header or body.
func (k httpsHooks) startSpan(ctx context.Context, o op, method, url string) (context.Context, trace.Span) {
	if k.tracer == nil {
		return ctx, nil
	}
	return k.tracer.Start(ctx, "HTTPS "+o.name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("rpc.method", o.name),
		attribute.String("http.request.method", method),
		attribute.String("url.full", url),
	))
}

// endSpan ends span (nil: none) with the attempt's outcome. Its status names the code only: the
// error's text is for core's log.
func endSpan(span trace.Span, httpStatus int, code codes.Code) {
	if span == nil {
		return
	}
	if httpStatus != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", httpStatus))
	}
	span.SetAttributes(attribute.Int64("rpc.grpc.status_code", int64(code)))
	if code != codes.OK {
		span.SetStatus(otelcodes.Error, code.String())
	}
	span.End()
}

// transportErr classifies a failure to get an answer. A certificate the client does not trust,
// or a handshake the service refuses, is a configuration fault an operator must fix: Internal,
// not retried. Anything else is Unavailable.
func transportErr(err error) error {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		alert      tls.AlertError
		recordHdr  tls.RecordHeaderError
		netTimeout interface{ Timeout() bool }
	)
	switch {
	case errors.Is(err, context.Canceled):
		return &remoteError{code: codes.Canceled, err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &remoteError{code: codes.DeadlineExceeded, err: err}
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify),
		errors.As(err, &alert), errors.As(err, &recordHdr):
		return errs.Wrap(errs.Internal, err,
			"cannot make a trusted TLS 1.3 connection to the tenant's encryption service: an operator must check its URL, CA bundle and client certificate")
	case errors.As(err, &netTimeout) && netTimeout.Timeout():
		return &remoteError{code: codes.DeadlineExceeded, err: err}
	}
	return &remoteError{code: codes.Unavailable, err: err}
}

// httpErr turns an error answer into a remoteError. The encryption service's gateway answers
// {"code": <gRPC code>, "message": …}; other services may answer anything, and then the HTTP
// status decides.
func httpErr(o op, httpStatus int, body []byte) error {
	var gw struct {
		Code    *int            `json:"code"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	re := &remoteError{code: codeOfStatus(httpStatus), status: httpStatus}
	grpcCode := false
	if json.Unmarshal(body, &gw) == nil {
		if gw.Code != nil && *gw.Code > 0 && *gw.Code <= int(codes.Unauthenticated) {
			re.code, grpcCode = codes.Code(*gw.Code), true
		}
		msg := gw.Message
		var s string
		if msg == "" && json.Unmarshal(gw.Error, &s) == nil {
			msg = s
		}
		re.message = sanitize(msg)
	}
	switch {
	case httpStatus >= 300 && httpStatus < 400:
		return errs.E(errs.Internal, "the tenant's encryption service answered with a redirect (HTTP %d), which core does not follow", httpStatus)
	case o.routeOnly404 && (httpStatus == http.StatusNotFound || httpStatus == http.StatusMethodNotAllowed):
		re.code = codes.Unimplemented
	case httpStatus == http.StatusNotFound && !grpcCode && o.unsupported != "":
		// A plain 404 on a method beyond the seed's: most likely the route does not exist.
		re.code = codes.Unimplemented
	}
	return re
}

// codeOfStatus is the gRPC code an HTTP status stands for, when the answer does not say.
func codeOfStatus(s int) codes.Code {
	switch s {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusRequestTimeout:
		return codes.DeadlineExceeded
	case http.StatusConflict:
		return codes.AlreadyExists
	case http.StatusPreconditionFailed:
		return codes.FailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	}
	if s >= 500 {
		return codes.Unavailable
	}
	return codes.Unknown
}

// Wire forms of the seed's REST contract (camelCase JSON).
type (
	encryptReq struct {
		EncryptionID string `json:"encryptionId"`
		Data         string `json:"data"`
	}
	ciphertextJSON struct {
		CipherText          string          `json:"cipherText"`
		EncryptionID        string          `json:"encryptionId"`
		EncryptionVersionID string          `json:"encryptionVersionId"`
		Algorithm           string          `json:"algorithm,omitempty"`
		Metadata            json.RawMessage `json:"metadata,omitempty"`
	}
	decryptReq struct {
		EncryptionID        string          `json:"encryptionId"`
		CipherText          string          `json:"cipherText"`
		EncryptionVersionID string          `json:"encryptionVersionId"`
		Metadata            json.RawMessage `json:"metadata,omitempty"`
	}
	itemErrorJSON struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	rewrapResultJSON struct {
		ciphertextJSON
		Error *itemErrorJSON `json:"error"`
	}
	encryptionJSON struct {
		EncryptionID    string `json:"encryptionId"`
		Algorithm       string `json:"algorithm"`
		KeyMode         string `json:"keyMode"`
		ActiveVersionID string `json:"activeVersionId"`
		Versions        []struct {
			VersionID string `json:"versionId"`
			Version   int    `json:"version"`
			State     string `json:"state"`
		} `json:"versions"`
	}
)

func (c ciphertextJSON) ciphertext() Ciphertext {
	m := c.Metadata
	if string(m) == "null" {
		m = nil
	}
	return Ciphertext{CipherText: c.CipherText, EncryptionID: c.EncryptionID, VersionID: c.EncryptionVersionID,
		Algorithm: c.Algorithm, Metadata: m}
}

func decryptBody(c Ciphertext) (decryptReq, error) {
	if err := checkID("encryptionId", c.EncryptionID); err != nil {
		return decryptReq{}, err
	}
	if err := checkID("encryptionVersionId", c.VersionID); err != nil {
		return decryptReq{}, err
	}
	if err := checkID("cipherText", c.CipherText); err != nil {
		return decryptReq{}, err
	}
	if err := checkMetadata(c.Metadata); err != nil {
		return decryptReq{}, err
	}
	return decryptReq{EncryptionID: c.EncryptionID, CipherText: c.CipherText, EncryptionVersionID: c.VersionID, Metadata: c.Metadata}, nil
}

// CreateContext implements Client.
func (h *httpsClient) CreateContext(ctx context.Context, keyMode string, masterKey []byte) (string, error) {
	in := struct {
		KeyMode string `json:"keyMode,omitempty"`
	}{keyMode}
	var out struct {
		EncryptionID string `json:"encryptionId"`
	}
	if err := h.roundTrip(ctx, opCreate, http.MethodPost, "/v1/encryptions", headers{masterKey: masterKey}, in, &out); err != nil {
		return "", err
	}
	if out.EncryptionID == "" {
		return "", errs.E(errs.Internal, "the encryption service created a key context without an id")
	}
	return out.EncryptionID, nil
}

// Encrypt implements Client.
func (h *httpsClient) Encrypt(ctx context.Context, encryptionID, data string, masterKey []byte) (Ciphertext, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return Ciphertext{}, err
	}
	if err := checkData(data); err != nil {
		return Ciphertext{}, err
	}
	var out ciphertextJSON
	err := h.roundTrip(ctx, opEncrypt, http.MethodPost, "/v1/encrypt", headers{masterKey: masterKey},
		encryptReq{EncryptionID: encryptionID, Data: data}, &out)
	if err != nil {
		return Ciphertext{}, err
	}
	return checkAnswered(encryptionID, out.ciphertext())
}

// Decrypt implements Client.
func (h *httpsClient) Decrypt(ctx context.Context, c Ciphertext, masterKey []byte) (string, error) {
	in, err := decryptBody(c)
	if err != nil {
		return "", err
	}
	var out struct {
		Data *string `json:"data"`
	}
	if err := h.roundTrip(ctx, opDecrypt, http.MethodPost, "/v1/decrypt", headers{masterKey: masterKey}, in, &out); err != nil {
		return "", err
	}
	if out.Data == nil {
		return "", errs.E(errs.Internal, "the encryption service answered a decryption without data")
	}
	return *out.Data, nil
}

// Rotate implements Client.
func (h *httpsClient) Rotate(ctx context.Context, encryptionID string) (string, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return "", err
	}
	in := struct {
		EncryptionID string `json:"encryptionId"`
	}{encryptionID}
	var out struct {
		NewVersionID string `json:"newVersionId"`
	}
	if err := h.roundTrip(ctx, opRotate, http.MethodPost, "/v1/rotate", headers{}, in, &out); err != nil {
		return "", err
	}
	if out.NewVersionID == "" {
		return "", errs.E(errs.Internal, "the encryption service rotated without naming the new version")
	}
	return out.NewVersionID, nil
}

// GetContext implements Client.
func (h *httpsClient) GetContext(ctx context.Context, encryptionID string) (Context, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return Context{}, err
	}
	var out encryptionJSON
	err := h.roundTrip(ctx, opGet, http.MethodGet, "/v1/encryptions/"+url.PathEscape(encryptionID), headers{}, nil, &out)
	if err != nil {
		return Context{}, err
	}
	if out.ActiveVersionID == "" {
		return Context{}, errs.E(errs.Internal, "the encryption service described a key context without its active version")
	}
	c := Context{ActiveVersionID: out.ActiveVersionID, KeyMode: out.KeyMode, Algorithm: out.Algorithm,
		Versions: make([]Version, 0, len(out.Versions))}
	for _, v := range out.Versions {
		c.Versions = append(c.Versions, Version{ID: v.VersionID, Version: v.Version, State: v.State})
	}
	return c, nil
}

// RewrapBatch implements Client.
func (h *httpsClient) RewrapBatch(ctx context.Context, items []Ciphertext, masterKey []byte) ([]RewrapResult, error) {
	results := make([]RewrapResult, len(items))
	var in struct {
		Items []decryptReq `json:"items"`
	}
	var sent []int
	for i, it := range items {
		d, err := decryptBody(it)
		if err != nil {
			results[i].Err = err
			continue
		}
		in.Items = append(in.Items, d)
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return results, nil
	}
	var out struct {
		Results []rewrapResultJSON `json:"results"`
	}
	if err := h.roundTrip(ctx, opRewrap, http.MethodPost, "/v1/rewrap:batch", headers{masterKey: masterKey}, in, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(sent) {
		return nil, errs.E(errs.Internal, "the encryption service answered %d rewrap results for %d items", len(out.Results), len(sent))
	}
	for j, r := range out.Results {
		i := sent[j]
		if r.Error != nil {
			results[i].Err = toErrs(opRewrap, &remoteError{code: wireCode(int64(r.Error.Code)), message: sanitize(r.Error.Message)})
			continue
		}
		results[i].Ciphertext, results[i].Err = checkAnswered(items[i].EncryptionID, r.ciphertext())
	}
	return results, nil
}

// DisableVersion implements Client.
func (h *httpsClient) DisableVersion(ctx context.Context, encryptionID, versionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	if err := checkID("versionId", versionID); err != nil {
		return err
	}
	path := "/v1/encryptions/" + url.PathEscape(encryptionID) + "/versions/" + url.PathEscape(versionID) + ":disable"
	return h.roundTrip(ctx, opDisable, http.MethodPost, path, headers{}, struct{}{}, nil)
}

// EnableVersion implements Client.
func (h *httpsClient) EnableVersion(ctx context.Context, encryptionID, versionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	if err := checkID("versionId", versionID); err != nil {
		return err
	}
	path := "/v1/encryptions/" + url.PathEscape(encryptionID) + "/versions/" + url.PathEscape(versionID) + ":enable"
	return h.roundTrip(ctx, opEnable, http.MethodPost, path, headers{}, struct{}{}, nil)
}

// ChangeMasterKey implements Client.
func (h *httpsClient) ChangeMasterKey(ctx context.Context, encryptionID string, oldKey, newKey []byte) error {
	if err := checkKeyChange(encryptionID, oldKey, newKey); err != nil {
		return err
	}
	path := "/v1/encryptions/" + url.PathEscape(encryptionID) + ":changeMasterKey"
	return h.roundTrip(ctx, opChangeKey, http.MethodPost, path, headers{masterKey: oldKey, newMasterKey: newKey}, struct{}{}, nil)
}

// DestroyContext implements Client. A plain 404 (not the service's JSON error naming NOT_FOUND)
// means the route does not exist: FailedPrecondition, so that a service lacking the method is not
// taken for one that destroyed the context.
func (h *httpsClient) DestroyContext(ctx context.Context, encryptionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	path := "/v1/encryptions/" + url.PathEscape(encryptionID)
	return h.roundTrip(ctx, opDestroy, http.MethodDelete, path, headers{}, nil, nil)
}

// baseURL checks a hosted service's URL (https, a host, no query) and returns it without a
// trailing slash.
func baseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("want https://host[:port][/path]")
	}
	return strings.TrimRight(u.String(), "/"), nil
}
