package client

import (
	"context"
	"fmt"
	"iter"
	"time"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// Job states. SUCCEEDED, FAILED and WAITING_FOR_KEY are final: WAITING_FOR_KEY means items of
// zero-knowledge contexts are left for their owners, who move them with StartReencryption.
const (
	JobPending       = "PENDING"
	JobRunning       = "RUNNING"
	JobSucceeded     = "SUCCEEDED"
	JobFailed        = "FAILED"
	JobWaitingForKey = "WAITING_FOR_KEY"
)

// Job is a re-encryption job: moving items to their key contexts' active versions.
type Job struct {
	ID         string    `json:"jobId"`
	State      string    `json:"state"`
	Total      uint64    `json:"total"`   // items to move when it started
	Done       uint64    `json:"done"`    // items moved
	Skipped    uint64    `json:"skipped"` // edited meanwhile (so already current) or deleted
	Failed     uint64    `json:"failed"`
	Message    string    `json:"message,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Finished reports whether the job is in a final state.
func (j Job) Finished() bool {
	return j.State == JobSucceeded || j.State == JobFailed || j.State == JobWaitingForKey
}

func jobFrom(pb *corev1.Job) Job {
	return Job{ID: pb.GetJobId(), State: pb.GetState(), Total: pb.GetTotal(), Done: pb.GetDone(), Skipped: pb.GetSkipped(),
		Failed: pb.GetFailed(), Message: pb.GetMessage(), CreatedAt: tsTime(pb.GetCreatedAt()), UpdatedAt: tsTime(pb.GetUpdatedAt()),
		FinishedAt: tsTime(pb.GetFinishedAt())}
}

// Rotation is the answer of RotateKeys.
type Rotation struct {
	RotatedContexts int `json:"rotatedContexts"` // key contexts that got a new active version
	Job             Job `json:"job"`             // the job moving the items
}

// RotateKeys rotates every key context of the caller's tenant and starts a re-encryption job
// (tenant owners and admins, machines with keys:rotate; others PERMISSION_DENIED). A core that
// does not offer it yet answers UNIMPLEMENTED.
func (c *Client) RotateKeys(ctx context.Context) (Rotation, error) {
	r := &corev1.RotateKeysResponse{}
	cl := call{method: corev1.KeyService_RotateKeys_FullMethodName, verb: "POST", path: "/v1/keys/rotate", body: true, auth: true}
	if err := c.invoke(ctx, cl, &corev1.RotateKeysRequest{}, r); err != nil {
		return Rotation{}, err
	}
	return Rotation{RotatedContexts: int(r.GetRotatedContexts()), Job: jobFrom(r.GetJob())}, nil
}

// StartReencryption starts a job moving items to their contexts' active versions. A person of a
// zero-knowledge tenant moves their own items, with their master key (ErrLocked without it); an
// admin or a machine moves the tenant's platform-managed ones.
func (c *Client) StartReencryption(ctx context.Context) (Job, error) {
	r := &corev1.StartReencryptionResponse{}
	cl := call{method: corev1.KeyService_StartReencryption_FullMethodName, verb: "POST", path: "/v1/keys/jobs", body: true,
		respField: "job", auth: true, masterKey: true}
	if err := c.invoke(ctx, cl, &corev1.StartReencryptionRequest{}, r); err != nil {
		return Job{}, err
	}
	return jobFrom(r.GetJob()), nil
}

// GetJob reports a job's progress (NOT_FOUND for unknown jobs and other tenants' alike).
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	r := &corev1.GetJobResponse{}
	cl := call{method: corev1.KeyService_GetJob_FullMethodName, verb: "GET", path: "/v1/keys/jobs/" + esc(id), respField: "job", auth: true,
		ids: []pathID{{"jobId", id}}}
	if err := c.invoke(ctx, cl, &corev1.GetJobRequest{JobId: id}, r); err != nil {
		return Job{}, err
	}
	return jobFrom(r.GetJob()), nil
}

// Jobs iterates over the tenant's jobs, newest first.
func (c *Client) Jobs(ctx context.Context) iter.Seq2[Job, error] {
	return pages(func(token string) ([]Job, string, error) {
		r := &corev1.ListJobsResponse{}
		cl := call{method: corev1.KeyService_ListJobs_FullMethodName, verb: "GET", path: "/v1/keys/jobs", query: pageQuery(100, token), auth: true}
		if err := c.invoke(ctx, cl, &corev1.ListJobsRequest{PageSize: 100, PageToken: token}, r); err != nil {
			return nil, "", err
		}
		out := make([]Job, 0, len(r.GetJobs()))
		for _, j := range r.GetJobs() {
			out = append(out, jobFrom(j))
		}
		return out, r.GetNextPageToken(), nil
	})
}

// WaitJob polls job id every interval (a second if zero) until it is finished, calling progress
// (if not nil) with each state read, and returns the final state. A FAILED job is returned
// without an error: look at its State and Message. It returns early with ctx's error, or with
// GetJob's.
func (c *Client) WaitJob(ctx context.Context, id string, interval time.Duration, progress func(Job)) (Job, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		j, err := c.GetJob(ctx, id)
		if err != nil {
			return Job{}, err
		}
		if progress != nil {
			progress(j)
		}
		if j.Finished() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("wait for job %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// KeyContextStatus counts one key context's items per version.
type KeyContextStatus struct {
	EncryptionID string             `json:"encryptionId"`
	OwnerID      string             `json:"ownerId"`
	KeyMode      string             `json:"keyMode"`
	Versions     []KeyVersionStatus `json:"versions"`
}

// KeyVersionStatus counts one version's items.
type KeyVersionStatus struct {
	VersionID string `json:"versionId"`
	Version   int    `json:"version"`
	State     string `json:"state"` // ACTIVE, DECRYPT_ONLY, DISABLED or DESTROYED
	ItemCount uint64 `json:"itemCount"`
}

func versionFrom(v *corev1.KeyVersionStatus) KeyVersionStatus {
	return KeyVersionStatus{VersionID: v.GetVersionId(), Version: int(v.GetVersion()), State: v.GetState(), ItemCount: v.GetItemCount()}
}

// KeyStatus counts the tenant's items per key context and version.
func (c *Client) KeyStatus(ctx context.Context) ([]KeyContextStatus, error) {
	r := &corev1.GetKeyStatusResponse{}
	cl := call{method: corev1.KeyService_GetKeyStatus_FullMethodName, verb: "GET", path: "/v1/keys/status", auth: true}
	if err := c.invoke(ctx, cl, &corev1.GetKeyStatusRequest{}, r); err != nil {
		return nil, err
	}
	out := make([]KeyContextStatus, 0, len(r.GetContexts()))
	for _, kc := range r.GetContexts() {
		s := KeyContextStatus{EncryptionID: kc.GetEncryptionId(), OwnerID: kc.GetOwnerId(), KeyMode: kc.GetKeyMode(), Versions: []KeyVersionStatus{}}
		for _, v := range kc.GetVersions() {
			s.Versions = append(s.Versions, versionFrom(v))
		}
		out = append(out, s)
	}
	return out, nil
}

// EnableKeyVersion makes a disabled version decrypt again (DECRYPT_ONLY), for instance to read
// items restored from a backup made before it was disabled; a re-encryption job then moves them
// to the active version. Enabling a version that is not disabled changes nothing;
// FAILED_PRECONDITION for a destroyed version; NOT_FOUND for another tenant's or an unknown one.
func (c *Client) EnableKeyVersion(ctx context.Context, encryptionID, versionID string) (KeyVersionStatus, error) {
	r := &corev1.EnableKeyVersionResponse{}
	cl := call{method: corev1.KeyService_EnableKeyVersion_FullMethodName, verb: "POST",
		path: "/v1/keys/" + esc(encryptionID) + "/versions/" + esc(versionID) + ":enable", body: true, auth: true,
		ids: []pathID{{"encryptionId", encryptionID}, {"versionId", versionID}}}
	if err := c.invoke(ctx, cl, &corev1.EnableKeyVersionRequest{EncryptionId: encryptionID, VersionId: versionID}, r); err != nil {
		return KeyVersionStatus{}, err
	}
	return versionFrom(r.GetVersion()), nil
}

// DisableKeyVersion disables a version no item uses any more (FAILED_PRECONDITION otherwise).
func (c *Client) DisableKeyVersion(ctx context.Context, encryptionID, versionID string) (KeyVersionStatus, error) {
	r := &corev1.DisableKeyVersionResponse{}
	cl := call{method: corev1.KeyService_DisableKeyVersion_FullMethodName, verb: "POST",
		path: "/v1/keys/" + esc(encryptionID) + "/versions/" + esc(versionID) + ":disable", body: true, auth: true,
		ids: []pathID{{"encryptionId", encryptionID}, {"versionId", versionID}}}
	if err := c.invoke(ctx, cl, &corev1.DisableKeyVersionRequest{EncryptionId: encryptionID, VersionId: versionID}, r); err != nil {
		return KeyVersionStatus{}, err
	}
	return versionFrom(r.GetVersion()), nil
}
