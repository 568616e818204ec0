package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/export"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/server"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// ExportServer serves custos.core.v1.ExportService. Create it with NewExportServer.
type ExportServer struct {
	corev1.UnimplementedExportServiceServer
	Exports *export.Service
	limits  ImportLimits
	slots   *importSlots
}

// ImportLimits bound what an import may hold of a replica. Import receives all of an import's
// records before its transaction starts, so that no client, however slow, holds a transaction
// (with its locks and its database connection) open; these limits bound what it holds instead.
// A zero field takes the default named after it.
type ImportLimits struct {
	// MaxBytes bounds the records of one import: the sum of their encoded sizes, each counted as
	// at least 256 bytes (a real record is larger), so at most MaxBytes/256 records. Give it the
	// service's maximum request size, which bounds a REST import's body: a REST import then never
	// meets this limit first, since JSON is larger than the encoding.
	MaxBytes int
	// Idle bounds the wait for each next record (and for the end of the stream), Receive the
	// time to receive them all.
	Idle, Receive time.Duration
	// PerTenant and PerReplica bound the imports in progress at once on this replica, of one
	// tenant and in all; one more is refused (ResourceExhausted) rather than queued.
	PerTenant, PerReplica int
}

// Defaults of ImportLimits.
const (
	DefaultImportMaxBytes   = 4 << 20
	DefaultImportIdle       = 30 * time.Second
	DefaultImportReceive    = 5 * time.Minute
	DefaultImportPerTenant  = 2
	DefaultImportPerReplica = 8
)

// minImportRecordBytes is what a record counts for at least against ImportLimits.MaxBytes, so
// that a stream of tiny records cannot hold more records than real ones would.
const minImportRecordBytes = 256

// NewExportServer returns the export service over exports, with limits (zero fields take their
// defaults).
func NewExportServer(exports *export.Service, limits ImportLimits) *ExportServer {
	limits.MaxBytes = orDefault(limits.MaxBytes, DefaultImportMaxBytes)
	limits.Idle = orDefault(limits.Idle, DefaultImportIdle)
	limits.Receive = orDefault(limits.Receive, DefaultImportReceive)
	limits.PerTenant = orDefault(limits.PerTenant, DefaultImportPerTenant)
	limits.PerReplica = orDefault(limits.PerReplica, DefaultImportPerReplica)
	return &ExportServer{
		Exports: exports, limits: limits,
		slots: &importSlots{perTenant: map[uuid.UUID]int{}, maxTenant: limits.PerTenant, maxTotal: limits.PerReplica},
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Export implements GET /v1/export: one ExportResponse per item (over REST, one JSON object per
// line: {"result":{"record":{…}}}).
func (s *ExportServer) Export(req *corev1.ExportRequest, stream grpc.ServerStreamingServer[corev1.ExportResponse]) error {
	ctx := stream.Context()
	r := request(ctx)
	return s.Exports.Export(ctx, export.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}, req.GetCursor(), func(rec export.Record) error {
		pb, err := recordToProto(rec)
		if err != nil {
			return err
		}
		return stream.Send(&corev1.ExportResponse{Record: pb})
	})
}

// Import implements POST /v1/import (over REST see RegisterImportGateway): every record of the
// stream is stored, or none. The records are received in full (within s's ImportLimits) before
// the import's transaction starts.
func (s *ExportServer) Import(stream grpc.ClientStreamingServer[corev1.ImportRequest, corev1.ImportResponse]) error {
	ctx := stream.Context()
	release, err := s.slots.acquire(principal.FromContext(ctx).TenantID)
	if err != nil {
		return err
	}
	defer release()
	records, err := s.receive(stream)
	if err != nil {
		return err
	}
	r := request(ctx)
	res, err := s.Exports.Import(ctx, export.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}, func(yield func(export.Record, error) bool) {
		for _, rec := range records {
			if !yield(rec, nil) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&corev1.ImportResponse{Imported: uint32(res.Imported), Unchanged: uint32(res.Unchanged)}) //nolint:gosec // non-negative counts of the records in one import transaction, far below 2^32
}

// received is one stream.Recv result.
type received struct {
	req *corev1.ImportRequest
	err error
}

// receive reads the records of stream until its end, checking each one's fields, within
// s.limits: at most MaxBytes of them, each within Idle of the previous one, all within Receive.
// Its errors name the record and say that nothing was imported.
func (s *ExportServer) receive(stream grpc.ClientStreamingServer[corev1.ImportRequest, corev1.ImportResponse]) ([]export.Record, error) {
	// Recv cannot be given a deadline: a goroutine receives, and gives up once the handler has
	// (the stream then ends, which ends a Recv that is waiting).
	next := make(chan received)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case next <- received{req, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	overall := time.NewTimer(s.limits.Receive)
	defer overall.Stop()
	idle := time.NewTimer(s.limits.Idle)
	defer idle.Stop()
	var (
		records []export.Record
		size    int
	)
	for n := 1; ; n++ {
		var got received
		select {
		case got = <-next:
		case <-idle.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "record %d: none came within %s of the previous one (or of the start); nothing was imported", n, s.limits.Idle)
		case <-overall.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "record %d: an import must be sent within %s; nothing was imported; import in parts", n, s.limits.Receive)
		}
		idle.Reset(s.limits.Idle)
		if errors.Is(got.err, io.EOF) {
			return records, nil
		}
		if got.err != nil {
			return nil, recvError(n, got.err)
		}
		if got.req.GetRecord() == nil {
			return nil, errs.E(errs.Invalid, "record %d: record: required; nothing was imported", n)
		}
		if size += max(proto.Size(got.req.GetRecord()), minImportRecordBytes); size > s.limits.MaxBytes {
			return nil, errs.E(errs.ResourceExhausted, "record %d: an import holds at most %d bytes of records (each counted as at least %d); nothing was imported; import in parts",
				n, s.limits.MaxBytes, minImportRecordBytes)
		}
		rec, err := recordFromProto(got.req.GetRecord())
		if err != nil {
			return nil, errs.E(errs.Invalid, "record %d: %s; nothing was imported", n, err)
		}
		records = append(records, rec)
	}
}

// importSlots counts the imports in progress on this replica, per tenant and in all.
type importSlots struct {
	mu                  sync.Mutex
	perTenant           map[uuid.UUID]int
	total               int
	maxTenant, maxTotal int
}

// acquire takes a slot for an import into tenant and returns its release; it fails with
// ResourceExhausted when the tenant or the replica has no slot left.
func (l *importSlots) acquire(tenant uuid.UUID) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perTenant[tenant] >= l.maxTenant {
		return nil, errs.E(errs.ResourceExhausted, "this tenant has %d imports in progress, the most at once: try again when one has finished; nothing was imported", l.maxTenant)
	}
	if l.total >= l.maxTotal {
		return nil, errs.E(errs.ResourceExhausted, "too many imports in progress: try again shortly; nothing was imported")
	}
	l.perTenant[tenant]++
	l.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perTenant[tenant]--; l.perTenant[tenant] == 0 {
				delete(l.perTenant, tenant)
			}
		})
	}, nil
}

