// Package esclient connects core to an encryption service over mutual TLS 1.3.
package esclient

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custos-platform/custos/core/internal/mtls"
)

// Options says where the encryption service is and how core proves its identity to it.
type Options struct {
	Addr           string // host:port of its gRPC listener
	ServerName     string // name expected in its certificate; empty means Addr's host
	CAFile         string // CA bundle that signed its certificate
	ClientCertFile string // core's client certificate
	ClientKeyFile  string
	Logger         *slog.Logger
}

// Dial returns a lazily connecting gRPC client connection to the encryption service. It fails only
// for bad options or unreadable certificate files, naming the file; connection failures surface on
// the first call as codes.Unavailable.
func Dial(opts Options) (*grpc.ClientConn, error) {
	serverName := opts.ServerName
	if serverName == "" {
		host, _, err := net.SplitHostPort(opts.Addr)
		if err != nil {
			return nil, fmt.Errorf("encryption service address %q: %w", opts.Addr, err)
		}
		serverName = host
	}
	tlsConfig, err := mtls.NewClientConfig(mtls.ClientOptions{
		CAFile:     opts.CAFile,
		CertFile:   opts.ClientCertFile,
		KeyFile:    opts.ClientKeyFile,
		ServerName: serverName,
		Logger:     opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(opts.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return nil, fmt.Errorf("encryption service at %s: %w", opts.Addr, err)
	}
	return conn, nil
}

// CheckHealth asks the encryption service's gRPC health service whether it is SERVING. Its error
// says what answered, without secrets.
func CheckHealth(ctx context.Context, conn *grpc.ClientConn) error {
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("encryption service health check at %s: %w", conn.Target(), err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("encryption service at %s is %s", conn.Target(), resp.GetStatus())
	}
	return nil
}
