// Package telemetry provides the service's Prometheus metrics and its
// OpenTelemetry tracing.
//
// Nothing here is global: Metrics registers its series on a
// *prometheus.Registry the caller passes in, and Tracing hands out its own
// tracer provider and propagator to the gRPC stats handlers instead of
// installing them in the otel package's globals. Tracing is off (no provider,
// no stats handler, no cost per call) unless an OTLP endpoint is configured.
//
// The files metrics.go and tracing.go are the same in core and in the
// encryption service; each service adds the series of its own components in
// service.go.
package telemetry

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// namespace prefixes every series of the services.
const namespace = "custos"

// latencyBuckets (seconds) span a cached encryption (well under a
// millisecond) to a password hash or a slow database (seconds).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds the service's series. Create it with NewMetrics; its methods
// are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	rpcRequests  *prometheus.CounterVec
	rpcDuration  *prometheus.HistogramVec
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	// rpcSeries remembers the series of each (method, code, via) seen, so that a call does not
	// hash and validate its labels again: rpcKey → *rpcSeries.
	rpcSeries sync.Map

	service serviceMetrics // the series of this service's own components
}

// NewMetrics registers the service's series on reg: RPCs and REST responses
// (for server.Config.Metrics), the service's own components (see the
// service-specific methods), build information, and the Go runtime and
// process collectors.
//
// It fails when reg already holds a series of the same name, for example when
// NewMetrics was called twice with the same registry.
func NewMetrics(reg *prometheus.Registry, version string) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rpc_requests_total",
			Help: "RPCs handled, by full gRPC method, status code and how they came in (grpc, or gateway for REST).",
		}, []string{"method", "code", "via"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rpc_duration_seconds",
			Help:    "Time to handle an RPC, interceptors included, by full gRPC method and how it came in.",
			Buckets: latencyBuckets,
		}, []string{"method", "via"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "Responses of the REST listener, by handler (api, healthz, readyz) and HTTP status.",
		}, []string{"handler", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "Time to answer a request of the REST listener, by handler (api, healthz, readyz).",
			Buckets: latencyBuckets,
		}, []string{"handler"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the version label is the running binary's.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	cs := []prometheus.Collector{
		m.rpcRequests, m.rpcDuration, m.httpRequests, m.httpDuration, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	m.service = newServiceMetrics()
	cs = append(cs, m.service.collectors()...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Handler returns the HTTP handler that serves the registry's series in the
// Prometheus exposition format, for server.Config.MetricsHandler. At most
// two scrapes run at once; one that takes longer than ten seconds is
// answered with 503.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
		Registry:            m.reg, // promhttp_metric_handler_errors_total
	})
}

type rpcKey struct {
	method, via string
	code        codes.Code
}

type rpcSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// ObserveRPC implements server.Metrics. The label sets are bounded: methods are the registered
// ones (gRPC answers unknown methods before any interceptor), ways in are few, and codes are the
// 17 gRPC defines (see knownCode).
func (m *Metrics) ObserveRPC(method string, code codes.Code, via string, elapsed time.Duration) {
	code = knownCode(code)
	k := rpcKey{method: method, via: via, code: code}
	v, ok := m.rpcSeries.Load(k)
	if !ok {
		v, _ = m.rpcSeries.LoadOrStore(k, &rpcSeries{
			requests: m.rpcRequests.WithLabelValues(method, code.String(), via),
			duration: m.rpcDuration.WithLabelValues(method, via),
		})
	}
	s := v.(*rpcSeries)
	s.requests.Inc()
	s.duration.Observe(elapsed.Seconds())
}

// knownCode returns code if gRPC defines it, else codes.Unknown. A status code is a 32-bit number
// that whoever answered chose (another service's status can be passed on): labelling series with
// any value would let that party create series without bound.
func knownCode(code codes.Code) codes.Code {
	if code > codes.Unauthenticated {
		return codes.Unknown
	}
	return code
}

// ObserveHTTP implements server.Metrics.
func (m *Metrics) ObserveHTTP(handler string, status int, elapsed time.Duration) {
	m.httpRequests.WithLabelValues(handler, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(handler).Observe(elapsed.Seconds())
}
