package telemetry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/telemetry"
)

// TestErrorHandlerLogsJSONWarnings: what the OpenTelemetry SDK reports (a failed export) becomes a
// JSON line of the service's logger at warning level, at most one per interval; the next says how
// many were left out.
func TestErrorHandlerLogsJSONWarnings(t *testing.T) {
	var buf bytes.Buffer
	h := telemetry.NewErrorHandler(slog.New(slog.NewJSONHandler(&buf, nil)), 50*time.Millisecond)
	exportErr := errors.New("traces export: context deadline exceeded")
	for range 4 {
		h.Handle(exportErr)
	}
	time.Sleep(60 * time.Millisecond) // past the interval
	h.Handle(exportErr)

	type line struct {
		Level, Msg, Error string
		Suppressed        int
	}
	var got []line
	for _, raw := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var l line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("log line %q is not JSON: %v", raw, err)
		}
		got = append(got, l)
	}
	want := []line{
		{Level: "WARN", Msg: "telemetry: OpenTelemetry error", Error: exportErr.Error()},
		{Level: "WARN", Msg: "telemetry: OpenTelemetry error", Error: exportErr.Error(), Suppressed: 3},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("5 errors, the last after the interval, logged %+v; want %+v", got, want)
	}
}
