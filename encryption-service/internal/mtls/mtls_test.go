package mtls_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

func TestNewServerConfigErrors(t *testing.T) {
	certs := testcerts.New(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts mtls.ServerOptions
		want string // substring of the error
	}{
		{"no cert file", mtls.ServerOptions{KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}, "need CertFile and KeyFile"},
		{"require without CA", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile}, "RequireClientCert needs ClientCAFile"},
		{"if given without CA", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientAuth: mtls.VerifyClientCertIfGiven}, "needs ClientCAFile"},
		{"CA with NoClientCert", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile, ClientAuth: mtls.NoClientCert}, "ClientAuth is NoClientCert"},
		{"unknown mode", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile, ClientAuth: 42}, "unknown client auth mode"},
		{"missing cert", mtls.ServerOptions{CertFile: missing, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}, missing},
		{"missing key", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: missing, ClientCAFile: certs.CAFile}, missing},
		{"missing CA", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: missing}, missing},
		{"garbage cert", mtls.ServerOptions{CertFile: garbage, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}, "load server certificate " + garbage},
		{"garbage CA", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: garbage}, "load client CA " + garbage + ": no PEM certificates found"},
		{"key of another cert", mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ClientKeyFile, ClientCAFile: certs.CAFile}, "load server certificate " + certs.ServerCertFile + " with key " + certs.ClientKeyFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := mtls.NewServerConfig(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewServerConfig() = %v, %v; want error containing %q", cfg, err, tt.want)
			}
		})
	}
}

