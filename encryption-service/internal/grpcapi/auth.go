package grpcapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keyring"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/server"
	"github.com/custos-platform/custos/encryption-service/internal/tenants"
)

const (
	dataPlanePrefix  = "/custos.encryption.v1.EncryptionService/"
	adminPlanePrefix = "/custos.encryption.v1.AdminService/"
)

// TenantAuthenticator is what the auth interceptor needs to check a tenant credential.
type TenantAuthenticator interface {
	Authenticate(ctx context.Context, tenantID uuid.UUID, secret string) (secretID uuid.UUID, err error)
}

var _ TenantAuthenticator = (*tenants.Service)(nil)

// Auth authenticates every call before it reaches a service:
//   - data plane (EncryptionService): x-tenant-id and x-tenant-secret, checked against the tenant's
//     active secrets; x-master-key, when present, parsed into the Caller, and x-new-master-key too,
//     which only ChangeMasterKey accepts;
//   - admin plane (AdminService): a verified client certificate (whose CN is in AdminCNs when that is
//     set) and x-admin-token, whose SHA-256 must equal AdminTokenHash (compared in constant time).
//
// Other services (gRPC health) pass through: the transport already required a client certificate.
// A missing tenant credential is answered as missing; any other failure (an id that is not a UUID,
// an unknown tenant, a wrong secret) with the one message of tenants.ErrBadCredential. The client
// master keys are cleared once the handler has returned.
type Auth struct {
	Tenants        TenantAuthenticator
	AdminTokenHash []byte   // SHA-256 of the admin token; empty disables the admin plane
	AdminCNs       []string // allowed client-certificate CNs for the admin plane; empty allows any verified one
}

type callerKey struct{}
type adminKey struct{}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// authenticate returns ctx with the call's authenticated caller, and release, which the
// interceptor calls once the handler has returned: it clears the client master keys the call
// carried (the decoded bytes; the header text itself is an immutable string of the transport's).
// Nothing keeps them beyond the handler: the keyring uses them within the call only, batch items
// one after the other on the handler's goroutine.
func (a *Auth) authenticate(ctx context.Context, method string) (actx context.Context, release func(), err error) {
	switch {
	case strings.HasPrefix(method, dataPlanePrefix):
		c, err := a.tenant(ctx, method)
		if err != nil {
			return nil, nil, err
		}
		return context.WithValue(ctx, callerKey{}, c), func() { clear(c.MasterKey); clear(c.NewMasterKey) }, nil
	case strings.HasPrefix(method, adminPlanePrefix):
		actor, err := a.admin(ctx)
		if err != nil {
			return nil, nil, err
		}
		return context.WithValue(ctx, adminKey{}, actor), func() {}, nil
	default:
		return ctx, func() {}, nil
	}
}

// changeMasterKeyMethod is the only method that takes x-new-master-key.
const changeMasterKeyMethod = dataPlanePrefix + "ChangeMasterKey"

func (a *Auth) tenant(ctx context.Context, method string) (keyring.Caller, error) {
	id, okID := single(ctx, "x-tenant-id")
	secret, okSecret := single(ctx, "x-tenant-secret")
	if !okID || !okSecret {
		return keyring.Caller{}, errs.E(errs.Unauthenticated, "missing tenant credential: send X-Tenant-Id and X-Tenant-Secret")
	}
	tenantID, err := uuid.Parse(id)
	if err != nil {
		// The same answer as a wrong secret (the documented promise): only a missing credential is
		// told apart.
		return keyring.Caller{}, tenants.ErrBadCredential
	}
	secretID, err := a.Tenants.Authenticate(ctx, tenantID, secret)
	if err != nil {
		return keyring.Caller{}, err
	}
	c := keyring.Caller{TenantID: tenantID, SecretID: secretID, RequestID: server.RequestID(ctx)}
	if c.MasterKey, err = masterKeyHeader(ctx, "x-master-key", "X-Master-Key"); err != nil {
		return keyring.Caller{}, err
	}
	if c.NewMasterKey, err = masterKeyHeader(ctx, "x-new-master-key", "X-New-Master-Key"); err != nil {
		clear(c.MasterKey)
		return keyring.Caller{}, err
	}
	if c.NewMasterKey != nil && method != changeMasterKeyMethod {
		clear(c.MasterKey)
		clear(c.NewMasterKey)
		return keyring.Caller{}, errs.E(errs.Invalid,
			"X-New-Master-Key is only for ChangeMasterKey (POST /v1/encryptions/{encryptionId}:changeMasterKey): do not send it here")
	}
	return c, nil
}

// masterKeyHeader parses an optional client master key header: nil when absent; Invalid, naming
// the header and never echoing its value, when sent twice or not base64 of 32 bytes.
func masterKeyHeader(ctx context.Context, key, name string) ([]byte, error) {
	vals := server.Incoming(ctx, key)
	switch {
	case len(vals) == 0:
		return nil, nil
	case len(vals) > 1:
		return nil, errs.E(errs.Invalid, "%s: sent more than once", name)
	}
	k, err := keywrap.ParseMasterKey(vals[0])
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, name+": want base64 of exactly 32 bytes")
	}
	return k, nil
}

func (a *Auth) admin(ctx context.Context) (tenants.Actor, error) {
	id, ok := server.PeerIdentity(ctx)
	if !ok {
		return tenants.Actor{}, errs.E(errs.Unauthenticated, "the admin plane needs a verified client certificate")
	}
	if len(a.AdminCNs) > 0 && !contains(a.AdminCNs, id.CommonName) {
		return tenants.Actor{}, errs.E(errs.PermissionDenied, "client certificate %q may not use the admin plane", id.CommonName)
	}
	if len(a.AdminTokenHash) == 0 {
		return tenants.Actor{}, errs.E(errs.PermissionDenied, "the admin plane is disabled: the service has no ES_ADMIN_TOKEN_HASH")
	}
	token, ok := single(ctx, "x-admin-token")
	if !ok {
		return tenants.Actor{}, errs.E(errs.Unauthenticated, "missing admin token: send X-Admin-Token")
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], a.AdminTokenHash) != 1 {
		return tenants.Actor{}, errs.E(errs.Unauthenticated, "admin token rejected")
	}
	return tenants.Actor{Name: "admin:" + id.CommonName, RequestID: server.RequestID(ctx)}, nil
}

// single returns the one value of key in ctx's incoming metadata (read without copying the rest
// of it); absent, empty or repeated counts as missing.
func single(ctx context.Context, key string) (string, bool) {
	vals := server.Incoming(ctx, key)
	if len(vals) != 1 || vals[0] == "" {
		return "", false
	}
	return vals[0], true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// callerFrom returns the authenticated tenant of a data-plane call.
func callerFrom(ctx context.Context) (keyring.Caller, error) {
	c, ok := ctx.Value(callerKey{}).(keyring.Caller)
	if !ok {
		return keyring.Caller{}, errs.E(errs.Internal, "data-plane call without an authenticated tenant")
	}
	return c, nil
}

// adminFrom returns the authenticated operator of an admin-plane call.
func adminFrom(ctx context.Context) (tenants.Actor, error) {
	a, ok := ctx.Value(adminKey{}).(tenants.Actor)
	if !ok {
		return tenants.Actor{}, errs.E(errs.Internal, "admin call without an authenticated operator")
	}
	return a, nil
}
