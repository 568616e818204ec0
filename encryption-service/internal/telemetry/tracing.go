package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// TracingConfig says whether and where spans are exported.
type TracingConfig struct {
	// Endpoint is the OTLP/gRPC collector as a URL, "http://host:4317"
	// (plaintext) or "https://host:4317" (TLS, verified against the system's
	// roots). Empty turns tracing off, unless Exporter is set.
	Endpoint string
	// SampleRatio is the fraction of new traces recorded, in (0, 1]; zero
	// means 1 (all) and a negative value none. A call that carries its
	// caller's trace context follows the caller's decision instead.
	SampleRatio float64
	// ServiceName and Version describe the process in every span (resource
	// attributes service.name and service.version).
	ServiceName string
	Version     string

	// Exporter, when not nil, receives the spans instead of an OTLP exporter
	// (tests use an in-memory one). Tracing is then on whatever Endpoint says.
	Exporter sdktrace.SpanExporter
}

// ParseTracingEnv reads the standard OpenTelemetry variables the services
// honour through getenv:
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT:
//     the collector's OTLP/gRPC URL; unset means tracing is off;
//   - OTEL_SDK_DISABLED=true turns tracing off whatever the endpoint;
//   - OTEL_TRACES_SAMPLER_ARG: the ratio of new traces sampled (default 1);
//     the sampler is always parent-based trace-id ratio, so
//     OTEL_TRACES_SAMPLER is not read;
//   - OTEL_SERVICE_NAME: replaces serviceName.
//
// The OTLP exporter itself also reads OTEL_EXPORTER_OTLP_HEADERS,
// _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY, _COMPRESSION and _TIMEOUT
// (and their _TRACES_ forms) from the process environment.
//
// It fails, naming the variable, when the endpoint is not an http or https
// URL with a host, or the ratio is not a number in [0, 1].
func ParseTracingEnv(getenv func(string) string, serviceName, version string) (TracingConfig, error) {
	cfg := TracingConfig{ServiceName: serviceName, Version: version}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		cfg.ServiceName = name
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return cfg, nil
	}
	endpointVar := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	endpoint := strings.TrimSpace(getenv(endpointVar))
	if endpoint == "" {
		endpointVar = "OTEL_EXPORTER_OTLP_ENDPOINT"
		endpoint = strings.TrimSpace(getenv(endpointVar))
	}
	var errs []error
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: want http://host:port or https://host:port, got %q", endpointVar, endpoint))
		}
		cfg.Endpoint = endpoint
	}
	if arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		// Written so that NaN, which every comparison is false for, is refused too.
		if err != nil || !(r >= 0 && r <= 1) {
			errs = append(errs, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: want a ratio in [0, 1], got %q", arg))
		}
		cfg.SampleRatio = r
		if r == 0 {
			cfg.SampleRatio = -1 // sample no new trace; zero would mean the default
		}
	}
	if len(errs) > 0 {
		return TracingConfig{}, errors.Join(errs...)
	}
	return cfg, nil
}

// Tracing records spans of RPCs and exports them. A Tracing that is off (and
// a nil *Tracing) hands out nothing: no stats handler, no dial option, a
// no-op tracer; so it adds no cost to calls.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when off
	prop     propagation.TextMapPropagator
}

// NewTracing starts tracing as cfg says: off when cfg has neither Endpoint
// nor Exporter; otherwise spans go, batched, to cfg.Exporter or to an OTLP
// exporter for cfg.Endpoint, which connects lazily (an unreachable collector
// loses spans, never fails calls). Trace context travels as W3C traceparent
// and tracestate metadata; baggage is not propagated.
//
// It fails when cfg.SampleRatio is NaN or the OTLP exporter cannot be set
// up. Call Shutdown to flush the last spans.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	exp := cfg.Exporter
	if exp == nil {
		if cfg.Endpoint == "" {
			return &Tracing{}, nil
		}
		var err error
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", cfg.Endpoint, err)
		}
	}
	ratio := cfg.SampleRatio
	switch {
	case math.IsNaN(ratio):
		return nil, errors.New("telemetry: SampleRatio is NaN, want a ratio in [0, 1]")
	case ratio == 0 || ratio > 1:
		ratio = 1
	case ratio < 0:
		ratio = 0
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.Version != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.Version))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &Tracing{provider: tp, prop: propagation.TraceContext{}}, nil
}

