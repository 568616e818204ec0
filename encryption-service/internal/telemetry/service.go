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

// WatchChangeListener registers custos_change_listener_connected, whose value
// at each scrape is 1 when connected reports true, else 0: whether this
// replica's listener for other replicas' changes (PostgreSQL LISTEN) is
// connected. While it is not, the caches trust what they hold for a second
// only, and every busy key context is read from the database again and
// again. connected must be cheap and must not block.
//
// It fails when called twice on the same Metrics.
func (m *Metrics) WatchChangeListener(connected func() bool) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "change_listener_connected",
		Help: "1 while this replica's change listener (PostgreSQL LISTEN for other replicas' changes) is connected, else 0: its caches then trust entries for a second only.",
	}, func() float64 {
		if connected() {
			return 1
		}
		return 0
	}))
}
