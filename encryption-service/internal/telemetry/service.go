package telemetry

import "github.com/prometheus/client_golang/prometheus"

// serviceMetrics are the encryption service's own series.
type serviceMetrics struct {
	keyCacheLookups *prometheus.CounterVec
}

func newServiceMetrics() serviceMetrics {
	s := serviceMetrics{
		keyCacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "key_cache_lookups_total",
			Help: "Key-context lookups of the keyring's cache, by result (hit, miss).",
		}, []string{"result"}),
	}
	// Both series exist from the start, so a hit ratio is defined before the first miss.
	s.keyCacheLookups.WithLabelValues("hit")
	s.keyCacheLookups.WithLabelValues("miss")
	return s
}

func (s serviceMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.keyCacheLookups}
}

// KeyCacheHits counts lookups the keyring's cache answered
// (custos_key_cache_lookups_total{result="hit"}); pass it to the keyring.
func (m *Metrics) KeyCacheHits() prometheus.Counter {
	return m.service.keyCacheLookups.WithLabelValues("hit")
}

// KeyCacheMisses counts lookups that had to read the database
// (custos_key_cache_lookups_total{result="miss"}); pass it to the keyring.
func (m *Metrics) KeyCacheMisses() prometheus.Counter {
	return m.service.keyCacheLookups.WithLabelValues("miss")
}
