package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
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
	keyCall            = reservedPrefix + "call" // the REST request's callInfo.seq
	keyUserAgent       = reservedPrefix + "user-agent"
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

// maxUserAgent bounds what UserAgent returns.
const maxUserAgent = 200

// UserAgent returns the client software of the call whose context is ctx as the client named
// itself — the HTTP client's User-Agent for REST calls, the gRPC client's user-agent otherwise — in
// printable ASCII, at most 200 characters; "" when it sent none or ctx is not an RPC's. It is what
// the client claims: show it to people, never decide anything on it.
func UserAgent(ctx context.Context) string {
	c := callFrom(ctx)
	if c == nil {
		return ""
	}
	key := "user-agent"
	if c.via == "gateway" {
		key = keyUserAgent
	}
	if v := c.md[key]; len(v) > 0 {
		return printableASCII(v[0], maxUserAgent)
	}
	return ""
}

// printableASCII keeps the printable ASCII characters of s (metadata values allow no others), at
// most n of them.
func printableASCII(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(b) < n; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
		}
	}
	return strings.TrimSpace(string(b))
}

// single returns the value of key if md holds exactly one.
func single(md metadata.MD, key string) (string, bool) {
	v := md.Get(key)
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// tappedKey is the context key of the stream's incoming metadata as the transport received it.
type tappedKey struct{}

// tapMetadata is the server's tap: the transport hands it the stream's metadata map itself (the one
// it puts in the stream's context) before the stream starts. Keeping it lets begin and Incoming read
// keys directly: metadata.ValueFromIncomingContext copies what it finds and, for an absent key,
// compares every key case-insensitively, and a call looks up about six keys, most of them absent.
func tapMetadata(ctx context.Context, info *tap.Info) (context.Context, error) {
	return context.WithValue(ctx, tappedKey{}, info.Header), nil
}

// tapped returns the metadata tapMetadata kept for ctx's stream, or a copy of ctx's incoming
// metadata when there is none (a context not made by the server's transport).
func tapped(ctx context.Context) metadata.MD {
	if md, ok := ctx.Value(tappedKey{}).(metadata.MD); ok {
		return md
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

// Incoming returns the values of key, which must be lower case, in the incoming metadata of the
// call whose context is ctx (without the reserved keys a network client sent). The slice is
// shared with the server: callers must not change it.
func Incoming(ctx context.Context, key string) []string {
	if c := callFrom(ctx); c != nil {
		return c.md[key]
	}
	return metadata.ValueFromIncomingContext(ctx, key)
}

// hasReserved reports whether md holds any key with the reserved prefix. HTTP/2 header names are
// lower case on the wire (upper case is a protocol error), so the prefix is matched as it is.
func hasReserved(md metadata.MD) bool {
	for k := range md {
		if strings.HasPrefix(k, reservedPrefix) {
			return true
		}
	}
	return false
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
// address, verified certificate, the request id chosen by httpHandler and the
// request's place in s.calls. The gateway lets annotator keys replace any
// header-derived ones. It also checks the query parameters against the
// route's (see checkQuery): the gRPC side refuses the call if one is unknown.
func (s *Server) gatewayMetadata(ctx context.Context, r *http.Request) metadata.MD {
	md := metadata.MD{}
	md.Set(keyRemoteAddr, r.RemoteAddr)
	if c := callFrom(r.Context()); c != nil {
		md.Set(keyRequestID, c.requestID)
		if c.seq != 0 {
			md.Set(keyCall, strconv.FormatUint(c.seq, 10))
			c.unknownQuery = s.checkQuery(ctx, r)
		}
	}
	if ua := printableASCII(r.UserAgent(), maxUserAgent); ua != "" {
		md.Set(keyUserAgent, ua)
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		id := identityOf(r.TLS.VerifiedChains[0][0])
		md.Set(keyClientCN, url.PathEscape(id.CommonName))
		md.Set(keyClientSHA256, id.SHA256)
	}
	return md
}
