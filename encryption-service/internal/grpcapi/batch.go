package grpcapi

import (
	"context"
	"log/slog"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

const serviceName = "/custos.encryption.v1.EncryptionService/"

// Rewrap implements POST /v1/rewrap: Decrypt's input, Encrypt's output under the active version.
// The data never leaves the service.
func (s *EncryptionServer) Rewrap(ctx context.Context, req *encryptionv1.RewrapRequest) (*encryptionv1.RewrapResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	item, err := decryptItem(req.GetEncryptionId(), req.GetEncryptionVersionId(), req.GetCipherText(), req.GetMetadata())
	if err != nil {
		return nil, err
	}
	res, err := s.Keys.Rewrap(ctx, c, item.EncryptionID, item.VersionID, item.CipherText, item.Metadata)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.RewrapResponse{
		CipherText:          res.CipherText,
		EncryptionId:        item.EncryptionID.String(),
		EncryptionVersionId: res.VersionID.String(),
		Algorithm:           res.Algorithm,
		Metadata:            metadataProto(res.Metadata),
	}, nil
}

// EncryptBatch implements POST /v1/encrypt:batch. Each result is the item's EncryptResponse or
// only its error; a bad item never fails the others. More items than the batch limit is
// ResourceExhausted, and then nothing is encrypted.
func (s *EncryptionServer) EncryptBatch(ctx context.Context, req *encryptionv1.EncryptBatchRequest) (*encryptionv1.EncryptBatchResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	reqItems := req.GetItems()
	if err := s.checkBatch(len(reqItems)); err != nil {
		return nil, err
	}
	results := make([]*encryptionv1.EncryptBatchResult, len(reqItems))
	items := make([]keyring.EncryptItem, 0, len(reqItems))
	index := make([]int, 0, len(reqItems))
	for i, it := range reqItems {
		encID, err := parseID("encryptionId", it.GetEncryptionId())
		var verID uuid.NullUUID
		if err == nil {
			verID, err = parseOptionalID("encryptionVersionId", it.GetEncryptionVersionId())
		}
		if err != nil {
			results[i] = &encryptionv1.EncryptBatchResult{Error: s.itemError(ctx, "EncryptBatch", err)}
			continue
		}
		items = append(items, keyring.EncryptItem{EncryptionID: encID, VersionID: verID, Data: stringBytes(it.GetData())})
		index = append(index, i)
	}
	encrypted, failures := s.Keys.EncryptBatch(ctx, c, items)
	var ids idStrings
	for j, i := range index {
		results[i] = s.encryptResult(ctx, "EncryptBatch", &ids, items[j].EncryptionID, encrypted[j], failures[j])
	}
	return &encryptionv1.EncryptBatchResponse{Results: results}, nil
}

// DecryptBatch implements POST /v1/decrypt:batch. Each result is the item's DecryptResponse or
// only its error; a bad item never fails the others. More items than the batch limit is
// ResourceExhausted.
func (s *EncryptionServer) DecryptBatch(ctx context.Context, req *encryptionv1.DecryptBatchRequest) (*encryptionv1.DecryptBatchResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	reqItems := req.GetItems()
	if err := s.checkBatch(len(reqItems)); err != nil {
		return nil, err
	}
	results := make([]*encryptionv1.DecryptBatchResult, len(reqItems))
	items, index := decryptItems(ctx, s, "DecryptBatch", reqItems, func(i int, e *encryptionv1.ItemError) {
		results[i] = &encryptionv1.DecryptBatchResult{Error: e}
	})
	data, failures := s.Keys.DecryptBatch(ctx, c, items)
	for j, i := range index {
		err := failures[j]
		if err == nil {
			err = checkUTF8(data[j])
		}
		if err != nil {
			results[i] = &encryptionv1.DecryptBatchResult{Error: s.itemError(ctx, "DecryptBatch", err)}
			continue
		}
		results[i] = &encryptionv1.DecryptBatchResult{Data: proto.String(string(data[j]))}
	}
	return &encryptionv1.DecryptBatchResponse{Results: results}, nil
}

// RewrapBatch implements POST /v1/rewrap:batch. Each result is the item's RewrapResponse or only
// its error; a bad item never fails the others. More items than the batch limit is
// ResourceExhausted, and then nothing is rewrapped.
func (s *EncryptionServer) RewrapBatch(ctx context.Context, req *encryptionv1.RewrapBatchRequest) (*encryptionv1.RewrapBatchResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	reqItems := req.GetItems()
	if err := s.checkBatch(len(reqItems)); err != nil {
		return nil, err
	}
	results := make([]*encryptionv1.EncryptBatchResult, len(reqItems))
	items, index := decryptItems(ctx, s, "RewrapBatch", reqItems, func(i int, e *encryptionv1.ItemError) {
		results[i] = &encryptionv1.EncryptBatchResult{Error: e}
	})
	rewrapped, failures := s.Keys.RewrapBatch(ctx, c, items)
	var ids idStrings
	for j, i := range index {
		results[i] = s.encryptResult(ctx, "RewrapBatch", &ids, items[j].EncryptionID, rewrapped[j], failures[j])
	}
	return &encryptionv1.RewrapBatchResponse{Results: results}, nil
}

// checkBatch bounds the number of items of one batch.
func (s *EncryptionServer) checkBatch(n int) error {
	limit := s.MaxBatchItems
	if limit <= 0 {
		limit = DefaultMaxBatchItems
	}
	if n > limit {
		return errs.E(errs.ResourceExhausted, "items: %d items is over the batch limit of %d: split the batch", n, limit)
	}
	return nil
}

// decryptRequest is what DecryptRequest and RewrapRequest have in common.
type decryptRequest interface {
	GetEncryptionId() string
	GetEncryptionVersionId() string
	GetCipherText() []byte
	GetMetadata() *encryptionv1.CipherMetadata
}

// decryptItems parses the items of a decrypt or rewrap batch. Items that do not parse are passed
// to fail with their error; the others are returned with their positions.
func decryptItems[R decryptRequest](ctx context.Context, s *EncryptionServer, method string, reqItems []R,
	fail func(i int, e *encryptionv1.ItemError)) ([]keyring.DecryptItem, []int) {
	items := make([]keyring.DecryptItem, 0, len(reqItems))
	index := make([]int, 0, len(reqItems))
	for i, it := range reqItems {
		item, err := decryptItem(it.GetEncryptionId(), it.GetEncryptionVersionId(), it.GetCipherText(), it.GetMetadata())
		if err != nil {
			fail(i, s.itemError(ctx, method, err))
			continue
		}
		items = append(items, item)
		index = append(index, i)
	}
	return items, index
}

// decryptItem parses the fields of a decrypt or rewrap request, naming the field that is wrong.
func decryptItem(encryptionID, versionID string, cipherText []byte, metadata *encryptionv1.CipherMetadata) (keyring.DecryptItem, error) {
	encID, err := parseID("encryptionId", encryptionID)
	if err != nil {
		return keyring.DecryptItem{}, err
	}
	verID, err := parseID("encryptionVersionId", versionID)
	if err != nil {
		return keyring.DecryptItem{}, err
	}
	if len(cipherText) == 0 {
		return keyring.DecryptItem{}, errs.E(errs.Invalid, "cipherText: required")
	}
	return keyring.DecryptItem{EncryptionID: encID, VersionID: verID, CipherText: cipherText, Metadata: metadataFrom(metadata)}, nil
}

// idStrings remembers the text of the ids a batch's results repeat: consecutive items mostly share
// their context and version, and their results may then share the strings too.
type idStrings struct {
	encryptionID, versionID     uuid.UUID
	encryptionText, versionText *string
	algorithm                   *string
}

func (ids *idStrings) of(encryptionID, versionID uuid.UUID, algorithm string) (*string, *string, *string) {
	if ids.encryptionText == nil || ids.encryptionID != encryptionID {
		ids.encryptionID, ids.encryptionText = encryptionID, proto.String(encryptionID.String())
	}
	if ids.versionText == nil || ids.versionID != versionID {
		ids.versionID, ids.versionText = versionID, proto.String(versionID.String())
	}
	if ids.algorithm == nil || *ids.algorithm != algorithm {
		ids.algorithm = proto.String(algorithm)
	}
	return ids.encryptionText, ids.versionText, ids.algorithm
}

// encryptResult is an encryption's batch result: its fields, or only its error.
func (s *EncryptionServer) encryptResult(ctx context.Context, method string, ids *idStrings, encryptionID uuid.UUID, res keyring.Encrypted, err error) *encryptionv1.EncryptBatchResult {
	if err == nil {
		encText, verText, alg := ids.of(encryptionID, res.VersionID, res.Algorithm)
		return &encryptionv1.EncryptBatchResult{
			CipherText:          res.CipherText,
			EncryptionId:        encText,
			EncryptionVersionId: verText,
			Algorithm:           alg,
			Metadata:            metadataProto(res.Metadata),
		}
	}
	return &encryptionv1.EncryptBatchResult{Error: s.itemError(ctx, method, err)}
}

// itemError is a batch item's failure, through the same error table as whole calls: an internal
// error is logged with the request id and answered with a generic message.
func (s *EncryptionServer) itemError(ctx context.Context, method string, err error) *encryptionv1.ItemError {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := status.Convert(toStatus(ctx, log, serviceName+method, err))
	return &encryptionv1.ItemError{Code: int32(st.Code()), Message: st.Message()} //nolint:gosec // gRPC codes are 0..16
}
