// Package mtls builds TLS 1.3 configurations for servers and clients from
// certificate files that are reloaded from disk while the process runs.
//
// Every configuration it returns refuses anything older than TLS 1.3. Files
// are re-examined (stat, following symlinks) at most once per ReloadInterval
// during handshakes; when a file's identity, size or modification time changed
// the material is reloaded, so a renewed certificate (for example a Kubernetes
// secret whose mounted symlink was swapped) is used by the next handshake
// without a restart. A reload that fails keeps the previous good material and
// logs a warning.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// DefaultReloadInterval is how often, at most, the files are re-examined when
// the options leave ReloadInterval zero.
const DefaultReloadInterval = time.Second

// ClientAuth says whether a server asks for and verifies client certificates.
// The zero value is RequireClientCert.
type ClientAuth int

const (
	// RequireClientCert refuses a client that does not present a certificate
	// chaining to the client CA (tls.RequireAndVerifyClientCert).
	RequireClientCert ClientAuth = iota
	// VerifyClientCertIfGiven accepts clients without a certificate but
	// verifies one that is presented (tls.VerifyClientCertIfGiven).
	VerifyClientCertIfGiven
	// NoClientCert does not ask for a client certificate (tls.NoClientCert).
	NoClientCert
)

// String returns the name of the mode.
func (a ClientAuth) String() string {
	switch a {
	case RequireClientCert:
		return "RequireClientCert"
	case VerifyClientCertIfGiven:
		return "VerifyClientCertIfGiven"
	case NoClientCert:
		return "NoClientCert"
	}
	return fmt.Sprintf("ClientAuth(%d)", int(a))
}

func (a ClientAuth) tlsType() (tls.ClientAuthType, error) {
	switch a {
	case RequireClientCert:
		return tls.RequireAndVerifyClientCert, nil
	case VerifyClientCertIfGiven:
		return tls.VerifyClientCertIfGiven, nil
	case NoClientCert:
		return tls.NoClientCert, nil
	}
	return 0, fmt.Errorf("unknown client auth mode %v", a)
}

// ServerOptions names the files and policy of a server configuration.
type ServerOptions struct {
	CertFile     string // PEM certificate chain, leaf first; required
	KeyFile      string // PEM private key of the leaf; required
	ClientCAFile string // PEM CA certificates for client certificates; required unless ClientAuth is NoClientCert
	ClientAuth   ClientAuth

	// ReloadInterval bounds how often the files are re-examined; zero means
	// DefaultReloadInterval.
	ReloadInterval time.Duration
	// Logger receives reload notices and warnings; nil discards them.
	Logger *slog.Logger
}

// ClientOptions names the files of a client configuration.
type ClientOptions struct {
	CAFile   string // PEM CA certificates that server certificates must chain to; required
	CertFile string // PEM client certificate chain; optional, set together with KeyFile
	KeyFile  string // PEM private key of the client certificate

	// ServerName is the name the server certificate must carry. When set it is
	// verified whatever address is dialed (gRPC overrides the SNI with the
	// dialed host); when empty the SNI name is verified, so dialing an IP
	// address needs ServerName.
	ServerName string

	// ReloadInterval bounds how often the files are re-examined; zero means
	// DefaultReloadInterval.
	ReloadInterval time.Duration
	// Logger receives reload notices and warnings; nil discards them.
	Logger *slog.Logger
}

// nextProtos returns the protocols servers offer: gRPC needs h2, REST
// clients may use either. A fresh slice per config, since configs get cloned
// and appended to.
func nextProtos() []string { return []string{"h2", "http/1.1"} }

