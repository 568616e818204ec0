package esclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/custos-platform/custos/core/internal/errs"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// grpcClient is a Client over the encryption service's gRPC API: the platform's service, and
// tenant-hosted ones with protocol grpc.
type grpcClient struct {
	rpc  encryptionv1.EncryptionServiceClient
	cred credential
	call *caller
}

var _ Client = (*grpcClient)(nil)

// outgoing returns ctx carrying the tenant's credential and, when not nil, the client master
// key(s) as metadata.
func (g *grpcClient) outgoing(ctx context.Context, masterKey, newMasterKey []byte) (context.Context, error) {
	mk, err := encodeMasterKey("X-Master-Key", masterKey)
	if err != nil {
		return nil, err
	}
	nk, err := encodeMasterKey("X-New-Master-Key", newMasterKey)
	if err != nil {
		return nil, err
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	// The credential is the client's alone: whatever the caller's context carries is dropped.
	for _, k := range []string{"x-tenant-id", "x-tenant-secret", "x-master-key", "x-new-master-key"} {
		md.Delete(k)
	}
	md.Set("x-tenant-id", g.cred.tenantID)
	md.Set("x-tenant-secret", g.cred.secret)
	if mk != "" {
		md.Set("x-master-key", mk)
	}
	if nk != "" {
		md.Set("x-new-master-key", nk)
	}
	if id := g.call.requestIDOf(ctx); id != "" && len(md.Get("x-request-id")) == 0 {
		md.Set("x-request-id", id)
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

// grpcErr turns a gRPC error into a remoteError.
func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	return &remoteError{code: st.Code(), message: sanitize(st.Message())}
}

// CreateContext implements Client.
func (g *grpcClient) CreateContext(ctx context.Context, keyMode string, masterKey []byte) (string, error) {
	ctx, err := g.outgoing(ctx, masterKey, nil)
	if err != nil {
		return "", err
	}
	var resp *encryptionv1.CreateEncryptionResponse
	err = g.call.do(ctx, opCreate, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.CreateEncryption(ctx, &encryptionv1.CreateEncryptionRequest{KeyMode: keyMode}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return "", err
	}
	if resp.GetEncryptionId() == "" {
		return "", errs.E(errs.Internal, "the encryption service created a key context without an id")
	}
	return resp.GetEncryptionId(), nil
}

// Encrypt implements Client.
func (g *grpcClient) Encrypt(ctx context.Context, encryptionID, data string, masterKey []byte) (Ciphertext, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return Ciphertext{}, err
	}
	if err := checkData(data); err != nil {
		return Ciphertext{}, err
	}
	ctx, err := g.outgoing(ctx, masterKey, nil)
	if err != nil {
		return Ciphertext{}, err
	}
	var resp *encryptionv1.EncryptResponse
	err = g.call.do(ctx, opEncrypt, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.Encrypt(ctx, &encryptionv1.EncryptRequest{EncryptionId: encryptionID, Data: data}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return Ciphertext{}, err
	}
	return ciphertextFromProto(encryptionID, resp.GetCipherText(), resp.GetEncryptionId(), resp.GetEncryptionVersionId(),
		resp.GetAlgorithm(), resp.GetMetadata())
}

// Decrypt implements Client.
func (g *grpcClient) Decrypt(ctx context.Context, c Ciphertext, masterKey []byte) (string, error) {
	req, err := decryptRequest(c)
	if err != nil {
		return "", err
	}
	ctx, err = g.outgoing(ctx, masterKey, nil)
	if err != nil {
		return "", err
	}
	var resp *encryptionv1.DecryptResponse
	err = g.call.do(ctx, opDecrypt, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.Decrypt(ctx, req, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return "", err
	}
	return resp.GetData(), nil
}

// Rotate implements Client.
func (g *grpcClient) Rotate(ctx context.Context, encryptionID string) (string, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return "", err
	}
	ctx, err := g.outgoing(ctx, nil, nil)
	if err != nil {
		return "", err
	}
	var resp *encryptionv1.RotateResponse
	err = g.call.do(ctx, opRotate, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.Rotate(ctx, &encryptionv1.RotateRequest{EncryptionId: encryptionID}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return "", err
	}
	if resp.GetNewVersionId() == "" {
		return "", errs.E(errs.Internal, "the encryption service rotated without naming the new version")
	}
	return resp.GetNewVersionId(), nil
}

// GetContext implements Client.
func (g *grpcClient) GetContext(ctx context.Context, encryptionID string) (Context, error) {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return Context{}, err
	}
	ctx, err := g.outgoing(ctx, nil, nil)
	if err != nil {
		return Context{}, err
	}
	var resp *encryptionv1.GetEncryptionResponse
	err = g.call.do(ctx, opGet, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.GetEncryption(ctx, &encryptionv1.GetEncryptionRequest{EncryptionId: encryptionID}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return Context{}, err
	}
	e := resp.GetEncryption()
	if e == nil || e.GetActiveVersionId() == "" {
		return Context{}, errs.E(errs.Internal, "the encryption service described a key context without its active version")
	}
	c := Context{ActiveVersionID: e.GetActiveVersionId(), KeyMode: e.GetKeyMode(), Algorithm: e.GetAlgorithm(),
		Versions: make([]Version, 0, len(e.GetVersions()))}
	for _, v := range e.GetVersions() {
		c.Versions = append(c.Versions, Version{ID: v.GetVersionId(), Version: int(v.GetVersion()), State: v.GetState()})
	}
	return c, nil
}

// RewrapBatch implements Client.
func (g *grpcClient) RewrapBatch(ctx context.Context, items []Ciphertext, masterKey []byte) ([]RewrapResult, error) {
	results := make([]RewrapResult, len(items))
	req := &encryptionv1.RewrapBatchRequest{}
	var sent []int // indexes of items in req
	for i, it := range items {
		d, err := decryptRequest(it)
		if err != nil {
			results[i].Err = err
			continue
		}
		req.Items = append(req.Items, &encryptionv1.RewrapRequest{EncryptionId: d.EncryptionId, CipherText: d.CipherText,
			EncryptionVersionId: d.EncryptionVersionId, Metadata: d.Metadata})
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return results, nil
	}
	ctx, err := g.outgoing(ctx, masterKey, nil)
	if err != nil {
		return nil, err
	}
	var resp *encryptionv1.RewrapBatchResponse
	err = g.call.do(ctx, opRewrap, func(ctx context.Context, probe bool) error {
		var err error
		resp, err = g.rpc.RewrapBatch(ctx, req, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != len(sent) {
		return nil, errs.E(errs.Internal, "the encryption service answered %d rewrap results for %d items", len(resp.GetResults()), len(sent))
	}
	for j, r := range resp.GetResults() {
		i := sent[j]
		if e := r.GetError(); e != nil {
			results[i].Err = toErrs(opRewrap, &remoteError{code: wireCode(int64(e.GetCode())), message: sanitize(e.GetMessage())})
			continue
		}
		results[i].Ciphertext, results[i].Err = ciphertextFromProto(items[i].EncryptionID, r.GetCipherText(), r.GetEncryptionId(),
			r.GetEncryptionVersionId(), r.GetAlgorithm(), r.GetMetadata())
	}
	return results, nil
}

// DisableVersion implements Client.
func (g *grpcClient) DisableVersion(ctx context.Context, encryptionID, versionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	if err := checkID("versionId", versionID); err != nil {
		return err
	}
	ctx, err := g.outgoing(ctx, nil, nil)
	if err != nil {
		return err
	}
	return g.call.do(ctx, opDisable, func(ctx context.Context, probe bool) error {
		_, err := g.rpc.DisableVersion(ctx, &encryptionv1.DisableVersionRequest{EncryptionId: encryptionID, VersionId: versionID},
			grpc.WaitForReady(probe))
		return grpcErr(err)
	})
}

// EnableVersion implements Client.
func (g *grpcClient) EnableVersion(ctx context.Context, encryptionID, versionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	if err := checkID("versionId", versionID); err != nil {
		return err
	}
	ctx, err := g.outgoing(ctx, nil, nil)
	if err != nil {
		return err
	}
	return g.call.do(ctx, opEnable, func(ctx context.Context, probe bool) error {
		_, err := g.rpc.EnableVersion(ctx, &encryptionv1.EnableVersionRequest{EncryptionId: encryptionID, VersionId: versionID},
			grpc.WaitForReady(probe))
		return grpcErr(err)
	})
}

// ChangeMasterKey implements Client.
func (g *grpcClient) ChangeMasterKey(ctx context.Context, encryptionID string, oldKey, newKey []byte) error {
	if err := checkKeyChange(encryptionID, oldKey, newKey); err != nil {
		return err
	}
	ctx, err := g.outgoing(ctx, oldKey, newKey)
	if err != nil {
		return err
	}
	return g.call.do(ctx, opChangeKey, func(ctx context.Context, probe bool) error {
		_, err := g.rpc.ChangeMasterKey(ctx, &encryptionv1.ChangeMasterKeyRequest{EncryptionId: encryptionID}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
}

// DestroyContext implements Client.
func (g *grpcClient) DestroyContext(ctx context.Context, encryptionID string) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	ctx, err := g.outgoing(ctx, nil, nil)
	if err != nil {
		return err
	}
	return g.call.do(ctx, opDestroy, func(ctx context.Context, probe bool) error {
		_, err := g.rpc.DestroyEncryption(ctx, &encryptionv1.DestroyEncryptionRequest{EncryptionId: encryptionID}, grpc.WaitForReady(probe))
		return grpcErr(err)
	})
}

func checkKeyChange(encryptionID string, oldKey, newKey []byte) error {
	if err := checkID("encryptionId", encryptionID); err != nil {
		return err
	}
	if oldKey == nil {
		return errs.E(errs.Invalid, "X-Master-Key: required: the current client master key")
	}
	if newKey == nil {
		return errs.E(errs.Invalid, "X-New-Master-Key: required: the new client master key")
	}
	return nil
}

// decryptRequest checks c and turns it into a DecryptRequest.
func decryptRequest(c Ciphertext) (*encryptionv1.DecryptRequest, error) {
	if err := checkID("encryptionId", c.EncryptionID); err != nil {
		return nil, err
	}
	if err := checkID("encryptionVersionId", c.VersionID); err != nil {
		return nil, err
	}
	if err := checkID("cipherText", c.CipherText); err != nil {
		return nil, err
	}
	if err := checkMetadata(c.Metadata); err != nil {
		return nil, err
	}
	var meta *encryptionv1.CipherMetadata
	if c.Metadata != nil {
		var err error
		if meta, err = metadataToProto(c.Metadata); err != nil {
			return nil, err
		}
	}
	// Core keeps the seed's base64 text; the gRPC contract carries the bytes.
	ct, err := base64.StdEncoding.DecodeString(c.CipherText)
	if err != nil {
		return nil, errs.E(errs.Invalid, "cipherText: not valid base64")
	}
	return &encryptionv1.DecryptRequest{EncryptionId: c.EncryptionID, CipherText: ct,
		EncryptionVersionId: c.VersionID, Metadata: meta}, nil
}

// ciphertextFromProto builds and checks the Ciphertext of an encrypt or rewrap answer for
// context wantID.
func ciphertextFromProto(wantID string, cipherText []byte, encryptionID, versionID, algorithm string, meta *encryptionv1.CipherMetadata) (Ciphertext, error) {
	c := Ciphertext{EncryptionID: encryptionID, VersionID: versionID, Algorithm: algorithm}
	if meta != nil {
		c.Metadata = metadataJSON(meta)
	}
	if len(cipherText) > 0 {
		c.CipherText = base64.StdEncoding.EncodeToString(cipherText)
	}
	return checkAnswered(wantID, c)
}

// checkAnswered checks an answered ciphertext for context wantID; a service that leaves out the
// context id (the seed's contract lists it) gets it filled in.
func checkAnswered(wantID string, c Ciphertext) (Ciphertext, error) {
	if c.EncryptionID == "" {
		c.EncryptionID = wantID
	}
	if err := checkCiphertext(c); err != nil {
		return Ciphertext{}, err
	}
	if c.EncryptionID != wantID {
		return Ciphertext{}, errs.E(errs.Internal, "the encryption service answered a ciphertext of another key context")
	}
	return c, nil
}

// metadataJSON is the seed's metadata object for m, as core stores it and the HTTPS/JSON contract
// carries it: keys sorted, no whitespace, byte strings in standard padded base64, encryptedKey only
// when set. It is what encoding/json makes of the object, so stored metadata does not depend on
// which protocol the service was reached by.
func metadataJSON(m *encryptionv1.CipherMetadata) json.RawMessage {
	b := make([]byte, 0, 64+base64.StdEncoding.EncodedLen(len(m.GetNonce())+len(m.GetEncryptedKey())))
	b = append(b, '{')
	if m.EncryptedKey != nil {
		b = append(b, `"encryptedKey":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.GetEncryptedKey())
		b = append(b, `",`...)
	}
	b = append(b, `"formatVersion":`...)
	b = strconv.AppendInt(b, int64(m.GetFormatVersion()), 10)
	b = append(b, `,"nonce":"`...)
	b = base64.StdEncoding.AppendEncode(b, m.GetNonce())
	return append(b, `"}`...)
}

// wireMetadata is the metadata object as stored; its fields are checked one by one.
type wireMetadata struct {
	FormatVersion *json.Number `json:"formatVersion"`
	Nonce         *string      `json:"nonce"`
	EncryptedKey  *string      `json:"encryptedKey"`
}

// metadataToProto reads a stored metadata object back into the gRPC contract's form. Errors
// (Invalid) name the field at fault, never its value: a field other than formatVersion, nonce and
// encryptedKey, a formatVersion that is not an integer, a byte string that is not base64.
// Whether the values fit the key context's algorithm is the encryption service's to judge.
func metadataToProto(raw json.RawMessage) (*encryptionv1.CipherMetadata, error) {
	var w wireMetadata
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		var unknown string
		if _, name, ok := strings.Cut(err.Error(), "unknown field "); ok {
			if len(name) > 64 {
				name = name[:64] + "…"
			}
			unknown = ": unknown field " + name
		}
		return nil, errs.E(errs.Invalid, "metadata: not the encryption service's metadata object%s", unknown)
	}
	m := &encryptionv1.CipherMetadata{}
	if w.FormatVersion != nil {
		v, err := strconv.ParseInt(w.FormatVersion.String(), 10, 32)
		if err != nil {
			return nil, errs.E(errs.Invalid, "metadata.formatVersion: not an integer")
		}
		m.FormatVersion = int32(v)
	}
	if w.Nonce != nil {
		b, err := base64.StdEncoding.DecodeString(*w.Nonce)
		if err != nil {
			return nil, errs.E(errs.Invalid, "metadata.nonce: not standard padded base64")
		}
		m.Nonce = b
	}
	if w.EncryptedKey != nil {
		b, err := base64.StdEncoding.DecodeString(*w.EncryptedKey)
		if err != nil {
			return nil, errs.E(errs.Invalid, "metadata.encryptedKey: not standard padded base64")
		}
		m.EncryptedKey = b
	}
	return m, nil
}
