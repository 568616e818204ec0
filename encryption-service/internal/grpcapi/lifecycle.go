package grpcapi

import (
	"context"
	"math"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// versionRequest is what the version lifecycle requests have in common.
type versionRequest interface {
	GetEncryptionId() string
	GetVersionId() string
}

// versionCall parses a version lifecycle request and runs change with its ids.
func versionCall(ctx context.Context, req versionRequest,
	change func(ctx context.Context, c keyring.Caller, encryptionID, versionID uuid.UUID) (postgres.KeyVersion, error)) (*encryptionv1.KeyVersion, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	verID, err := parseID("versionId", req.GetVersionId())
	if err != nil {
		return nil, err
	}
	v, err := change(ctx, c, encID, verID)
	if err != nil {
		return nil, err
	}
	return versionToProto(v), nil
}

// DisableVersion implements POST /v1/encryptions/{encryptionId}/versions/{versionId}:disable.
func (s *EncryptionServer) DisableVersion(ctx context.Context, req *encryptionv1.DisableVersionRequest) (*encryptionv1.DisableVersionResponse, error) {
	v, err := versionCall(ctx, req, s.Keys.DisableVersion)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.DisableVersionResponse{Version: v}, nil
}

// EnableVersion implements POST /v1/encryptions/{encryptionId}/versions/{versionId}:enable.
func (s *EncryptionServer) EnableVersion(ctx context.Context, req *encryptionv1.EnableVersionRequest) (*encryptionv1.EnableVersionResponse, error) {
	v, err := versionCall(ctx, req, s.Keys.EnableVersion)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.EnableVersionResponse{Version: v}, nil
}

// DestroyVersion implements POST /v1/encryptions/{encryptionId}/versions/{versionId}:destroy.
func (s *EncryptionServer) DestroyVersion(ctx context.Context, req *encryptionv1.DestroyVersionRequest) (*encryptionv1.DestroyVersionResponse, error) {
	v, err := versionCall(ctx, req, s.Keys.DestroyVersion)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.DestroyVersionResponse{Version: v}, nil
}

// DestroyEncryption implements DELETE /v1/encryptions/{encryptionId}.
func (s *EncryptionServer) DestroyEncryption(ctx context.Context, req *encryptionv1.DestroyEncryptionRequest) (*encryptionv1.DestroyEncryptionResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	n, err := s.Keys.DestroyEncryption(ctx, c, encID)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.DestroyEncryptionResponse{EncryptionId: encID.String(), VersionsDestroyed: uint32(n)}, nil //nolint:gosec // bounded: a count of one context's versions
}

// ChangeMasterKey implements POST /v1/encryptions/{encryptionId}:changeMasterKey, with the old key
// in X-Master-Key and the new one in X-New-Master-Key.
func (s *EncryptionServer) ChangeMasterKey(ctx context.Context, req *encryptionv1.ChangeMasterKeyRequest) (*encryptionv1.ChangeMasterKeyResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	n, err := s.Keys.ChangeMasterKey(ctx, c, encID)
	if err != nil {
		return nil, err
	}
	return &encryptionv1.ChangeMasterKeyResponse{EncryptionId: encID.String(), VersionsRewrapped: uint32(n)}, nil //nolint:gosec // bounded: a count of one context's versions
}

// SetRotationPolicy implements POST /v1/encryptions/{encryptionId}:setRotationPolicy. An absent
// rotationPolicy clears the context's policy (the service's bound still applies).
func (s *EncryptionServer) SetRotationPolicy(ctx context.Context, req *encryptionv1.SetRotationPolicyRequest) (*encryptionv1.SetRotationPolicyResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	p, err := policyFrom(req.GetRotationPolicy())
	if err != nil {
		return nil, err
	}
	if p, err = s.Keys.SetRotationPolicy(ctx, c, encID, p); err != nil {
		return nil, err
	}
	return &encryptionv1.SetRotationPolicyResponse{RotationPolicy: policyToProto(p)}, nil
}

// policyFrom reads a rotation policy from the wire; nil is the zero policy. The keyring checks the
// bounds; here only what cannot be represented is refused.
func policyFrom(p *encryptionv1.RotationPolicy) (keyring.RotationPolicy, error) {
	var out keyring.RotationPolicy
	if p == nil {
		return out, nil
	}
	if d := p.GetMaxAge(); d != nil {
		if err := d.CheckValid(); err != nil {
			return out, errs.E(errs.Invalid, "rotationPolicy.maxAge: not a valid duration such as \"2160h\" or \"7776000s\"")
		}
		if out.MaxAge = d.AsDuration(); out.MaxAge < 0 {
			return out, errs.E(errs.Invalid, "rotationPolicy.maxAge: must not be negative")
		}
	}
	if n := p.GetMaxEncryptions(); n > math.MaxInt64 {
		return out, errs.E(errs.Invalid, "rotationPolicy.maxEncryptions: %d is too large", n)
	}
	out.MaxEncryptions = int64(p.GetMaxEncryptions()) //nolint:gosec // bounded above: checked against math.MaxInt64 right before
	return out, nil
}

// policyToProto is p on the wire: maxAge only when set.
func policyToProto(p keyring.RotationPolicy) *encryptionv1.RotationPolicy {
	out := &encryptionv1.RotationPolicy{MaxEncryptions: uint64(max(p.MaxEncryptions, 0))}
	if p.MaxAge > 0 {
		out.MaxAge = durationpb.New(p.MaxAge)
	}
	return out
}
