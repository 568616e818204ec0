package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/sourcecontextpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

// probe is a hand-written gRPC service (no generated code) that reports
// what the server tells a handler about its caller.
type probe struct {
	entered chan string   // Slow sends here when it starts
	release chan struct{} // Slow returns when this is closed
}

const probeService = "custos.test.v1.Probe"

func newProbe() *probe {
	return &probe{entered: make(chan string, 10), release: make(chan struct{})}
}

func (p *probe) register(s grpc.ServiceRegistrar) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: probeService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unaryMethod("Whoami", func(ctx context.Context, _ *sourcecontextpb.SourceContext) (*structpb.Struct, error) {
				return describeCaller(ctx), nil
			}),
			unaryMethod("Echo", func(_ context.Context, in *sourcecontextpb.SourceContext) (*sourcecontextpb.SourceContext, error) {
				return in, nil
			}),
			unaryMethod("Slow", func(ctx context.Context, in *sourcecontextpb.SourceContext) (*sourcecontextpb.SourceContext, error) {
				p.entered <- in.GetFileName()
				select {
				case <-p.release:
					return in, nil
				case <-ctx.Done():
					return nil, status.FromContextError(ctx.Err()).Err()
				}
			}),
			unaryMethod("Panic", func(context.Context, *sourcecontextpb.SourceContext) (*sourcecontextpb.SourceContext, error) {
				panic("handler bug")
			}),
		},
		Streams: []grpc.StreamDesc{{
			StreamName:    "WhoamiStream",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(&sourcecontextpb.SourceContext{}); err != nil {
					return err
				}
				return ss.SendMsg(describeCaller(ss.Context()))
			},
		}},
	}, p)
}

// unaryMethod adapts a typed function to a grpc.MethodDesc, as generated code does.
func unaryMethod[Req any, Resp proto.Message, PReq interface {
	*Req
	proto.Message
}](name string, fn func(context.Context, PReq) (Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := PReq(new(Req))
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return fn(ctx, in)
			}
			info := &grpc.UnaryServerInfo{FullMethod: "/" + probeService + "/" + name}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return fn(ctx, req.(PReq))
			})
		},
	}
}

// describeCaller reports the caller's identity, request id and metadata.
func describeCaller(ctx context.Context) *structpb.Struct {
	id, ok := server.PeerIdentity(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	keys := make([]any, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].(string) < keys[j].(string) })
	s, err := structpb.NewStruct(map[string]any{
		"ok":                 ok,
		"commonName":         id.CommonName,
		"sha256":             id.SHA256,
		"addr":               id.Addr,
		"requestId":          server.RequestID(ctx),
		"userAgent":          server.UserAgent(ctx),
		"metadataKeys":       keys,
		"tenant":             strings.Join(md.Get("x-tenant-id"), ","),
		"authorizationCount": float64(len(md.Get("authorization"))),
	})
	if err != nil {
		panic(err)
	}
	return s
}

