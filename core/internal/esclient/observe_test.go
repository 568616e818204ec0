package esclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	"github.com/custos-platform/custos/core/internal/telemetry"
	"github.com/custos-platform/custos/core/internal/testcerts"
)

// observed records RouterOptions.ObserveHTTPS's calls as "method code".
type observed struct {
	mu    sync.Mutex
	calls []string
}

func (o *observed) observe(method string, code codes.Code, elapsed time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if elapsed <= 0 {
		code = 999 // shows in the failure message: every attempt takes some time
	}
	o.calls = append(o.calls, method+" "+code.String())
}

func (o *observed) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.calls
	o.calls = nil
	return c
}

// TestHTTPSAttemptsAreObserved: every attempt of a call over HTTPS reaches
// RouterOptions.ObserveHTTPS (core's custos_es_client_requests_total{transport="https"}), with the
// code it ended with, so that the alert on unavailable encryption services sees hosted ones too.
func TestHTTPSAttemptsAreObserved(t *testing.T) {
	es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	es.override = func(path string, n int) (int, string) {
		if path == "/v1/encrypt" && n <= 2 {
			return http.StatusServiceUnavailable, "down for a moment"
		}
		return 0, ""
	}
	var got observed
	c := seedClient(t, es, RouterOptions{BreakerFailures: 100, ObserveHTTPS: got.observe})
	ctx := context.Background()

	for _, tt := range []struct {
		name string
		call func() error
		want []string
	}{
		{"two 503 then success", func() error { _, err := c.Encrypt(ctx, "ctx-1", "x", nil); return err },
			[]string{"Encrypt Unavailable", "Encrypt Unavailable", "Encrypt OK"}},
		{"an unknown context", func() error { _, err := c.Encrypt(ctx, "ctx-unknown", "x", nil); return err },
			[]string{"Encrypt NotFound"}},
		{"a method the service lacks", func() error { _, err := c.CreateContext(ctx, "PLATFORM", nil); return err },
			[]string{"CreateEncryption Unimplemented"}},
		{"refused before any attempt", func() error { _, err := c.Encrypt(ctx, "", "x", nil); return err },
			nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_ = tt.call()
			if calls := got.take(); !slices.Equal(calls, tt.want) {
				t.Errorf("observed %q, want %q", calls, tt.want)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		certs := testcerts.New(t)
		box := mustBox(t)
		tenant := hostedTenant(t, box, "https", "https://"+addr, certs, seedTenant, "cts_seed-secret")
		var got observed
		r := NewRouter(nil, tenants(tenant), box, RouterOptions{Retries: -1, ObserveHTTPS: got.observe})
		defer r.Close()
		_, _ = mustFor(t, r, tenant.ID).Decrypt(ctx, Ciphertext{CipherText: "AAAA", EncryptionID: "ctx-1", VersionID: "1"}, nil)
		if calls := got.take(); !slices.Equal(calls, []string{"Decrypt Unavailable"}) {
			t.Errorf("observed %q, want [Decrypt Unavailable]", calls)
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		certs := testcerts.New(t)
		url := startSeed(t, newSeedES(seedTenant, "cts_seed-secret", "ctx-1"), certs)
		box := mustBox(t)
		tenant := hostedTenant(t, box, "https", url, certs.Unrelated(t), seedTenant, "cts_seed-secret")
		var got observed
		r := NewRouter(nil, tenants(tenant), box, RouterOptions{ObserveHTTPS: got.observe})
		defer r.Close()
		_, _ = mustFor(t, r, tenant.ID).Encrypt(ctx, "ctx-1", "x", nil)
		if calls := got.take(); !slices.Equal(calls, []string{"Encrypt Internal"}) {
			t.Errorf("observed %q, want [Encrypt Internal]", calls)
		}
	})
}

// TestHTTPSAttemptsCarryTheTrace: a call over HTTPS made inside a trace sends it along
// (traceparent) under a client span of its own, child of the caller's, as gRPC calls do through
// otelgrpc; a failed attempt's span is an error naming the code only. Without tracing, no header.
func TestHTTPSAttemptsCarryTheTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{ServiceName: "core", Exporter: spans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	es := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	c := seedClient(t, es, RouterOptions{Tracing: tr})

	ctx, parent := tr.Tracer("test").Start(context.Background(), "vault.create")
	if _, err := c.Encrypt(ctx, "ctx-1", "x", nil); err != nil {
		t.Fatalf("Encrypt = %v", err)
	}
	_, _ = c.Encrypt(ctx, "ctx-unknown", "x", nil)
	parent.End()
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	var client []tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.SpanKind == trace.SpanKindClient {
			client = append(client, s)
		}
	}
	if len(client) != 2 {
		t.Fatalf("%d client spans, want 2 (one per attempt): %v", len(client), spans.GetSpans())
	}
	header := es.lastHeaders("/v1/encrypt").Get("Traceparent")
	want := fmt.Sprintf("00-%s-%s-01", client[1].SpanContext.TraceID(), client[1].SpanContext.SpanID())
	if header != want {
		t.Errorf("traceparent = %q, want %q (the last attempt's client span)", header, want)
	}
	for i, s := range client {
		if s.Name != "HTTPS Encrypt" || s.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("client span %d = %q with parent %s, want \"HTTPS Encrypt\" child of %s", i, s.Name, s.Parent.SpanID(), parent.SpanContext().SpanID())
		}
		for _, a := range s.Attributes {
			if v := a.Value.String(); strings.Contains(v, "cts_seed-secret") || strings.Contains(v, seedTenant) {
				t.Errorf("client span %d attribute %s = %q holds the tenant's credential", i, a.Key, v)
			}
		}
	}
	if s := client[0].Status; s.Code != otelcodes.Unset {
		t.Errorf("successful attempt's span status = %v, want unset", s)
	}
	if s := client[1].Status; s.Code != otelcodes.Error || s.Description != "NotFound" {
		t.Errorf("failed attempt's span status = %+v, want Error \"NotFound\"", s)
	}

	untraced := newSeedES(seedTenant, "cts_seed-secret", "ctx-1")
	if _, err := seedClient(t, untraced, RouterOptions{}).Encrypt(ctx, "ctx-1", "x", nil); err != nil {
		t.Fatalf("Encrypt without tracing = %v", err)
	}
	if h := untraced.lastHeaders("/v1/encrypt").Get("Traceparent"); h != "" {
		t.Errorf("without RouterOptions.Tracing, traceparent = %q, want none", h)
	}
}
