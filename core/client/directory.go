package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/password"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// Tenant is a customer organisation.
type Tenant struct {
	ID                   string    `json:"tenantId"`
	Name                 string    `json:"name"`
	KeyMode              string    `json:"keyMode"`      // PLATFORM or CLIENT (zero-knowledge)
	EndpointKind         string    `json:"endpointKind"` // "platform", or "hosted" (the tenant's own encryption service)
	PasswordHintsEnabled bool      `json:"passwordHintsEnabled"`
	CreatedAt            time.Time `json:"createdAt"`
}

func tenantFrom(pb *corev1.Tenant) Tenant {
	return Tenant{ID: pb.GetTenantId(), Name: pb.GetName(), KeyMode: pb.GetKeyMode(), EndpointKind: pb.GetEncryptionEndpoint().GetKind(),
		PasswordHintsEnabled: pb.GetPasswordHintsEnabled(), CreatedAt: tsTime(pb.GetCreatedAt())}
}

// NewTenant describes a tenant to create on the platform's encryption service.
type NewTenant struct {
	Name    string
	KeyMode string // PLATFORM (default) or CLIENT
	// PasswordHints switches password hints on or off; nil keeps the default (on).
	PasswordHints *bool
}

// CreateTenant creates a tenant (platform admin only: others get PERMISSION_DENIED; a taken name
// ALREADY_EXISTS).
func (c *Client) CreateTenant(ctx context.Context, t NewTenant) (Tenant, error) {
	r := &corev1.CreateTenantResponse{}
	cl := call{method: corev1.TenantService_CreateTenant_FullMethodName, verb: "POST", path: "/v1/tenants", body: true, respField: "tenant", auth: true}
	if err := c.invoke(ctx, cl, &corev1.CreateTenantRequest{Name: t.Name, KeyMode: t.KeyMode, PasswordHintsEnabled: t.PasswordHints}, r); err != nil {
		return Tenant{}, err
	}
	return tenantFrom(r.GetTenant()), nil
}

// GetTenant describes a tenant: any for the platform admin, their own for others (NOT_FOUND
// otherwise).
func (c *Client) GetTenant(ctx context.Context, id string) (Tenant, error) {
	r := &corev1.GetTenantResponse{}
	cl := call{method: corev1.TenantService_GetTenant_FullMethodName, verb: "GET", path: "/v1/tenants/" + esc(id), respField: "tenant", auth: true,
		ids: []pathID{{"tenantId", id}}}
	if err := c.invoke(ctx, cl, &corev1.GetTenantRequest{TenantId: id}, r); err != nil {
		return Tenant{}, err
	}
	return tenantFrom(r.GetTenant()), nil
}

// Tenants iterates over every tenant (platform admin only).
func (c *Client) Tenants(ctx context.Context) iter.Seq2[Tenant, error] {
	return pages(func(token string) ([]Tenant, string, error) {
		r := &corev1.ListTenantsResponse{}
		cl := call{method: corev1.TenantService_ListTenants_FullMethodName, verb: "GET", path: "/v1/tenants", query: pageQuery(100, token), auth: true}
		if err := c.invoke(ctx, cl, &corev1.ListTenantsRequest{PageSize: 100, PageToken: token}, r); err != nil {
			return nil, "", err
		}
		out := make([]Tenant, 0, len(r.GetTenants()))
		for _, t := range r.GetTenants() {
			out = append(out, tenantFrom(t))
		}
		return out, r.GetNextPageToken(), nil
	})
}

// TenantUpdate names the settings UpdateTenant changes; a nil field stays as it is.
type TenantUpdate struct {
	Name          *string // 1 to 200 characters, unique
	PasswordHints *bool   // whether users may set and read password hints
}

