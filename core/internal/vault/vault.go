// Package vault keeps people's private items. Core stores an item only as ciphertext with its key
// references: everything the owner sends about an item (its name and its data) is encrypted by the
// tenant's encryption service under the owner's personal key context, and decrypted by it when the
// owner reads the item. In a zero-knowledge (CLIENT) tenant the owner's master key travels with
// each request (X-Master-Key) to the encryption service and is never stored or logged by core.
//
// All errors are *errs.Error values; none holds plaintext, ciphertext or keys.
package vault

import (
	"bytes"
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
	PutKeyContextUnder(ctx context.Context, k postgres.KeyContext, stamp string) (postgres.KeyContext, error)
	CreateItem(ctx context.Context, it postgres.Item, audit postgres.AuditEvent) (postgres.Item, error)
	GetItem(ctx context.Context, ownerID, id uuid.UUID) (postgres.Item, error)
	ListItems(ctx context.Context, ownerID uuid.UUID, pageSize int, pageToken string) ([]postgres.Item, string, error)
	UpdateItem(ctx context.Context, ownerID, id uuid.UUID, revision int, ct postgres.Item, audit postgres.AuditEvent) (postgres.Item, error)
	DeleteItem(ctx context.Context, ownerID, id uuid.UUID, audit postgres.AuditEvent) error
}

var _ Store = (*postgres.Store)(nil)

// Router gives the encryption service client of a tenant.
type Router interface {
	For(ctx context.Context, tenantID uuid.UUID) (esclient.Client, error)
}

// Limits bound what an item may hold. The defaults let any name and data within their limits
// through the encryption service's default ES_MAX_DATA_BYTES (1 MiB) unless the data is heavy in
// characters JSON escapes (see encodeItem); MaxItemBytes refuses those before the service would.
type Limits struct {
	MaxNameBytes int // default 1 KiB
	MaxDataBytes int // default DefaultMaxDataBytes
	// MaxItemBytes bounds the name and data encoded together (encodeItem), which is what the
	// encryption service encrypts: at most its ES_MAX_DATA_BYTES; default 1 MiB, that default.
	MaxItemBytes int
}

// DefaultMaxDataBytes is the default limit of an item's data: 1 MiB − 8 KiB (1,040,384 bytes),
// leaving room in the encryption service's 1 MiB for the largest name, however much JSON escapes
// it (a control character takes 6 bytes), and for the envelope.
const DefaultMaxDataBytes = 1<<20 - 8<<10

// Service is the vault.
type Service struct {
	store  Store
	router Router
	limits Limits

	// Log, when set, receives what the vault cannot tell its caller (a key context it could not
	// tell recorded or not, see EnsureContext); nil discards it.
	Log *slog.Logger
}

