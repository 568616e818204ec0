// Package esclient connects core to encryption services over mutual TLS 1.3.
//
// Dial makes the connection to the platform's encryption service and CheckHealth asks it whether
// it serves; Admin provisions tenants on it. Router gives each tenant the Client of its own
// encryption service: the platform's over gRPC, or a tenant-hosted one over gRPC or over the
// seed's REST/JSON contract (HTTPS). Every call carries the tenant's credential (X-Tenant-Id,
// X-Tenant-Secret) and, for zero-knowledge contexts, the client master key; each attempt has a
// deadline; idempotent calls are retried with exponential backoff and jitter when the service is
// unavailable; a circuit breaker per endpoint fails calls fast while the service is down. Errors
// are *errs.Error values that never hold plaintext, ciphertext, keys or secrets.
package esclient

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	// DialOptions are added to the connection's (tracing, client metrics).
	DialOptions []grpc.DialOption
}

// connectParams make a connection that lost its encryption service try again soon (from 100 ms,
// at most every 5 s) rather than with gRPC's default backoff of up to two minutes: the service
// restarting must not keep core away from it longer than the circuit breaker's cooldown. The
// breaker's half-open probe also resets the backoff (ResetConnectBackoff).
func connectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}
}

// roundRobin spreads calls over every address the service's name resolves to (gRPC's default,
// pick_first, sends them all to one): with a Kubernetes headless Service, one connection per
// encryption-service replica. The service makes clients reconnect now and then
// (ES_GRPC_MAX_CONNECTION_AGE), which resolves the name again and finds replicas added since.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

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
	conn, err := grpc.NewClient(opts.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithConnectParams(connectParams()), grpc.WithDefaultServiceConfig(roundRobin)}, opts.DialOptions...)...)
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