func TestNewClientConfigErrors(t *testing.T) {
	certs := testcerts.New(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name string
		opts mtls.ClientOptions
		want string
	}{
		{"no CA", mtls.ClientOptions{CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}, "need CAFile"},
		{"cert without key", mtls.ClientOptions{CAFile: certs.CAFile, CertFile: certs.ClientCertFile}, "both CertFile and KeyFile"},
		{"missing CA", mtls.ClientOptions{CAFile: missing}, "load CA " + missing},
		{"missing cert", mtls.ClientOptions{CAFile: certs.CAFile, CertFile: missing, KeyFile: certs.ClientKeyFile}, "load client certificate " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := mtls.NewClientConfig(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewClientConfig() = %v, %v; want error containing %q", cfg, err, tt.want)
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	certs := testcerts.New(t)
	other := certs.Unrelated(t)
	serverWith := func(auth mtls.ClientAuth) *tls.Config {
		opts := mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile, ClientAuth: auth}
		if auth == mtls.NoClientCert {
			opts.ClientCAFile = ""
		}
		return mustServerConfig(t, opts)
	}
	goodClient := mustClientConfig(t, mtls.ClientOptions{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile, ServerName: "localhost"})
	tls12 := goodClient.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name     string
		server   *tls.Config
		client   *tls.Config
		ok       bool
		clientCN string // expected CN of the verified client certificate, if ok
	}{
		{"require, good cert", serverWith(mtls.RequireClientCert), goodClient, true, testcerts.DefaultClientCN},
		{"require, no cert", serverWith(mtls.RequireClientCert), certs.ClientConfigNoCert(), false, ""},
		{"require, cert of other CA", serverWith(mtls.RequireClientCert), certs.ClientConfigWith(other.ClientCert), false, ""},
		{"if given, no cert", serverWith(mtls.VerifyClientCertIfGiven), certs.ClientConfigNoCert(), true, ""},
		{"if given, good cert", serverWith(mtls.VerifyClientCertIfGiven), goodClient, true, testcerts.DefaultClientCN},
		{"if given, cert of other CA", serverWith(mtls.VerifyClientCertIfGiven), certs.ClientConfigWith(other.ClientCert), false, ""},
		{"no client cert", serverWith(mtls.NoClientCert), certs.ClientConfigNoCert(), true, ""},
		{"TLS 1.2 client", serverWith(mtls.RequireClientCert), tls12, false, ""},
		{"client distrusts server", other.ServerConfig(), mustClientConfig(t, mtls.ClientOptions{CAFile: certs.CAFile, ServerName: "localhost"}), false, ""},
		{"wrong server name", serverWith(mtls.NoClientCert), mustClientConfig(t, mtls.ClientOptions{CAFile: certs.CAFile, ServerName: "db.example"}), false, ""},
		{"IP server name", serverWith(mtls.NoClientCert), mustClientConfig(t, mtls.ClientOptions{CAFile: certs.CAFile, ServerName: "127.0.0.1"}), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli, err := handshake(t, tt.server, tt.client)
			if (err == nil) != tt.ok {
				t.Fatalf("handshake error = %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if cli.Version != tls.VersionTLS13 {
				t.Errorf("negotiated version = %x, want TLS 1.3", cli.Version)
			}
			var cn string
			if len(srv.VerifiedChains) > 0 {
				cn = srv.VerifiedChains[0][0].Subject.CommonName
			}
			if cn != tt.clientCN {
				t.Errorf("verified client CN = %q, want %q", cn, tt.clientCN)
			}
		})
	}
}

func TestServerOffersH2AndHTTP1(t *testing.T) {
	certs := testcerts.New(t)
	server := mustServerConfig(t, mtls.ServerOptions{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile})
	for _, proto := range []string{"h2", "http/1.1"} {
		client := certs.ClientConfig()
		client.NextProtos = []string{proto}
		_, cli, err := handshake(t, server, client)
		if err != nil {
			t.Fatalf("handshake offering %s: %v", proto, err)
		}
		if cli.NegotiatedProtocol != proto {
			t.Errorf("NegotiatedProtocol = %q, want %q", cli.NegotiatedProtocol, proto)
		}
	}
}

// TestServerReload swaps the files under a live configuration the way a
// Kubernetes secret mount does (an atomic rename of the ..data symlink) and
// checks that the next handshake presents the new certificate, and that
// broken files keep the previous one.
func TestServerReload(t *testing.T) {
	certs := testcerts.New(t)
	dir := t.TempDir()
	mustSwapMount(t, dir, "v1", map[string]string{"tls.crt": certs.ServerCertFile, "tls.key": certs.ServerKeyFile, "ca.crt": certs.CAFile})
	logs := &syncBuffer{}
	server := mustServerConfig(t, mtls.ServerOptions{
		CertFile:       filepath.Join(dir, "tls.crt"),
		KeyFile:        filepath.Join(dir, "tls.key"),
		ClientCAFile:   filepath.Join(dir, "ca.crt"),
		ReloadInterval: time.Nanosecond,
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
	})
	client := certs.ClientConfig()

	mustPresent(t, server, client, certs.ServerCert.Leaf.SerialNumber.String())

	rotated := certs.IssueServer(t)
	mustSwapMount(t, dir, "v2", map[string]string{"tls.crt": rotated.CertFile, "tls.key": rotated.KeyFile, "ca.crt": certs.CAFile})
	mustPresent(t, server, client, rotated.Cert.Leaf.SerialNumber.String())

	// A key that does not match the certificate: keep serving v2.
	mustSwapMount(t, dir, "v3", map[string]string{"tls.crt": certs.ServerCertFile, "tls.key": rotated.KeyFile, "ca.crt": certs.CAFile})
	mustPresent(t, server, client, rotated.Cert.Leaf.SerialNumber.String())
	if !strings.Contains(logs.String(), "reload failed") {
		t.Errorf("log = %q, want a reload failed warning", logs.String())
	}

	// Client CA replaced by an unrelated one: the old client is refused.
	other := certs.Unrelated(t)
	mustSwapMount(t, dir, "v4", map[string]string{"tls.crt": rotated.CertFile, "tls.key": rotated.KeyFile, "ca.crt": other.CAFile})
	if _, _, err := handshake(t, server, client); err == nil {
		t.Fatal("handshake with a client of the replaced CA succeeded")
	}
	if _, _, err := handshake(t, server, certs.ClientConfigWith(other.ClientCert)); err != nil {
		t.Fatalf("handshake with a client of the new CA: %v", err)
	}
}

func TestServerReloadInPlace(t *testing.T) {
	certs := testcerts.New(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	mustCopy(t, certs.ServerCertFile, certFile)
	mustCopy(t, certs.ServerKeyFile, keyFile)
	server := mustServerConfig(t, mtls.ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certs.CAFile, ReloadInterval: time.Nanosecond})
	client := certs.ClientConfig()
	mustPresent(t, server, client, certs.ServerCert.Leaf.SerialNumber.String())

	rotated := certs.IssueServer(t)
	mustCopy(t, rotated.CertFile, certFile)
	mustCopy(t, rotated.KeyFile, keyFile)
	mustPresent(t, server, client, rotated.Cert.Leaf.SerialNumber.String())
}

func TestServerReloadIsRateLimited(t *testing.T) {
	certs := testcerts.New(t)
	dir := t.TempDir()
	mustSwapMount(t, dir, "v1", map[string]string{"tls.crt": certs.ServerCertFile, "tls.key": certs.ServerKeyFile})
	server := mustServerConfig(t, mtls.ServerOptions{
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		ClientCAFile: certs.CAFile, ReloadInterval: time.Hour,
	})
	rotated := certs.IssueServer(t)
	mustSwapMount(t, dir, "v2", map[string]string{"tls.crt": rotated.CertFile, "tls.key": rotated.KeyFile})
	mustPresent(t, server, certs.ClientConfig(), certs.ServerCert.Leaf.SerialNumber.String())
}

func TestClientReload(t *testing.T) {
	certs := testcerts.New(t)
	dir := t.TempDir()
	mustSwapMount(t, dir, "v1", map[string]string{"tls.crt": certs.ClientCertFile, "tls.key": certs.ClientKeyFile, "ca.crt": certs.CAFile})
	client := mustClientConfig(t, mtls.ClientOptions{
		CAFile:         filepath.Join(dir, "ca.crt"),
		CertFile:       filepath.Join(dir, "tls.crt"),
		KeyFile:        filepath.Join(dir, "tls.key"),
		ServerName:     "localhost",
		ReloadInterval: time.Nanosecond,
	})
	server := certs.ServerConfig()
	if srv, _, err := handshake(t, server, client); err != nil || srv.PeerCertificates[0].Subject.CommonName != testcerts.DefaultClientCN {
		t.Fatalf("first handshake: err %v", err)
	}

	renewed := certs.IssueClient(t, "renewed-client")
	mustSwapMount(t, dir, "v2", map[string]string{"tls.crt": renewed.CertFile, "tls.key": renewed.KeyFile, "ca.crt": certs.CAFile})
	srv, _, err := handshake(t, server, client)
	if err != nil {
		t.Fatalf("handshake after renewal: %v", err)
	}
	if got := srv.PeerCertificates[0].Subject.CommonName; got != "renewed-client" {
		t.Errorf("client CN after renewal = %q, want %q", got, "renewed-client")
	}

	// Trust moved to another CA: the old server is no longer accepted.
	other := certs.Unrelated(t)
	mustSwapMount(t, dir, "v3", map[string]string{"tls.crt": renewed.CertFile, "tls.key": renewed.KeyFile, "ca.crt": other.CAFile})
	if _, _, err := handshake(t, server, client); err == nil {
		t.Fatal("handshake with a server of the replaced CA succeeded")
	}
}

// handshake runs one TLS handshake over loopback TCP and returns the
// server's and the client's view. A client certificate refused by a TLS 1.3
// server only shows on the client's first read, so the server writes a byte
// that the client reads.
func handshake(tb testing.TB, server, client *tls.Config) (srv, cli tls.ConnectionState, err error) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		sc := tls.Server(c, server)
		_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
		err = sc.Handshake()
		if err == nil {
			_, err = sc.Write([]byte("x"))
		}
		done <- result{sc.ConnectionState(), err}
	}()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	cc, cerr := tls.DialWithDialer(dialer, "tcp", ln.Addr().String(), client)
	if cerr == nil {
		_ = cc.SetDeadline(time.Now().Add(5 * time.Second))
		_, cerr = io.ReadFull(cc, make([]byte, 1))
		cli = cc.ConnectionState()
		cc.Close()
	}
	r := <-done
	if cerr != nil {
		return r.state, cli, cerr
	}
	return r.state, cli, r.err
}