// UpdateTenant changes a tenant's name or password hints setting and returns the tenant after
// the change: the platform admin renames and switches hints, an owner of the tenant switches its
// hints only (PERMISSION_DENIED for a rename). An update that changes nothing is
// refused here, without calling core. Core answers NOT_FOUND for unknown tenants and other
// tenants alike, PERMISSION_DENIED when the caller may not change it, ALREADY_EXISTS for a taken
// name and INVALID_ARGUMENT for a name that is not 1 to 200 characters without control characters.
func (c *Client) UpdateTenant(ctx context.Context, id string, u TenantUpdate) (Tenant, error) {
	if u.Name == nil && u.PasswordHints == nil {
		return Tenant{}, errors.New("client: UpdateTenant: nothing to change (set Name or PasswordHints)")
	}
	r := &corev1.UpdateTenantResponse{}
	cl := call{method: corev1.TenantService_UpdateTenant_FullMethodName, verb: "PATCH", path: "/v1/tenants/" + esc(id), body: true,
		respField: "tenant", auth: true, ids: []pathID{{"tenantId", id}}}
	req := &corev1.UpdateTenantRequest{TenantId: id, Name: u.Name, PasswordHintsEnabled: u.PasswordHints}
	if err := c.invoke(ctx, cl, req, r); err != nil {
		return Tenant{}, err
	}
	return tenantFrom(r.GetTenant()), nil
}

// User is a person of a tenant.
type User struct {
	ID              string    `json:"userId"`
	TenantID        string    `json:"tenantId"`
	Username        string    `json:"username"`
	Role            string    `json:"role"` // owner, admin or member
	Disabled        bool      `json:"disabled"`
	MFAEnabled      bool      `json:"mfaEnabled"`
	HasPasswordHint bool      `json:"hasPasswordHint"`
	CreatedAt       time.Time `json:"createdAt"`
}

func userFrom(pb *corev1.User) User {
	return User{ID: pb.GetUserId(), TenantID: pb.GetTenantId(), Username: pb.GetUsername(), Role: pb.GetRole(),
		Disabled: pb.GetDisabled(), MFAEnabled: pb.GetMfaEnabled(), HasPasswordHint: pb.GetHasPasswordHint(),
		CreatedAt: tsTime(pb.GetCreatedAt())}
}

// NewUser describes a person to add to a tenant.
type NewUser struct {
	Username     string
	Password     string // the new user's password, derived here: core never sees it
	Role         string // owner, admin or member (default member)
	PasswordHint string // optional, stored in plain text
}

// CreateUser adds a person to tenantID. The password is derived here exactly as the person's own
// logins will derive it (prelogin answers a new username's parameters before the user exists), so
// core receives only the derived value; it must meet the policy (ErrWeakPassword). In a
// zero-knowledge tenant it also sends the person's master key, derived from the same password, so
// that their personal key context exists from the start (when the caller may not read the tenant
// to learn its mode, the context is created at the person's first vault request instead). Core
// answers ALREADY_EXISTS for a taken username and PERMISSION_DENIED when the caller may not grant
// role.
func (c *Client) CreateUser(ctx context.Context, tenantID string, u NewUser) (User, error) {
	if err := checkIDs(pathID{"tenantId", tenantID}); err != nil {
		return User{}, err // before the derivation, whose prelogin would be sent for nothing
	}
	if err := password.Validate(u.Password); err != nil {
		return User{}, fmt.Errorf("%w: %w", ErrWeakPassword, err)
	}
	secrets, err := c.Derive(ctx, u.Username, u.Password)
	if err != nil {
		return User{}, err
	}
	r := &corev1.CreateUserResponse{}
	cl := call{method: corev1.UserService_CreateUser_FullMethodName, verb: "POST", path: "/v1/tenants/" + esc(tenantID) + "/users",
		body: true, respField: "user", auth: true, ids: []pathID{{"tenantId", tenantID}}}
	if t, err := c.GetTenant(ctx, tenantID); err == nil && t.KeyMode == "CLIENT" {
		cl.header = map[string]string{"X-Master-Key": secrets.MasterKey}
	}
	req := &corev1.CreateUserRequest{TenantId: tenantID, Username: u.Username, Password: secrets.AuthPassword, Role: u.Role, PasswordHint: u.PasswordHint}
	if err := c.invoke(ctx, cl, req, r); err != nil {
		return User{}, err
	}
	return userFrom(r.GetUser()), nil
}