// NewServerConfig returns a TLS 1.3-only server configuration whose
// certificate, key and client CAs are reloaded when their files change.
//
// It fails when a required file is missing from opts, when ClientCAFile is set
// with NoClientCert, or when the files cannot be loaded now; the error names
// the file that failed, as in "load server certificate /path: ...".
func NewServerConfig(opts ServerOptions) (*tls.Config, error) {
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("mtls: server options need CertFile and KeyFile")
	}
	authType, err := opts.ClientAuth.tlsType()
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	switch {
	case opts.ClientAuth != NoClientCert && opts.ClientCAFile == "":
		return nil, fmt.Errorf("mtls: %v needs ClientCAFile", opts.ClientAuth)
	case opts.ClientAuth == NoClientCert && opts.ClientCAFile != "":
		return nil, errors.New("mtls: ClientCAFile is set but ClientAuth is NoClientCert")
	}

	files := []string{opts.CertFile, opts.KeyFile}
	if opts.ClientCAFile != "" {
		files = append(files, opts.ClientCAFile)
	}
	load := func() (*tls.Config, error) {
		cert, err := loadKeyPair("server", opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   authType,
			NextProtos:   nextProtos(),
			// Without tickets every connection is verified against the CAs on
			// disk now, not against those of the session it resumes.
			SessionTicketsDisabled: true,
		}
		if opts.ClientCAFile != "" {
			if cfg.ClientCAs, err = loadPool("client CA", opts.ClientCAFile); err != nil {
				return nil, err
			}
		}
		return cfg, nil
	}
	r, err := newReloader(files, opts.ReloadInterval, opts.Logger, "server TLS material", load)
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             authType,
		NextProtos:             nextProtos(),
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(), nil
		},
	}, nil
}

// clientMaterial is what a client configuration reloads.
type clientMaterial struct {
	cert  *tls.Certificate // nil when no client certificate is configured
	roots *x509.CertPool
}

// NewClientConfig returns a TLS 1.3-only client configuration that trusts the
// CAs in opts.CAFile, presents the client certificate if one is configured,
// and reloads both when their files change.
//
// Server certificates are verified by VerifyConnection against the CAs loaded
// last (InsecureSkipVerify only turns off the built-in check, whose roots
// could not be reloaded); callers must not replace VerifyConnection.
//
// It fails when CAFile is empty, when only one of CertFile and KeyFile is set,
// or when the files cannot be loaded now; the error names the file that failed.
func NewClientConfig(opts ClientOptions) (*tls.Config, error) {
	if opts.CAFile == "" {
		return nil, errors.New("mtls: client options need CAFile")
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("mtls: client options need both CertFile and KeyFile, or neither")
	}
	files := []string{opts.CAFile}
	if opts.CertFile != "" {
		files = append(files, opts.CertFile, opts.KeyFile)
	}
	load := func() (clientMaterial, error) {
		var m clientMaterial
		var err error
		if m.roots, err = loadPool("CA", opts.CAFile); err != nil {
			return m, err
		}
		if opts.CertFile != "" {
			cert, err := loadKeyPair("client", opts.CertFile, opts.KeyFile)
			if err != nil {
				return m, err
			}
			m.cert = &cert
		}
		return m, nil
	}
	r, err := newReloader(files, opts.ReloadInterval, opts.Logger, "client TLS material", load)
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}

	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         opts.ServerName,
		InsecureSkipVerify: true, // replaced by VerifyConnection below, which uses reloaded roots
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, opts.ServerName, r.current().roots)
		},
	}
	if opts.CertFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.current().cert, nil
		}
	}
	return cfg, nil
}

// verifyServer does what crypto/tls does for a client without
// InsecureSkipVerify: the leaf must chain to roots and carry the server name.
func verifyServer(cs tls.ConnectionState, serverName string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("mtls: server presented no certificate")
	}
	if serverName == "" {
		serverName = cs.ServerName
	}
	if serverName == "" {
		return errors.New("mtls: no server name to verify; set ClientOptions.ServerName when dialing an IP address")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		DNSName:       serverName,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("mtls: verify server certificate: %w", err)
	}
	return nil
}

// loadKeyPair reads a certificate chain and its key; role is "server" or "client".
func loadKeyPair(role, certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s certificate %s: %w", role, certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s key %s: %w", role, keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s certificate %s with key %s: %w", role, certFile, keyFile, err)
	}
	return cert, nil
}

// loadPool reads PEM CA certificates; what is "CA" or "client CA".
func loadPool(what, file string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load %s %s: %w", what, file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("load %s %s: no PEM certificates found", what, file)
	}
	return pool, nil
}
