// Package directory manages core's tenants, their users and their machine credentials (API keys).
//
// Who may call each method at all is the authorization policy's business (package authz); this
// package decides which objects the caller may touch: the platform admin any tenant, everyone else
// only their own; an admin cannot grant or hold power over owners.
//
// All errors are *errs.Error values; none holds a password or secret.
package directory

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/apikey"
	"github.com/custos-platform/custos/core/internal/auth"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/secretbox"
)

// Store is what directory needs from the database.
type Store interface {
	CreateTenant(ctx context.Context, t postgres.Tenant, audit postgres.AuditEvent) error
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
	ListTenants(ctx context.Context, pageSize int, after uuid.UUID) ([]postgres.Tenant, error)
	UpdateTenant(ctx context.Context, id uuid.UUID, name *string, hintsEnabled *bool, audit postgres.AuditEvent) (postgres.Tenant, error)
	CreateUser(ctx context.Context, u postgres.User, audit postgres.AuditEvent) error
	GetUser(ctx context.Context, id uuid.UUID) (postgres.User, error)
	ListUsers(ctx context.Context, tenantID uuid.UUID, pageSize int, after uuid.UUID) ([]postgres.User, error)
	SetUserDisabled(ctx context.Context, id uuid.UUID, disabled bool, newStamp string, audit postgres.AuditEvent, mayChange ...func(postgres.User) error) (postgres.User, error)
	SetUserRole(ctx context.Context, id uuid.UUID, role string, audit postgres.AuditEvent, mayChange ...func(postgres.User) error) (postgres.User, error)
	DeleteUser(ctx context.Context, id uuid.UUID, audit postgres.AuditEvent, mayChange ...func(postgres.User) error) (*postgres.Erasure, error)
	DeleteTenant(ctx context.Context, id uuid.UUID, confirmName string, audit postgres.AuditEvent) (*postgres.TenantErasure, error)
	CountPlatformAdmins(ctx context.Context) (int, error)
	CreateAPIKey(ctx context.Context, k postgres.APIKey, audit postgres.AuditEvent) error
	ListAPIKeys(ctx context.Context, tenantID uuid.UUID, pageSize int, after uuid.UUID) ([]postgres.APIKey, error)
	RevokeAPIKey(ctx context.Context, tenantID, id uuid.UUID, audit postgres.AuditEvent) error
	RotateAPIKey(ctx context.Context, tenantID, id uuid.UUID, newHash []byte, previousExpiresAt time.Time, audit postgres.AuditEvent) (postgres.APIKey, error)
}

var _ Store = (*postgres.Store)(nil)

// Provisioner creates a tenant on the platform's encryption service (its admin plane).
type Provisioner interface {
	CreateTenant(ctx context.Context, name string) (tenantID uuid.UUID, secret string, err error)
}

// Service manages tenants, users and API keys.
type Service struct {
	store        Store
	box          *secretbox.Box
	provision    Provisioner
	params       password.Params
	preloginSeed []byte
	rand         io.Reader
	now          func() time.Time

	// AfterCreateUser, when set, runs after a user is created (the vault gives them a key
	// context, with masterKey in a CLIENT tenant when the creating request carried it); its
	// failures must not fail the creation.
	AfterCreateUser func(ctx context.Context, u postgres.User, masterKey []byte)
	// EraseKeys, when set, tries at once to have the encryption service destroy a deleted user's
	// key context, and reports whether it is gone; the erasure stays queued when it is not (or
	// when EraseKeys is nil), for a worker to retry.
	EraseKeys func(ctx context.Context, e postgres.Erasure) bool
	// EraseTenant, when set, tries at once to have the platform's encryption service destroy a
	// deleted tenant, as EraseKeys does for a user's key context.
	EraseTenant func(ctx context.Context, e postgres.TenantErasure) bool
}

// What DeleteUser reports of the deleted user's key context.
const (
	KeyErasureDone    = "done"    // destroyed on the encryption service
	KeyErasurePending = "pending" // queued; core keeps retrying
	KeyErasureNone    = "none"    // the user had no key context
	KeyErasureHosted  = "hosted"  // the tenant's keys are on its own encryption service, untouched
)

