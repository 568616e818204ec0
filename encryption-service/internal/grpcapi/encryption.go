package grpcapi

import (
	"context"
	"log/slog"
	"math"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// DefaultMaxBatchItems is the batch limit of an EncryptionServer whose MaxBatchItems is zero.
const DefaultMaxBatchItems = 1000

// EncryptionServer serves custos.encryption.v1.EncryptionService over a keyring.
type EncryptionServer struct {
	encryptionv1.UnimplementedEncryptionServiceServer
	Keys *keyring.Service
	// MaxBatchItems bounds the items of one batch call (default DefaultMaxBatchItems); more is
	// ResourceExhausted.
	MaxBatchItems int
	// Log receives batch items' internal errors (nil discards them).
	Log *slog.Logger
}

// Encrypt implements the seed's POST /v1/encrypt.
func (s *EncryptionServer) Encrypt(ctx context.Context, req *encryptionv1.EncryptRequest) (*encryptionv1.EncryptResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	verID, err := parseOptionalID("encryptionVersionId", req.GetEncryptionVersionId())
	if err != nil {
		return nil, err
	}
	res, err := s.Keys.Encrypt(ctx, c, encID, verID, stringBytes(req.GetData()))
	if err != nil {
		return nil, err
	}
	return &encryptionv1.EncryptResponse{
		CipherText:          res.CipherText,
		EncryptionId:        idText(encID, req.GetEncryptionId()),
		EncryptionVersionId: res.VersionID.String(),
		Algorithm:           res.Algorithm,
		Metadata:            metadataProto(res.Metadata),
	}, nil
}

// GenerateDataKey implements POST /v1/datakey: a fresh random key of keyBytes bytes (default 32),
// encrypted under the context's active version exactly as Encrypt would encrypt its base64 text,
// so that Decrypt of the copy returns that text (keyring.Service.GenerateDataKey). The key is
// returned unless wrappedOnly; it is never logged, and the service keeps no copy of it.
func (s *EncryptionServer) GenerateDataKey(ctx context.Context, req *encryptionv1.GenerateDataKeyRequest) (*encryptionv1.GenerateDataKeyResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	n := int64(req.GetKeyBytes())
	if n == 0 {
		n = 32
	}
	text, res, err := s.Keys.GenerateDataKey(ctx, c, encID, int(min(n, math.MaxInt32)))
	if err != nil {
		return nil, err
	}
	defer clear(text)
	out := &encryptionv1.GenerateDataKeyResponse{
		CipherText:          res.CipherText,
		EncryptionId:        idText(encID, req.GetEncryptionId()),
		EncryptionVersionId: res.VersionID.String(),
		Algorithm:           res.Algorithm,
		Metadata:            metadataProto(res.Metadata),
	}
	if !req.GetWrappedOnly() {
		out.DataKey = string(text)
	}
	return out, nil
}

// Decrypt implements the seed's POST /v1/decrypt.
func (s *EncryptionServer) Decrypt(ctx context.Context, req *encryptionv1.DecryptRequest) (*encryptionv1.DecryptResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	verID, err := parseID("encryptionVersionId", req.GetEncryptionVersionId())
	if err != nil {
		return nil, err
	}
	ct := req.GetCipherText()
	if len(ct) == 0 {
		return nil, errs.E(errs.Invalid, "cipherText: required")
	}
	pt, err := s.Keys.Decrypt(ctx, c, encID, verID, ct, metadataFrom(req.GetMetadata()))
	if err != nil {
		return nil, err
	}
	if err := checkUTF8(pt); err != nil {
		return nil, err
	}
	return &encryptionv1.DecryptResponse{Data: string(pt)}, nil
}

// checkUTF8 refuses decrypted data that is not valid UTF-8. It is only reachable for data that was
// not a valid string when encrypted, which the contract's string field cannot carry; refusing beats
// handing back altered bytes.
func checkUTF8(pt []byte) error {
	if !utf8.Valid(pt) {
		return errs.E(errs.FailedPrecondition, "decrypted data is not valid UTF-8 and cannot be returned as a string")
	}
	return nil
}

// Rotate implements the seed's POST /v1/rotate.
func (s *EncryptionServer) Rotate(ctx context.Context, req *encryptionv1.RotateRequest) (*encryptionv1.RotateResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	v, err := s.Keys.Rotate(ctx, c, encID)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.RotateResponse{NewVersionId: v.String()}, nil
}

// CreateEncryption implements POST /v1/encryptions.
func (s *EncryptionServer) CreateEncryption(ctx context.Context, req *encryptionv1.CreateEncryptionRequest) (*encryptionv1.CreateEncryptionResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	policy, err := policyFrom(req.GetRotationPolicy())
	if err != nil {
		return nil, err
	}
	created, err := s.Keys.CreateEncryption(ctx, c, req.GetAlgorithm(), req.GetKeyMode(), policy)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.CreateEncryptionResponse{
		EncryptionId:        created.EncryptionID.String(),
		EncryptionVersionId: created.VersionID.String(),
		Algorithm:           created.Algorithm,
		KeyMode:             created.KeyMode,
	}, nil
}

// GetEncryption implements GET /v1/encryptions/{encryptionId}.
func (s *EncryptionServer) GetEncryption(ctx context.Context, req *encryptionv1.GetEncryptionRequest) (*encryptionv1.GetEncryptionResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	e, err := s.Keys.GetEncryption(ctx, c, encID)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.GetEncryptionResponse{Encryption: encryptionToProto(e)}, nil
}

func encryptionToProto(e postgres.Encryption) *encryptionv1.Encryption {
	out := &encryptionv1.Encryption{
		EncryptionId: e.ID.String(),
		Algorithm:    e.Algorithm,
		KeyMode:      e.KeyMode,
		RotationPolicy: policyToProto(keyring.RotationPolicy{
			MaxAge: e.RotationMaxAge, MaxEncryptions: e.RotationMaxEncryptions,
		}),
		CreatedAt: timestamppb.New(e.CreatedAt),
	}
	for _, v := range e.Versions {
		if v.State == keyring.StateActive {
			out.ActiveVersionId = v.ID.String()
		}
		out.Versions = append(out.Versions, versionToProto(v))
	}
	return out
}

func versionToProto(v postgres.KeyVersion) *encryptionv1.KeyVersion {
	return &encryptionv1.KeyVersion{
		VersionId:    v.ID.String(),
		Version:      uint32(v.Version), //nolint:gosec // bounded: an int4 version number counted up from 1
		State:        v.State,
		Encryptions:  uint64(max(v.Encryptions, 0)),
		PublicKeyPem: string(v.PublicKey),
		CreatedAt:    timestamppb.New(v.CreatedAt),
		UpdatedAt:    timestamppb.New(v.UpdatedAt),
	}
}

// parseID parses a required UUID field; the error names the field and does not echo the value.
func parseID(field, s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, errs.E(errs.Invalid, "%s: required", field)
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, errs.E(errs.Invalid, "%s: want a UUID such as 123e4567-e89b-12d3-a456-426614174000", field)
	}
	return id, nil
}

