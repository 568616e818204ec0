// Package conformance is a test suite that any Encryption Service can be run against through the
// REST contract: the seed's POST /v1/encrypt, /v1/decrypt and /v1/rotate with their exact JSON
// names, over mutual TLS 1.3 with a tenant's X-Tenant-Id and X-Tenant-Secret, and the error codes
// of the Custos design. Sections beyond the seed (key contexts, rewrap, data keys, batches, version lifecycle,
// CLIENT mode, the admin plane's tenants) are checked when the target offers them and skipped,
// with the reason, when it answers 404, 405 or 501.
//
// Run it from a test:
//
//	func TestMyService(t *testing.T) {
//		conformance.Run(t, conformance.Target{BaseURL: "https://es.example:9443", ...})
//	}
//
// or run this package's own TestConformance with CONFORMANCE_URL and friends set (see
// LoadTarget and docs/conformance.md). Every check is a named subtest; a failure says what was
// sent, what came back and what was expected. Secrets (tenant secret, master keys, admin token)
// never appear in the output.
//
// The suite creates key contexts and rotates them, and with an admin token creates a tenant:
// point it at a tenant kept for testing, never at one holding real data.
package conformance

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Section names a group of checks. The names are the first level of the subtests' names.
type Section string

// The sections, in the order Run runs them (see Sections). Transport, Auth and Seed are the seed's contract and
// always run; the others run when the target offers them.
const (
	Transport  Section = "transport"   // TLS 1.3 only, client certificate required
	Auth       Section = "auth"        // tenant credential checked: 401
	Seed       Section = "seed"        // encrypt, decrypt, rotate: names, types, round trips, errors
	Contexts   Section = "contexts"    // POST /v1/encryptions, GET /v1/encryptions/{id}
	Rewrap     Section = "rewrap"      // POST /v1/rewrap
	DataKey    Section = "datakey"     // POST /v1/datakey
	Batch      Section = "batch"       // POST /v1/encrypt:batch, /v1/decrypt:batch, /v1/rewrap:batch
	Lifecycle  Section = "lifecycle"   // disable, enable, destroy a version; destroy a context
	ClientMode Section = "client-mode" // CLIENT key contexts under X-Master-Key (needs Target.MasterKey)
	Tenants    Section = "tenants"     // tenant isolation and the admin plane (needs Target.AdminToken)
)

// Sections returns every section in the order Run runs them.
func Sections() []Section {
	return []Section{Transport, Auth, Seed, Contexts, Rewrap, DataKey, Batch, Lifecycle, ClientMode, Tenants}
}

// Target is the encryption service to check and the credentials to check it with.
type Target struct {
	// BaseURL is the service's REST root, "https://host:port" (a path prefix is allowed).
	BaseURL string
	// ServerName is the name the server certificate must carry; empty means the host of BaseURL.
	ServerName string
	// CAFile is the PEM CA bundle that signed the server certificate.
	CAFile string
	// ClientCertFile and ClientKeyFile are a PEM client certificate the service accepts.
	ClientCertFile, ClientKeyFile string

	// TenantID and TenantSecret are the tenant's credential (X-Tenant-Id, X-Tenant-Secret).
	TenantID, TenantSecret string
	// MasterKey is base64 of a 32-byte client master key for the CLIENT-mode checks; empty skips them.
	MasterKey string
	// AdminToken is the admin plane's X-Admin-Token for the tenant checks; empty skips them.
	AdminToken string
	// EncryptionID is an existing PLATFORM key context of the tenant, for targets without
	// POST /v1/encryptions. When empty the suite creates its own contexts.
	EncryptionID string

	// Require lists optional sections that must run: a target lacking one fails instead of skipping.
	Require []Section
	// Timeout bounds each request; zero means 30 seconds.
	Timeout time.Duration
}

// Report says which sections ran and why the others were skipped. A section that ran may still
// have failed: the *testing.T says so.
type Report struct {
	mu      sync.Mutex
	skipped map[Section]string
	ran     []Section
}

// Skipped returns the sections that were skipped, with the reason of each.
func (r *Report) Skipped() map[Section]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[Section]string, len(r.skipped))
	for s, why := range r.skipped {
		out[s] = why
	}
	return out
}

