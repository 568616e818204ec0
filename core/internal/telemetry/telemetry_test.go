package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/telemetry"
)

func TestParseTracingEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    telemetry.TracingConfig
		wantErr string
	}{
		{"off", nil, telemetry.TracingConfig{ServiceName: "svc", Version: "v1"}, ""},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
			telemetry.TracingConfig{Endpoint: "http://collector:4317", ServiceName: "svc", Version: "v1"}, ""},
		{"traces endpoint wins", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b:4317"},
			telemetry.TracingConfig{Endpoint: "https://b:4317", ServiceName: "svc", Version: "v1"}, ""},
		{"disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_SDK_DISABLED": "TRUE"},
			telemetry.TracingConfig{ServiceName: "svc", Version: "v1"}, ""},
		{"service name and ratio", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_SERVICE_NAME": "es-eu", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			telemetry.TracingConfig{Endpoint: "http://a:4317", ServiceName: "es-eu", Version: "v1", SampleRatio: 0.25}, ""},
		{"ratio zero samples no new trace", map[string]string{"OTEL_TRACES_SAMPLER_ARG": "0"},
			telemetry.TracingConfig{ServiceName: "svc", Version: "v1", SampleRatio: -1}, ""},
		{"host without scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, telemetry.TracingConfig{}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"other scheme", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"}, telemetry.TracingConfig{}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{"bad ratio", map[string]string{"OTEL_TRACES_SAMPLER_ARG": "2"}, telemetry.TracingConfig{}, "OTEL_TRACES_SAMPLER_ARG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := telemetry.ParseTracingEnv(func(k string) string { return tt.env[k] }, "svc", "v1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTracingEnv(%v) = %+v, %v; want an error naming %s", tt.env, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTracingEnv(%v) = %+v, %v; want %+v", tt.env, got, err, tt.want)
			}
		})
	}
}

func TestNewTracing(t *testing.T) {
	// An OTLP endpoint connects lazily: no collector is needed to start.
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{Endpoint: "http://127.0.0.1:1", ServiceName: "svc"})
	if err != nil {
		t.Fatalf("NewTracing(unreachable endpoint) = %v", err)
	}
	if !tr.Enabled() || tr.ServerHandler() == nil || len(tr.DialOptions()) != 1 {
		t.Errorf("NewTracing(endpoint): Enabled %v, ServerHandler %v, DialOptions %d; want all set", tr.Enabled(), tr.ServerHandler(), len(tr.DialOptions()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = tr.Shutdown(ctx) // the unreachable collector may fail the flush; it must not hang

	var none *telemetry.Tracing
	if none.Enabled() || none.ServerHandler() != nil || none.DialOptions() != nil || none.Shutdown(context.Background()) != nil {
		t.Error("a nil *Tracing is not off")
	}
	_, span := none.Tracer("x").Start(context.Background(), "noop")
	if span.SpanContext().IsValid() {
		t.Error("tracer of a nil *Tracing records spans")
	}
}

func TestSampleRatio(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{Exporter: exp, SampleRatio: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Tracer("x").Start(context.Background(), "root")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(exp.GetSpans()); got != 0 {
		t.Errorf("spans recorded with a negative SampleRatio = %d, want 0", got)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg, "v9")
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	if _, err := telemetry.NewMetrics(reg, "v9"); err == nil {
		t.Error("NewMetrics twice on one registry succeeded")
	}
	m.ObserveRPC("/svc/M", codes.PermissionDenied, "grpc", 3*time.Millisecond)
	// Codes gRPC does not define (a status passed on from another service) share one series.
	m.ObserveRPC("/svc/N", codes.Code(17), "grpc", time.Millisecond)
	m.ObserveRPC("/svc/N", codes.Code(1<<31), "grpc", time.Millisecond)
	m.ObserveHTTP("api", http.StatusForbidden, 4*time.Millisecond)
	observeService(m)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	if strings.Contains(body, "Code(") {
		t.Errorf("scrape labels a series with a code gRPC does not define:\n%s", body)
	}
	for _, want := range append([]string{
		`custos_rpc_requests_total{code="PermissionDenied",method="/svc/M",via="grpc"} 1`,
		`custos_rpc_requests_total{code="Unknown",method="/svc/N",via="grpc"} 2`,
		`custos_rpc_duration_seconds_bucket{method="/svc/M",via="grpc",le="0.005"} 1`,
		`custos_http_requests_total{code="403",handler="api"} 1`,
		`custos_build_info{version="v9"} 1`,
		`process_start_time_seconds`,
	}, serviceSeries...) {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
}