// Users iterates over tenantID's users (tenant owners and admins, the platform admin, machines
// with users:manage).
func (c *Client) Users(ctx context.Context, tenantID string) iter.Seq2[User, error] {
	return pages(func(token string) ([]User, string, error) {
		r := &corev1.ListUsersResponse{}
		cl := call{method: corev1.UserService_ListUsers_FullMethodName, verb: "GET", path: "/v1/tenants/" + esc(tenantID) + "/users",
			query: pageQuery(100, token), auth: true, ids: []pathID{{"tenantId", tenantID}}}
		if err := c.invoke(ctx, cl, &corev1.ListUsersRequest{TenantId: tenantID, PageSize: 100, PageToken: token}, r); err != nil {
			return nil, "", err
		}
		out := make([]User, 0, len(r.GetUsers()))
		for _, u := range r.GetUsers() {
			out = append(out, userFrom(u))
		}
		return out, r.GetNextPageToken(), nil
	})
}

// GetUser describes a user the caller may manage (NOT_FOUND for unknown users and users of other
// tenants alike).
func (c *Client) GetUser(ctx context.Context, userID string) (User, error) {
	r := &corev1.GetUserResponse{}
	cl := call{method: corev1.UserService_GetUser_FullMethodName, verb: "GET", path: "/v1/users/" + esc(userID), respField: "user", auth: true,
		ids: []pathID{{"userId", userID}}}
	if err := c.invoke(ctx, cl, &corev1.GetUserRequest{UserId: userID}, r); err != nil {
		return User{}, err
	}
	return userFrom(r.GetUser()), nil
}

// DisableUser stops a user from logging in and ends their sessions at once.
func (c *Client) DisableUser(ctx context.Context, userID string) (User, error) {
	r := &corev1.DisableUserResponse{}
	cl := call{method: corev1.UserService_DisableUser_FullMethodName, verb: "POST", path: "/v1/users/" + esc(userID) + ":disable",
		body: true, respField: "user", auth: true, ids: []pathID{{"userId", userID}}}
	if err := c.invoke(ctx, cl, &corev1.DisableUserRequest{UserId: userID}, r); err != nil {
		return User{}, err
	}
	return userFrom(r.GetUser()), nil
}

// EnableUser lets a disabled user log in again.
func (c *Client) EnableUser(ctx context.Context, userID string) (User, error) {
	r := &corev1.EnableUserResponse{}
	cl := call{method: corev1.UserService_EnableUser_FullMethodName, verb: "POST", path: "/v1/users/" + esc(userID) + ":enable",
		body: true, respField: "user", auth: true, ids: []pathID{{"userId", userID}}}
	if err := c.invoke(ctx, cl, &corev1.EnableUserRequest{UserId: userID}, r); err != nil {
		return User{}, err
	}
	return userFrom(r.GetUser()), nil
}

// SetUserRole changes a user's role to owner, admin or member and returns the user after the
// change. Core answers PERMISSION_DENIED when the caller may not grant the role or change this
// user (only owners and the platform admin make owners or change an owner), FAILED_PRECONDITION
// when the change would leave the tenant without an owner, INVALID_ARGUMENT for any other role,
// and NOT_FOUND for unknown users and users of other tenants alike.
func (c *Client) SetUserRole(ctx context.Context, userID, role string) (User, error) {
	r := &corev1.SetUserRoleResponse{}
	cl := call{method: corev1.UserService_SetUserRole_FullMethodName, verb: "POST", path: "/v1/users/" + esc(userID) + ":setRole",
		body: true, respField: "user", auth: true, ids: []pathID{{"userId", userID}}}
	if err := c.invoke(ctx, cl, &corev1.SetUserRoleRequest{UserId: userID, Role: role}, r); err != nil {
		return User{}, err
	}
	return userFrom(r.GetUser()), nil
}