// New returns a Service. params are the Argon2id parameters for new password hashes; preloginSeed
// is the secret behind users' client KDF salts (see newUser).
func New(store Store, box *secretbox.Box, provision Provisioner, params password.Params, preloginSeed []byte) *Service {
	return &Service{store: store, box: box, provision: provision, params: params, preloginSeed: preloginSeed, rand: rand.Reader, now: time.Now}
}

// Call is the request's metadata for the audit trail.
type Call struct {
	RequestID  string
	RemoteAddr string
}

func (s *Service) event(ctx context.Context, c Call, tenantID *uuid.UUID, action, target string) postgres.AuditEvent {
	p := principal.FromContext(ctx)
	e := postgres.AuditEvent{
		TenantID: tenantID, ActorType: string(p.Kind), Action: action, Target: target, Outcome: "ok",
		RemoteAddr: c.RemoteAddr, RequestID: c.RequestID,
	}
	if p.Kind != principal.Anonymous {
		id := p.ID
		e.ActorID = &id
	}
	if p.Kind == principal.Anonymous {
		e.ActorType = "system"
	}
	return e
}

// HostedEndpoint is a tenant-hosted encryption service, as given on tenant creation.
type HostedEndpoint struct {
	URL, Protocol, CABundlePEM, ClientCertPEM, ClientKeyPEM string
	RemoteTenantID, RemoteTenantSecret                      string
}

// NewTenant describes a tenant to create.
type NewTenant struct {
	Name         string
	KeyMode      string          // PLATFORM (default) or CLIENT
	Hosted       *HostedEndpoint // nil: the platform's encryption service
	HintsEnabled *bool           // nil: true
}

// CreateTenant creates a tenant. On the platform's encryption service core provisions the tenant
// through its admin plane and keeps the tenant's secret sealed; for a tenant-hosted one it checks
// and seals what it was given.
func (s *Service) CreateTenant(ctx context.Context, c Call, nt NewTenant) (postgres.Tenant, error) {
	name := strings.TrimSpace(nt.Name)
	if n := len([]rune(name)); n < 1 || n > 200 {
		return postgres.Tenant{}, errs.E(errs.Invalid, "name: want 1 to 200 characters, got %d", n)
	}
	mode := nt.KeyMode
	if mode == "" {
		mode = "PLATFORM"
	}
	if mode != "PLATFORM" && mode != "CLIENT" {
		return postgres.Tenant{}, errs.E(errs.Invalid, "keyMode: want PLATFORM or CLIENT, got %q", nt.KeyMode)
	}
	t := postgres.Tenant{ID: uuid.New(), Name: name, KeyMode: mode, PasswordHintsEnabled: nt.HintsEnabled == nil || *nt.HintsEnabled}
	var secret string
	if nt.Hosted == nil {
		if s.provision == nil {
			return postgres.Tenant{}, errs.E(errs.FailedPrecondition,
				"this core has no admin token for the platform's encryption service (CORE_ES_ADMIN_TOKEN): give the tenant a hosted encryptionEndpoint")
		}
		remoteID, sec, err := s.provision.CreateTenant(ctx, "core:"+t.ID.String())
		if err != nil {
			return postgres.Tenant{}, err
		}
		t.ES = postgres.ESEndpoint{Kind: "platform", TenantID: remoteID}
		secret = sec
	} else {
		h := nt.Hosted
		ep, err := checkHosted(*h)
		if err != nil {
			return postgres.Tenant{}, err
		}
		t.ES = ep
		secret = h.RemoteTenantSecret
		if h.ClientKeyPEM != "" {
			if t.ES.ClientKeySealed, err = s.box.Seal([]byte(h.ClientKeyPEM), postgres.EndpointSecretAD(t.ID, postgres.SealedClientKey)); err != nil {
				return postgres.Tenant{}, errs.Wrap(errs.Internal, err, "seal client key")
			}
		}
	}
	sealed, err := s.box.Seal([]byte(secret), postgres.EndpointSecretAD(t.ID, postgres.SealedTenantSecret))
	if err != nil {
		return postgres.Tenant{}, errs.Wrap(errs.Internal, err, "seal tenant secret")
	}
	t.ES.TenantSecretSealed = sealed
	if err := s.store.CreateTenant(ctx, t, s.event(ctx, c, &t.ID, "tenant.create", "tenant:"+t.ID.String())); err != nil {
		return postgres.Tenant{}, err
	}
	return s.store.GetTenant(ctx, t.ID)
}

