package app

import (
	"bytes"
	"encoding/json"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// otelErrorLogged reports whether lines hold the JSON warning the services log for an
// OpenTelemetry error, and returns the first line that is not JSON.
func otelErrorLogged(lines []string) (logged bool, notJSON string) {
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var line struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			if notJSON == "" {
				notJSON = l
			}
			continue
		}
		if line.Level == "WARN" && line.Msg == "telemetry: OpenTelemetry error" {
			logged = true
		}
	}
	return logged, notJSON
}

// TestOpenTelemetryErrorsAreJSONLogLines: with tracing on and the collector unreachable, the
// OpenTelemetry SDK reports each failed export through its global error handler. Both services
// log them as JSON warnings through their logger, as every other line ("Logs are JSON lines on
// standard error"), instead of plain text through the standard log package.
func TestOpenTelemetryErrorsAreJSONLogLines(t *testing.T) {
	dead := "http://" + freeAddr(t)
	// Export every tenth of a second and give up after 300 ms (read from the process environment
	// by the exporter, and passed on to the encryption service's process).
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
	var stdlog lockedBuffer
	log.SetOutput(&stdlog)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	tracing := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": dead}
	p := startPlatformWith(t, tracing, tracing)
	f := p.newTenant("acme", "PLATFORM")
	p.must(200, "POST", "/v1/items", f.member, map[string]string{"name": "n", "data": "traced"})

	deadline := time.Now().Add(20 * time.Second)
	for {
		coreLogged, coreNotJSON := otelErrorLogged(strings.Split(p.core.logs.String(), "\n"))
		esLogged, esNotJSON := otelErrorLogged(p.es.Logs())
		if coreNotJSON != "" || esNotJSON != "" {
			t.Fatalf("a log line is not JSON: core %q, encryption service %q", coreNotJSON, esNotJSON)
		}
		if coreLogged && esLogged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s of failed exports, a JSON warning logged by core: %v, by the encryption service: %v", coreLogged, esLogged)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := stdlog.String(); s != "" {
		t.Errorf("the standard log package printed %q", s)
	}
}
