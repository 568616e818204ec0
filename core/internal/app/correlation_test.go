package app

import (
	"encoding/json"
	"testing"
	"time"
)

// TestRequestIDReachesTheEncryptionService: the request id of a call to core is the one the
// encryption service logs for the calls core makes for it, so that operators can follow one
// request through both services' logs.
func TestRequestIDReachesTheEncryptionService(t *testing.T) {
	p := startPlatform(t, nil)
	f := p.newTenant("acme", "PLATFORM")
	c := cred{"X-Request-Id": "corr-test-7"}
	for k, v := range f.member {
		c[k] = v
	}
	p.must(200, "POST", "/v1/items", c, map[string]string{"name": "n", "data": "correlated"})

	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range p.es.Logs() {
			var l struct{ Msg, Method, RequestID string }
			var raw map[string]any
			if json.Unmarshal([]byte(line), &raw) != nil {
				continue
			}
			l.Msg, _ = raw["msg"].(string)
			l.Method, _ = raw["method"].(string)
			l.RequestID, _ = raw["request_id"].(string)
			if l.Msg == "rpc" && l.Method == "/custos.encryption.v1.EncryptionService/Encrypt" {
				if l.RequestID == "corr-test-7" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the encryption service logged no Encrypt call with request id corr-test-7; its log:\n%v", p.es.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
