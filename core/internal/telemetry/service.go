package telemetry

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// serviceMetrics are core's own series: its calls to encryption services and
// the re-encryption worker.
type serviceMetrics struct {
	esRequests       *prometheus.CounterVec
	esDuration       *prometheus.HistogramVec
	reencryptItems   *prometheus.CounterVec
	reencryptJobs    *prometheus.CounterVec
	reencryptRetries prometheus.Counter
	reencryptParked  prometheus.Counter
	keyErasures      *prometheus.CounterVec
}

func newServiceMetrics() serviceMetrics {
	s := serviceMetrics{
		esRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "es_client_requests_total",
			Help: "Attempts to call an encryption service, by contract method (Encrypt, Decrypt...), status code and transport (grpc, https).",
		}, []string{"method", "code", "transport"}),
		esDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "es_client_request_duration_seconds",
			Help:    "Time of one attempt to call an encryption service, by contract method and transport.",
			Buckets: latencyBuckets,
		}, []string{"method", "transport"}),
		reencryptItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reencrypt_items_total",
			Help: "Vault items the re-encryption worker handled, by result: moved (now under the active key version), skipped (edited or deleted meanwhile), failed (refused by the encryption service).",
		}, []string{"result"}),
		reencryptJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reencrypt_jobs_finished_total",
			Help: "Re-encryption jobs that ended, by state (SUCCEEDED, FAILED, WAITING_FOR_KEY).",
		}, []string{"state"}),
		reencryptRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reencrypt_retries_total",
			Help: "Times the re-encryption worker backed off because the encryption service or the database was unavailable.",
		}),
		reencryptParked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reencrypt_jobs_parked_total",
			Help: "Times a re-encryption job waiting for its tenant's encryption service gave its worker slot to other jobs until a later attempt.",
		}),
		keyErasures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "key_erasures_total",
			Help: "Attempts to have an encryption service destroy a key context core no longer uses (a deleted user's), by result: erased, or failed (queued for another attempt).",
		}, []string{"result"}),
	}
	// Every series an alert reads exists from the start: increase() sees nothing of a series whose
	// first sample already counts the event (CustosCoreReencryptionJobFailed reads FAILED).
	for _, r := range []string{"moved", "skipped", "failed"} {
		s.reencryptItems.WithLabelValues(r)
	}
	for _, state := range []string{"SUCCEEDED", "FAILED", "WAITING_FOR_KEY"} { // reencrypt's final states
		s.reencryptJobs.WithLabelValues(state)
	}
	for _, r := range []string{"erased", "failed"} {
		s.keyErasures.WithLabelValues(r)
	}
	return s
}

func (s serviceMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.esRequests, s.esDuration, s.reencryptItems, s.reencryptJobs, s.reencryptRetries, s.reencryptParked, s.keyErasures}
}

// Transports of calls to an encryption service, for ObserveESCall.
const (
	TransportGRPC  = "grpc"
	TransportHTTPS = "https"
)

// ObserveESCall records one attempt to call an encryption service: the
// contract's method name ("Encrypt", "RewrapBatch"...), the status code it
// ended with (Unavailable when the service could not be reached), the
// transport and how long it took. The HTTPS client calls it; gRPC
// connections get it from ESUnaryClientInterceptor. A code gRPC does not
// define is recorded as Unknown: a tenant's own encryption service answers
// whatever number it likes, and each would be a new series.
func (m *Metrics) ObserveESCall(method string, code codes.Code, transport string, elapsed time.Duration) {
	m.service.esRequests.WithLabelValues(method, knownCode(code).String(), transport).Inc()
	m.service.esDuration.WithLabelValues(method, transport).Observe(elapsed.Seconds())
}

// ESUnaryClientInterceptor returns the interceptor of core's gRPC
// connections to encryption services that records every attempt with
// ObserveESCall, under the method's short name ("Encrypt" for
// "/custos.encryption.v1.EncryptionService/Encrypt").
func (m *Metrics) ESUnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		m.ObserveESCall(method[strings.LastIndexByte(method, '/')+1:], status.Code(err), TransportGRPC, time.Since(start))
		return err
	}
}

// ReencryptItemsMoved, ReencryptItemsSkipped, ReencryptItemsFailed,
// ReencryptJobFinished, ReencryptRetry and ReencryptJobParked fit the fields
// of reencrypt.Metrics of the same names.
func (m *Metrics) ReencryptItemsMoved(n int64) {
	m.service.reencryptItems.WithLabelValues("moved").Add(float64(n))
}

// ReencryptItemsSkipped counts items edited or deleted while their job ran.
func (m *Metrics) ReencryptItemsSkipped(n int64) {
	m.service.reencryptItems.WithLabelValues("skipped").Add(float64(n))
}

// ReencryptItemsFailed counts items the encryption service refused.
func (m *Metrics) ReencryptItemsFailed(n int64) {
	m.service.reencryptItems.WithLabelValues("failed").Add(float64(n))
}

// ReencryptJobFinished counts a job that ended in state.
func (m *Metrics) ReencryptJobFinished(state string) {
	m.service.reencryptJobs.WithLabelValues(state).Inc()
}

// ReencryptRetry counts a back-off of the worker.
func (m *Metrics) ReencryptRetry() { m.service.reencryptRetries.Inc() }

// ReencryptJobParked counts a job that gave its slot up while its encryption service is away.
func (m *Metrics) ReencryptJobParked() { m.service.reencryptParked.Inc() }

// WatchReencryptJobs registers custos_reencrypt_jobs_running, whose value is
// what running returns at each scrape: the re-encryption jobs this replica
// is working on. running must be cheap and must not block (read a counter the
// worker keeps, not the database).
//
// It fails when called twice on the same Metrics.
func (m *Metrics) WatchReencryptJobs(running func() int) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "reencrypt_jobs_running",
		Help: "Re-encryption jobs this replica is working on.",
	}, func() float64 { return float64(running()) }))
}

// KeyErased and KeyErasureFailed fit the fields of erasure.Metrics of the
// same names.
func (m *Metrics) KeyErased() { m.service.keyErasures.WithLabelValues("erased").Inc() }

// KeyErasureFailed counts an erasure attempt that failed and was deferred.
func (m *Metrics) KeyErasureFailed() { m.service.keyErasures.WithLabelValues("failed").Inc() }

// WatchKeyErasures registers custos_key_erasures_pending, whose value is what
// pending returns at each scrape: the key contexts still to be destroyed, as
// last counted. pending must be cheap and must not block.
//
// It fails when called twice on the same Metrics.
func (m *Metrics) WatchKeyErasures(pending func() int) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "key_erasures_pending",
		Help: "Key contexts core still has to have destroyed on their encryption services (deleted users'), as last counted by this replica. One that stays above zero needs an operator: see the log.",
	}, func() float64 { return float64(pending()) }))
}