// Enabled reports whether spans are recorded.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Tracer returns a tracer for spans of the service's own, a no-op one when
// tracing is off.
func (t *Tracing) Tracer(name string) trace.Tracer {
	if !t.Enabled() {
		return tracenoop.NewTracerProvider().Tracer(name)
	}
	return t.provider.Tracer(name)
}

// Propagator returns the W3C trace-context propagator, for carriers other
// than gRPC metadata (HTTP headers of the REST client).
func (t *Tracing) Propagator() propagation.TextMapPropagator {
	if !t.Enabled() {
		return propagation.NewCompositeTextMapPropagator() // injects and extracts nothing
	}
	return t.prop
}

func (t *Tracing) handlerOptions(extra ...otelgrpc.Option) []otelgrpc.Option {
	return append([]otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.prop),
		// Metrics are Prometheus's job; this keeps otelgrpc off the global meter provider.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		// Health checks every few seconds would drown the traces that matter.
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	}, extra...)
}

// ServerHandler returns the stats handler for server.Config.StatsHandler of
// a service whose callers are trusted to continue their own traces (the
// encryption service, called by core over mutual TLS): each RPC gets a server
// span, the child of the caller's span when the call carries one. It returns
// nil when tracing is off.
func (t *Tracing) ServerHandler() stats.Handler {
	if !t.Enabled() {
		return nil
	}
	return otelgrpc.NewServerHandler(t.handlerOptions()...)
}

// PublicServerHandler is ServerHandler for a public API (core): each RPC
// starts a new trace, which links to a trace context the caller sent rather
// than joining it, so that outside callers can neither force sampling nor
// splice spans into the service's traces. It returns nil when tracing is off.
func (t *Tracing) PublicServerHandler() stats.Handler {
	if !t.Enabled() {
		return nil
	}
	return otelgrpc.NewServerHandler(t.handlerOptions(otelgrpc.WithPublicEndpoint())...)
}

// DialOptions returns the options that give a gRPC client connection a
// client span per call and send the trace context along; nil when tracing is
// off.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if !t.Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.handlerOptions()...))}
}

// Shutdown exports the spans still buffered and stops the exporter, within
// ctx. It does nothing when tracing is off; its error says what was lost.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: flush traces: %w", err)
	}
	return nil
}

// ForceFlush exports the spans buffered so far, within ctx; tests call it
// before reading an in-memory exporter. It does nothing when tracing is off.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.provider.ForceFlush(ctx)
}

// ErrorHandler logs what the OpenTelemetry SDK reports through otel.Handle,
// errors no call returns to the service (a failed export to the collector, a
// span queue overflowing), through the service's logger: JSON like every other
// line, at warning level, with the message "telemetry: OpenTelemetry error".
// Without one (otel.SetErrorHandler), the SDK prints them as plain text
// through the standard log package. An unreachable collector fails every
// export, so it logs at most one line per interval; the next line says how
// many it left out ("suppressed"). Safe for concurrent use.
type ErrorHandler struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	next       time.Time // no line before
	suppressed int
}

// NewErrorHandler returns an ErrorHandler logging to logger at most once per
// interval (zero or less: every error).
func NewErrorHandler(logger *slog.Logger, interval time.Duration) *ErrorHandler {
	return &ErrorHandler{log: logger, interval: interval}
}

// Handle implements otel.ErrorHandler.
func (h *ErrorHandler) Handle(err error) {
	h.mu.Lock()
	now := time.Now()
	if now.Before(h.next) {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	h.next = now.Add(h.interval)
	n := h.suppressed
	h.suppressed = 0
	h.mu.Unlock()
	attrs := []any{"error", err}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	h.log.Warn("telemetry: OpenTelemetry error", attrs...)
}
