package server_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"google.golang.org/grpc"

	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

// proxyDialer dials like a load balancer speaking the PROXY protocol: it writes header (built
// for the dialled connection by mk) before anything else; mk returning nil sends none.
func proxyDialer(mk func(local, remote net.Addr) *proxyproto.Header) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if h := mk(c.LocalAddr(), c.RemoteAddr()); h != nil {
			if _, err := h.WriteTo(c); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
}

func fromClient(version byte, client string) func(net.Addr, net.Addr) *proxyproto.Header {
	return func(_, remote net.Addr) *proxyproto.Header {
		return proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client)), remote)
	}
}

// callers returns the address the server saw for a Whoami over gRPC and over REST through
// connections made by dial, or the errors of those calls.
func callers(t *testing.T, e *env, dial func(context.Context, string, string) (net.Conn, error)) (grpcAddr, restAddr string, grpcErr, restErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := e.mustGRPC(t, e.certs.ClientConfig(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return dial(ctx, "tcp", addr)
	}))
	if got, err := whoami(ctx, conn); err != nil {
		grpcErr = err
	} else {
		grpcAddr, _ = got["addr"].(string)
	}
	tr := &http.Transport{TLSClientConfig: e.certs.ClientConfig(), ForceAttemptHTTP2: true, DialContext: dial}
	defer tr.CloseIdleConnections()
	resp, body, err := do(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, http.MethodPost, e.url("/v1/whoami"), "{}", nil) //nolint:bodyclose // do closed it
	switch {
	case err != nil:
		restErr = err
	case resp.StatusCode != http.StatusOK:
		t.Fatalf("POST /v1/whoami = %d %s", resp.StatusCode, body)
	default:
		restAddr, _ = mustJSON(t, body)["addr"].(string)
	}
	return grpcAddr, restAddr, grpcErr, restErr
}

func trustLoopback(c *server.Config, _ *testcerts.Set) {
	c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
}

func TestProxyProtocolTakesTheClientAddressFromTrustedBalancers(t *testing.T) {
	e := mustStart(t, trustLoopback)
	for _, tt := range []struct {
		name    string
		version byte
		client  string
	}{
		{"v1 IPv4", 1, "203.0.113.7:4242"},
		{"v2 IPv4", 2, "198.51.100.9:50000"},
		{"v2 IPv6", 2, "[2001:db8::17]:443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, r, gerr, rerr := callers(t, e, proxyDialer(fromClient(tt.version, tt.client)))
			if gerr != nil || rerr != nil {
				t.Fatalf("calls through the balancer failed: gRPC %v, REST %v", gerr, rerr)
			}
			if g != tt.client || r != tt.client {
				t.Errorf("caller address gRPC %q, REST %q; want the header's %q", g, r, tt.client)
			}
		})
	}
	found := 0
	for _, rec := range e.logs.records(t, "rpc") {
		if rec["peer"] == "203.0.113.7:4242" {
			found++
		}
	}
	if found != 2 {
		t.Errorf("access log has %d lines with the proxied client's address, want 2 (gRPC and REST):\n%s", found, e.logs.String())
	}
}

func TestProxyProtocolLocalHeaderKeepsTheBalancersAddress(t *testing.T) {
	e := mustStart(t, trustLoopback)
	local := func(_, _ net.Addr) *proxyproto.Header {
		return &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	g, r, gerr, rerr := callers(t, e, proxyDialer(local))
	if gerr != nil || rerr != nil {
		t.Fatalf("health-check connection (LOCAL) failed: gRPC %v, REST %v", gerr, rerr)
	}
	if !strings.HasPrefix(g, "127.0.0.1:") || !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("caller address gRPC %q, REST %q; want the balancer's own 127.0.0.1", g, r)
	}
}

func TestProxyProtocolRequiredFromTrustedBalancers(t *testing.T) {
	e := mustStart(t, trustLoopback)
	none := func(_, _ net.Addr) *proxyproto.Header { return nil }
	_, _, gerr, rerr := callers(t, e, proxyDialer(none))
	if gerr == nil || rerr == nil {
		t.Errorf("a trusted balancer's connection without a PROXY header was served (gRPC err %v, REST err %v); want both refused", gerr, rerr)
	}
}

func TestProxyProtocolHeaderFromOthersIsNotBelieved(t *testing.T) {
	e := mustStart(t, func(c *server.Config, _ *testcerts.Set) {
		c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	})
	// A caller outside the trusted ranges is served directly, under its own address...
	g, r, gerr, rerr := callers(t, e, proxyDialer(func(_, _ net.Addr) *proxyproto.Header { return nil }))
	if gerr != nil || rerr != nil {
		t.Fatalf("direct calls failed: gRPC %v, REST %v", gerr, rerr)
	}
	if !strings.HasPrefix(g, "127.0.0.1:") || !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("caller address gRPC %q, REST %q; want the connection's own 127.0.0.1", g, r)
	}
	// ...and cannot claim another address: its header is not read, so TLS fails.
	_, _, gerr, rerr = callers(t, e, proxyDialer(fromClient(2, "192.0.2.1:1")))
	if gerr == nil || rerr == nil {
		t.Errorf("a PROXY header from an untrusted address was accepted (gRPC err %v, REST err %v); want both connections refused", gerr, rerr)
	}
}
