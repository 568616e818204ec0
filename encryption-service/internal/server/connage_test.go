package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/testcerts"
)

// TestMaxConnectionAgeMakesClientsReconnect: with MaxConnectionAge, a client's next call after the
// age has passed arrives on a new connection (a new client port), which is how balancing clients
// find replicas added since they connected; without it, the connection stays.
func TestMaxConnectionAgeMakesClientsReconnect(t *testing.T) {
	for _, age := range []time.Duration{0, 300 * time.Millisecond} {
		e := mustStart(t, func(c *server.Config, _ *testcerts.Set) { c.MaxConnectionAge = age })
		conn := e.mustGRPC(t, e.certs.ClientConfig())
		addrOf := func() string {
			t.Helper()
			got, err := whoami(context.Background(), conn)
			if err != nil {
				t.Fatalf("Whoami: %v", err)
			}
			addr, _ := got["addr"].(string)
			return addr
		}
		first := addrOf()
		// Long enough for the aged connection to be replaced; the unaged one is watched for 1 s.
		tries := 50
		if age == 0 {
			tries = 10
		}
		var last string
		for range tries {
			time.Sleep(100 * time.Millisecond)
			if last = addrOf(); last != first {
				break
			}
		}
		if age > 0 && last == first {
			t.Errorf("MaxConnectionAge %v: still on the first connection (%s) after 5 s", age, first)
		}
		if age == 0 && last != first {
			t.Errorf("no MaxConnectionAge: the connection changed from %s to %s", first, last)
		}
	}
}
