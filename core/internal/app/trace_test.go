package app

import (
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/telemetry/otlptest"
)

// TestTraceCrossesIntoTheEncryptionService: a vault call traced by core has, in the real
// encryption service (a separate process), a server span whose parent is core's client span.
func TestTraceCrossesIntoTheEncryptionService(t *testing.T) {
	collector := otlptest.Start(t)
	// Export spans within a tenth of a second instead of the batcher's default five.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	tracing := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY": "100"}
	p := startPlatformWith(t, tracing, tracing)
	f := p.newTenant("acme", "PLATFORM")
	p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": "traced"})

	esSpan, ok := collector.WaitFor(20*time.Second, func(s otlptest.Span) bool {
		return s.Service == "encryption-service" && s.Kind == "server" && s.Name == "custos.encryption.v1.EncryptionService/Encrypt"
	})
	if !ok {
		t.Fatalf("no Encrypt server span from the encryption service; spans: %+v", collector.Spans())
	}
	parent, ok := collector.WaitFor(20*time.Second, func(s otlptest.Span) bool { return s.SpanID == esSpan.ParentID })
	if !ok || parent.Service != "core" || parent.Kind != "client" || parent.TraceID != esSpan.TraceID {
		t.Errorf("the encryption service's Encrypt span has parent %+v, want core's client span in the same trace", parent)
	}
	if _, ok := collector.WaitFor(5*time.Second, func(s otlptest.Span) bool {
		return s.Service == "core" && s.Kind == "server" && s.TraceID == esSpan.TraceID
	}); !ok {
		t.Errorf("no core server span in the trace of the encryption service's span")
	}
}
