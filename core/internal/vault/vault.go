// Package vault keeps people's private items. Core stores an item only as ciphertext with its key
// references: everything the owner sends about an item (its name and its data) is encrypted by the
// tenant's encryption service under the owner's personal key context, and decrypted by it when the
// owner reads the item. In a zero-knowledge (CLIENT) tenant the owner's master key travels with
// each request (X-Master-Key) to the encryption service and is never stored or logged by core.
//
// All errors are *errs.Error values; none holds plaintext, ciphertext or keys.
package vault

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
)

// Store is what the vault needs from the database.
type Store interface {
	GetTenant(ctx context.Context, id uuid.UUID) (postgres.Tenant, error)
	GetKeyContext(ctx context.Context, userID uuid.UUID) (postgres.KeyContext, error)
	PutKeyContext(ctx context.Context, k postgres.KeyContext) (postgres.KeyContext, error)
	CreateItem(ctx context.Context, it postgres.Item, audit postgres.AuditEvent) (postgres.Item, error)
	GetItem(ctx context.Context, ownerID, id uuid.UUID) (postgres.Item, error)
	ListItems(ctx context.Context, ownerID uuid.UUID, pageSize int, after uuid.UUID) ([]postgres.Item, error)
	UpdateItem(ctx context.Context, ownerID, id uuid.UUID, revision int, ct postgres.Item, audit postgres.AuditEvent) (postgres.Item, error)
	DeleteItem(ctx context.Context, ownerID, id uuid.UUID, audit postgres.AuditEvent) error
}

var _ Store = (*postgres.Store)(nil)

// Router gives the encryption service client of a tenant.
type Router interface {
	For(ctx context.Context, tenantID uuid.UUID) (esclient.Client, error)
}

// Limits bound what an item may hold.
type Limits struct {
	MaxNameBytes int // default 1 KiB
	MaxDataBytes int // default 1 MiB
}

// Service is the vault.
type Service struct {
	store  Store
	router Router
	limits Limits

	// Log, when set, receives what the vault cannot tell its caller (a key context it could not
	// clean up); nil discards it.
	Log *slog.Logger
}

// New returns a vault over store, encrypting through router.
func New(store Store, router Router, limits Limits) *Service {
	if limits.MaxNameBytes <= 0 {
		limits.MaxNameBytes = 1 << 10
	}
	if limits.MaxDataBytes <= 0 {
		limits.MaxDataBytes = 1 << 20
	}
	return &Service{store: store, router: router, limits: limits}
}

// Item is a vault item in plaintext, as its owner sees it.
type Item struct {
	postgres.Item
	Name, Data string
}

// Call is the request's metadata: the owner's master key (nil when the request carried none) and
// what the audit trail records.
type Call struct {
	MasterKey  []byte
	RequestID  string
	RemoteAddr string
}

// envelope is what is encrypted: the item's name and data together.
type envelope struct {
	Name string `json:"name"`
	Data string `json:"data"`
}

// Create encrypts and stores a new item of the caller.
func (s *Service) Create(ctx context.Context, c Call, name, data string) (Item, error) {
	p, err := owner(ctx)
	if err != nil {
		return Item{}, err
	}
	if err := s.check(name, data); err != nil {
		return Item{}, err
	}
	es, kc, err := s.context(ctx, p, c)
	if err != nil {
		return Item{}, err
	}
	ct, err := encrypt(ctx, es, kc, c, name, data)
	if err != nil {
		return Item{}, err
	}
	ct.ID, ct.TenantID, ct.OwnerID = uuid.New(), p.TenantID, p.ID
	stored, err := s.store.CreateItem(ctx, ct, event(p, c, "item.create"))
	if err != nil {
		return Item{}, err
	}
	return Item{Item: stored, Name: name, Data: data}, nil
}

// Get returns one of the caller's items, decrypted. Another user's item is NotFound, as an unknown one.
func (s *Service) Get(ctx context.Context, c Call, id uuid.UUID) (Item, error) {
	p, err := owner(ctx)
	if err != nil {
		return Item{}, err
	}
	stored, err := s.store.GetItem(ctx, p.ID, id)
	if err != nil {
		return Item{}, err
	}
	es, err := s.client(ctx, p, c)
	if err != nil {
		return Item{}, err
	}
	return decrypt(ctx, es, c, stored)
}

// List returns a page of the caller's items, newest first, decrypted, and the id to continue after
// (uuid.Nil on the last page).
func (s *Service) List(ctx context.Context, c Call, pageSize int, after uuid.UUID) ([]Item, uuid.UUID, error) {
	p, err := owner(ctx)
	if err != nil {
		return nil, uuid.Nil, err
	}
	stored, err := s.store.ListItems(ctx, p.ID, pageSize+1, after)
	if err != nil {
		return nil, uuid.Nil, err
	}
	next := uuid.Nil
	if len(stored) > pageSize {
		stored = stored[:pageSize]
		next = stored[pageSize-1].ID
	}
	if len(stored) == 0 {
		return nil, uuid.Nil, nil
	}
	es, err := s.client(ctx, p, c)
	if err != nil {
		return nil, uuid.Nil, err
	}
	out := make([]Item, 0, len(stored))
	for _, st := range stored {
		it, err := decrypt(ctx, es, c, st)
		if err != nil {
			return nil, uuid.Nil, err
		}
		out = append(out, it)
	}
	return out, next, nil
}