// recvError classifies a failure to receive record n: the store must see an *errs.Error, or it
// would take it for a database failure.
func recvError(n int, err error) error {
	st, _ := status.FromError(err)
	kind := errs.Unavailable
	switch st.Code() {
	case codes.ResourceExhausted:
		kind = errs.ResourceExhausted
	case codes.InvalidArgument:
		kind = errs.Invalid
	}
	return errs.Wrap(kind, err, "receive record "+strconv.Itoa(n)+": "+st.Message()+"; nothing was imported")
}

func recordToProto(r export.Record) (*corev1.ExportRecord, error) {
	meta := &structpb.Struct{}
	if err := protojson.Unmarshal(r.Metadata, meta); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "item "+r.ID+" has metadata that is not a JSON object")
	}
	return &corev1.ExportRecord{
		Id: r.ID, OwnerId: r.OwnerID, Revision: r.Revision, CipherText: r.CipherText, EncryptionId: r.EncryptionID,
		EncryptionVersionId: r.VersionID, Algorithm: r.Algorithm, Metadata: meta,
		CreatedAt: timestamppb.New(r.CreatedAt), UpdatedAt: timestamppb.New(r.UpdatedAt),
		Cursor: r.Cursor, Integrity: r.Integrity,
	}, nil
}

// recordFromProto converts a received record; its error names the field.
func recordFromProto(pb *corev1.ExportRecord) (export.Record, error) {
	r := export.Record{
		ID: pb.GetId(), OwnerID: pb.GetOwnerId(), Revision: pb.GetRevision(), CipherText: pb.GetCipherText(),
		EncryptionID: pb.GetEncryptionId(), VersionID: pb.GetEncryptionVersionId(), Algorithm: pb.GetAlgorithm(),
		Cursor: pb.GetCursor(), Integrity: pb.GetIntegrity(),
	}
	if pb.GetMetadata() == nil {
		return export.Record{}, errors.New("metadata: required")
	}
	meta, err := protojson.Marshal(pb.GetMetadata())
	if err != nil {
		return export.Record{}, errors.New("metadata: not a JSON object")
	}
	r.Metadata = meta
	for _, ts := range []struct {
		name string
		pb   *timestamppb.Timestamp
		dst  *time.Time
	}{{"createdAt", pb.GetCreatedAt(), &r.CreatedAt}, {"updatedAt", pb.GetUpdatedAt(), &r.UpdatedAt}} {
		if ts.pb == nil || ts.pb.CheckValid() != nil {
			return export.Record{}, errors.New(ts.name + ": required, a valid timestamp")
		}
		*ts.dst = ts.pb.AsTime()
	}
	return r, nil
}

