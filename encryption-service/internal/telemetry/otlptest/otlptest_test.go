package otlptest_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
	"github.com/custos-platform/custos/encryption-service/internal/telemetry/otlptest"
)

// TestOTLPExport sends spans through the real OTLP/gRPC exporter, configured
// the way the services are (the standard variable), to the collector.
func TestOTLPExport(t *testing.T) {
	c := otlptest.Start(t)
	cfg, err := telemetry.ParseTracingEnv(func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": c.Endpoint()}[k]
	}, "custos-test", "v1")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := telemetry.NewTracing(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	ctx, parent := tr.Tracer("test").Start(context.Background(), "parent")
	_, child := tr.Tracer("test").Start(ctx, "child")
	child.End()
	parent.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	got, ok := c.WaitFor(5*time.Second, func(s otlptest.Span) bool { return s.Name == "child" })
	if !ok {
		t.Fatalf("no span %q exported; got %+v", "child", c.Spans())
	}
	want := parent.SpanContext()
	if got.Service != "custos-test" || got.TraceID != want.TraceID().String() || got.ParentID != want.SpanID().String() {
		t.Errorf("exported child = %+v, want service custos-test, trace %s, parent %s", got, want.TraceID(), want.SpanID())
	}
}
