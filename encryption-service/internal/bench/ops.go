package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// echoMethod is the full name of the echo ceiling's only method.
const echoMethod = "/custos.bench.Echo/Echo"

// echoServer is the (empty) interface the echo service's implementation satisfies.
type echoServer interface{}

// echoServiceDesc is a gRPC service, written by hand so that no code generation is needed, whose
// one method returns the google.protobuf.BytesValue it is sent.
func echoServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "custos.bench.Echo",
		HandlerType: (*echoServer)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return in, nil
			},
		}},
		Metadata: "bench/echo",
	}
}

// operation returns the call of case c.
func (e *env) operation(c Case) operation {
	if c.Transport == GRPC {
		return e.grpcOperation(c)
	}
	return e.restOperation(c)
}

// grpcOperation calls the service's (or the echo's) gRPC method. Requests are built once: the
// measure is the server's and the transport's, not the client's building of messages.
func (e *env) grpcOperation(c Case) operation {
	withTenant := func(ctx context.Context) context.Context { return metadata.NewOutgoingContext(ctx, e.tenantMD) }
	enc := &encryptionv1.EncryptRequest{EncryptionId: e.encryptionID, Data: e.payload}
	dec := make([]*encryptionv1.DecryptRequest, len(e.current))
	for i, r := range e.current {
		dec[i] = &encryptionv1.DecryptRequest{EncryptionId: r.EncryptionId, CipherText: r.CipherText, EncryptionVersionId: r.EncryptionVersionId, Metadata: r.Metadata}
	}
	rew := make([]*encryptionv1.RewrapRequest, len(e.previous))
	for i, r := range e.previous {
		rew[i] = &encryptionv1.RewrapRequest{EncryptionId: r.EncryptionId, CipherText: r.CipherText, EncryptionVersionId: r.EncryptionVersionId, Metadata: r.Metadata}
	}
	n := c.Batch
	switch {
	case c.Op == Echo:
		msg := &wrapperspb.BytesValue{Value: bytes.Repeat([]byte(e.payload), n)}
		return func(ctx context.Context, _, _ int) (int, error) {
			out := new(wrapperspb.BytesValue)
			if err := e.echoConn.Invoke(ctx, echoMethod, msg, out); err != nil {
				return 0, grpcErr(err)
			}
			return n, nil
		}
	case c.Op == Encrypt && n == 1:
		return func(ctx context.Context, _, _ int) (int, error) {
			_, err := e.es.Encrypt(withTenant(ctx), enc)
			return 1, grpcErr(err)
		}
	case c.Op == Decrypt && n == 1:
		return func(ctx context.Context, w, i int) (int, error) {
			_, err := e.es.Decrypt(withTenant(ctx), dec[(w+i)%len(dec)])
			return 1, grpcErr(err)
		}
	case c.Op == Rewrap && n == 1:
		return func(ctx context.Context, w, i int) (int, error) {
			_, err := e.es.Rewrap(withTenant(ctx), rew[(w+i)%len(rew)])
			return 1, grpcErr(err)
		}
	case c.Op == Encrypt:
		req := &encryptionv1.EncryptBatchRequest{}
		for range n {
			req.Items = append(req.Items, enc)
		}
		return func(ctx context.Context, _, _ int) (int, error) {
			resp, err := e.es.EncryptBatch(withTenant(ctx), req)
			if err != nil {
				return 0, grpcErr(err)
			}
			return n, batchErrors(len(resp.Results), n, func(i int) *encryptionv1.ItemError { return resp.Results[i].Error })
		}
	case c.Op == Decrypt:
		req := &encryptionv1.DecryptBatchRequest{}
		for i := range n {
			req.Items = append(req.Items, dec[i%len(dec)])
		}
		return func(ctx context.Context, _, _ int) (int, error) {
			resp, err := e.es.DecryptBatch(withTenant(ctx), req)
			if err != nil {
				return 0, grpcErr(err)
			}
			return n, batchErrors(len(resp.Results), n, func(i int) *encryptionv1.ItemError { return resp.Results[i].Error })
		}
	default: // rewrap batch
		req := &encryptionv1.RewrapBatchRequest{}
		for i := range n {
			req.Items = append(req.Items, rew[i%len(rew)])
		}
		return func(ctx context.Context, _, _ int) (int, error) {
			resp, err := e.es.RewrapBatch(withTenant(ctx), req)
			if err != nil {
				return 0, grpcErr(err)
			}
			return n, batchErrors(len(resp.Results), n, func(i int) *encryptionv1.ItemError { return resp.Results[i].Error })
		}
	}
}

// grpcErr marks UNIMPLEMENTED as errUnavailable.
func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("%w: the service answers 501 UNIMPLEMENTED", errUnavailable)
	}
	return err
}