// Update replaces an item's name and data if it is still at revision. A stale revision gets Aborted
// and nothing is overwritten.
func (s *Service) Update(ctx context.Context, c Call, id uuid.UUID, revision int, name, data string) (Item, error) {
	p, err := owner(ctx)
	if err != nil {
		return Item{}, err
	}
	if revision < 1 {
		return Item{}, errs.E(errs.Invalid, "revision: required, the revision you read (1 or more)")
	}
	if err := s.check(name, data); err != nil {
		return Item{}, err
	}
	current, err := s.store.GetItem(ctx, p.ID, id)
	if err != nil {
		return Item{}, err
	}
	if current.Revision != revision {
		return Item{}, errs.E(errs.Aborted, "item %s is at revision %d, not %d: it changed since you read it; read it again and retry", id, current.Revision, revision)
	}
	es, kc, err := s.context(ctx, p, c)
	if err != nil {
		return Item{}, err
	}
	ct, err := encrypt(ctx, es, kc, c, name, data)
	if err != nil {
		return Item{}, err
	}
	stored, err := s.store.UpdateItem(ctx, p.ID, id, revision, ct, event(p, c, "item.update"))
	if err != nil {
		return Item{}, err
	}
	return Item{Item: stored, Name: name, Data: data}, nil
}

// Delete deletes one of the caller's items.
func (s *Service) Delete(ctx context.Context, c Call, id uuid.UUID) error {
	p, err := owner(ctx)
	if err != nil {
		return err
	}
	return s.store.DeleteItem(ctx, p.ID, id, event(p, c, "item.delete"))
}

// EnsureContext gives a user their personal key context if they have none: at once for PLATFORM
// tenants, and for CLIENT tenants when masterKey is given. It is called when a user is created and
// on every vault request.
func (s *Service) EnsureContext(ctx context.Context, userID, tenantID uuid.UUID, masterKey []byte) (postgres.KeyContext, error) {
	kc, err := s.store.GetKeyContext(ctx, userID)
	if err == nil || !errs.Is(err, errs.NotFound) {
		return kc, err
	}
	t, err := s.store.GetTenant(ctx, tenantID)
	if err != nil {
		return postgres.KeyContext{}, err
	}
	if t.KeyMode == "CLIENT" && masterKey == nil {
		return postgres.KeyContext{}, errMasterKeyNeeded
	}
	if t.KeyMode != "CLIENT" {
		masterKey = nil
	}
	es, err := s.router.For(ctx, tenantID)
	if err != nil {
		return postgres.KeyContext{}, err
	}
	id, err := es.CreateContext(ctx, t.KeyMode, masterKey)
	if err != nil {
		return postgres.KeyContext{}, err
	}
	encID, err := uuid.Parse(id)
	if err != nil {
		return postgres.KeyContext{}, errs.E(errs.Internal, "the encryption service answered a key context id that is not a UUID")
	}
	kc, err = s.store.PutKeyContext(ctx, postgres.KeyContext{UserID: userID, TenantID: tenantID, EncryptionID: encID, KeyMode: t.KeyMode})
	if err != nil && !errs.Is(err, errs.NotFound) {
		// The context exists on the encryption service but is neither recorded nor queued for
		// erasure (PutKeyContext queues the contexts it does not record, but the database failed):
		// destroy it now rather than leave unused key material behind.
		s.discard(ctx, es, id)
	}
	return kc, err
}

// discard destroys a key context nothing was encrypted under, on a short context of its own (the
// request's may be over). A failure is logged: the context stays unused on the encryption service.
func (s *Service) discard(ctx context.Context, es esclient.Client, encryptionID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := es.DestroyContext(ctx, encryptionID); err != nil && !errs.Is(err, errs.NotFound) && s.Log != nil {
		s.Log.WarnContext(ctx, "an unused key context could not be destroyed; destroy it on the encryption service",
			"encryption_id", encryptionID, "error", err)
	}
}

var errMasterKeyNeeded = errs.E(errs.Unauthenticated,
	"this tenant is zero-knowledge: send your master key in X-Master-Key")

// context returns the tenant's client and the caller's key context, creating the context if needed.
func (s *Service) context(ctx context.Context, p principal.Principal, c Call) (esclient.Client, postgres.KeyContext, error) {
	kc, err := s.EnsureContext(ctx, p.ID, p.TenantID, c.MasterKey)
	if err != nil {
		return nil, postgres.KeyContext{}, err
	}
	if kc.KeyMode == "CLIENT" && c.MasterKey == nil {
		return nil, postgres.KeyContext{}, errMasterKeyNeeded
	}
	es, err := s.client(ctx, p, c)
	return es, kc, err
}

