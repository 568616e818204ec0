package grpcapi

import (
	"context"
	"encoding/base64"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-platform/custos/core/internal/auth"
	"github.com/custos-platform/custos/core/internal/directory"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// AuthServer serves custos.core.v1.AuthService.
type AuthServer struct {
	corev1.UnimplementedAuthServiceServer
	Auth *auth.Service
}

// Prelogin implements POST /v1/auth/prelogin.
func (s *AuthServer) Prelogin(ctx context.Context, req *corev1.PreloginRequest) (*corev1.PreloginResponse, error) {
	if req.GetUsername() == "" {
		return nil, errs.E(errs.Invalid, "username: required")
	}
	k, err := s.Auth.Prelogin(ctx, req.GetUsername())
	if err != nil {
		return nil, err
	}
	return &corev1.PreloginResponse{
		Kdf: "argon2id", Salt: base64.StdEncoding.EncodeToString(k.Salt),
		MemoryKib: k.MemoryKiB, Iterations: k.Iterations, Parallelism: k.Parallelism,
	}, nil
}

// Login implements POST /v1/auth/login.
func (s *AuthServer) Login(ctx context.Context, req *corev1.LoginRequest) (*corev1.LoginResponse, error) {
	if req.GetUsername() == "" || req.GetPassword() == "" {
		return nil, errs.E(errs.Invalid, "username and password: required")
	}
	res, err := s.Auth.Login(ctx, loginRequest(ctx), req.GetUsername(), req.GetPassword())
	if err != nil {
		return nil, err
	}
	if res.MFARequired {
		return &corev1.LoginResponse{MfaRequired: true, MfaToken: res.MFAToken}, nil
	}
	return &corev1.LoginResponse{
		AccessToken: res.Tokens.AccessToken, RefreshToken: res.Tokens.RefreshToken,
		ExpiresIn: int32(res.Tokens.ExpiresIn / time.Second), TokenType: "Bearer", //nolint:gosec // bounded above: token TTLs are at most 24h in seconds
	}, nil
}

// VerifyMfa implements POST /v1/auth/mfa/verify.
func (s *AuthServer) VerifyMfa(ctx context.Context, req *corev1.VerifyMfaRequest) (*corev1.VerifyMfaResponse, error) {
	if req.GetMfaToken() == "" || req.GetCode() == "" {
		return nil, errs.E(errs.Invalid, "mfaToken and code: required")
	}
	t, err := s.Auth.VerifyMFA(ctx, loginRequest(ctx), req.GetMfaToken(), req.GetCode())
	if err != nil {
		return nil, err
	}
	return &corev1.VerifyMfaResponse{
		AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, ExpiresIn: int32(t.ExpiresIn / time.Second), TokenType: "Bearer", //nolint:gosec // bounded above: token TTLs are at most 24h in seconds
	}, nil
}

// Refresh implements POST /v1/auth/refresh.
func (s *AuthServer) Refresh(ctx context.Context, req *corev1.RefreshRequest) (*corev1.RefreshResponse, error) {
	if req.GetRefreshToken() == "" {
		return nil, errs.E(errs.Invalid, "refreshToken: required")
	}
	t, err := s.Auth.Refresh(ctx, request(ctx), req.GetRefreshToken())
	if err != nil {
		return nil, err
	}
	return &corev1.RefreshResponse{
		AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, ExpiresIn: int32(t.ExpiresIn / time.Second), TokenType: "Bearer", //nolint:gosec // bounded above: token TTLs are at most 24h in seconds
	}, nil
}

// Logout implements POST /v1/auth/logout.
func (s *AuthServer) Logout(ctx context.Context, req *corev1.LogoutRequest) (*corev1.LogoutResponse, error) {
	if req.GetRefreshToken() == "" {
		return nil, errs.E(errs.Invalid, "refreshToken: required")
	}
	if err := s.Auth.Logout(ctx, request(ctx), req.GetRefreshToken(), req.GetAllSessions()); err != nil {
		return nil, err
	}
	return &corev1.LogoutResponse{}, nil
}

// ListSessions implements GET /v1/auth/sessions.
func (s *AuthServer) ListSessions(ctx context.Context, _ *corev1.ListSessionsRequest) (*corev1.ListSessionsResponse, error) {
	sessions, err := s.Auth.ListSessions(ctx)
	if err != nil {
		return nil, err
	}
	out := &corev1.ListSessionsResponse{Sessions: make([]*corev1.Session, 0, len(sessions))}
	for _, x := range sessions {
		out.Sessions = append(out.Sessions, &corev1.Session{
			SessionId: x.ID.String(), CreatedAt: timestamppb.New(x.CreatedAt), LastRefreshedAt: timestamppb.New(x.LastRefreshedAt),
			RemoteAddr: x.RemoteAddr, UserAgent: x.UserAgent, Current: x.Current,
		})
	}
	return out, nil
}

// RevokeSession implements POST /v1/auth/sessions/{sessionId}:revoke.
func (s *AuthServer) RevokeSession(ctx context.Context, req *corev1.RevokeSessionRequest) (*corev1.RevokeSessionResponse, error) {
	id, err := parseID("sessionId", req.GetSessionId())
	if err != nil {
		return nil, err
	}
	if err := s.Auth.RevokeSession(ctx, request(ctx), id); err != nil {
		return nil, err
	}
	return &corev1.RevokeSessionResponse{}, nil
}

// GetPasswordHint implements POST /v1/auth/hint.
func (s *AuthServer) GetPasswordHint(ctx context.Context, req *corev1.GetPasswordHintRequest) (*corev1.GetPasswordHintResponse, error) {
	if req.GetUsername() == "" {
		return nil, errs.E(errs.Invalid, "username: required")
	}
	h, err := s.Auth.Hint(ctx, request(ctx), req.GetUsername())
	if err != nil {
		return nil, err
	}
	return &corev1.GetPasswordHintResponse{Hint: h}, nil
}

// ChangePassword implements POST /v1/auth/password.
func (s *AuthServer) ChangePassword(ctx context.Context, req *corev1.ChangePasswordRequest) (*corev1.ChangePasswordResponse, error) {
	if req.GetCurrentPassword() == "" || req.GetNewPassword() == "" {
		return nil, errs.E(errs.Invalid, "currentPassword and newPassword: required")
	}
	oldKey, err := masterKeyHeader(ctx, "x-master-key", "X-Master-Key")
	if err != nil {
		return nil, err
	}
	newKey, err := masterKeyHeader(ctx, "x-new-master-key", "X-New-Master-Key")
	if err != nil {
		return nil, err
	}
	t, err := s.Auth.ChangePassword(ctx, loginRequest(ctx), req.GetCurrentPassword(), req.GetNewPassword(), req.GetNewPasswordHint(), oldKey, newKey)
	if err != nil {
		return nil, err
	}
	return &corev1.ChangePasswordResponse{Tokens: &corev1.Tokens{
		AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, ExpiresIn: int32(t.ExpiresIn / time.Second), TokenType: "Bearer", //nolint:gosec // bounded above: token TTLs are at most 24h in seconds
	}}, nil
}

// EnrollTotp implements POST /v1/auth/totp/enroll.
func (s *AuthServer) EnrollTotp(ctx context.Context, req *corev1.EnrollTotpRequest) (*corev1.EnrollTotpResponse, error) {
	if req.GetPassword() == "" {
		return nil, errs.E(errs.Invalid, "password: required (re-authentication)")
	}
	e, err := s.Auth.EnrollTOTP(ctx, request(ctx), req.GetPassword())
	if err != nil {
		return nil, err
	}
	return &corev1.EnrollTotpResponse{Secret: e.Secret, OtpauthUri: e.URI, QrPng: e.PNG}, nil
}

// ConfirmTotp implements POST /v1/auth/totp/confirm.
func (s *AuthServer) ConfirmTotp(ctx context.Context, req *corev1.ConfirmTotpRequest) (*corev1.ConfirmTotpResponse, error) {
	if req.GetCode() == "" {
		return nil, errs.E(errs.Invalid, "code: required")
	}
	codes, err := s.Auth.ConfirmTOTP(ctx, request(ctx), req.GetCode())
	if err != nil {
		return nil, err
	}
	return &corev1.ConfirmTotpResponse{RecoveryCodes: codes}, nil
}

// DisableTotp implements POST /v1/auth/totp/disable.
func (s *AuthServer) DisableTotp(ctx context.Context, req *corev1.DisableTotpRequest) (*corev1.DisableTotpResponse, error) {
	if req.GetPassword() == "" || req.GetCode() == "" {
		return nil, errs.E(errs.Invalid, "password and code: required")
	}
	if err := s.Auth.DisableTOTP(ctx, request(ctx), req.GetPassword(), req.GetCode()); err != nil {
		return nil, err
	}
	return &corev1.DisableTotpResponse{}, nil
}

// GetCurrentUser implements GET /v1/me.
func (s *AuthServer) GetCurrentUser(ctx context.Context, _ *corev1.GetCurrentUserRequest) (*corev1.GetCurrentUserResponse, error) {
	p := principal.FromContext(ctx)
	out := &corev1.GetCurrentUserResponse{
		PrincipalType: "user", PrincipalId: p.ID.String(), Role: p.Role, PlatformAdmin: p.PlatformAdmin, Scopes: p.Scopes,
	}
	if p.TenantID != uuid.Nil {
		out.TenantId = p.TenantID.String()
	}
	if p.Kind == principal.APIKey {
		out.PrincipalType = "apikey"
		return out, nil
	}
	u, err := s.Auth.User(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	out.Username, out.MfaEnabled = u.Username, u.TOTPEnabled
	return out, nil
}

// GetJwks implements GET /.well-known/jwks.json.
func (s *AuthServer) GetJwks(context.Context, *corev1.GetJwksRequest) (*corev1.GetJwksResponse, error) {
	out := &corev1.GetJwksResponse{}
	for _, k := range s.Auth.JWKS().Keys {
		out.Keys = append(out.Keys, &corev1.Jwk{Kty: k.Kty, Crv: k.Crv, X: k.X, Kid: k.Kid, Use: k.Use, Alg: k.Alg})
	}
	return out, nil
}

// TenantServer serves custos.core.v1.TenantService.
type TenantServer struct {
	corev1.UnimplementedTenantServiceServer
	Directory *directory.Service
}

// CreateTenant implements POST /v1/tenants.
func (s *TenantServer) CreateTenant(ctx context.Context, req *corev1.CreateTenantRequest) (*corev1.CreateTenantResponse, error) {
	nt := directory.NewTenant{Name: req.GetName(), KeyMode: req.GetKeyMode()}
	if req.PasswordHintsEnabled != nil {
		v := req.GetPasswordHintsEnabled()
		nt.HintsEnabled = &v
	}
	if ep := req.GetEncryptionEndpoint(); ep != nil && ep.GetKind() != "platform" {
		if ep.GetKind() != "hosted" {
			return nil, errs.E(errs.Invalid, "encryptionEndpoint.kind: want platform or hosted, got %q", ep.GetKind())
		}
		nt.Hosted = &directory.HostedEndpoint{
			URL: ep.GetUrl(), Protocol: ep.GetProtocol(), CABundlePEM: ep.GetCaBundlePem(),
			ClientCertPEM: ep.GetClientCertificatePem(), ClientKeyPEM: ep.GetClientKeyPem(),
			RemoteTenantID: ep.GetRemoteTenantId(), RemoteTenantSecret: ep.GetRemoteTenantSecret(),
		}
	}
	t, err := s.Directory.CreateTenant(ctx, call(ctx), nt)
	if err != nil {
		return nil, err
	}
	return &corev1.CreateTenantResponse{Tenant: tenantToProto(t)}, nil
}

// ListTenants implements GET /v1/tenants.
func (s *TenantServer) ListTenants(ctx context.Context, req *corev1.ListTenantsRequest) (*corev1.ListTenantsResponse, error) {
	size, after, err := page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	list, err := s.Directory.ListTenants(ctx, size+1, after)
	if err != nil {
		return nil, err
	}
	out := &corev1.ListTenantsResponse{}
	list, out.NextPageToken = trim(list, size, func(t postgres.Tenant) uuid.UUID { return t.ID })
	for _, t := range list {
		out.Tenants = append(out.Tenants, tenantToProto(t))
	}
	return out, nil
}

// GetTenant implements GET /v1/tenants/{tenantId}.
func (s *TenantServer) GetTenant(ctx context.Context, req *corev1.GetTenantRequest) (*corev1.GetTenantResponse, error) {
	id, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	t, err := s.Directory.GetTenant(ctx, id)
	if err != nil {
		return nil, err
	}
	return &corev1.GetTenantResponse{Tenant: tenantToProto(t)}, nil
}

// UpdateTenant implements PATCH /v1/tenants/{tenantId}.
func (s *TenantServer) UpdateTenant(ctx context.Context, req *corev1.UpdateTenantRequest) (*corev1.UpdateTenantResponse, error) {
	id, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	t, err := s.Directory.UpdateTenant(ctx, call(ctx), id, req.Name, req.PasswordHintsEnabled)
	if err != nil {
		return nil, err
	}
	return &corev1.UpdateTenantResponse{Tenant: tenantToProto(t)}, nil
}

// DeleteTenant implements DELETE /v1/tenants/{tenantId}?confirmName=NAME.
func (s *TenantServer) DeleteTenant(ctx context.Context, req *corev1.DeleteTenantRequest) (*corev1.DeleteTenantResponse, error) {
	id, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	erasure, err := s.Directory.DeleteTenant(ctx, call(ctx), id, req.GetConfirmName())
	if err != nil {
		return nil, err
	}
	return &corev1.DeleteTenantResponse{KeyErasure: erasure}, nil
}

func tenantToProto(t postgres.Tenant) *corev1.Tenant {
	ep := &corev1.EncryptionEndpoint{Kind: t.ES.Kind}
	if t.ES.Kind == "hosted" {
		ep.Url, ep.Protocol, ep.CaBundlePem, ep.ClientCertificatePem = t.ES.URL, t.ES.Protocol, t.ES.CABundlePEM, t.ES.ClientCertPEM
		ep.RemoteTenantId = t.ES.TenantID.String()
	}
	return &corev1.Tenant{
		TenantId: t.ID.String(), Name: t.Name, KeyMode: t.KeyMode, EncryptionEndpoint: ep,
		PasswordHintsEnabled: t.PasswordHintsEnabled, CreatedAt: timestamppb.New(t.CreatedAt),
	}
}

// UserServer serves custos.core.v1.UserService.
type UserServer struct {
	corev1.UnimplementedUserServiceServer
	Directory *directory.Service
}

// CreateUser implements POST /v1/tenants/{tenantId}/users.
func (s *UserServer) CreateUser(ctx context.Context, req *corev1.CreateUserRequest) (*corev1.CreateUserResponse, error) {
	tenantID, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	// In a zero-knowledge tenant, X-Master-Key here is the new user's, derived from the password set.
	mk, err := masterKeyHeader(ctx, "x-master-key", "X-Master-Key")
	if err != nil {
		return nil, err
	}
	u, err := s.Directory.CreateUser(ctx, call(ctx), directory.NewUser{
		TenantID: tenantID, Username: req.GetUsername(), Password: req.GetPassword(), Role: req.GetRole(), PasswordHint: req.GetPasswordHint(),
		MasterKey: mk,
	})
	if err != nil {
		return nil, err
	}
	return &corev1.CreateUserResponse{User: userToProto(u)}, nil
}

// ListUsers implements GET /v1/tenants/{tenantId}/users.
func (s *UserServer) ListUsers(ctx context.Context, req *corev1.ListUsersRequest) (*corev1.ListUsersResponse, error) {
	tenantID, err := parseID("tenantId", req.GetTenantId())
	if err != nil {
		return nil, err
	}
	size, after, err := page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	list, err := s.Directory.ListUsers(ctx, tenantID, size+1, after)
	if err != nil {
		return nil, err
	}
	out := &corev1.ListUsersResponse{}
	list, out.NextPageToken = trim(list, size, func(u postgres.User) uuid.UUID { return u.ID })
	for _, u := range list {
		out.Users = append(out.Users, userToProto(u))
	}
	return out, nil
}

// GetUser implements GET /v1/users/{userId}.
func (s *UserServer) GetUser(ctx context.Context, req *corev1.GetUserRequest) (*corev1.GetUserResponse, error) {
	id, err := parseID("userId", req.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := s.Directory.GetUser(ctx, id)
	if err != nil {
		return nil, err
	}
	return &corev1.GetUserResponse{User: userToProto(u)}, nil
}

// DisableUser implements POST /v1/users/{userId}:disable.
func (s *UserServer) DisableUser(ctx context.Context, req *corev1.DisableUserRequest) (*corev1.DisableUserResponse, error) {
	u, err := s.setDisabled(ctx, req.GetUserId(), true)
	if err != nil {
		return nil, err
	}
	return &corev1.DisableUserResponse{User: userToProto(u)}, nil
}

// EnableUser implements POST /v1/users/{userId}:enable.
func (s *UserServer) EnableUser(ctx context.Context, req *corev1.EnableUserRequest) (*corev1.EnableUserResponse, error) {
	u, err := s.setDisabled(ctx, req.GetUserId(), false)
	if err != nil {
		return nil, err
	}
	return &corev1.EnableUserResponse{User: userToProto(u)}, nil
}

func (s *UserServer) setDisabled(ctx context.Context, rawID string, disabled bool) (postgres.User, error) {
	id, err := parseID("userId", rawID)
	if err != nil {
		return postgres.User{}, err
	}
	return s.Directory.SetDisabled(ctx, call(ctx), id, disabled)
}

// SetUserRole implements POST /v1/users/{userId}:setRole.
func (s *UserServer) SetUserRole(ctx context.Context, req *corev1.SetUserRoleRequest) (*corev1.SetUserRoleResponse, error) {
	id, err := parseID("userId", req.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := s.Directory.SetRole(ctx, call(ctx), id, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &corev1.SetUserRoleResponse{User: userToProto(u)}, nil
}

// DeleteUser implements DELETE /v1/users/{userId}.
func (s *UserServer) DeleteUser(ctx context.Context, req *corev1.DeleteUserRequest) (*corev1.DeleteUserResponse, error) {
	id, err := parseID("userId", req.GetUserId())
	if err != nil {
		return nil, err
	}
	erasure, err := s.Directory.DeleteUser(ctx, call(ctx), id)
	if err != nil {
		return nil, err
	}
	return &corev1.DeleteUserResponse{KeyErasure: erasure}, nil
}

func userToProto(u postgres.User) *corev1.User {
	out := &corev1.User{
		UserId: u.ID.String(), Username: u.Username, Role: u.Role, Disabled: u.DisabledAt != nil,
		MfaEnabled: u.TOTPEnabled, HasPasswordHint: u.PasswordHint != "", CreatedAt: timestamppb.New(u.CreatedAt),
	}
	if u.TenantID != uuid.Nil {
		out.TenantId = u.TenantID.String()
	}
	return out
}

// ApiKeyServer serves custos.core.v1.ApiKeyService.
type ApiKeyServer struct {
	corev1.UnimplementedApiKeyServiceServer
	Directory *directory.Service
}

// CreateApiKey implements POST /v1/apikeys.
func (s *ApiKeyServer) CreateApiKey(ctx context.Context, req *corev1.CreateApiKeyRequest) (*corev1.CreateApiKeyResponse, error) {
	var expires *time.Time
	if req.ExpiresAt != nil {
		if err := req.GetExpiresAt().CheckValid(); err != nil {
			return nil, errs.E(errs.Invalid, "expiresAt: not a valid time")
		}
		t := req.GetExpiresAt().AsTime()
		expires = &t
	}
	k, err := s.Directory.CreateAPIKey(ctx, call(ctx), req.GetName(), req.GetScopes(), expires)
	if err != nil {
		return nil, err
	}
	return &corev1.CreateApiKeyResponse{ApiKey: k.Key.KeyID, ApiSecret: k.Secret, Key: apiKeyToProto(k.Key)}, nil
}

// ListApiKeys implements GET /v1/apikeys.
func (s *ApiKeyServer) ListApiKeys(ctx context.Context, req *corev1.ListApiKeysRequest) (*corev1.ListApiKeysResponse, error) {
	size, after, err := page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	list, err := s.Directory.ListAPIKeys(ctx, size+1, after)
	if err != nil {
		return nil, err
	}
	out := &corev1.ListApiKeysResponse{}
	list, out.NextPageToken = trim(list, size, func(k postgres.APIKey) uuid.UUID { return k.ID })
	for _, k := range list {
		out.Keys = append(out.Keys, apiKeyToProto(k))
	}
	return out, nil
}

// RotateApiKey implements POST /v1/apikeys/{apiKeyId}:rotate.
func (s *ApiKeyServer) RotateApiKey(ctx context.Context, req *corev1.RotateApiKeyRequest) (*corev1.RotateApiKeyResponse, error) {
	id, err := parseID("apiKeyId", req.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	overlap := 24 * time.Hour
	if req.Overlap != nil {
		if err := req.GetOverlap().CheckValid(); err != nil {
			return nil, errs.E(errs.Invalid, "overlap: not a valid duration")
		}
		overlap = req.GetOverlap().AsDuration()
	}
	k, err := s.Directory.RotateAPIKey(ctx, call(ctx), id, overlap)
	if err != nil {
		return nil, err
	}
	return &corev1.RotateApiKeyResponse{ApiKey: k.Key.KeyID, ApiSecret: k.Secret, Key: apiKeyToProto(k.Key)}, nil
}

// RevokeApiKey implements DELETE /v1/apikeys/{apiKeyId}.
func (s *ApiKeyServer) RevokeApiKey(ctx context.Context, req *corev1.RevokeApiKeyRequest) (*corev1.RevokeApiKeyResponse, error) {
	id, err := parseID("apiKeyId", req.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	if err := s.Directory.RevokeAPIKey(ctx, call(ctx), id); err != nil {
		return nil, err
	}
	return &corev1.RevokeApiKeyResponse{}, nil
}

func apiKeyToProto(k postgres.APIKey) *corev1.ApiKey {
	ts := func(t *time.Time) *timestamppb.Timestamp {
		if t == nil {
			return nil
		}
		return timestamppb.New(*t)
	}
	out := &corev1.ApiKey{
		ApiKeyId: k.ID.String(), ApiKey: k.KeyID, Name: k.Name, Scopes: k.Scopes,
		ExpiresAt: ts(k.ExpiresAt), LastUsedAt: ts(k.LastUsedAt), RevokedAt: ts(k.RevokedAt), CreatedAt: timestamppb.New(k.CreatedAt),
		CreatedByUsername: k.CreatedByUsername,
	}
	if k.CreatedBy != uuid.Nil {
		out.CreatedBy = k.CreatedBy.String()
	}
	return out
}

// AuditServer serves custos.core.v1.AuditService.
type AuditServer struct {
	corev1.UnimplementedAuditServiceServer
	Store interface {
		ListAuditEvents(ctx context.Context, f postgres.AuditFilter) ([]postgres.AuditEvent, string, error)
	}
}

// ListAuditEvents implements GET /v1/audit: the caller's tenant's events or, for the platform
// admin, tenantId's (deleted tenants' too) or every event.
func (s *AuditServer) ListAuditEvents(ctx context.Context, req *corev1.ListAuditEventsRequest) (*corev1.ListAuditEventsResponse, error) {
	p := principal.FromContext(ctx)
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var tenant *uuid.UUID // nil: every event (the platform admin)
	if req.GetTenantId() != "" {
		id, err := parseID("tenantId", req.GetTenantId())
		if err != nil {
			return nil, err
		}
		tenant = &id
	}
	switch {
	case p.PlatformAdmin:
	case tenant != nil && *tenant != p.TenantID:
		return nil, errs.E(errs.PermissionDenied, "tenantId: only the platform admin reads another tenant's audit trail")
	default:
		own := p.TenantID
		tenant = &own
	}
	f := postgres.AuditFilter{TenantID: tenant, Action: req.GetAction(), PageSize: size, Cursor: req.GetPageToken()}
	if req.GetActorId() != "" {
		id, err := parseID("actorId", req.GetActorId())
		if err != nil {
			return nil, err
		}
		f.ActorID = &id
	}
	events, next, err := s.Store.ListAuditEvents(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &corev1.ListAuditEventsResponse{NextPageToken: next}
	for _, e := range events {
		ev := &corev1.AuditEvent{
			EventId: e.ID.String(), Time: timestamppb.New(e.OccurredAt), ActorType: e.ActorType, Action: e.Action,
			Target: e.Target, Outcome: e.Outcome, RemoteAddr: e.RemoteAddr, RequestId: e.RequestID,
		}
		if e.ActorID != nil {
			ev.ActorId = e.ActorID.String()
		}
		if e.TenantID != nil {
			ev.TenantId = e.TenantID.String()
		}
		out.Events = append(out.Events, ev)
	}
	return out, nil
}

// call is the request's metadata for the directory's audit trail.
func call(ctx context.Context) directory.Call {
	r := request(ctx)
	return directory.Call{RequestID: r.RequestID, RemoteAddr: r.RemoteAddr}
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

// pageSize applies the default (100) and bound (1000) of list calls.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return 100, nil
	case n < 0 || n > 1000:
		return 0, errs.E(errs.Invalid, "pageSize: want 1 to 1000, got %d", n)
	}
	return int(n), nil
}

// page parses a list call's page size and token (the last id of the previous page).
func page(size int32, token string) (int, uuid.UUID, error) {
	n, err := pageSize(size)
	if err != nil {
		return 0, uuid.Nil, err
	}
	if token == "" {
		return n, uuid.Nil, nil
	}
	after, err := parseID("pageToken", token)
	return n, after, err
}

// trim cuts a list read with one extra row to size and returns the next page token.
func trim[T any](list []T, size int, id func(T) uuid.UUID) ([]T, string) {
	if len(list) <= size {
		return list, ""
	}
	list = list[:size]
	return list, id(list[size-1]).String()
}
