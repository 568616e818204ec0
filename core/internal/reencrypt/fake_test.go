package reencrypt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
)

// fakeES is an in-memory encryption service: a ciphertext is base64 of "<version id>|<data>", so
// that a rewrap is checkable, and a CLIENT context wants its master key. Hooks script failures.
type fakeES struct {
	mu       sync.Mutex
	contexts map[string]*fakeContext
	rewraps  int // RewrapBatch calls
	// down makes GetContext and RewrapBatch fail Unavailable, as an offline service would.
	down bool
	// beforeRewrap, when set, runs before each RewrapBatch call (numbered from 1); an error it
	// returns is the call's.
	beforeRewrap func(ctx context.Context, call int, items []esclient.Ciphertext) error
	// beforeRotate, when set, runs before each Rotate call, outside the lock; an error it
	// returns is the call's.
	beforeRotate func(encryptionID string) error
	// maxRequest, when set, is the service's limit on a request: a RewrapBatch call whose
	// ciphertexts add up to more is refused ResourceExhausted, as the real service refuses a
	// message over ES_MAX_REQUEST_BYTES. requests records the size of every call it took.
	maxRequest int
	requests   []int
}

type fakeContext struct {
	keyMode  string
	key      []byte
	versions []esclient.Version
}

func newFakeES() *fakeES { return &fakeES{contexts: map[string]*fakeContext{}} }

// hook sets beforeRewrap.
func (f *fakeES) hook(fn func(ctx context.Context, call int, items []esclient.Ciphertext) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beforeRewrap = fn
}

// limitRequests sets maxRequest and forgets the requests taken so far.
func (f *fakeES) limitRequests(maxRequest int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxRequest, f.requests = maxRequest, nil
}

// taken returns the sizes of the rewrap calls taken since limitRequests.
func (f *fakeES) taken() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.requests...)
}

// setDown takes the service offline (true) or brings it back.
func (f *fakeES) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

var errOffline = errs.E(errs.Unavailable, "the encryption service is unavailable; try again")

var _ esclient.Client = (*fakeES)(nil)

func (f *fakeES) CreateContext(_ context.Context, keyMode string, masterKey []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := uuid.NewString()
	f.contexts[id] = &fakeContext{keyMode: keyMode, key: masterKey,
		versions: []esclient.Version{{ID: uuid.NewString(), Version: 1, State: "ACTIVE"}}}
	return id, nil
}

func (c *fakeContext) active() esclient.Version { return c.versions[len(c.versions)-1] }

func (f *fakeES) context(id string, masterKey []byte) (*fakeContext, error) {
	c, ok := f.contexts[id]
	if !ok {
		return nil, errs.E(errs.NotFound, "key context not found")
	}
	if c.keyMode == "CLIENT" {
		if masterKey == nil {
			return nil, errs.E(errs.Unauthenticated, "send X-Master-Key")
		}
		if !bytes.Equal(masterKey, c.key) {
			return nil, errs.E(errs.PermissionDenied, "wrong master key")
		}
	}
	return c, nil
}

func (f *fakeES) Encrypt(_ context.Context, encryptionID, data string, masterKey []byte) (esclient.Ciphertext, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.context(encryptionID, masterKey)
	if err != nil {
		return esclient.Ciphertext{}, err
	}
	return seal(encryptionID, c.active().ID, data), nil
}

func seal(encryptionID, versionID, data string) esclient.Ciphertext {
	return esclient.Ciphertext{
		CipherText: base64.StdEncoding.EncodeToString([]byte(versionID + "|" + data)), EncryptionID: encryptionID,
		VersionID: versionID, Algorithm: "AES-256-GCM", Metadata: json.RawMessage(`{"v":1}`),
	}
}

// open returns ct's data if its context, version and key check out.
func (f *fakeES) open(ct esclient.Ciphertext, masterKey []byte) (*fakeContext, string, error) {
	c, err := f.context(ct.EncryptionID, masterKey)
	if err != nil {
		return nil, "", err
	}
	for _, v := range c.versions {
		if v.ID != ct.VersionID {
			continue
		}
		if v.State == "DISABLED" {
			return nil, "", errs.E(errs.FailedPrecondition, "key version disabled")
		}
		raw, _ := base64.StdEncoding.DecodeString(ct.CipherText)
		ver, data, ok := strings.Cut(string(raw), "|")
		if !ok || ver != v.ID {
			return nil, "", errs.E(errs.Invalid, "ciphertext does not authenticate")
		}
		return c, data, nil
	}
	return nil, "", errs.E(errs.NotFound, "key version not found")
}

