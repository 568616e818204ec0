package app

import (
	"context"
	"errors"
	flagpkg "flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/mtls"
)

// defaultHTTPAddr is where the REST listener serves when ES_HTTP_ADDR is unset: config.Load's default,
// which TestProbeDefaultAddrIsConfigs holds this copy to (the probe must not need the service's
// whole configuration to find it).
const defaultHTTPAddr = ":9443"

// probeSettings names the environment a probe reads, so that both binaries share the code shape.
type probeSettings struct {
	addrVar, certVar, keyVar, caVar, serverNameVar string
	certRequired                                   bool
}

// probe checks the service's own REST listener, for container health checks and Kubernetes exec
// probes (kubelet's HTTPS probes cannot present the client certificate this service requires).
// --live asks /healthz, --ready (the default) /readyz. It reads only the listen address (the
// service's default when unset) and the probe's own certificate files, fresh each run, and exits
// non-zero unless the answer is 200.
func probe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, s probeSettings) error {
	fs := flagpkg.NewFlagSet("probe", flagpkg.ContinueOnError)
	fs.SetOutput(stderr)
	live := fs.Bool("live", false, "check liveness (/healthz)")
	ready := fs.Bool("ready", false, "check readiness (/readyz), the default")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *live && *ready || fs.NArg() > 0 {
		return fmt.Errorf("%w: probe [--live | --ready] [--timeout=3s]", ErrUsage)
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	target, err := probeURL(getenv(s.addrVar), path)
	if err != nil {
		return fmt.Errorf("probe: %s: %w", s.addrVar, err)
	}
	serverName := getenv(s.serverNameVar)
	if serverName == "" {
		serverName = "localhost"
	}
	cert, key := getenv(s.certVar), getenv(s.keyVar)
	if s.certRequired && (cert == "" || key == "") {
		return fmt.Errorf("probe: %s and %s are required: the service accepts only clients with a certificate", s.certVar, s.keyVar)
	}
	tlsConfig, err := mtls.NewClientConfig(mtls.ClientOptions{CAFile: getenv(s.caVar), CertFile: cert, KeyFile: key, ServerName: serverName})
	if err != nil {
		return fmt.Errorf("probe: %s: %w", s.caVar, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return fmt.Errorf("probe: %s: no answer within %s", target, *timeout)
		}
		return fmt.Errorf("probe: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: %s answered %s", path, resp.Status)
	}
	return nil
}

// probeURL is the URL of path on the listener at addr, the value of the *_HTTP_ADDR variable: the
// service's default when empty, and loopback when the service listens on every address. It fails
// unless addr is host:port.
func probeURL(addr, path string) (string, error) {
	if addr == "" {
		addr = defaultHTTPAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("%q: want host:port", addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port) + path, nil
}