// batchErrors fails when a batch answer has the wrong number of results or any item failed.
func batchErrors(got, want int, itemErr func(int) *encryptionv1.ItemError) error {
	if got != want {
		return fmt.Errorf("batch of %d answered %d results", want, got)
	}
	for i := range got {
		if e := itemErr(i); e != nil {
			return fmt.Errorf("batch item %d failed: code %d: %s", i, e.Code, e.Message)
		}
	}
	return nil
}

// restOperation posts pre-built JSON bodies to the service's REST gateway (or the REST echo).
func (e *env) restOperation(c Case) operation {
	n := c.Batch
	encBody := mustJSON(map[string]any{"encryptionId": e.encryptionID, "data": e.payload})
	decBodies := make([][]byte, len(e.current))
	for i, r := range e.current {
		decBodies[i] = mustProtoJSON(&encryptionv1.DecryptRequest{EncryptionId: r.EncryptionId, CipherText: r.CipherText, EncryptionVersionId: r.EncryptionVersionId, Metadata: r.Metadata})
	}
	rewBodies := make([][]byte, len(e.previous))
	for i, r := range e.previous {
		rewBodies[i] = mustProtoJSON(&encryptionv1.RewrapRequest{EncryptionId: r.EncryptionId, CipherText: r.CipherText, EncryptionVersionId: r.EncryptionVersionId, Metadata: r.Metadata})
	}
	batch := func(bodies [][]byte) []byte {
		items := make([]json.RawMessage, n)
		for i := range n {
			items[i] = bodies[i%len(bodies)]
		}
		return mustJSON(map[string]any{"items": items})
	}
	base := "https://" + e.httpAddr
	switch {
	case c.Op == Echo && n == 1:
		return e.post(e.echoRESTClient, "https://"+e.echoHTTPAddr+"/echo", n, func(int) []byte { return encBody })
	case c.Op == Echo:
		body := batch([][]byte{encBody})
		return e.post(e.echoRESTClient, "https://"+e.echoHTTPAddr+"/echo", n, func(int) []byte { return body })
	case c.Op == Encrypt && n == 1:
		return e.post(e.restClient, base+"/v1/encrypt", 1, func(int) []byte { return encBody })
	case c.Op == Decrypt && n == 1:
		return e.post(e.restClient, base+"/v1/decrypt", 1, func(i int) []byte { return decBodies[i%len(decBodies)] })
	case c.Op == Rewrap && n == 1:
		return e.post(e.restClient, base+"/v1/rewrap", 1, func(i int) []byte { return rewBodies[i%len(rewBodies)] })
	case c.Op == Encrypt:
		body := batch([][]byte{encBody})
		return e.post(e.restClient, base+"/v1/encrypt:batch", n, func(int) []byte { return body })
	case c.Op == Decrypt:
		body := batch(decBodies)
		return e.post(e.restClient, base+"/v1/decrypt:batch", n, func(int) []byte { return body })
	default:
		body := batch(rewBodies)
		return e.post(e.restClient, base+"/v1/rewrap:batch", n, func(int) []byte { return body })
	}
}

// post returns an operation that POSTs body(i) to url and reads the whole answer, which must be
// 200 without a failed batch item; 501 is errUnavailable.
func (e *env) post(client *http.Client, url string, items int, body func(i int) []byte) operation {
	return func(ctx context.Context, w, i int) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body(w+i)))
		if err != nil {
			return 0, err
		}
		req.Header = e.tenantHeader.Clone()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			return 0, fmt.Errorf("read answer: %w", err)
		case resp.StatusCode == http.StatusNotImplemented:
			return 0, fmt.Errorf("%w: the service answers 501 UNIMPLEMENTED", errUnavailable)
		case resp.StatusCode != http.StatusOK:
			return 0, fmt.Errorf("POST %s answered %d: %.200s", strings.TrimPrefix(url, "https://"), resp.StatusCode, answer)
		case items > 1 && hasItemError(answer):
			return 0, fmt.Errorf("POST %s: a batch item failed: %.300s", strings.TrimPrefix(url, "https://"), answer)
		}
		return items, nil
	}
}

// mustJSON marshals v, which the harness builds itself.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("bench: marshal a request: %v", err)) // a bug in the harness
	}
	return b
}

// mustProtoJSON is m as a REST body: the JSON mapping the gateway reads.
func mustProtoJSON(m proto.Message) []byte {
	b, err := protojson.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("bench: marshal a request: %v", err)) // a bug in the harness
	}
	return b
}

// hasItemError says whether a batch answer holds an "error" object. Successful results carry
// "error": null; protojson varies its spacing, so the space after the colon is optional.
func hasItemError(answer []byte) bool {
	key := []byte(`"error":`)
	for {
		i := bytes.Index(answer, key)
		if i < 0 {
			return false
		}
		answer = bytes.TrimLeft(answer[i+len(key):], " \t\n")
		if len(answer) > 0 && answer[0] == '{' {
			return true
		}
	}
}
