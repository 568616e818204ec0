package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/export"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// ExportServer serves custos.core.v1.ExportService.
type ExportServer struct {
	corev1.UnimplementedExportServiceServer
	Exports *export.Service
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
// stream is stored, or none.
func (s *ExportServer) Import(stream grpc.ClientStreamingServer[corev1.ImportRequest, corev1.ImportResponse]) error {
	ctx := stream.Context()
	r := request(ctx)
	records := func(yield func(export.Record, error) bool) {
		for n := 1; ; n++ {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(export.Record{}, recvError(n, err))
				return
			}
			if req.GetRecord() == nil {
				yield(export.Record{}, errs.E(errs.Invalid, "record %d: record: required; nothing was imported", n))
				return
			}
			rec, err := recordFromProto(req.GetRecord())
			if err != nil {
				yield(export.Record{}, errs.E(errs.Invalid, "record %d: %s; nothing was imported", n, err))
				return
			}
			if !yield(rec, nil) {
				return
			}
		}
	}
	res, err := s.Exports.Import(ctx, export.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}, records)
	if err != nil {
		return err
	}
	return stream.SendAndClose(&corev1.ImportResponse{Imported: uint32(res.Imported), Unchanged: uint32(res.Unchanged)}) //nolint:gosec // non-negative counts of the records in one import transaction, far below 2^32
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
// that the service stores nothing, and answers InvalidArgument.
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
			return nil, md, status.Errorf(codes.InvalidArgument, "record %d: not JSON: %v; nothing was imported", n, err)
		}
		rec, err := importValue(value)
		if err != nil {
			cancel()
			return nil, md, status.Errorf(codes.InvalidArgument, "record %d: %v; nothing was imported", n, err)
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
		return nil, errors.New("not an export record: " + err.Error())
	}
	return rec, nil
}
