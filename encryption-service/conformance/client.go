package conformance

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Header names of the contract.
const (
	hdrTenantID     = "X-Tenant-Id"
	hdrTenantSecret = "X-Tenant-Secret"
	hdrMasterKey    = "X-Master-Key"
	hdrNewMasterKey = "X-New-Master-Key"
	hdrAdminToken   = "X-Admin-Token"
)

// secretHeaders are never shown in a report.
var secretHeaders = []string{hdrTenantSecret, hdrMasterKey, hdrNewMasterKey, hdrAdminToken}

// maxShown bounds how much of a body a report shows.
const maxShown = 600

// maxBody bounds how much of an answer is read: the largest legitimate answer carries 1 MiB of
// data as JSON, which may be escaped up to six times over.
const maxBody = 8 << 20

// client sends the suite's requests and describes them in reports.
type client struct {
	base    string
	tls     tlsConfig
	http    *http.Client
	timeout time.Duration
	target  Target
}

func newClient(target Target) (*client, error) {
	cfg, err := loadTLS(target)
	if err != nil {
		return nil, err
	}
	timeout := target.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &client{
		base:    strings.TrimRight(target.BaseURL, "/"),
		tls:     cfg,
		http:    newHTTPClient(cfg.config(cfg.cert), timeout),
		timeout: timeout,
		target:  target,
	}, nil
}

// addr is the target's host:port, the https port when the URL names none.
func (c *client) addr() string {
	u, err := url.Parse(c.base)
	if err != nil {
		return c.base
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// handshakeTLS12 makes a TLS handshake with the target offering at most TLS 1.2, with the client
// certificate, and returns the version it completed with; an error when it was refused.
func (c *client) handshakeTLS12() (uint16, error) {
	cfg := c.tls.config(c.tls.cert)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: c.timeout}, "tcp", c.addr(), cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().Version, nil
}

// tls12Hint explains a failed first request when the target completes a TLS 1.2 handshake, the
// kit's client offering TLS 1.3 only: the target does not speak TLS 1.3. It is "" otherwise.
func (c *client) tls12Hint() string {
	v, err := c.handshakeTLS12()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("\nthe service does not speak TLS 1.3: a handshake offering at most TLS 1.2 completed with %s, "+
		"while the kit's client, which offers TLS 1.3 only, got no answer; every listener must be TLS 1.3", tlsName(v))
}

// tenant returns the tenant's credential headers plus extra (key, value) pairs.
func (c *client) tenant(extra ...string) map[string]string {
	h := map[string]string{hdrTenantID: c.target.TenantID, hdrTenantSecret: c.target.TenantSecret}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// secrets are the values a report must never show.
func (c *client) secrets() []string {
	var s []string
	for _, v := range []string{c.target.TenantSecret, c.target.MasterKey, c.target.AdminToken} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// request is what the suite sends.
type request struct {
	method, path string
	header       map[string]string
	body         []byte // nil: no body
	via          string // how it was sent when not the ordinary client, e.g. "over TLS 1.2"
}

// response is what came back.
type response struct {
	status int
	body   []byte
	obj    map[string]any // the body as a JSON object (numbers as json.Number); nil otherwise
}

// exchange is one request and its response, for checks and reports.
type exchange struct {
	c    *client
	req  request
	resp response
}

// encodeBody turns a body argument into bytes: nil is no body, a string or []byte is sent as is,
// anything else is marshalled to JSON.
func encodeBody(body any) []byte {
	switch b := body.(type) {
	case nil:
		return nil
	case string:
		return []byte(b)
	case []byte:
		return b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			panic(fmt.Sprintf("conformance: marshal request body: %v", err)) // a bug in the suite
		}
		return raw
	}
}

// send makes one request with hc and reads the whole answer.
func (c *client) send(hc *http.Client, req request) (response, error) {
	var rd io.Reader
	if req.body != nil {
		rd = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequest(req.method, c.base+req.path, rd)
	if err != nil {
		return response{}, err
	}
	if req.body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("Accept", "application/json")
	for k, v := range req.header {
		hreq.Header.Set(k, v)
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return response{}, err
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, maxBody))
	if err != nil {
		return response{}, fmt.Errorf("read answer: %w", err)
	}
	resp := response{status: hresp.StatusCode, body: raw}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if dec.Decode(&obj) == nil && !dec.More() {
		resp.obj = obj
	}
	return resp, nil
}

// do sends a request with the ordinary client and stops the test when no answer comes.
func (c *client) do(t testing.TB, method, path string, header map[string]string, body any) *exchange {
	t.Helper()
	req := request{method: method, path: path, header: header, body: encodeBody(body)}
	resp, err := c.send(c.http, req)
	x := &exchange{c: c, req: req, resp: resp}
	if err != nil {
		t.Fatalf("no answer\n  sent:     %s\n  received: %s\n  expected: an HTTP answer", x.sent(), c.redact(err.Error()))
	}
	return x
}

// redact replaces every secret in s.
func (c *client) redact(s string) string {
	for _, v := range c.secrets() {
		s = strings.ReplaceAll(s, v, "(redacted)")
	}
	return s
}

// shorten keeps the start of a long text and says how long it was.
func shorten(s string) string {
	if len(s) <= maxShown {
		return s
	}
	cut := maxShown - 100
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes in all)", s[:cut], len(s))
}

// sent describes the request without secrets.
func (x *exchange) sent() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", x.req.method, x.req.path)
	if x.req.via != "" {
		fmt.Fprintf(&b, " (%s)", x.req.via)
	}
	var keys []string
	for k := range x.req.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var hs []string
	for _, k := range keys {
		v := x.req.header[k]
		if slices.ContainsFunc(secretHeaders, func(s string) bool { return strings.EqualFold(s, k) }) {
			v = "(redacted)"
		}
		hs = append(hs, k+": "+v)
	}
	if len(hs) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(hs, ", "))
	} else {
		b.WriteString(" [no credential headers]")
	}
	if x.req.body != nil {
		b.WriteString(" ")
		b.WriteString(shorten(x.c.redact(string(x.req.body))))
	}
	return b.String()
}

