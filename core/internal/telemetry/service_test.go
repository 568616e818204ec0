package telemetry_test

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/telemetry"
)

// observeService exercises core's own series for TestMetrics.
func observeService(m *telemetry.Metrics) {
	intercept := m.ESUnaryClientInterceptor()
	unavailable := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		return status.Error(codes.Unavailable, "down")
	}
	ok := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	if err := intercept(context.Background(), "/custos.encryption.v1.EncryptionService/Encrypt", nil, nil, nil, unavailable); status.Code(err) != codes.Unavailable {
		panic(errors.New("the interceptor changed the error"))
	}
	_ = intercept(context.Background(), "/custos.encryption.v1.EncryptionService/Encrypt", nil, nil, nil, ok)
	// A tenant's own encryption service may answer any number as a status code: one series for all.
	for c := range 3 {
		hostile := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
			return status.Error(codes.Code(1000+c), "made up")
		}
		_ = intercept(context.Background(), "/custos.encryption.v1.EncryptionService/Decrypt", nil, nil, nil, hostile)
	}
	m.ObserveESCall("Decrypt", codes.OK, telemetry.TransportHTTPS, 2*time.Millisecond)

	m.ReencryptItemsMoved(5)
	m.ReencryptItemsSkipped(1)
	m.ReencryptJobFinished("SUCCEEDED")
	m.ReencryptRetry()
	m.ReencryptJobParked()
	m.ReencryptJobParked()
	if err := m.WatchReencryptJobs(func() int { return 3 }); err != nil {
		panic(err)
	}
	m.KeyErased()
	m.KeyErasureFailed()
	m.KeyErasureFailed()
	if err := m.WatchKeyErasures(func() int { return 4 }); err != nil {
		panic(err)
	}
}

// serviceSeries are what observeService must show in a scrape.
var serviceSeries = []string{
	`custos_es_client_requests_total{code="Unavailable",method="Encrypt",transport="grpc"} 1`,
	`custos_es_client_requests_total{code="OK",method="Encrypt",transport="grpc"} 1`,
	`custos_es_client_requests_total{code="OK",method="Decrypt",transport="https"} 1`,
	`custos_es_client_requests_total{code="Unknown",method="Decrypt",transport="grpc"} 3`,
	`custos_es_client_request_duration_seconds_count{method="Encrypt",transport="grpc"} 2`,
	`custos_reencrypt_items_total{result="moved"} 5`,
	`custos_reencrypt_items_total{result="skipped"} 1`,
	`custos_reencrypt_items_total{result="failed"} 0`,
	`custos_reencrypt_jobs_finished_total{state="SUCCEEDED"} 1`,
	`custos_reencrypt_retries_total 1`,
	`custos_reencrypt_jobs_parked_total 2`,
	`custos_reencrypt_jobs_running 3`,
	`custos_key_erasures_total{result="erased"} 1`,
	`custos_key_erasures_total{result="failed"} 2`,
	`custos_key_erasures_pending 4`,
}