// idText returns id's canonical text, reusing given (the text id was parsed from by parseID, which
// accepts only the 36-character form) when it already is that text.
func idText(id uuid.UUID, given string) string {
	if len(given) != 36 {
		return id.String()
	}
	for i := 0; i < len(given); i++ {
		if c := given[i]; 'A' <= c && c <= 'F' {
			return id.String()
		}
	}
	return given
}

// parseOptionalID is parseID where only empty means absent (not Valid). Any UUID given is Valid,
// the nil UUID too: it names no version, and the keyring answers NotFound for it as for any
// unknown one rather than taking it for "absent".
func parseOptionalID(field, s string) (uuid.NullUUID, error) {
	if s == "" {
		return uuid.NullUUID{}, nil
	}
	id, err := parseID(field, s)
	if err != nil {
		return uuid.NullUUID{}, err
	}
	return uuid.NullUUID{UUID: id, Valid: true}, nil
}

// metadataProto is m in the contract's form. It shares m's byte slices.
func metadataProto(m aead.Metadata) *encryptionv1.CipherMetadata {
	return &encryptionv1.CipherMetadata{FormatVersion: m.FormatVersion, Nonce: m.Nonce, EncryptedKey: m.EncryptedKey}
}

// metadataFrom is p as aead.Metadata, sharing p's byte slices; absent metadata is the zero
// value, which Metadata.Check refuses naming formatVersion. Whether it fits the context's
// algorithm is the keyring's to check.
func metadataFrom(p *encryptionv1.CipherMetadata) aead.Metadata {
	return aead.Metadata{FormatVersion: p.GetFormatVersion(), Nonce: p.GetNonce(), EncryptedKey: p.GetEncryptedKey()}
}

// stringBytes is s's bytes, shared rather than copied: the plaintext the cipher reads. The keyring
// only reads data it encrypts (keyring.Service.Encrypt and EncryptBatch say so), so the request's
// string need not be copied: one copy of the plaintext fewer in the heap, and no garbage of the
// payload's size per call. Nothing may write to the result.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s)) //nolint:gosec // G103: read-only view of a string, see above
}
