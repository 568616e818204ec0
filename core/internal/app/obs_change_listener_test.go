package app

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// TestEncryptionServiceExportsItsChangeListenerState: each encryption-service replica exports
// custos_change_listener_connected, 1 once its change listener is connected, which
// CustosEncryptionServiceChangeListenerDown reads per replica.
func TestEncryptionServiceExportsItsChangeListenerState(t *testing.T) {
	certs := testcerts.New(t)
	metricsAddr := freeAddr(t)
	es := estest.StartWith(t, testdb.NewEmpty(t), certs, map[string]string{"ES_METRICS_ADDR": metricsAddr})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig()}}
	const want = "custos_change_listener_connected 1\n"
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("https://" + metricsAddr + "/metrics")
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), want) {
			return
		}
		last = string(b)
	}
	t.Errorf("the encryption service's scrape never showed %q; last: %.3000s\nlogs: %v", want, last, es.Logs())
}
