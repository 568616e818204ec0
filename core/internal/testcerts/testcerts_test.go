package testcerts_test

import (
	"crypto/x509"
	"os"
	"testing"

	"github.com/custos-platform/custos/core/internal/testcerts"
)

func TestCertificates(t *testing.T) {
	s := testcerts.New(t)
	other := s.Unrelated(t)
	rotated := s.IssueServer(t)
	tests := []struct {
		name  string
		leaf  *x509.Certificate
		roots *x509.CertPool
		host  string // "" for a client certificate
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"server for localhost", s.ServerCert.Leaf, s.CAPool, "localhost", x509.ExtKeyUsageServerAuth, true},
		{"server for 127.0.0.1", s.ServerCert.Leaf, s.CAPool, "127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{"server for ::1", s.ServerCert.Leaf, s.CAPool, "::1", x509.ExtKeyUsageServerAuth, true},
		{"server for another name", s.ServerCert.Leaf, s.CAPool, "example.com", x509.ExtKeyUsageServerAuth, false},
		{"rotated server", rotated.Cert.Leaf, s.CAPool, "localhost", x509.ExtKeyUsageServerAuth, true},
		{"client", s.ClientCert.Leaf, s.CAPool, "", x509.ExtKeyUsageClientAuth, true},
		{"client as server", s.ClientCert.Leaf, s.CAPool, "", x509.ExtKeyUsageServerAuth, false},
		{"unrelated client", other.ClientCert.Leaf, s.CAPool, "", x509.ExtKeyUsageClientAuth, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.leaf.Verify(x509.VerifyOptions{Roots: tt.roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
			if (err == nil) != tt.ok {
				t.Fatalf("Verify() = %v, want ok %v", err, tt.ok)
			}
		})
	}
	if got := s.ClientCert.Leaf.Subject.CommonName; got != testcerts.DefaultClientCN || got != s.ClientCN {
		t.Errorf("client CN = %q, want %q", got, testcerts.DefaultClientCN)
	}
	for _, f := range []string{s.CAFile, s.ServerCertFile, s.ServerKeyFile, s.ClientCertFile, s.ClientKeyFile, rotated.CertFile, rotated.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("file not written: %v", err)
		}
	}
}
