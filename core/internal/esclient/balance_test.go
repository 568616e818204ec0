package esclient

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/custos-platform/custos/core/internal/estest"
	"github.com/custos-platform/custos/core/internal/testcerts"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// TestDialSpreadsCallsOverReplicas: when the service's name resolves to several replicas (a
// Kubernetes headless Service), the connection calls all of them, not only the first.
func TestDialSpreadsCallsOverReplicas(t *testing.T) {
	certs := testcerts.New(t)
	db := testdb.NewEmpty(t)
	replicas := []*estest.Service{estest.Start(t, db, certs), estest.Start(t, db, certs)}

	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: replicas[0].GRPCAddr}, {Addr: replicas[1].GRPCAddr}}})
	conn, err := Dial(Options{Addr: "replicas:///encryption-service", ServerName: "localhost", CAFile: certs.CAFile,
		ClientCertFile: certs.ClientCertFile, ClientKeyFile: certs.ClientKeyFile, DialOptions: []grpc.DialOption{grpc.WithResolvers(r)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Each replica answers NOT_SERVING until its first readiness check has passed.
	deadline := time.Now().Add(15 * time.Second)
	for ok := 0; ok < 20; {
		err := CheckHealth(context.Background(), conn)
		if err == nil {
			ok++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("CheckHealth: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, es := range replicas {
		if n := healthChecks(es); n == 0 {
			t.Errorf("replica %d answered none of 20 health checks; want calls spread over both", i)
		}
	}
}

// healthChecks counts the gRPC health checks in a service's access log.
func healthChecks(es *estest.Service) int {
	n := 0
	for _, line := range es.Logs() {
		var l struct {
			Msg    string `json:"msg"`
			Method string `json:"method"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "rpc" && l.Method == "/grpc.health.v1.Health/Check" {
			n++
		}
	}
	return n
}
