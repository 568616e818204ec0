// Package principal describes who makes a request to core: a person (user) with a role, the
// platform admin, or a machine (API key) with scopes. The authentication interceptor puts one in
// the request context; services read it from there.
package principal

import (
	"context"
	"slices"

	"github.com/google/uuid"
)

// Kind is the kind of caller.
type Kind string

// The kinds of caller.
const (
	Anonymous Kind = "anonymous"
	User      Kind = "user"
	APIKey    Kind = "apikey"
)

// Roles of people within a tenant.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Principal is an authenticated caller.
type Principal struct {
	Kind          Kind
	ID            uuid.UUID // user id or API key id
	TenantID      uuid.UUID // uuid.Nil for the platform admin
	Username      string    // people only
	Role          string    // people within a tenant: owner, admin or member
	PlatformAdmin bool
	Scopes        []string  // machines only
	SessionID     uuid.UUID // people: the refresh-token family of this access token
	SecurityStamp string    // people: the user's stamp their access token was issued under
	RemoteAddr    string
}

// Human reports whether the caller is a person.
func (p Principal) Human() bool { return p.Kind == User }

// HasScope reports whether a machine caller holds scope.
func (p Principal) HasScope(scope string) bool {
	return p.Kind == APIKey && slices.Contains(p.Scopes, scope)
}

// TenantAdmin reports whether the caller is an owner or admin of a tenant.
func (p Principal) TenantAdmin() bool {
	return p.Kind == User && (p.Role == RoleOwner || p.Role == RoleAdmin)
}

// InTenant reports whether the caller belongs to tenant id (the platform admin belongs to none).
func (p Principal) InTenant(id uuid.UUID) bool {
	return p.Kind != Anonymous && p.TenantID != uuid.Nil && p.TenantID == id
}

type key struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, key{}, p)
}

// FromContext returns the caller of the request; an unauthenticated request has Kind Anonymous.
func FromContext(ctx context.Context) Principal {
	p, ok := ctx.Value(key{}).(Principal)
	if !ok {
		return Principal{Kind: Anonymous}
	}
	return p
}