// Ran returns the sections that ran, in order.
func (r *Report) Ran() []Section {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ran)
}

func (r *Report) skip(s Section, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped[s] = why
}

func (r *Report) run(s Section) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, s)
}

// Run runs every section against target as subtests of t, in the order of Sections, and returns
// which ran. It fails t at once when target is incomplete (the message names what is missing) or
// its certificate files cannot be loaded.
func Run(t *testing.T, target Target) *Report {
	t.Helper()
	if err := target.validate(); err != nil {
		t.Fatalf("conformance target: %v", err)
	}
	c, err := newClient(target)
	if err != nil {
		t.Fatalf("conformance target: %v", err)
	}
	// One request first, so that an unreachable target or a TLS mismatch is one clear failure
	// rather than one per check.
	probe := request{method: "POST", path: "/v1/encrypt", header: c.tenant(), body: []byte("{}")}
	if _, err := c.send(c.http, probe); err != nil {
		t.Fatalf("cannot reach the encryption service at %s: %s%s\n(is it running, and do CONFORMANCE_URL, the CA and the client certificate belong to it?)",
			c.base, c.redact(err.Error()), c.tls12Hint())
	}
	s := &suite{target: target, c: c, report: &Report{skipped: map[Section]string{}}}
	sections := []struct {
		name Section
		run  func(*testing.T)
	}{
		{Transport, s.transport},
		{Auth, s.auth},
		{Seed, s.seed},
		{Contexts, s.contexts},
		{Rewrap, s.rewrap},
		{DataKey, s.dataKey},
		{Batch, s.batch},
		{Lifecycle, s.lifecycle},
		{ClientMode, s.clientMode},
		{Tenants, s.tenants},
	}
	for _, sec := range sections {
		t.Run(string(sec.name), func(t *testing.T) {
			s.report.run(sec.name)
			sec.run(t)
		})
	}
	if skipped := s.report.Skipped(); len(skipped) > 0 {
		var lines []string
		for _, sec := range Sections() {
			if why, ok := skipped[sec]; ok {
				lines = append(lines, fmt.Sprintf("  %-12s %s", sec, why))
			}
		}
		t.Logf("sections skipped:\n%s", strings.Join(lines, "\n"))
	}
	return s.report
}