func checkHosted(h HostedEndpoint) (postgres.ESEndpoint, error) {
	ep := postgres.ESEndpoint{Kind: "hosted", URL: h.URL, Protocol: h.Protocol, CABundlePEM: h.CABundlePEM, ClientCertPEM: h.ClientCertPEM}
	switch h.Protocol {
	case "https":
		u, err := url.Parse(h.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return ep, errs.E(errs.Invalid, "encryptionEndpoint.url: want https://host:port for protocol https")
		}
	case "grpc":
		if h.URL == "" || strings.Contains(h.URL, "/") {
			return ep, errs.E(errs.Invalid, "encryptionEndpoint.url: want host:port for protocol grpc")
		}
	default:
		return ep, errs.E(errs.Invalid, "encryptionEndpoint.protocol: want grpc or https, got %q", h.Protocol)
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(h.CABundlePEM)) {
		return ep, errs.E(errs.Invalid, "encryptionEndpoint.caBundlePem: no PEM certificate found")
	}
	if (h.ClientCertPEM == "") != (h.ClientKeyPEM == "") {
		return ep, errs.E(errs.Invalid, "encryptionEndpoint: give clientCertificatePem and clientKeyPem together (mutual TLS)")
	}
	if h.ClientCertPEM != "" {
		if b, _ := pem.Decode([]byte(h.ClientCertPEM)); b == nil || b.Type != "CERTIFICATE" {
			return ep, errs.E(errs.Invalid, "encryptionEndpoint.clientCertificatePem: not a PEM certificate")
		}
		if b, _ := pem.Decode([]byte(h.ClientKeyPEM)); b == nil || !strings.Contains(b.Type, "PRIVATE KEY") {
			return ep, errs.E(errs.Invalid, "encryptionEndpoint.clientKeyPem: not a PEM private key")
		}
	}
	id, err := uuid.Parse(h.RemoteTenantID)
	if err != nil {
		return ep, errs.E(errs.Invalid, "encryptionEndpoint.remoteTenantId: want a UUID")
	}
	if h.RemoteTenantSecret == "" {
		return ep, errs.E(errs.Invalid, "encryptionEndpoint.remoteTenantSecret: required")
	}
	ep.TenantID = id
	return ep, nil
}

// GetTenant returns a tenant the caller may see: any for the platform admin, their own otherwise
// (another tenant gets NotFound).
func (s *Service) GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error) {
	if err := canSeeTenant(ctx, id); err != nil {
		return postgres.Tenant{}, err
	}
	return s.store.GetTenant(ctx, id)
}

// ListTenants lists tenants (platform admin).
func (s *Service) ListTenants(ctx context.Context, pageSize int, after uuid.UUID) ([]postgres.Tenant, error) {
	return s.store.ListTenants(ctx, pageSize, after)
}

// DeleteTenant deletes a tenant with everything of it in core and, for a tenant on the platform's
// encryption service, has that service destroy the tenant (every key: crypto-shredding). It
// cannot be undone; confirmName must repeat the tenant's name exactly. It returns KeyErasureDone
// when the service destroyed the tenant before it returned, KeyErasurePending when that is queued
// (core keeps retrying), KeyErasureHosted for a tenant-hosted service, whose keys are the tenant's
// own business.
//
// Errors: NotFound for an unknown tenant; Invalid when confirmName is not the tenant's name (and
// nothing is deleted).
func (s *Service) DeleteTenant(ctx context.Context, c Call, id uuid.UUID, confirmName string) (string, error) {
	e, err := s.store.DeleteTenant(ctx, id, confirmName, s.event(ctx, c, &id, "tenant.delete", "tenant:"+id.String()))
	switch {
	case err != nil:
		return "", err
	case e == nil:
		return KeyErasureHosted, nil
	case s.EraseTenant != nil && s.EraseTenant(ctx, *e):
		return KeyErasureDone, nil
	}
	return KeyErasurePending, nil
}

