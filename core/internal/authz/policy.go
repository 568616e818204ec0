// Package authz is core's one authorization policy: a table mapping every RPC to who may call it,
// enforced by one interceptor for gRPC and REST alike (the REST gateway calls the gRPC server).
//
// The table decides who may call a method at all. Which objects the caller may touch (their own
// tenant's users, their own vault items) is decided by the services, which know the objects.
// A method missing from the table is refused: the policy fails closed.
package authz

import (
	"strings"

	"github.com/custos-platform/custos/core/internal/principal"
)

// Machine scopes.
const (
	ScopeExport      = "export"
	ScopeKeysRotate  = "keys:rotate"
	ScopeUsersManage = "users:manage"
)

// Rule says who may call one method.
type Rule struct {
	// Public methods need no credential (logging in, refreshing, the JWKS).
	Public bool
	// Authenticated allows any authenticated caller, person or machine.
	Authenticated bool
	// Roles are the tenant roles of people allowed; AnyHuman allows every person, including the
	// platform admin.
	Roles    []string
	AnyHuman bool
	// PlatformAdmin allows the platform admin.
	PlatformAdmin bool
	// Scopes allow machines holding any one of them.
	Scopes []string
	// MachineDenial, when set, is the message machines get instead of the generic one.
	MachineDenial string
}

var (
	tenantAdmins = []string{principal.RoleOwner, principal.RoleAdmin}
	everyRole    = []string{principal.RoleOwner, principal.RoleAdmin, principal.RoleMember}
)

const vaultDenial = "machine credentials may not create, read, change or delete vault items: " +
	"the vault's plaintext is for people only (use GET /v1/export with scope export for encrypted backups)"

// Policy maps every RPC of custos.core.v1 (full gRPC method name) to its rule. It is the access
// table of the design, in code: TestPolicyCoversEveryMethod keeps it complete.
var Policy = map[string]Rule{
	"/custos.core.v1.AuthService/Prelogin":        {Public: true},
	"/custos.core.v1.AuthService/Login":           {Public: true},
	"/custos.core.v1.AuthService/VerifyMfa":       {Public: true},
	"/custos.core.v1.AuthService/Refresh":         {Public: true},
	"/custos.core.v1.AuthService/Logout":          {Public: true},
	"/custos.core.v1.AuthService/GetPasswordHint": {Public: true},
	"/custos.core.v1.AuthService/GetJwks":         {Public: true},
	"/custos.core.v1.AuthService/ChangePassword":  {AnyHuman: true},
	"/custos.core.v1.AuthService/ListSessions":    {AnyHuman: true},
	"/custos.core.v1.AuthService/RevokeSession":   {AnyHuman: true},
	"/custos.core.v1.AuthService/EnrollTotp":      {AnyHuman: true},
	"/custos.core.v1.AuthService/ConfirmTotp":     {AnyHuman: true},
	"/custos.core.v1.AuthService/DisableTotp":     {AnyHuman: true},
	"/custos.core.v1.AuthService/GetCurrentUser":  {Authenticated: true},

	"/custos.core.v1.TenantService/CreateTenant": {PlatformAdmin: true},
	"/custos.core.v1.TenantService/ListTenants":  {PlatformAdmin: true},
	"/custos.core.v1.TenantService/GetTenant":    {PlatformAdmin: true, Roles: everyRole},
	"/custos.core.v1.TenantService/UpdateTenant": {PlatformAdmin: true, Roles: []string{principal.RoleOwner}},
	"/custos.core.v1.TenantService/DeleteTenant": {PlatformAdmin: true},

	"/custos.core.v1.UserService/CreateUser":  {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/ListUsers":   {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/GetUser":     {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/DisableUser": {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/EnableUser":  {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/SetUserRole": {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},
	"/custos.core.v1.UserService/DeleteUser":  {PlatformAdmin: true, Roles: tenantAdmins, Scopes: []string{ScopeUsersManage}},

	"/custos.core.v1.ApiKeyService/CreateApiKey": {Roles: tenantAdmins},
	"/custos.core.v1.ApiKeyService/ListApiKeys":  {Roles: tenantAdmins},
	"/custos.core.v1.ApiKeyService/RotateApiKey": {Roles: tenantAdmins},
	"/custos.core.v1.ApiKeyService/RevokeApiKey": {Roles: tenantAdmins},

	"/custos.core.v1.VaultService/CreateItem": {Roles: everyRole, MachineDenial: vaultDenial},
	"/custos.core.v1.VaultService/ListItems":  {Roles: everyRole, MachineDenial: vaultDenial},
	"/custos.core.v1.VaultService/GetItem":    {Roles: everyRole, MachineDenial: vaultDenial},
	"/custos.core.v1.VaultService/UpdateItem": {Roles: everyRole, MachineDenial: vaultDenial},
	"/custos.core.v1.VaultService/DeleteItem": {Roles: everyRole, MachineDenial: vaultDenial},

	"/custos.core.v1.ExportService/Export": {Roles: everyRole, Scopes: []string{ScopeExport}},
	"/custos.core.v1.ExportService/Import": {Roles: tenantAdmins},

	"/custos.core.v1.KeyService/RotateKeys":        {Roles: tenantAdmins, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/StartReencryption": {Roles: everyRole, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/GetJob":            {Roles: everyRole, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/ListJobs":          {Roles: tenantAdmins, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/GetKeyStatus":      {Roles: tenantAdmins, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/DisableKeyVersion": {Roles: tenantAdmins, Scopes: []string{ScopeKeysRotate}},
	"/custos.core.v1.KeyService/EnableKeyVersion":  {Roles: tenantAdmins, Scopes: []string{ScopeKeysRotate}},

	"/custos.core.v1.AuditService/ListAuditEvents": {PlatformAdmin: true, Roles: tenantAdmins},
}

// Decision is the outcome of Allow.
type Decision struct {
	Allowed bool
	Reason  string // why not, for the caller: names the role or scope needed
}

// Allow decides whether p may call method.
func Allow(method string, p principal.Principal) Decision {
	rule, ok := Policy[method]
	if !ok {
		return Decision{Reason: "method " + strings.TrimPrefix(method, "/") + " is not in the authorization policy"}
	}
	switch {
	case rule.Public:
		return Decision{Allowed: true}
	case p.Kind == principal.Anonymous:
		return Decision{Reason: "authentication required"}
	case rule.Authenticated:
		return Decision{Allowed: true}
	case p.Kind == principal.APIKey:
		for _, s := range rule.Scopes {
			if p.HasScope(s) {
				return Decision{Allowed: true}
			}
		}
		if rule.MachineDenial != "" {
			return Decision{Reason: rule.MachineDenial}
		}
		if len(rule.Scopes) == 0 {
			return Decision{Reason: "machine credentials may not call this method: it is for people only"}
		}
		return Decision{Reason: "this API key lacks the scope needed: " + strings.Join(rule.Scopes, " or ")}
	case p.PlatformAdmin:
		if rule.PlatformAdmin || rule.AnyHuman {
			return Decision{Allowed: true}
		}
		return Decision{Reason: "the platform admin may not call this method: it is for tenant members"}
	default:
		if rule.AnyHuman {
			return Decision{Allowed: true}
		}
		for _, r := range rule.Roles {
			if p.Role == r {
				return Decision{Allowed: true}
			}
		}
		if len(rule.Roles) == 0 {
			return Decision{Reason: "only the platform admin may call this method"}
		}
		return Decision{Reason: "your role (" + p.Role + ") may not call this method; it needs " + strings.Join(rule.Roles, " or ")}
	}
}