// What became of a deleted user's personal key context (DeletedUser.KeyErasure).
const (
	// KeyErasureDone: the encryption service destroyed it before core answered, so the user's
	// ciphertext, backups and exports included, can no longer be decrypted.
	KeyErasureDone = "done"
	// KeyErasurePending: core could not reach the encryption service and keeps retrying until
	// the context is destroyed.
	KeyErasurePending = "pending"
	// KeyErasureNone: the user had no key context.
	KeyErasureNone = "none"
	// KeyErasureHosted: a deleted tenant's keys are on its own encryption service, which core
	// does not touch; that service's operator destroys them.
	KeyErasureHosted = "hosted"
)

// DeletedTenant is the outcome of DeleteTenant.
type DeletedTenant struct {
	TenantID string `json:"tenantId"`
	// KeyErasure is KeyErasureDone, KeyErasurePending or KeyErasureHosted.
	KeyErasure string `json:"keyErasure"`
}

// DeleteTenant deletes tenant id with its people, their items, its API keys and its jobs, and has
// the platform's encryption service destroy the tenant there, every key of it (crypto-shredding);
// it cannot be undone. confirmName must repeat the tenant's name exactly (INVALID_ARGUMENT
// otherwise, and nothing is deleted). Platform admin only (PERMISSION_DENIED for others);
// NOT_FOUND for an unknown tenant.
func (c *Client) DeleteTenant(ctx context.Context, id, confirmName string) (DeletedTenant, error) {
	r := &corev1.DeleteTenantResponse{}
	cl := call{method: corev1.TenantService_DeleteTenant_FullMethodName, verb: "DELETE", path: "/v1/tenants/" + esc(id),
		query: url.Values{"confirmName": {confirmName}}, auth: true, ids: []pathID{{"tenantId", id}}}
	if err := c.invoke(ctx, cl, &corev1.DeleteTenantRequest{TenantId: id, ConfirmName: confirmName}, r); err != nil {
		return DeletedTenant{}, err
	}
	return DeletedTenant{TenantID: id, KeyErasure: r.GetKeyErasure()}, nil
}

// DeletedUser is the outcome of DeleteUser.
type DeletedUser struct {
	UserID string `json:"userId"`
	// KeyErasure is KeyErasureDone, KeyErasurePending or KeyErasureNone; empty from a core that
	// does not report it.
	KeyErasure string `json:"keyErasure"`
}

// DeleteUser deletes a user with their sessions and vault items, and has their personal key
// context destroyed on the encryption service (crypto-shredding); it cannot be undone. Core
// answers NOT_FOUND for unknown users and users of other tenants alike, PERMISSION_DENIED when
// the caller may not change this user (only owners and the platform admin delete an owner), and
// FAILED_PRECONDITION for a tenant's last owner.
func (c *Client) DeleteUser(ctx context.Context, userID string) (DeletedUser, error) {
	r := &corev1.DeleteUserResponse{}
	cl := call{method: corev1.UserService_DeleteUser_FullMethodName, verb: "DELETE", path: "/v1/users/" + esc(userID), auth: true,
		ids: []pathID{{"userId", userID}}}
	if err := c.invoke(ctx, cl, &corev1.DeleteUserRequest{UserId: userID}, r); err != nil {
		return DeletedUser{}, err
	}
	return DeletedUser{UserID: userID, KeyErasure: r.GetKeyErasure()}, nil
}

// APIKey describes a machine credential, never its secret.
type APIKey struct {
	ID         string    `json:"apiKeyId"`
	Key        string    `json:"apiKey"` // sent as X-Api-Key
	Name       string    `json:"name"`
	Scopes     []string  `json:"scopes"`
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
	RevokedAt  time.Time `json:"revokedAt,omitzero"`
	CreatedAt  time.Time `json:"createdAt"`
	// CreatedBy is the user id of the person who created the key, CreatedByUsername their name
	// ("" once they were deleted): keys belong to the tenant and outlive their creators.
	CreatedBy         string `json:"createdBy,omitempty"`
	CreatedByUsername string `json:"createdByUsername,omitempty"`
}