// UpdateTenant renames a tenant or switches its password hints. Only the platform admin
// renames (PermissionDenied for others): names are unique across the platform, so an owner trying
// names would learn which other tenants exist.
func (s *Service) UpdateTenant(ctx context.Context, c Call, id uuid.UUID, name *string, hints *bool) (postgres.Tenant, error) {
	if err := canSeeTenant(ctx, id); err != nil {
		return postgres.Tenant{}, err
	}
	if name != nil && !principal.FromContext(ctx).PlatformAdmin {
		return postgres.Tenant{}, errs.E(errs.PermissionDenied, "name: only the platform admin renames tenants (names are unique across the platform); owners may switch password hints")
	}
	if name != nil {
		n := strings.TrimSpace(*name)
		if l := len([]rune(n)); l < 1 || l > 200 {
			return postgres.Tenant{}, errs.E(errs.Invalid, "name: want 1 to 200 characters, got %d", l)
		}
		name = &n
	}
	return s.store.UpdateTenant(ctx, id, name, hints, s.event(ctx, c, &id, "tenant.update", "tenant:"+id.String()))
}

func canSeeTenant(ctx context.Context, id uuid.UUID) error {
	p := principal.FromContext(ctx)
	if p.PlatformAdmin || p.InTenant(id) {
		return nil
	}
	return errs.E(errs.NotFound, "tenant %s not found", id)
}

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9._@-]{3,64}$`)

// NewUser describes a user to create.
type NewUser struct {
	TenantID     uuid.UUID
	Username     string
	Password     string
	Role         string // default member
	PasswordHint string
	// MasterKey is the new user's client master key (X-Master-Key of the creating request), derived
	// from the password being set: in a zero-knowledge (CLIENT) tenant their personal key context is
	// then created with them. Optional; never stored. Refused for PLATFORM tenants.
	MasterKey []byte
}

// CreateUser adds a user to a tenant. The platform admin may create any role in any tenant (a
// tenant's first owner); an owner any role in theirs; an admin only admins and members; a machine
// with users:manage only members.
func (s *Service) CreateUser(ctx context.Context, c Call, nu NewUser) (postgres.User, error) {
	if err := s.canManage(ctx, nu.TenantID); err != nil {
		return postgres.User{}, err
	}
	role := nu.Role
	if role == "" {
		role = principal.RoleMember
	}
	if err := checkRole(role); err != nil {
		return postgres.User{}, err
	}
	if err := mayGrant(ctx, role); err != nil {
		return postgres.User{}, err
	}
	if !usernamePattern.MatchString(nu.Username) {
		return postgres.User{}, errs.E(errs.Invalid, "username: 3 to 64 characters of letters, digits, '.', '_', '-', '@'")
	}
	if err := password.Validate(nu.Password); err != nil {
		return postgres.User{}, errs.Wrap(errs.Invalid, err, "password: "+err.Error())
	}
	t, err := s.store.GetTenant(ctx, nu.TenantID)
	if err != nil {
		return postgres.User{}, err
	}
	if nu.MasterKey != nil && t.KeyMode != "CLIENT" {
		return postgres.User{}, errs.E(errs.Invalid, "X-Master-Key must not be sent: this tenant's keys are platform-managed")
	}
	if nu.PasswordHint != "" {
		if !t.PasswordHintsEnabled {
			return postgres.User{}, errs.E(errs.Invalid, "passwordHint: this tenant has switched password hints off")
		}
		if err := auth.ValidateHint(nu.PasswordHint); err != nil {
			return postgres.User{}, err
		}
	}
	u, err := s.newUser(nu.Username, nu.Password)
	if err != nil {
		return postgres.User{}, err
	}
	u.TenantID, u.Role, u.PasswordHint = nu.TenantID, role, nu.PasswordHint
	if err := s.store.CreateUser(ctx, u, s.event(ctx, c, &u.TenantID, "user.create", "user:"+u.ID.String())); err != nil {
		return postgres.User{}, err
	}
	if s.AfterCreateUser != nil {
		s.AfterCreateUser(ctx, u, nu.MasterKey)
	}
	return s.store.GetUser(ctx, u.ID)
}

// BootstrapPlatformAdmin creates the platform admin if none exists yet. It reports whether it
// created one; an existing admin is left alone (its password is not reset).
func (s *Service) BootstrapPlatformAdmin(ctx context.Context, username, pw string) (bool, error) {
	n, err := s.store.CountPlatformAdmins(ctx)
	if err != nil || n > 0 {
		return false, err
	}
	if !usernamePattern.MatchString(username) {
		return false, errs.E(errs.Invalid, "admin username: 3 to 64 characters of letters, digits, '.', '_', '-', '@'")
	}
	if err := password.Validate(pw); err != nil {
		return false, errs.Wrap(errs.Invalid, err, "admin password: "+err.Error())
	}
	u, err := s.newUser(username, pw)
	if err != nil {
		return false, err
	}
	u.PlatformAdmin = true
	audit := postgres.AuditEvent{ActorType: "system", Action: "user.bootstrap_admin", Target: "user:" + u.ID.String(), Outcome: "ok"}
	if err := s.store.CreateUser(ctx, u, audit); err != nil {
		if errs.Is(err, errs.Conflict) {
			return false, nil // another replica made it first
		}
		return false, err
	}
	return true, nil
}

func (s *Service) newUser(username, pw string) (postgres.User, error) {
	hash, err := password.Hash(pw, s.params, s.rand)
	if err != nil {
		return postgres.User{}, errs.Wrap(errs.Internal, err, "hash password")
	}
	// A user's client KDF parameters are the ones prelogin answered for the username before the
	// user existed (a keyed hash of the username): a client can derive the new user's password
	// before creating them, and prelogin cannot tell existing users from others.
	kdf, err := password.FakeClientKDF(s.preloginSeed, strings.ToLower(username))
	if err != nil {
		return postgres.User{}, errs.Wrap(errs.Internal, err, "derive KDF parameters")
	}
	return postgres.User{
		ID: uuid.New(), Username: strings.ToLower(username), PasswordHash: hash,
		KDF:           postgres.KDF{Salt: kdf.Salt, MemoryKiB: kdf.MemoryKiB, Iterations: kdf.Iterations, Parallelism: kdf.Parallelism},
		SecurityStamp: uuid.NewString(),
	}, nil
}

// ListUsers lists a tenant's users.
func (s *Service) ListUsers(ctx context.Context, tenantID uuid.UUID, pageSize int, after uuid.UUID) ([]postgres.User, error) {
	if err := s.canManage(ctx, tenantID); err != nil {
		return nil, err
	}
	return s.store.ListUsers(ctx, tenantID, pageSize, after)
}

// GetUser returns a user the caller may manage.
func (s *Service) GetUser(ctx context.Context, id uuid.UUID) (postgres.User, error) {
	return s.managedUser(ctx, id)
}

// SetDisabled disables (ending their sessions at once) or re-enables a user.
func (s *Service) SetDisabled(ctx context.Context, c Call, id uuid.UUID, disabled bool) (postgres.User, error) {
	u, err := s.managedUser(ctx, id)
	if err != nil {
		return postgres.User{}, err
	}
	if err := mayTouch(ctx, u); err != nil {
		return postgres.User{}, err
	}
	action := "user.enable"
	if disabled {
		action = "user.disable"
	}
	return s.store.SetUserDisabled(ctx, id, disabled, uuid.NewString(), s.event(ctx, c, &u.TenantID, action, "user:"+id.String()), s.stillManaged(ctx, u))
}

// SetRole changes a user's role; a tenant keeps at least one owner.
func (s *Service) SetRole(ctx context.Context, c Call, id uuid.UUID, role string) (postgres.User, error) {
	if err := checkRole(role); err != nil {
		return postgres.User{}, err
	}
	u, err := s.managedUser(ctx, id)
	if err != nil {
		return postgres.User{}, err
	}
	if err := mayTouch(ctx, u); err != nil {
		return postgres.User{}, err
	}
	if err := mayGrant(ctx, role); err != nil {
		return postgres.User{}, err
	}
	return s.store.SetUserRole(ctx, id, role, s.event(ctx, c, &u.TenantID, "user.role", "user:"+id.String()+" role:"+role), s.stillManaged(ctx, u))
}

// DeleteUser deletes a user with their sessions and items, and has the encryption service destroy
// their personal key context (crypto-shredding), so that their ciphertext, backups and exports
// included, can never be decrypted again. It returns KeyErasureDone when the context was destroyed
// before it returned, KeyErasurePending when that is queued (the service could not be reached;
// core keeps retrying) and KeyErasureNone when the user had no key context.
//
// Errors: NotFound for an unknown user or one the caller may not manage; PermissionDenied when an
// admin touches an owner; FailedPrecondition for a tenant's last owner or the last platform admin.
func (s *Service) DeleteUser(ctx context.Context, c Call, id uuid.UUID) (string, error) {
	u, err := s.managedUser(ctx, id)
	if err != nil {
		return "", err
	}
	if err := mayTouch(ctx, u); err != nil {
		return "", err
	}
	e, err := s.store.DeleteUser(ctx, id, s.event(ctx, c, &u.TenantID, "user.delete", "user:"+id.String()), s.stillManaged(ctx, u))
	switch {
	case err != nil:
		return "", err
	case e == nil:
		return KeyErasureNone, nil
	case s.EraseKeys != nil && s.EraseKeys(ctx, *e):
		return KeyErasureDone, nil
	}
	return KeyErasurePending, nil
}

// managedUser returns user id if the caller may manage its tenant; NotFound otherwise, as for an
// unknown id.
func (s *Service) managedUser(ctx context.Context, id uuid.UUID) (postgres.User, error) {
	u, err := s.store.GetUser(ctx, id)
	if err != nil {
		return postgres.User{}, err
	}
	if u.PlatformAdmin || s.canManage(ctx, u.TenantID) != nil {
		return postgres.User{}, errs.E(errs.NotFound, "user %s not found", id)
	}
	return u, nil
}

// stillManaged checks again, on the user as it is once locked for the change, what managedUser
// and mayTouch checked before: a role given to the user meanwhile (an owner promoting them while
// an admin disables them) is not overridden by a check made on what the user was.
func (s *Service) stillManaged(ctx context.Context, seen postgres.User) func(postgres.User) error {
	return func(u postgres.User) error {
		if u.PlatformAdmin || u.TenantID != seen.TenantID {
			return errs.E(errs.NotFound, "user %s not found", u.ID)
		}
		return mayTouch(ctx, u)
	}
}

// canManage reports whether the caller may manage users of tenant id.
func (s *Service) canManage(ctx context.Context, tenantID uuid.UUID) error {
	p := principal.FromContext(ctx)
	if p.PlatformAdmin || p.InTenant(tenantID) {
		return nil
	}
	return errs.E(errs.NotFound, "tenant %s not found", tenantID)
}

// mayGrant refuses to let a caller give role above its own reach (see reach).
func mayGrant(ctx context.Context, role string) error {
	p := principal.FromContext(ctx)
	if rank(role) > rank(reach(p)) {
		return refuseReach(p, "make "+role+"s")
	}
	return nil
}

// mayTouch refuses to let a caller change a user whose role is above its reach (see reach).
func mayTouch(ctx context.Context, u postgres.User) error {
	p := principal.FromContext(ctx)
	if rank(u.Role) > rank(reach(p)) {
		return refuseReach(p, "change an "+u.Role)
	}
	return nil
}

// reach is the highest role a caller may give or change: the platform admin and owners any,
// admins admins and members, and machines (users:manage) members only — a machine that could make
// admins could make itself one, with the powers the policy keeps from machines (API keys, audit).
func reach(p principal.Principal) string {
	switch {
	case p.PlatformAdmin || (p.Human() && p.Role == principal.RoleOwner):
		return principal.RoleOwner
	case p.Human() && p.Role == principal.RoleAdmin:
		return principal.RoleAdmin
	}
	return principal.RoleMember
}

func rank(role string) int {
	switch role {
	case principal.RoleOwner:
		return 2
	case principal.RoleAdmin:
		return 1
	}
	return 0
}

func refuseReach(p principal.Principal, what string) error {
	if !p.Human() {
		return errs.E(errs.PermissionDenied, "machine credentials may not %s: only members are managed by machines (users:manage)", what)
	}
	return errs.E(errs.PermissionDenied, "only an owner or the platform admin may %s", what)
}

func checkRole(role string) error {
	switch role {
	case principal.RoleOwner, principal.RoleAdmin, principal.RoleMember:
		return nil
	}
	return errs.E(errs.Invalid, "role: want owner, admin or member, got %q", role)
}

// IssuedKey is a new machine credential; Secret is shown once.
type IssuedKey struct {
	Key    postgres.APIKey
	Secret string
}

// CreateAPIKey issues a machine credential for the caller's tenant.
func (s *Service) CreateAPIKey(ctx context.Context, c Call, name string, scopes []string, expiresAt *time.Time) (IssuedKey, error) {
	p := principal.FromContext(ctx)
	name = strings.TrimSpace(name)
	if n := len([]rune(name)); n < 1 || n > 200 {
		return IssuedKey{}, errs.E(errs.Invalid, "name: want 1 to 200 characters, got %d", n)
	}
	scopes, err := apikey.ParseScopes(scopes)
	if err != nil {
		return IssuedKey{}, errs.Wrap(errs.Invalid, err, "scopes: "+err.Error())
	}
	if expiresAt != nil && !expiresAt.After(s.now()) {
		return IssuedKey{}, errs.E(errs.Invalid, "expiresAt: must be in the future")
	}
	cred, err := apikey.New(s.rand)
	if err != nil {
		return IssuedKey{}, errs.Wrap(errs.Internal, err, "generate API key")
	}
	k := postgres.APIKey{
		ID: uuid.New(), TenantID: p.TenantID, KeyID: cred.KeyID, Name: name, Scopes: scopes,
		SecretHash: cred.Hash, ExpiresAt: expiresAt, CreatedBy: p.ID,
	}
	if err := s.store.CreateAPIKey(ctx, k, s.event(ctx, c, &p.TenantID, "apikey.create", "apikey:"+k.ID.String())); err != nil {
		return IssuedKey{}, err
	}
	k.CreatedAt = s.now()
	return IssuedKey{Key: k, Secret: cred.Secret}, nil
}

// ListAPIKeys lists the caller's tenant's API keys.
func (s *Service) ListAPIKeys(ctx context.Context, pageSize int, after uuid.UUID) ([]postgres.APIKey, error) {
	return s.store.ListAPIKeys(ctx, principal.FromContext(ctx).TenantID, pageSize, after)
}

// RevokeAPIKey makes a key stop working at once.
func (s *Service) RevokeAPIKey(ctx context.Context, c Call, id uuid.UUID) error {
	p := principal.FromContext(ctx)
	return s.store.RevokeAPIKey(ctx, p.TenantID, id, s.event(ctx, c, &p.TenantID, "apikey.revoke", "apikey:"+id.String()))
}

// RotateAPIKey issues a new secret; the previous one keeps working for overlap (at most 30 days).
func (s *Service) RotateAPIKey(ctx context.Context, c Call, id uuid.UUID, overlap time.Duration) (IssuedKey, error) {
	p := principal.FromContext(ctx)
	if overlap < 0 || overlap > 30*24*time.Hour {
		return IssuedKey{}, errs.E(errs.Invalid, "overlap: want 0s to 720h, got %s", overlap)
	}
	cred, err := apikey.New(s.rand)
	if err != nil {
		return IssuedKey{}, errs.Wrap(errs.Internal, err, "generate API key")
	}
	k, err := s.store.RotateAPIKey(ctx, p.TenantID, id, cred.Hash, s.now().Add(overlap),
		s.event(ctx, c, &p.TenantID, "apikey.rotate", "apikey:"+id.String()))
	if err != nil {
		return IssuedKey{}, err
	}
	// The key id stays; only the secret part is new.
	return IssuedKey{Key: k, Secret: cred.Secret}, nil
}
