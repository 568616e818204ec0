package server

import (
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyHeaderTimeout bounds how long a connection from a trusted load balancer may take to send
// its PROXY header; the TLS handshake's own limits apply after it.
const proxyHeaderTimeout = 5 * time.Second

// proxyListener wraps ln so that connections from the given load balancers must open with a
// PROXY protocol header (version 1 or 2), whose source address then becomes the connection's
// RemoteAddr: what the access log, the audit trail and per-address throttles see. A trusted
// connection without a valid header fails at its first read (the TLS handshake), and a LOCAL
// header (a load balancer's own health check) keeps the balancer's address.
//
// Connections from any other address are served as they are, unwrapped: a PROXY header they
// send is not read, so their TLS handshake fails and nobody outside the trusted ranges can claim
// another address. The prefixes should not cover loopback, where probes connect without a
// header. With no prefixes ln is returned unchanged.
func proxyListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	if len(trusted) == 0 {
		return ln
	}
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: proxyHeaderTimeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if fromTrusted(o.Upstream, trusted) {
				return proxyproto.REQUIRE, nil
			}
			return proxyproto.SKIP, nil
		},
	}
}

// fromTrusted reports whether addr is a TCP address within one of the prefixes.
func fromTrusted(addr net.Addr, trusted []netip.Prefix) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
