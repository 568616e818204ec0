package authz

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/custos-platform/custos/core/internal/principal"
	_ "github.com/custos-platform/custos/proto/gen/custos/core/v1" // registers the services
)

func TestPolicyCoversEveryMethod(t *testing.T) {
	seen := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage("custos.core.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				name := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				seen[name] = true
				if _, ok := Policy[name]; !ok {
					t.Errorf("method %s has no rule in Policy: every RPC must say who may call it", name)
				}
			}
		}
		return true
	})
	if len(seen) < 40 {
		t.Fatalf("found only %d methods of custos.core.v1; is the package registered?", len(seen))
	}
	for name := range Policy {
		if !seen[name] {
			t.Errorf("Policy has a rule for %s, which is not a method of custos.core.v1", name)
		}
	}
}

func TestAllow(t *testing.T) {
	member := principal.Principal{Kind: principal.User, Role: principal.RoleMember}
	admin := principal.Principal{Kind: principal.User, Role: principal.RoleAdmin}
	owner := principal.Principal{Kind: principal.User, Role: principal.RoleOwner}
	platform := principal.Principal{Kind: principal.User, PlatformAdmin: true}
	machine := func(scopes ...string) principal.Principal {
		return principal.Principal{Kind: principal.APIKey, Scopes: scopes}
	}
	anon := principal.Principal{Kind: principal.Anonymous}

	tests := []struct {
		method  string
		who     principal.Principal
		allowed bool
		reason  string
	}{
		{"/custos.core.v1.AuthService/Login", anon, true, ""},
		{"/custos.core.v1.AuthService/GetCurrentUser", anon, false, "authentication required"},
		{"/custos.core.v1.AuthService/GetCurrentUser", machine(ScopeExport), true, ""},
		{"/custos.core.v1.AuthService/ChangePassword", machine(ScopeUsersManage), false, "people only"},
		{"/custos.core.v1.VaultService/CreateItem", member, true, ""},
		{"/custos.core.v1.VaultService/GetItem", machine(ScopeExport, ScopeKeysRotate, ScopeUsersManage), false, "vault"},
		{"/custos.core.v1.VaultService/CreateItem", platform, false, "tenant members"},
		{"/custos.core.v1.ExportService/Export", machine(ScopeExport), true, ""},
		{"/custos.core.v1.ExportService/Export", machine(ScopeKeysRotate), false, "export"},
		{"/custos.core.v1.KeyService/RotateKeys", member, false, "owner or admin"},
		{"/custos.core.v1.KeyService/RotateKeys", admin, true, ""},
		{"/custos.core.v1.KeyService/RotateKeys", machine(ScopeKeysRotate), true, ""},
		{"/custos.core.v1.UserService/CreateUser", member, false, "owner or admin"},
		{"/custos.core.v1.UserService/CreateUser", owner, true, ""},
		{"/custos.core.v1.UserService/CreateUser", platform, true, ""},
		{"/custos.core.v1.UserService/CreateUser", machine(ScopeUsersManage), true, ""},
		{"/custos.core.v1.UserService/CreateUser", machine(ScopeExport), false, "users:manage"},
		{"/custos.core.v1.TenantService/CreateTenant", owner, false, "platform admin"},
		{"/custos.core.v1.TenantService/CreateTenant", platform, true, ""},
		{"/custos.core.v1.TenantService/CreateTenant", machine(ScopeUsersManage), false, "people only"},
		{"/custos.core.v1.Nope/Nothing", platform, false, "not in the authorization policy"},
	}
	for _, tt := range tests {
		got := Allow(tt.method, tt.who)
		if got.Allowed != tt.allowed || !strings.Contains(got.Reason, tt.reason) {
			t.Errorf("Allow(%s, %s/%s%v) = %+v, want allowed=%v with reason containing %q",
				tt.method, tt.who.Kind, tt.who.Role, tt.who.Scopes, got, tt.allowed, tt.reason)
		}
	}
}