func (s *Service) client(ctx context.Context, p principal.Principal, c Call) (esclient.Client, error) {
	t, err := s.store.GetTenant(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	if t.KeyMode == "CLIENT" && c.MasterKey == nil {
		return nil, errMasterKeyNeeded
	}
	if t.KeyMode != "CLIENT" && c.MasterKey != nil {
		return nil, errs.E(errs.Invalid, "X-Master-Key must not be sent: this tenant's keys are platform-managed")
	}
	return s.router.For(ctx, p.TenantID)
}

func (s *Service) check(name, data string) error {
	switch {
	case name == "":
		return errs.E(errs.Invalid, "name: required")
	case len(name) > s.limits.MaxNameBytes:
		return errs.E(errs.Invalid, "name: %d bytes is over the limit of %d", len(name), s.limits.MaxNameBytes)
	case len(data) > s.limits.MaxDataBytes:
		return errs.E(errs.Invalid, "data: %d bytes is over the limit of %d", len(data), s.limits.MaxDataBytes)
	case !utf8.ValidString(name) || !utf8.ValidString(data):
		return errs.E(errs.Invalid, "name and data: must be valid UTF-8")
	}
	return nil
}

func encrypt(ctx context.Context, es esclient.Client, kc postgres.KeyContext, c Call, name, data string) (postgres.Item, error) {
	plain, err := json.Marshal(envelope{Name: name, Data: data})
	if err != nil {
		return postgres.Item{}, errs.Wrap(errs.Internal, err, "encode item")
	}
	ct, err := es.Encrypt(ctx, kc.EncryptionID.String(), string(plain), c.MasterKey)
	if err != nil {
		return postgres.Item{}, err
	}
	return fromCiphertext(ct)
}

func fromCiphertext(ct esclient.Ciphertext) (postgres.Item, error) {
	encID, err1 := uuid.Parse(ct.EncryptionID)
	verID, err2 := uuid.Parse(ct.VersionID)
	if err1 != nil || err2 != nil {
		return postgres.Item{}, errs.E(errs.Internal, "the encryption service answered key references that are not UUIDs")
	}
	if !json.Valid(ct.Metadata) || len(ct.Metadata) == 0 || ct.Metadata[0] != '{' {
		return postgres.Item{}, errs.E(errs.Internal, "the encryption service answered metadata that is not a JSON object")
	}
	return postgres.Item{CipherText: ct.CipherText, EncryptionID: encID, VersionID: verID, Algorithm: ct.Algorithm, Metadata: ct.Metadata}, nil
}

// Ciphertext is an item's stored ciphertext as the encryption service expects it back.
func Ciphertext(it postgres.Item) esclient.Ciphertext {
	return esclient.Ciphertext{
		CipherText: it.CipherText, EncryptionID: it.EncryptionID.String(), VersionID: it.VersionID.String(),
		Algorithm: it.Algorithm, Metadata: it.Metadata,
	}
}

func decrypt(ctx context.Context, es esclient.Client, c Call, st postgres.Item) (Item, error) {
	plain, err := es.Decrypt(ctx, Ciphertext(st), c.MasterKey)
	if err != nil {
		return Item{}, err
	}
	var env envelope
	if err := json.Unmarshal([]byte(plain), &env); err != nil {
		return Item{}, errs.Wrap(errs.Internal, err, "decode item "+st.ID.String())
	}
	return Item{Item: st, Name: env.Name, Data: env.Data}, nil
}

func owner(ctx context.Context) (principal.Principal, error) {
	p := principal.FromContext(ctx)
	if !p.Human() || p.TenantID == uuid.Nil {
		return principal.Principal{}, errs.E(errs.PermissionDenied, "the vault is for people of a tenant")
	}
	return p, nil
}

func event(p principal.Principal, c Call, action string) postgres.AuditEvent {
	id := p.ID
	return postgres.AuditEvent{ActorType: "user", ActorID: &id, Action: action, Outcome: "ok", RemoteAddr: c.RemoteAddr, RequestID: c.RequestID}
}

// ChangeMasterKey moves a user's zero-knowledge key context from the master key oldKey to newKey
// (the encryption service rewraps it; no item is touched). A user without a key context, or of a
// PLATFORM tenant, has nothing to change.
func (s *Service) ChangeMasterKey(ctx context.Context, userID, tenantID uuid.UUID, oldKey, newKey []byte) error {
	kc, err := s.store.GetKeyContext(ctx, userID)
	if errs.Is(err, errs.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if kc.KeyMode != "CLIENT" {
		return nil
	}
	if oldKey == nil || newKey == nil {
		return errs.E(errs.Invalid,
			"this tenant is zero-knowledge: a password change needs the current master key in X-Master-Key and the new one in X-New-Master-Key")
	}
	es, err := s.router.For(ctx, tenantID)
	if err != nil {
		return err
	}
	return es.ChangeMasterKey(ctx, kc.EncryptionID.String(), oldKey, newKey)
}