// received describes the answer without secrets.
func (x *exchange) received() string {
	body := strings.TrimSpace(string(x.resp.body))
	if body == "" {
		body = "(empty body)"
	}
	return fmt.Sprintf("%d %s", x.resp.status, shorten(x.c.redact(body)))
}

// fail reports the exchange and what was expected; the test goes on.
func (x *exchange) fail(t testing.TB, expected string, args ...any) {
	t.Helper()
	t.Errorf("\n  sent:     %s\n  received: %s\n  expected: %s", x.sent(), x.received(), fmt.Sprintf(expected, args...))
}

// fatal is fail that stops the test.
func (x *exchange) fatal(t testing.TB, expected string, args ...any) {
	t.Helper()
	t.Fatalf("\n  sent:     %s\n  received: %s\n  expected: %s", x.sent(), x.received(), fmt.Sprintf(expected, args...))
}

// status reports unless the status is want; it says whether it was.
func (x *exchange) status(t testing.TB, want int) bool {
	t.Helper()
	if x.resp.status != want {
		x.fail(t, "status %d %s", want, http.StatusText(want))
		return false
	}
	return true
}

// mustStatus is status that stops the test.
func (x *exchange) mustStatus(t testing.TB, want int) {
	t.Helper()
	if x.resp.status != want {
		x.fatal(t, "status %d %s", want, http.StatusText(want))
	}
}

// refused reports unless the status is 4xx: the request was understood and turned down, neither
// served (2xx) nor crashing the service (5xx).
func (x *exchange) refused(t testing.TB, why string) bool {
	t.Helper()
	if x.resp.status < 400 || x.resp.status > 499 {
		x.fail(t, "a 4xx refusal (%s)", why)
		return false
	}
	return true
}

// str returns the string field name of the answer, or "" and false when it is absent or not a
// string.
func (x *exchange) str(name string) (string, bool) {
	v, ok := x.resp.obj[name].(string)
	return v, ok
}

// mustStr is str that stops the test, saying which field was expected.
func (x *exchange) mustStr(t testing.TB, name string) string {
	t.Helper()
	v, ok := x.str(name)
	if !ok {
		x.fatal(t, "a JSON object with a string field %q", name)
	}
	return v
}

// offered says whether an endpoint exists: 404, 405 and 501 to a request that is otherwise valid
// mean the target does not offer it.
func (x *exchange) offered() bool {
	switch x.resp.status {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return false
	}
	return true
}

// why describes an answer that shows an endpoint is missing.
func (x *exchange) why() string {
	return fmt.Sprintf("%s %s answered %s", x.req.method, x.req.path, x.received())
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func isUUID(s string) bool { return uuidPattern.MatchString(s) }

// newUUID returns a random (version 4) UUID, which no service has issued.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// keysOf returns the sorted names of an object's fields whose value is not null.
func keysOf(obj map[string]any) []string {
	var ks []string
	for k, v := range obj {
		if v != nil {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// tlsName names a TLS version for reports.
func tlsName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLS 1.0"
	case tls.VersionTLS11:
		return "TLS 1.1"
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	case 0:
		return "no TLS"
	}
	return fmt.Sprintf("TLS version %#x", v)
}
