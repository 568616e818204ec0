package telemetry_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/custos-platform/custos/core/internal/telemetry"
)

// TestSamplerArgMustBeARatio: OTEL_TRACES_SAMPLER_ARG=NaN passes a range check written r < 0 ||
// r > 1 (every comparison with NaN is false), and TraceIDRatioBased(NaN) then samples every new
// trace: it is refused as a configuration error, like Inf; NewTracing refuses a NaN ratio too.
func TestSamplerArgMustBeARatio(t *testing.T) {
	for _, arg := range []string{"NaN", "nan", "+Inf", "-Inf", "Infinity", "1.0000001", "-0.1"} {
		t.Run(arg, func(t *testing.T) {
			cfg, err := telemetry.ParseTracingEnv(func(k string) string {
				return map[string]string{"OTEL_TRACES_SAMPLER_ARG": arg}[k]
			}, "svc", "v")
			if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") {
				t.Errorf("ParseTracingEnv(OTEL_TRACES_SAMPLER_ARG=%s) = %+v, %v; want an error naming the variable", arg, cfg, err)
			}
		})
	}
	if tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{Endpoint: "http://127.0.0.1:1", SampleRatio: math.NaN()}); err == nil {
		_ = tr.Shutdown(context.Background())
		t.Error("NewTracing(SampleRatio NaN) = nil error, want one")
	}
}
