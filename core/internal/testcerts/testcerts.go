// Package testcerts creates throwaway PKI for tests: an ECDSA P-256 CA, a
// server certificate for localhost, 127.0.0.1 and ::1, and a client
// certificate, written as PEM files into tb.TempDir().
//
// Each call to New makes a new CA, so two sets are unrelated: a client
// certificate from one is refused by a server trusting only the other.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ServerName is the DNS name in every server certificate.
const ServerName = "localhost"

// DefaultClientCN is the common name of the client certificate New issues.
const DefaultClientCN = "test-client"

// KeyPair is an issued certificate and where it was written.
type KeyPair struct {
	CertFile string
	KeyFile  string
	Cert     tls.Certificate // Leaf is set
}

// Set is a CA with a server and a client certificate it issued.
type Set struct {
	Dir            string // where the files are
	CAFile         string
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string
	ClientKeyFile  string
	ClientCN       string // common name of the client certificate

	CAPool     *x509.CertPool
	ServerCert tls.Certificate // Leaf is set
	ClientCert tls.Certificate // Leaf is set

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// New creates a CA, a server and a client certificate in a new directory
// under tb.TempDir(). It stops the test on any failure.
func New(tb testing.TB) *Set {
	tb.Helper()
	dir := tb.TempDir()
	key := mustKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(tb),
		Subject:               pkix.Name{CommonName: "custos test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse CA certificate: %v", err)
	}
	s := &Set{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), CAPool: x509.NewCertPool(), ca: ca, caKey: key}
	s.CAPool.AddCert(ca)
	mustWrite(tb, s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))

	server := s.IssueServer(tb)
	s.ServerCertFile, s.ServerKeyFile, s.ServerCert = server.CertFile, server.KeyFile, server.Cert
	client := s.IssueClient(tb, DefaultClientCN)
	s.ClientCertFile, s.ClientKeyFile, s.ClientCert, s.ClientCN = client.CertFile, client.KeyFile, client.Cert, DefaultClientCN
	return s
}

// Unrelated returns a new Set with its own CA, sharing nothing with s; its
// client certificate is the one to use in "other CA is refused" tests.
func (s *Set) Unrelated(tb testing.TB) *Set {
	tb.Helper()
	return New(tb)
}

// IssueServer issues a new server certificate (for localhost, 127.0.0.1 and
// ::1) from the set's CA and writes it to new files in s.Dir, for example to
// rotate the server certificate in a test.
func (s *Set) IssueServer(tb testing.TB) KeyPair {
	tb.Helper()
	return s.issue(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: ServerName},
		DNSNames:    []string{ServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, "server")
}

// IssueClient issues a client certificate with common name cn from the set's
// CA and writes it to new files in s.Dir.
func (s *Set) IssueClient(tb testing.TB, cn string) KeyPair {
	tb.Helper()
	return s.issue(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, "client")
}

func (s *Set) issue(tb testing.TB, tmpl *x509.Certificate, prefix string) KeyPair {
	tb.Helper()
	key := mustKey(tb)
	tmpl.SerialNumber = mustSerial(tb)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, &key.PublicKey, s.caKey)
	if err != nil {
		tb.Fatalf("create %s certificate: %v", prefix, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("marshal %s key: %v", prefix, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatalf("load %s key pair: %v", prefix, err)
	}
	name := prefix + "-" + tmpl.SerialNumber.Text(16)
	kp := KeyPair{
		CertFile: filepath.Join(s.Dir, name+".pem"),
		KeyFile:  filepath.Join(s.Dir, name+"-key.pem"),
		Cert:     cert,
	}
	mustWrite(tb, kp.CertFile, certPEM)
	mustWrite(tb, kp.KeyFile, keyPEM)
	return kp
}

// ServerConfig returns a static TLS 1.3 server configuration that presents
// the server certificate and requires a client certificate from the set's CA.
func (s *Set) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.ServerCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    s.CAPool,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ClientConfig returns a TLS 1.3 client configuration that trusts the set's
// CA for ServerName and presents the set's client certificate.
func (s *Set) ClientConfig() *tls.Config {
	return s.ClientConfigWith(s.ClientCert)
}

// ClientConfigWith is ClientConfig presenting cert instead, for example the
// ClientCert of an Unrelated set.
func (s *Set) ClientConfigWith(cert tls.Certificate) *tls.Config {
	cfg := s.ClientConfigNoCert()
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}

// ClientConfigNoCert is ClientConfig presenting no client certificate.
func (s *Set) ClientConfigNoCert() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    s.CAPool,
		ServerName: ServerName,
	}
}

func mustKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	return key
}

func mustSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("generate serial: %v", err)
	}
	return n
}

func mustWrite(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatalf("write %s: %v", path, err)
	}
}
