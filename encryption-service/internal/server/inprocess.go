package server

import (
	"context"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// gatewayConn is the server end of an in-process gateway connection. Only
// pipeListener creates it, so a connection of this type cannot come from the
// network; serverCreds relies on that.
type gatewayConn struct{ net.Conn }

// pipeListener is a net.Listener whose connections are in-memory pipes made
// by DialContext.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept returns the next dialed connection, or net.ErrClosed once closed.
func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and DialContext; it is safe to call more than once.
func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns a placeholder address.
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// DialContext connects to the listener; it fails with net.ErrClosed once the
// listener is closed, or with ctx's error if no Accept takes the connection.
func (l *pipeListener) DialContext(ctx context.Context, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- &gatewayConn{server}:
		return client, nil
	case <-l.closed:
		server.Close()
		client.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		server.Close()
		client.Close()
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process-gateway" }

// gatewayAuthInfo marks a gRPC connection as the in-process gateway's.
type gatewayAuthInfo struct{ credentials.CommonAuthInfo }

func (gatewayAuthInfo) AuthType() string { return "custos-in-process-gateway" }

func newGatewayAuthInfo() gatewayAuthInfo {
	// The bytes never leave the process, which is as private as TLS.
	return gatewayAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
}

// serverCreds is the gRPC server's transport security: TLS for network
// connections, and no handshake for in-process gateway connections, which
// it marks with gatewayAuthInfo.
type serverCreds struct {
	tls credentials.TransportCredentials
}

func (c serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.(*gatewayConn); ok {
		return conn, newGatewayAuthInfo(), nil
	}
	return c.tls.ServerHandshake(conn)
}

func (c serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server: server credentials cannot dial")
}

func (c serverCreds) Info() credentials.ProtocolInfo          { return c.tls.Info() }
func (c serverCreds) Clone() credentials.TransportCredentials { return serverCreds{tls: c.tls.Clone()} }
func (c serverCreds) OverrideServerName(string) error         { return nil }

// gatewayCreds is the gateway connection's side: no handshake, since the
// connection is an in-memory pipe to this process's gRPC server.
type gatewayCreds struct{}

func (gatewayCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, newGatewayAuthInfo(), nil
}

func (gatewayCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server: gateway credentials cannot serve")
}

func (gatewayCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "custos-in-process-gateway"}
}
func (gatewayCreds) Clone() credentials.TransportCredentials { return gatewayCreds{} }
func (gatewayCreds) OverrideServerName(string) error         { return nil }
