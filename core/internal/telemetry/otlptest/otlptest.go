// Package otlptest runs an in-process OTLP/gRPC trace collector for tests, so
// that a service started as a subprocess (or in process, through its real
// OTLP exporter) can be checked for the spans it exports: set its
// OTEL_EXPORTER_OTLP_ENDPOINT to Collector.Endpoint().
package otlptest

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// Span is what the collector keeps of one exported span.
type Span struct {
	Service  string // resource attribute service.name
	Name     string
	Kind     string // "server", "client", "internal", ...
	TraceID  string // lower-case hex
	SpanID   string
	ParentID string // "" for a root span
}

// Collector receives spans over plaintext OTLP/gRPC on loopback.
type Collector struct {
	collectorpb.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []Span
}

// Start runs a collector on a free loopback port until the test ends.
func Start(tb testing.TB) *Collector {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("otlptest: listen: %v", err)
	}
	c := &Collector{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(srv.Stop)
	return c
}

// Endpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT.
func (c *Collector) Endpoint() string { return "http://" + c.addr }

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, Span{
					Service:  service,
					Name:     s.GetName(),
					Kind:     kindName(int32(s.GetKind())),
					TraceID:  hex.EncodeToString(s.GetTraceId()),
					SpanID:   hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()),
				})
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func kindName(k int32) string {
	switch k {
	case 1:
		return "internal"
	case 2:
		return "server"
	case 3:
		return "client"
	case 4:
		return "producer"
	case 5:
		return "consumer"
	}
	return "unspecified"
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// WaitFor returns the first span match accepts, waiting up to timeout for an
// exporter's batch to arrive (the SDK's batcher sends every 5 s by default,
// or when the process shuts down). It reports false if none came.
func (c *Collector) WaitFor(timeout time.Duration, match func(Span) bool) (Span, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, s := range c.Spans() {
			if match(s) {
				return s, true
			}
		}
		if time.Now().After(deadline) {
			return Span{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