// RegisterImportGateway serves POST /v1/import over REST in place of the generated handler, which
// takes only {"record":{…}} objects. This one takes a body of JSON values, one record each,
// usually one per line (NDJSON), in any of three shapes:
//
//	{"result":{"record":{…}}}   a line of GET /v1/export as the gateway streams it
//	{"record":{…}}              an ImportRequest
//	{…}                         a bare ExportRecord
//
// so that an export file can be posted back unchanged. A line {"error":…} (an export that ended
// in an error) or a malformed value gets 400 naming the record, and nothing is imported. It must
// be registered after RegisterExportServiceHandler: the gateway mux uses the last handler
// registered for a path. The call passes through the gRPC interceptors like every REST call.
func RegisterImportGateway(_ context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	client := corev1.NewExportServiceClient(conn)
	return mux.HandlePath(http.MethodPost, "/v1/import", func(w http.ResponseWriter, req *http.Request, _ map[string]string) {
		ctx, cancel := context.WithCancel(req.Context())
		defer cancel()
		_, outbound := runtime.MarshalerForRequest(mux, req)
		annotated, err := runtime.AnnotateContext(ctx, mux, req, "/custos.core.v1.ExportService/Import", runtime.WithHTTPPathPattern("/v1/import"))
		if err != nil {
			runtime.HTTPError(ctx, mux, outbound, w, req, err)
			return
		}
		resp, md, err := importBody(annotated, cancel, client, req.Body)
		annotated = runtime.NewServerMetadataContext(annotated, md)
		if err != nil {
			runtime.HTTPError(annotated, mux, outbound, w, req, err)
			return
		}
		runtime.ForwardResponseMessage(annotated, mux, outbound, w, req, resp)
	})
}

// importBody streams the records of body to Import. On a malformed value it cancels the call, so
// that the service stores nothing, and answers InvalidArgument naming the record (and the field),
// never quoting it.
func importBody(ctx context.Context, cancel context.CancelFunc, client corev1.ExportServiceClient, body io.Reader) (*corev1.ImportResponse, runtime.ServerMetadata, error) {
	var md runtime.ServerMetadata
	stream, err := client.Import(ctx)
	if err != nil {
		return nil, md, err
	}
	dec := json.NewDecoder(body)
	for n := 1; ; n++ {
		var value json.RawMessage
		err := dec.Decode(&value)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			cancel()
			// encoding/json quotes what it stopped at: say only where.
			where := ""
			if syn := (*json.SyntaxError)(nil); errors.As(err, &syn) {
				where = fmt.Sprintf(" (at byte %d of the body)", syn.Offset)
			}
			return nil, md, server.SafeError(status.Errorf(codes.InvalidArgument, "record %d: not JSON%s; nothing was imported", n, where))
		}
		rec, err := importValue(value)
		if err != nil {
			cancel()
			return nil, md, server.SafeError(status.Errorf(codes.InvalidArgument, "record %d: %v; nothing was imported", n, err))
		}
		if err := stream.Send(&corev1.ImportRequest{Record: rec}); err != nil {
			if errors.Is(err, io.EOF) {
				break // the service ended the call: CloseAndRecv says why
			}
			return nil, md, err
		}
	}
	resp, err := stream.CloseAndRecv()
	if h, herr := stream.Header(); herr == nil {
		md.HeaderMD = h
	}
	md.TrailerMD = stream.Trailer()
	if md.HeaderMD == nil {
		md.HeaderMD = metadata.MD{}
	}
	return resp, md, err
}

// importValue finds the record in one value of an import body.
func importValue(value json.RawMessage) (*corev1.ExportRecord, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil || top == nil {
		return nil, errors.New("not a JSON object")
	}
	raw := value
	switch {
	case top["error"] != nil:
		return nil, errors.New("the export ended with an error here: the file is incomplete")
	case top["result"] != nil:
		if len(top) != 1 {
			return nil, errors.New(`an export line has "result" only`)
		}
		var result map[string]json.RawMessage
		if err := json.Unmarshal(top["result"], &result); err != nil || result["record"] == nil || len(result) != 1 {
			return nil, errors.New(`result: want {"record":{…}}`)
		}
		raw = result["record"]
	case top["record"] != nil:
		if len(top) != 1 {
			return nil, errors.New(`an import request has "record" only`)
		}
		raw = top["record"]
	}
	rec := &corev1.ExportRecord{}
	if err := protojson.Unmarshal(raw, rec); err != nil {
		return nil, recordJSONError(err)
	}
	return rec, nil
}

// protojsonField finds the field a protojson error is about: it quotes the value after a field of
// the wrong type, and the name of an unknown or repeated field.
var (
	protojsonValueField = regexp.MustCompile(`invalid value for \w+ field (\w{1,64})`)
	protojsonNamedField = regexp.MustCompile(`(unknown|duplicate) field "([^"]{1,64})"`)
)

// recordJSONError describes why a JSON value is not an ExportRecord, naming the field but never
// quoting a value: records carry ciphertext, and a malformed file may carry anything.
func recordJSONError(err error) error {
	msg := err.Error()
	if m := protojsonValueField.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("not an export record: %s: invalid value", m[1])
	}
	if m := protojsonNamedField.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("not an export record: %s field %q", m[1], m[2])
	}
	return errors.New("not an export record")
}