// mustPresent checks that a handshake succeeds and the server presents the
// certificate with the given serial number.
func mustPresent(tb testing.TB, server, client *tls.Config, serial string) {
	tb.Helper()
	_, cli, err := handshake(tb, server, client)
	if err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	if got := cli.PeerCertificates[0].SerialNumber.String(); got != serial {
		tb.Fatalf("server presented serial %s, want %s", got, serial)
	}
}

// mustSwapMount lays out files the way kubelet mounts a secret: dir/NAME is a
// symlink to ..data/NAME and ..data is a symlink to a versioned directory,
// replaced by an atomic rename.
func mustSwapMount(tb testing.TB, dir, version string, files map[string]string) {
	tb.Helper()
	vdir := filepath.Join(dir, ".."+version)
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		tb.Fatal(err)
	}
	for name, src := range files {
		mustCopy(tb, src, filepath.Join(vdir, name))
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				tb.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(".."+version, tmp); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
}

func mustCopy(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	// Write to a temporary name and rename, so a concurrent reader never sees
	// a half-written file.
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		tb.Fatal(err)
	}
}

func mustServerConfig(tb testing.TB, opts mtls.ServerOptions) *tls.Config {
	tb.Helper()
	cfg, err := mtls.NewServerConfig(opts)
	if err != nil {
		tb.Fatalf("NewServerConfig: %v", err)
	}
	return cfg
}

func mustClientConfig(tb testing.TB, opts mtls.ClientOptions) *tls.Config {
	tb.Helper()
	cfg, err := mtls.NewClientConfig(opts)
	if err != nil {
		tb.Fatalf("NewClientConfig: %v", err)
	}
	return cfg
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