// registerProbeGateway maps REST routes to the probe the way generated
// gateway code does: annotate, decode, invoke on conn, forward.
func registerProbeGateway(_ context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	routes := []struct {
		path, method string
		newResp      func() proto.Message
	}{
		{"/v1/whoami", "Whoami", func() proto.Message { return &structpb.Struct{} }},
		{"/v1/echo", "Echo", func() proto.Message { return &sourcecontextpb.SourceContext{} }},
		{"/v1/slow", "Slow", func() proto.Message { return &sourcecontextpb.SourceContext{} }},
	}
	for _, rt := range routes {
		full := "/" + probeService + "/" + rt.method
		err := mux.HandlePath(http.MethodPost, rt.path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			inbound, outbound := runtime.MarshalerForRequest(mux, r)
			ctx, err := runtime.AnnotateContext(r.Context(), mux, r, full, runtime.WithHTTPPathPattern(rt.path))
			if err != nil {
				runtime.HTTPError(r.Context(), mux, outbound, w, r, err)
				return
			}
			in := &sourcecontextpb.SourceContext{}
			if err := inbound.NewDecoder(r.Body).Decode(in); err != nil && !errors.Is(err, io.EOF) {
				runtime.HTTPError(ctx, mux, outbound, w, r, status.Errorf(codes.InvalidArgument, "%v", err))
				return
			}
			var header, trailer metadata.MD
			out := rt.newResp()
			err = conn.Invoke(ctx, full, in, out, grpc.Header(&header), grpc.Trailer(&trailer))
			ctx = runtime.NewServerMetadataContext(ctx, runtime.ServerMetadata{HeaderMD: header, TrailerMD: trailer})
			if err != nil {
				runtime.HTTPError(ctx, mux, outbound, w, r, err)
				return
			}
			runtime.ForwardResponseMessage(ctx, mux, outbound, w, r, out)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// env is a running server and what tests need to talk to it.
type env struct {
	srv   *server.Server
	certs *testcerts.Set
	probe *probe
	logs  *syncBuffer
	stop  context.CancelFunc
	done  chan error // receives Run's result
}

// mustStart starts a server on loopback port 0 with mTLS required on both
// listeners; edit adjusts the configuration first.
func mustStart(tb testing.TB, edit func(*server.Config, *testcerts.Set)) *env {
	tb.Helper()
	certs := testcerts.New(tb)
	e := &env{certs: certs, probe: newProbe(), logs: &syncBuffer{}, done: make(chan error, 1)}
	cfg := server.Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		TLS: mustServerTLS(tb, mtls.ServerOptions{
			CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile,
			ClientCAFile: certs.CAFile, ClientAuth: mtls.RequireClientCert,
		}),
		Logger:          slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Register:        e.probe.register,
		RegisterGateway: registerProbeGateway,
		ReadyInterval:   20 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		ForwardHeaders:  []string{"x-tenant-id", "X-Request-Id", "authorization"},
	}
	if edit != nil {
		edit(&cfg, certs)
	}
	srv, err := server.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	go func() { e.done <- srv.Run(ctx) }()
	select {
	case <-srv.Started():
	case err := <-e.done:
		tb.Fatalf("Run: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				tb.Errorf("Run after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			tb.Error("Run did not return after cancel")
		}
	})
	return e
}

func mustServerTLS(tb testing.TB, opts mtls.ServerOptions) *tls.Config {
	tb.Helper()
	cfg, err := mtls.NewServerConfig(opts)
	if err != nil {
		tb.Fatalf("NewServerConfig: %v", err)
	}
	return cfg
}

// mustGRPC dials the gRPC listener with cfg.
func (e *env) mustGRPC(tb testing.TB, cfg *tls.Config, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(e.srv.GRPCAddr(), append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
	if err != nil {
		tb.Fatalf("grpc.NewClient: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// httpClient returns an HTTP/2 client of the REST listener using cfg.
func (e *env) httpClient(tb testing.TB, cfg *tls.Config) *http.Client {
	tb.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (e *env) url(path string) string { return "https://" + e.srv.HTTPAddr() + path }

// do sends a request and returns the response with its body read.
func do(tb testing.TB, c *http.Client, method, url, body string, header http.Header) (*http.Response, []byte, error) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// mustDo is do for requests that must get a response.
func mustDo(tb testing.TB, c *http.Client, method, url, body string, header http.Header) (*http.Response, []byte) {
	tb.Helper()
	resp, b, err := do(tb, c, method, url, body, header)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, b
}

func mustJSON(tb testing.TB, b []byte) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("decode %q: %v", b, err)
	}
	return m
}

// whoami calls Whoami over gRPC.
func whoami(ctx context.Context, conn *grpc.ClientConn, opts ...grpc.CallOption) (map[string]any, error) {
	out := &structpb.Struct{}
	if err := conn.Invoke(ctx, "/"+probeService+"/Whoami", &sourcecontextpb.SourceContext{}, out, opts...); err != nil {
		return nil, err
	}
	return out.AsMap(), nil
}

func hasKey(m map[string]any, key string) bool {
	keys, _ := m["metadataKeys"].([]any)
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}

// eventually retries check until it returns nil or 5 seconds pass.
func eventually(tb testing.TB, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns the JSON log records whose msg is msg.
func (b *syncBuffer) records(tb testing.TB, msg string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
