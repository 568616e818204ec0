package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"
)

// Metadata keys the gateway uses to pass what it learnt from the HTTP
// request. They are trusted only on the in-process gateway connection and
// removed from the metadata of every other connection.
const (
	reservedPrefix     = "x-custos-gw-"
	keyClientCN        = reservedPrefix + "client-cn" // path-escaped: metadata values must be ASCII
	keyClientSHA256    = reservedPrefix + "client-sha256"
	keyRemoteAddr      = reservedPrefix + "remote-addr"
	keyRequestID       = reservedPrefix + "request-id"
	requestIDHeaderKey = "x-request-id"
)

// Identity is a caller authenticated by a client certificate that the
// server verified.
type Identity struct {
	CommonName string // subject common name of the client certificate; may be empty
	SHA256     string // lower-case hex SHA-256 of the client certificate (DER)
	Addr       string // network address of the client; for REST calls, the HTTP client's
}

// PeerIdentity returns the identity of the caller of the RPC whose context
// is ctx. It reports false when the caller presented no verified client
// certificate (possible unless the listener requires one) or ctx is not an
// RPC's.
//
// On a network connection the identity comes from the TLS handshake. On the
// in-process gateway connection it comes from metadata the gateway set from
// the HTTP request's TLS state; the same metadata on any other connection is
// ignored, so a client cannot claim another's identity.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		chains := info.State.VerifiedChains
		if len(chains) == 0 || len(chains[0]) == 0 {
			return Identity{}, false
		}
		id := identityOf(chains[0][0])
		if p.Addr != nil {
			id.Addr = p.Addr.String()
		}
		return id, true
	case gatewayAuthInfo:
		md, _ := metadata.FromIncomingContext(ctx)
		sum, ok1 := single(md, keyClientSHA256)
		escaped, ok2 := single(md, keyClientCN)
		cn, err := url.PathUnescape(escaped)
		if !ok1 || !ok2 || sum == "" || err != nil {
			return Identity{}, false
		}
		addr, _ := single(md, keyRemoteAddr)
		return Identity{CommonName: cn, SHA256: sum, Addr: addr}, true
	}
	return Identity{}, false
}

func identityOf(leaf *x509.Certificate) Identity {
	sum := sha256.Sum256(leaf.Raw)
	return Identity{CommonName: leaf.Subject.CommonName, SHA256: hex.EncodeToString(sum[:])}
}

// single returns the value of key if md holds exactly one.
func single(md metadata.MD, key string) (string, bool) {
	v := md.Get(key)
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// incoming returns the value of key in ctx's incoming metadata if it holds exactly one, without
// copying the rest of the metadata as metadata.FromIncomingContext does.
func incoming(ctx context.Context, key string) (string, bool) {
	v := metadata.ValueFromIncomingContext(ctx, key)
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// reservedSentKey marks the context of a stream whose metadata holds reserved keys.
type reservedSentKey struct{}

// tapReserved is the server's tap: the transport hands it the stream's metadata map itself, before
// the stream starts, so one pass over the keys here replaces a lookup per reserved key on every
// call. A stream that carries reserved keys gets a marked context (begin then drops the keys
// unless the stream is the gateway's); others pass unchanged and cost no allocation.
func tapReserved(ctx context.Context, info *tap.Info) (context.Context, error) {
	for k := range info.Header {
		// HTTP/2 header names are lower case on the wire (upper case is a protocol error).
		if strings.HasPrefix(k, reservedPrefix) {
			return context.WithValue(ctx, reservedSentKey{}, true), nil
		}
	}
	return ctx, nil
}

// hasReserved reports whether ctx's incoming metadata holds any reserved key, as tapReserved
// found when the stream arrived.
func hasReserved(ctx context.Context) bool {
	return ctx.Value(reservedSentKey{}) != nil
}

// isGateway reports whether p is the in-process gateway connection.
func isGateway(p *peer.Peer) bool {
	_, ok := p.AuthInfo.(gatewayAuthInfo)
	return ok
}

// dropReserved deletes every key with the reserved gateway prefix from md,
// so that handlers reading metadata cannot be fooled by a network client
// sending them.
func dropReserved(md metadata.MD) {
	for k := range md {
		if strings.HasPrefix(k, reservedPrefix) {
			delete(md, k)
		}
	}
}

// gatewayMetadata is the gateway's annotator: it passes the HTTP client's
// address, verified certificate and the request id chosen by httpHandler.
// The gateway lets annotator keys replace any header-derived ones.
func gatewayMetadata(_ context.Context, r *http.Request) metadata.MD {
	md := metadata.MD{}
	md.Set(keyRemoteAddr, r.RemoteAddr)
	if id := RequestID(r.Context()); id != "" {
		md.Set(keyRequestID, id)
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		id := identityOf(r.TLS.VerifiedChains[0][0])
		md.Set(keyClientCN, url.PathEscape(id.CommonName))
		md.Set(keyClientSHA256, id.SHA256)
	}
	return md
}
