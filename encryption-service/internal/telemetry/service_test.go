package telemetry_test

import "github.com/custos-platform/custos/encryption-service/internal/telemetry"

// observeService exercises the encryption service's own series for TestMetrics.
func observeService(m *telemetry.Metrics) {
	m.KeyCacheHits().Inc()
	m.KeyCacheHits().Inc()
	m.KeyCacheMisses().Inc()
	if err := m.WatchChangeListener(func() bool { return true }); err != nil {
		panic(err)
	}
}

// serviceSeries are what observeService must show in a scrape.
var serviceSeries = []string{
	`custos_key_cache_lookups_total{result="hit"} 2`,
	`custos_key_cache_lookups_total{result="miss"} 1`,
	`custos_change_listener_connected 1`,
}
