package grpcapi

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/reencrypt"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// KeyServer serves custos.core.v1.KeyService.
type KeyServer struct {
	corev1.UnimplementedKeyServiceServer
	Keys *reencrypt.Service
}

// keysCall reads the request's master key (X-Master-Key, as vaultCall does) and audit metadata.
func keysCall(ctx context.Context) (reencrypt.Call, error) {
	c, err := vaultCall(ctx)
	if err != nil {
		return reencrypt.Call{}, err
	}
	return reencrypt.Call{MasterKey: c.MasterKey, RequestID: c.RequestID, RemoteAddr: c.RemoteAddr}, nil
}

// RotateKeys implements POST /v1/keys/rotate.
func (s *KeyServer) RotateKeys(ctx context.Context, _ *corev1.RotateKeysRequest) (*corev1.RotateKeysResponse, error) {
	r := request(ctx)
	n, job, err := s.Keys.RotateKeys(ctx, reencrypt.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr})
	if err != nil {
		return nil, err
	}
	return &corev1.RotateKeysResponse{RotatedContexts: uint32(n), Job: jobToProto(job)}, nil //nolint:gosec // bounded: a count of one tenant's key contexts
}

// StartReencryption implements POST /v1/keys/jobs.
func (s *KeyServer) StartReencryption(ctx context.Context, _ *corev1.StartReencryptionRequest) (*corev1.StartReencryptionResponse, error) {
	c, err := keysCall(ctx)
	if err != nil {
		return nil, err
	}
	job, err := s.Keys.StartReencryption(ctx, c)
	if err != nil {
		return nil, err
	}
	return &corev1.StartReencryptionResponse{Job: jobToProto(job)}, nil
}

// GetJob implements GET /v1/keys/jobs/{job_id}.
func (s *KeyServer) GetJob(ctx context.Context, req *corev1.GetJobRequest) (*corev1.GetJobResponse, error) {
	id, err := parseID("jobId", req.GetJobId())
	if err != nil {
		return nil, err
	}
	job, err := s.Keys.GetJob(ctx, id)
	if err != nil {
		return nil, err
	}
	return &corev1.GetJobResponse{Job: jobToProto(job)}, nil
}

// ListJobs implements GET /v1/keys/jobs.
func (s *KeyServer) ListJobs(ctx context.Context, req *corev1.ListJobsRequest) (*corev1.ListJobsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = 50
	case size < 0 || size > 500:
		return nil, errs.E(errs.Invalid, "pageSize: want 1 to 500, got %d", size)
	}
	jobs, next, err := s.Keys.ListJobs(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &corev1.ListJobsResponse{NextPageToken: next, Jobs: make([]*corev1.Job, 0, len(jobs))}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, jobToProto(j))
	}
	return out, nil
}

// GetKeyStatus implements GET /v1/keys/status.
func (s *KeyServer) GetKeyStatus(ctx context.Context, _ *corev1.GetKeyStatusRequest) (*corev1.GetKeyStatusResponse, error) {
	contexts, err := s.Keys.KeyStatus(ctx)
	if err != nil {
		return nil, err
	}
	out := &corev1.GetKeyStatusResponse{Contexts: make([]*corev1.KeyContextStatus, 0, len(contexts))}
	for _, c := range contexts {
		cs := &corev1.KeyContextStatus{EncryptionId: c.EncryptionID.String(), OwnerId: c.OwnerID.String(), KeyMode: c.KeyMode}
		for _, v := range c.Versions {
			cs.Versions = append(cs.Versions, versionToProto(v))
		}
		out.Contexts = append(out.Contexts, cs)
	}
	return out, nil
}

// DisableKeyVersion implements POST /v1/keys/{encryption_id}/versions/{version_id}:disable.
func (s *KeyServer) DisableKeyVersion(ctx context.Context, req *corev1.DisableKeyVersionRequest) (*corev1.DisableKeyVersionResponse, error) {
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	verID, err := parseID("versionId", req.GetVersionId())
	if err != nil {
		return nil, err
	}
	r := request(ctx)
	v, err := s.Keys.DisableVersion(ctx, reencrypt.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}, encID, verID)
	if err != nil {
		return nil, err
	}
	return &corev1.DisableKeyVersionResponse{Version: versionToProto(v)}, nil
}

// EnableKeyVersion implements POST /v1/keys/{encryption_id}/versions/{version_id}:enable.
func (s *KeyServer) EnableKeyVersion(ctx context.Context, req *corev1.EnableKeyVersionRequest) (*corev1.EnableKeyVersionResponse, error) {
	encID, err := parseID("encryptionId", req.GetEncryptionId())
	if err != nil {
		return nil, err
	}
	verID, err := parseID("versionId", req.GetVersionId())
	if err != nil {
		return nil, err
	}
	r := request(ctx)
	v, err := s.Keys.EnableVersion(ctx, reencrypt.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}, encID, verID)
	if err != nil {
		return nil, err
	}
	return &corev1.EnableKeyVersionResponse{Version: versionToProto(v)}, nil
}

func jobToProto(j postgres.Job) *corev1.Job {
	out := &corev1.Job{
		JobId: j.ID.String(), State: j.State, Total: uint64(j.Total), Done: uint64(j.Done), Skipped: uint64(j.Skipped), //nolint:gosec // non-negative: the columns CHECK >= 0
		Failed: uint64(j.Failed), Message: j.Message, CreatedAt: timestamppb.New(j.CreatedAt), UpdatedAt: timestamppb.New(j.UpdatedAt), //nolint:gosec // non-negative: the columns CHECK >= 0
	}
	if !j.FinishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(j.FinishedAt)
	}
	return out
}

func versionToProto(v reencrypt.VersionStatus) *corev1.KeyVersionStatus {
	return &corev1.KeyVersionStatus{VersionId: v.ID, Version: uint32(v.Version), State: v.State, ItemCount: uint64(v.Items)} //nolint:gosec // non-negative counts from the database, far below 2^32 versions
}