func (f *fakeES) Decrypt(_ context.Context, ct esclient.Ciphertext, masterKey []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, data, err := f.open(ct, masterKey)
	return data, err
}

func (f *fakeES) Rotate(_ context.Context, encryptionID string) (string, error) {
	f.mu.Lock()
	hook := f.beforeRotate
	f.mu.Unlock()
	if hook != nil {
		if err := hook(encryptionID); err != nil {
			return "", err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.contexts[encryptionID]
	if !ok {
		return "", errs.E(errs.NotFound, "key context not found")
	}
	c.versions[len(c.versions)-1].State = "DECRYPT_ONLY"
	v := esclient.Version{ID: uuid.NewString(), Version: len(c.versions) + 1, State: "ACTIVE"}
	c.versions = append(c.versions, v)
	return v.ID, nil
}

func (f *fakeES) GetContext(_ context.Context, encryptionID string) (esclient.Context, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return esclient.Context{}, errOffline
	}
	c, ok := f.contexts[encryptionID]
	if !ok {
		return esclient.Context{}, errs.E(errs.NotFound, "key context not found")
	}
	return esclient.Context{ActiveVersionID: c.active().ID, KeyMode: c.keyMode, Algorithm: "AES-256-GCM",
		Versions: append([]esclient.Version(nil), c.versions...)}, nil
}

func (f *fakeES) RewrapBatch(ctx context.Context, items []esclient.Ciphertext, masterKey []byte) ([]esclient.RewrapResult, error) {
	f.mu.Lock()
	f.rewraps++
	call, hook := f.rewraps, f.beforeRewrap
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, call, items); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errOffline
	}
	size := 0
	for _, ct := range items {
		size += len(ct.CipherText)
	}
	if f.maxRequest > 0 && size > f.maxRequest {
		return nil, errs.E(errs.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, f.maxRequest)
	}
	f.requests = append(f.requests, size)
	out := make([]esclient.RewrapResult, len(items))
	for i, ct := range items {
		c, data, err := f.open(ct, masterKey)
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i].Ciphertext = seal(ct.EncryptionID, c.active().ID, data)
	}
	return out, nil
}

func (f *fakeES) DisableVersion(_ context.Context, encryptionID, versionID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.contexts[encryptionID]
	if !ok {
		return errs.E(errs.NotFound, "key context not found")
	}
	for i, v := range c.versions {
		if v.ID == versionID {
			if v.State == "ACTIVE" {
				return errs.E(errs.FailedPrecondition, "the active version cannot be disabled")
			}
			c.versions[i].State = "DISABLED"
			return nil
		}
	}
	return errs.E(errs.NotFound, "key version not found")
}

func (f *fakeES) ChangeMasterKey(context.Context, string, []byte, []byte) error {
	return errs.E(errs.FailedPrecondition, "not in the fake")
}

func (f *fakeES) EnableVersion(_ context.Context, encryptionID, versionID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.contexts[encryptionID]
	if !ok {
		return errs.E(errs.NotFound, "key context not found")
	}
	for i, v := range c.versions {
		if v.ID == versionID {
			if v.State == "DISABLED" {
				c.versions[i].State = "DECRYPT_ONLY"
			}
			return nil
		}
	}
	return errs.E(errs.NotFound, "key version not found")
}

func (f *fakeES) DestroyContext(_ context.Context, encryptionID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.contexts[encryptionID]; !ok {
		return errs.E(errs.NotFound, "key context not found")
	}
	delete(f.contexts, encryptionID)
	return nil
}

// router gives every tenant the same client.
type router struct{ es esclient.Client }

func (r router) For(context.Context, uuid.UUID) (esclient.Client, error) { return r.es, nil }

// tenantRouter gives each tenant its own client, as sovereign tenants have.
type tenantRouter map[uuid.UUID]esclient.Client

func (r tenantRouter) For(_ context.Context, tenantID uuid.UUID) (esclient.Client, error) {
	es, ok := r[tenantID]
	if !ok {
		return nil, errs.E(errs.NotFound, "tenant %s has no encryption service", tenantID)
	}
	return es, nil
}