// validate names every missing or malformed field at once.
func (t Target) validate() error {
	var errs []error
	u, err := url.Parse(t.BaseURL)
	switch {
	case t.BaseURL == "":
		errs = append(errs, errors.New("BaseURL (CONFORMANCE_URL) is required"))
	case err != nil || u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("BaseURL %q must be an https:// URL with a host", t.BaseURL))
	}
	for _, f := range []struct{ name, env, value string }{
		{"CAFile", "CONFORMANCE_CA_FILE", t.CAFile},
		{"ClientCertFile", "CONFORMANCE_CLIENT_CERT_FILE", t.ClientCertFile},
		{"ClientKeyFile", "CONFORMANCE_CLIENT_KEY_FILE", t.ClientKeyFile},
		{"TenantID", "CONFORMANCE_TENANT_ID", t.TenantID},
		{"TenantSecret", "CONFORMANCE_TENANT_SECRET", t.TenantSecret},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s (%s) is required", f.name, f.env))
		}
	}
	if t.MasterKey != "" {
		if k, err := base64.StdEncoding.DecodeString(t.MasterKey); err != nil || len(k) != 32 {
			errs = append(errs, errors.New("MasterKey (CONFORMANCE_MASTER_KEY) must be base64 of 32 bytes"))
		}
	}
	if t.EncryptionID != "" && !isUUID(t.EncryptionID) {
		errs = append(errs, fmt.Errorf("EncryptionID %q is not a UUID", t.EncryptionID))
	}
	for _, r := range t.Require {
		if !slices.Contains(Sections(), r) {
			errs = append(errs, fmt.Errorf("the required section %q is unknown (known: %v)", r, Sections()))
		}
	}
	if t.Timeout < 0 {
		errs = append(errs, errors.New("the request timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Settings of LoadTarget: the environment variable names. The tenant secret, master key and admin
// token may instead be in a file named by the variable with _FILE appended.
const (
	EnvURL            = "CONFORMANCE_URL"
	EnvServerName     = "CONFORMANCE_SERVER_NAME"
	EnvCAFile         = "CONFORMANCE_CA_FILE"
	EnvClientCertFile = "CONFORMANCE_CLIENT_CERT_FILE"
	EnvClientKeyFile  = "CONFORMANCE_CLIENT_KEY_FILE"
	EnvTenantID       = "CONFORMANCE_TENANT_ID"
	EnvTenantSecret   = "CONFORMANCE_TENANT_SECRET"   //nolint:gosec // a variable's name, not a secret
	EnvMasterKey      = "CONFORMANCE_MASTER_KEY"      // a variable's name, not a secret
	EnvAdminToken     = "CONFORMANCE_ADMIN_TOKEN"     //nolint:gosec // a variable's name, not a secret
	EnvEncryptionID   = "CONFORMANCE_ENCRYPTION_ID"   // an existing PLATFORM context, optional
	EnvRequire        = "CONFORMANCE_REQUIRE"         // comma-separated sections that must run
	EnvTimeout        = "CONFORMANCE_REQUEST_TIMEOUT" // a Go duration, e.g. 30s
)

// LoadTarget reads a Target from getenv, which is given the names above (the caller may answer
// from flags first). It reports configured=false when CONFORMANCE_URL is empty, so that the caller
// can skip. It fails when a value is malformed or a *_FILE cannot be read; the error never holds a
// secret. Missing required settings are reported by Run, all at once.
func LoadTarget(getenv func(string) string) (target Target, configured bool, err error) {
	if getenv(EnvURL) == "" {
		return Target{}, false, nil
	}
	var errs []error
	secret := func(name string) string {
		v := getenv(name)
		file := getenv(name + "_FILE")
		switch {
		case v != "" && file != "":
			errs = append(errs, fmt.Errorf("set %s or %s_FILE, not both", name, name))
		case file != "":
			b, err := os.ReadFile(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s_FILE: %w", name, err))
			}
			v = strings.TrimSpace(string(b))
		}
		return v
	}
	target = Target{
		BaseURL:        strings.TrimRight(getenv(EnvURL), "/"),
		ServerName:     getenv(EnvServerName),
		CAFile:         getenv(EnvCAFile),
		ClientCertFile: getenv(EnvClientCertFile),
		ClientKeyFile:  getenv(EnvClientKeyFile),
		TenantID:       getenv(EnvTenantID),
		TenantSecret:   secret(EnvTenantSecret),
		MasterKey:      secret(EnvMasterKey),
		AdminToken:     secret(EnvAdminToken),
		EncryptionID:   getenv(EnvEncryptionID),
	}
	for _, r := range strings.Split(getenv(EnvRequire), ",") {
		if r = strings.TrimSpace(r); r != "" {
			target.Require = append(target.Require, Section(r))
		}
	}
	if v := getenv(EnvTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q is not a positive duration", EnvTimeout, v))
		}
		target.Timeout = d
	}
	return target, true, errors.Join(errs...)
}

// tlsConfig is the client configuration of every request, or of one of the deliberately wrong
// clients of the transport checks.
type tlsConfig struct {
	roots      *x509.CertPool
	cert       tls.Certificate
	serverName string
}

func loadTLS(target Target) (tlsConfig, error) {
	pemCA, err := os.ReadFile(target.CAFile)
	if err != nil {
		return tlsConfig{}, fmt.Errorf("read CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		return tlsConfig{}, fmt.Errorf("CA file %s holds no PEM certificate", target.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(target.ClientCertFile, target.ClientKeyFile)
	if err != nil {
		return tlsConfig{}, fmt.Errorf("load client certificate: %w", err)
	}
	name := target.ServerName
	if name == "" {
		u, _ := url.Parse(target.BaseURL)
		name = u.Hostname()
	}
	return tlsConfig{roots: roots, cert: cert, serverName: name}, nil
}

// config returns a TLS 1.3 client configuration presenting certs (none when empty).
func (c tlsConfig) config(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      c.roots,
		ServerName:   c.serverName,
		Certificates: certs,
	}
}

func newHTTPClient(cfg *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     cfg,
			TLSHandshakeTimeout: timeout,
			MaxIdleConnsPerHost: 4,
			DisableCompression:  true,
		},
		// An API answers, it does not redirect: a redirect is reported as the answer it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