func apiKeyFrom(pb *corev1.ApiKey) APIKey {
	return APIKey{ID: pb.GetApiKeyId(), Key: pb.GetApiKey(), Name: pb.GetName(), Scopes: pb.GetScopes(),
		ExpiresAt: tsTime(pb.GetExpiresAt()), LastUsedAt: tsTime(pb.GetLastUsedAt()), RevokedAt: tsTime(pb.GetRevokedAt()),
		CreatedAt: tsTime(pb.GetCreatedAt()), CreatedBy: pb.GetCreatedBy(), CreatedByUsername: pb.GetCreatedByUsername()}
}

// APIKeyCredential is a new key and its secret, shown only once.
type APIKeyCredential struct {
	APIKey    string `json:"apiKey"`
	APISecret string `json:"apiSecret"`
	Key       APIKey `json:"key"`
}

// CreateAPIKey issues a machine credential of the caller's tenant (owners and admins) with scopes
// among export, keys:rotate and users:manage; a zero expiresAt means it never expires.
func (c *Client) CreateAPIKey(ctx context.Context, name string, scopes []string, expiresAt time.Time) (APIKeyCredential, error) {
	req := &corev1.CreateApiKeyRequest{Name: name, Scopes: scopes}
	if !expiresAt.IsZero() {
		req.ExpiresAt = timestamppb.New(expiresAt)
	}
	r := &corev1.CreateApiKeyResponse{}
	cl := call{method: corev1.ApiKeyService_CreateApiKey_FullMethodName, verb: "POST", path: "/v1/apikeys", body: true, auth: true}
	if err := c.invoke(ctx, cl, req, r); err != nil {
		return APIKeyCredential{}, err
	}
	return APIKeyCredential{APIKey: r.GetApiKey(), APISecret: r.GetApiSecret(), Key: apiKeyFrom(r.GetKey())}, nil
}

// APIKeys iterates over the tenant's API keys.
func (c *Client) APIKeys(ctx context.Context) iter.Seq2[APIKey, error] {
	return pages(func(token string) ([]APIKey, string, error) {
		r := &corev1.ListApiKeysResponse{}
		cl := call{method: corev1.ApiKeyService_ListApiKeys_FullMethodName, verb: "GET", path: "/v1/apikeys", query: pageQuery(100, token), auth: true}
		if err := c.invoke(ctx, cl, &corev1.ListApiKeysRequest{PageSize: 100, PageToken: token}, r); err != nil {
			return nil, "", err
		}
		out := make([]APIKey, 0, len(r.GetKeys()))
		for _, k := range r.GetKeys() {
			out = append(out, apiKeyFrom(k))
		}
		return out, r.GetNextPageToken(), nil
	})
}

// RotateAPIKey issues a new secret for a key; the previous one keeps working for overlap (0
// ends it at once; at most 30 days).
func (c *Client) RotateAPIKey(ctx context.Context, id string, overlap time.Duration) (APIKeyCredential, error) {
	r := &corev1.RotateApiKeyResponse{}
	cl := call{method: corev1.ApiKeyService_RotateApiKey_FullMethodName, verb: "POST", path: "/v1/apikeys/" + esc(id) + ":rotate", body: true, auth: true,
		ids: []pathID{{"apiKeyId", id}}}
	if err := c.invoke(ctx, cl, &corev1.RotateApiKeyRequest{ApiKeyId: id, Overlap: durationpb.New(overlap)}, r); err != nil {
		return APIKeyCredential{}, err
	}
	return APIKeyCredential{APIKey: r.GetApiKey(), APISecret: r.GetApiSecret(), Key: apiKeyFrom(r.GetKey())}, nil
}

// RevokeAPIKey makes a key stop working at once.
func (c *Client) RevokeAPIKey(ctx context.Context, id string) error {
	cl := call{method: corev1.ApiKeyService_RevokeApiKey_FullMethodName, verb: "DELETE", path: "/v1/apikeys/" + esc(id), auth: true,
		ids: []pathID{{"apiKeyId", id}}}
	return c.invoke(ctx, cl, &corev1.RevokeApiKeyRequest{ApiKeyId: id}, &corev1.RevokeApiKeyResponse{})
}