// New returns a vault over store, encrypting through router.
func New(store Store, router Router, limits Limits) *Service {
	if limits.MaxNameBytes <= 0 {
		limits.MaxNameBytes = 1 << 10
	}
	if limits.MaxDataBytes <= 0 {
		limits.MaxDataBytes = DefaultMaxDataBytes
	}
	if limits.MaxItemBytes <= 0 {
		limits.MaxItemBytes = 1 << 20
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

// envelope is what is encrypted: the item's name and data together, as JSON (encodeItem).
type envelope struct {
	Name string `json:"name"`
	Data string `json:"data"`
}

// encodeItem is the plaintext of an item: its envelope as compact JSON, without HTML escaping
// (which would make each <, > and & six bytes). JSON still escapes quotes and backslashes (2
// bytes), control characters (2 or 6) and U+2028, U+2029 (6). Decoding takes either.
func encodeItem(name, data string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(envelope{Name: name, Data: data}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Create encrypts and stores a new item of the caller.
func (s *Service) Create(ctx context.Context, c Call, name, data string) (Item, error) {
	p, err := owner(ctx)
	if err != nil {
		return Item{}, err
	}
	plain, err := s.encode(name, data)
	if err != nil {
		return Item{}, err
	}
	es, kc, err := s.context(ctx, p, c)
	if err != nil {
		return Item{}, err
	}
	ct, err := encrypt(ctx, es, kc, c, plain)
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

// List returns a page of the caller's items, newest first, decrypted, and the token of the next
// page ("" on the last). pageToken is "" or a token List returned; it names a position, so a
// listing goes on where it was even after the items it listed are deleted. Errors: Invalid naming
// pageToken for any other token; the store's and the encryption service's.
func (s *Service) List(ctx context.Context, c Call, pageSize int, pageToken string) ([]Item, string, error) {
	p, err := owner(ctx)
	if err != nil {
		return nil, "", err
	}
	stored, next, err := s.store.ListItems(ctx, p.ID, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	if len(stored) == 0 {
		return nil, "", nil
	}
	es, err := s.client(ctx, p, c)
	if err != nil {
		return nil, "", err
	}
	out := make([]Item, 0, len(stored))
	for _, st := range stored {
		it, err := decrypt(ctx, es, c, st)
		if err != nil {
			return nil, "", err
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
	plain, err := s.encode(name, data)
	if err != nil {
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
	ct, err := encrypt(ctx, es, kc, c, plain)
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
//
// A context it creates is either recorded as the user's or queued for erasure by the store, never
// destroyed here: if recording it fails, EnsureContext records it once more on a context of its
// own (bounded, surviving the request's end) to learn which. Only if that fails too does the
// context stay unknown; it is logged (Log) for an operator and left alone, as it may be the
// user's. A CLIENT context is recorded only while the user's security stamp is still stamp, the
// one masterKey's password was in force under ("" checks nothing): a password changed meanwhile
// is Unauthenticated (PutKeyContextUnder). Errors: Unauthenticated (errMasterKeyNeeded) for a
// CLIENT tenant without masterKey; NotFound for an unknown user or tenant; the store's and the
// encryption service's.
func (s *Service) EnsureContext(ctx context.Context, userID, tenantID uuid.UUID, masterKey []byte, stamp string) (postgres.KeyContext, error) {
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
		masterKey, stamp = nil, ""
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
	want := postgres.KeyContext{UserID: userID, TenantID: tenantID, EncryptionID: encID, KeyMode: t.KeyMode}
	kc, err = s.store.PutKeyContextUnder(ctx, want, stamp)
	if err == nil || errs.Is(err, errs.NotFound) || errs.Is(err, errs.Unauthenticated) {
		return kc, err // recorded, or queued for erasure by the store
	}
	// The outcome is unknown: the transaction may have committed before the request ended or the
	// connection broke. Destroying the context now could destroy the one the database records, and
	// so every item the user then stores; recording it again on a context of its own settles it:
	// the second call waits for a commit still in flight, is harmless after one, and the store
	// queues the context for erasure if another is recorded or the user is gone.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	kc, rerr := s.store.PutKeyContextUnder(rctx, want, stamp)
	switch {
	case rerr == nil:
		if ctx.Err() != nil {
			return postgres.KeyContext{}, err
		}
		return kc, nil
	case errs.Is(rerr, errs.NotFound), errs.Is(rerr, errs.Unauthenticated):
		return postgres.KeyContext{}, rerr
	}
	// Still unknown: leave the context (it may be the user's) and say so.
	if s.Log != nil {
		s.Log.WarnContext(rctx, "a new key context may not be recorded; if core.key_contexts does not hold it, destroy it on the encryption service",
			"encryption_id", id, "user_id", userID, "error", rerr)
	}
	return postgres.KeyContext{}, err
}

// settleTimeout bounds EnsureContext's second attempt at recording a key context.
const settleTimeout = 10 * time.Second

var errMasterKeyNeeded = errs.E(errs.Unauthenticated,
	"this tenant is zero-knowledge: send your master key in X-Master-Key")

// context returns the tenant's client and the caller's key context, creating the context if needed.
func (s *Service) context(ctx context.Context, p principal.Principal, c Call) (esclient.Client, postgres.KeyContext, error) {
	kc, err := s.EnsureContext(ctx, p.ID, p.TenantID, c.MasterKey, p.SecurityStamp)
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

// encode checks an item's name and data against the limits and returns its plaintext (encodeItem).
// Errors: Invalid naming the field and its limit.
func (s *Service) encode(name, data string) ([]byte, error) {
	switch {
	case name == "":
		return nil, errs.E(errs.Invalid, "name: required")
	case len(name) > s.limits.MaxNameBytes:
		return nil, errs.E(errs.Invalid, "name: %d bytes is over the limit of %d bytes", len(name), s.limits.MaxNameBytes)
	case len(data) > s.limits.MaxDataBytes:
		return nil, errs.E(errs.Invalid, "data: %d bytes is over the limit of %d bytes", len(data), s.limits.MaxDataBytes)
	case !utf8.ValidString(name) || !utf8.ValidString(data):
		return nil, errs.E(errs.Invalid, "name and data: must be valid UTF-8")
	}
	plain, err := encodeItem(name, data)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encode item")
	}
	if len(plain) > s.limits.MaxItemBytes {
		// Within the default limits only the data's escaping can do this: a name of 1 KiB takes
		// at most 6 KiB encoded, and the data's limit leaves 8 KiB.
		return nil, errs.E(errs.Invalid,
			"data: %d bytes take %d with the name once encoded (quotes and backslashes count 2 bytes, control characters up to 6), over the limit of %d bytes for an item's encoded name and data",
			len(data), len(plain), s.limits.MaxItemBytes)
	}
	return plain, nil
}

func encrypt(ctx context.Context, es esclient.Client, kc postgres.KeyContext, c Call, plain []byte) (postgres.Item, error) {
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
// (the encryption service rewraps it; no item is touched). It reports whether the tenant is
// zero-knowledge and the context it moved: uuid.Nil for a user without one yet, whose password
// change must then find none recorded either (postgres.Store.ChangePassword), or a context made
// meanwhile would stay bound to the old password. A PLATFORM tenant has nothing to move. When
// oldKey is refused but newKey already opens the context (an earlier attempt moved the keys and
// could neither store the password nor move them back), the move counts as done.
func (s *Service) ChangeMasterKey(ctx context.Context, userID, tenantID uuid.UUID, oldKey, newKey []byte) (zeroKnowledge bool, moved uuid.UUID, err error) {
	kc, err := s.store.GetKeyContext(ctx, userID)
	if errs.Is(err, errs.NotFound) {
		t, terr := s.store.GetTenant(ctx, tenantID)
		if terr != nil {
			return false, uuid.Nil, terr
		}
		return t.KeyMode == "CLIENT", uuid.Nil, nil
	}
	if err != nil {
		return false, uuid.Nil, err
	}
	if kc.KeyMode != "CLIENT" {
		return false, uuid.Nil, nil
	}
	if oldKey == nil || newKey == nil {
		return true, uuid.Nil, errs.E(errs.Invalid,
			"this tenant is zero-knowledge: a password change needs the current master key in X-Master-Key and the new one in X-New-Master-Key")
	}
	es, err := s.router.For(ctx, tenantID)
	if err != nil {
		return true, uuid.Nil, err
	}
	if err := es.ChangeMasterKey(ctx, kc.EncryptionID.String(), oldKey, newKey); err != nil {
		if !errs.Is(err, errs.PermissionDenied) {
			return true, uuid.Nil, err
		}
		// The current password's key does not open the context. If the new password's does, an
		// earlier attempt at this very change moved the keys, then could neither store the
		// password nor move them back: they already follow the new password, and storing it
		// finishes the change. (A probe encryption is the one call that needs the key and
		// changes nothing stored.)
		if _, perr := es.Encrypt(ctx, kc.EncryptionID.String(), "probe", newKey); perr != nil {
			return true, uuid.Nil, err
		}
		if s.Log != nil {
			s.Log.WarnContext(ctx, "password change: the keys already followed the new password (an earlier attempt was cut short); finishing it",
				"user_id", userID, "encryption_id", kc.EncryptionID)
		}
	}
	return true, kc.EncryptionID, nil
}
