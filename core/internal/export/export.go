// Package export moves a tenant's encrypted vault items out of core and back in, for backup. An
// export is the items exactly as stored — ciphertext and key references, never plaintext — each
// with an integrity tag (HMAC-SHA256 under a key derived from core's secret keys), so that an
// import restores only records this installation exported, unaltered. Restoring needs the same
// encryption service key contexts (and, for zero-knowledge tenants, the owners' master keys) to
// read the items again: an export is useless to anyone without them.
//
// Every error is an *errs.Error whose message is safe to show: it names the record and field
// at fault and never holds ciphertext or keys.
package export

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
)

// integrityInfo is the HKDF info of the integrity key; changing it invalidates every export.
const integrityInfo = "custos/core/export-integrity/v1"

// tagPrefix starts every integrity tag: the version of the record's canonical encoding.
const tagPrefix = "v1."

// pageSize is how many items Export reads from the database at a time.
const pageSize = 500

// IntegrityKey derives the key of export integrity tags from secret, one of core's secret keys
// (the one with the smallest id, so that every replica, and a later change of the active key,
// derives the same). Errors only if secret is empty.
func IntegrityKey(secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errs.E(errs.Internal, "export: no secret key to derive the integrity key from")
	}
	return hkdf.Key(sha256.New, secret, nil, integrityInfo, 32)
}

// Store is what export and import need from the database.
type Store interface {
	ExportItems(ctx context.Context, tenantID, ownerID uuid.UUID, cursor string, limit int) ([]postgres.Item, error)
	ImportItems(ctx context.Context, tenantID uuid.UUID, records iter.Seq2[postgres.Item, error], audit postgres.AuditEvent) (postgres.ImportResult, error)
	InsertAudit(ctx context.Context, a postgres.AuditEvent) error
}

var _ Store = (*postgres.Store)(nil)

// Service exports and imports encrypted items.
type Service struct {
	store Store
	key   []byte
}

// New returns a Service over store signing records with key, from IntegrityKey.
func New(store Store, key []byte) *Service {
	return &Service{store: store, key: key}
}

// Record is one exported item: every stored field except the tenant (an import goes into the
// importer's tenant), the position to resume after it, and its integrity tag. Metadata is the
// encryption metadata as a JSON object; timestamps keep the nanoseconds they were exported with.
type Record struct {
	ID, OwnerID          string
	Revision             int32
	CipherText           string
	EncryptionID         string
	VersionID            string
	Algorithm            string
	Metadata             json.RawMessage
	CreatedAt, UpdatedAt time.Time
	Cursor               string // not covered by Integrity
	Integrity            string
}

// Call is the request's audit metadata.
type Call struct {
	RequestID  string
	RemoteAddr string
}

// Export sends the caller's tenant's items to send, oldest first by (created_at, id), starting
// after cursor ("" from the start): every item of the tenant for a tenant admin or a machine
// (policy lets only those with scope export in), a member's own items for a member. It stops at
// send's first error and returns it.
//
// Errors: PermissionDenied for a caller outside a tenant; Invalid for a cursor that is not one
// from an exported record; the store's errors.
func (s *Service) Export(ctx context.Context, c Call, cursor string, send func(Record) error) error {
	p := principal.FromContext(ctx)
	if p.TenantID == uuid.Nil || (p.Kind != principal.User && p.Kind != principal.APIKey) {
		return errs.E(errs.PermissionDenied, "export is for the people and machines of a tenant")
	}
	owner := uuid.Nil
	if p.Kind == principal.User && !p.TenantAdmin() {
		owner = p.ID
	}
	// The tenant's own audit trail shows who took a copy of what: the whole tenant, or one
	// member's items.
	ev := event(p, c, "vault.export")
	ev.TenantID, ev.Target = &p.TenantID, "tenant:"+p.TenantID.String()
	if owner != uuid.Nil {
		ev.Target = "user:" + owner.String()
	}
	if err := s.store.InsertAudit(ctx, ev); err != nil {
		return err
	}
	for {
		items, err := s.store.ExportItems(ctx, p.TenantID, owner, cursor, pageSize)
		if err != nil {
			return err
		}
		for _, it := range items {
			r, err := s.record(it)
			if err != nil {
				return err
			}
			if err := send(r); err != nil {
				return err
			}
			cursor = r.Cursor
		}
		if len(items) < pageSize {
			return nil
		}
	}
}

// record makes the exported record of it.
func (s *Service) record(it postgres.Item) (Record, error) {
	meta, err := canonicalJSON(it.Metadata)
	if err != nil {
		return Record{}, errs.Wrap(errs.Internal, err, "item "+it.ID.String()+" has metadata that is not a JSON object")
	}
	r := Record{
		ID: it.ID.String(), OwnerID: it.OwnerID.String(), Revision: int32(it.Revision), CipherText: it.CipherText, //nolint:gosec // bounded: the column is a positive int4
		EncryptionID: it.EncryptionID.String(), VersionID: it.VersionID.String(), Algorithm: it.Algorithm,
		Metadata: meta, CreatedAt: it.CreatedAt.UTC(), UpdatedAt: it.UpdatedAt.UTC(), Cursor: postgres.ItemCursor(it),
	}
	r.Integrity = s.tag(r)
	return r, nil
}

// Import restores records into the caller's tenant in one transaction: if any record is refused,
// nothing of the request is stored. It returns how many items were stored and how many were
// already present unchanged. Records are numbered from 1 in messages.
//
// Errors: PermissionDenied unless the caller is a tenant admin; Invalid for a record whose
// integrity tag does not verify (altered, or exported by another installation) or whose fields
// are malformed, naming the record; FailedPrecondition for an owner who is not a user of the
// tenant or a key context that is not the owner's; Conflict for an item present with different
// content (see postgres.Store.ImportItems for what counts as the same); Aborted, with nothing
// stored, when the import collided with a concurrent change (records is read once, so it is not
// retried); an error records yields, unchanged.
func (s *Service) Import(ctx context.Context, c Call, records iter.Seq2[Record, error]) (postgres.ImportResult, error) {
	p := principal.FromContext(ctx)
	if !p.TenantAdmin() || p.TenantID == uuid.Nil {
		return postgres.ImportResult{}, errs.E(errs.PermissionDenied, "only a tenant's owners and admins may import")
	}
	items := func(yield func(postgres.Item, error) bool) {
		n := 0
		for r, err := range records {
			n++
			if err != nil {
				yield(postgres.Item{}, err)
				return
			}
			it, err := s.verify(n, r)
			if !yield(it, err) || err != nil {
				return
			}
		}
	}
	return s.store.ImportItems(ctx, p.TenantID, items, event(p, c, "vault.import"))
}

// verify checks record n's integrity tag, then its fields, and returns it as an item to store.
func (s *Service) verify(n int, r Record) (postgres.Item, error) {
	label := "record " + strconv.Itoa(n)
	if _, err := uuid.Parse(r.ID); err == nil {
		label += " (item " + r.ID + ")"
	}
	meta, err := canonicalJSON(r.Metadata)
	if err != nil {
		return postgres.Item{}, errs.E(errs.Invalid, "%s: metadata: not a JSON object; nothing was imported", label)
	}
	r.Metadata = meta
	if !hmac.Equal([]byte(r.Integrity), []byte(s.tag(r))) {
		return postgres.Item{}, errs.E(errs.Invalid,
			"%s: integrity: the tag does not match: the record was altered, or exported by another installation; nothing was imported", label)
	}
	// A record with a valid tag was exported by this installation, so these hold unless the
	// database held something it should not have; checked all the same, as the store relies on them.
	id, err1 := uuid.Parse(r.ID)
	owner, err2 := uuid.Parse(r.OwnerID)
	enc, err3 := uuid.Parse(r.EncryptionID)
	ver, err4 := uuid.Parse(r.VersionID)
	switch {
	case err1 != nil || err2 != nil || err3 != nil || err4 != nil:
		return postgres.Item{}, errs.E(errs.Invalid, "%s: id, ownerId, encryptionId and encryptionVersionId: must be UUIDs; nothing was imported", label)
	case id.String() != r.ID || owner.String() != r.OwnerID || enc.String() != r.EncryptionID || ver.String() != r.VersionID:
		// Export writes the one canonical spelling; accepting others would give one item
		// several tagged encodings.
		return postgres.Item{}, errs.E(errs.Invalid, "%s: id, ownerId, encryptionId and encryptionVersionId: must be lowercase hyphenated UUIDs; nothing was imported", label)
	case r.Revision < 1:
		return postgres.Item{}, errs.E(errs.Invalid, "%s: revision: must be 1 or more; nothing was imported", label)
	case r.CipherText == "" || r.Algorithm == "":
		return postgres.Item{}, errs.E(errs.Invalid, "%s: cipherText and algorithm: required; nothing was imported", label)
	case r.CreatedAt.IsZero() || r.UpdatedAt.IsZero():
		return postgres.Item{}, errs.E(errs.Invalid, "%s: createdAt and updatedAt: required; nothing was imported", label)
	case r.CreatedAt.Nanosecond()%1000 != 0 || r.UpdatedAt.Nanosecond()%1000 != 0:
		return postgres.Item{}, errs.E(errs.Invalid, "%s: createdAt and updatedAt: at most microsecond precision; nothing was imported", label)
	}
	return postgres.Item{
		ID: id, OwnerID: owner, Revision: int(r.Revision), CipherText: r.CipherText, EncryptionID: enc, VersionID: ver,
		Algorithm: r.Algorithm, Metadata: meta, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}, nil
}

// tag is r's integrity tag: "v1." and the unpadded base64url HMAC-SHA256 of canonical(r).
func (s *Service) tag(r Record) string {
	m := hmac.New(sha256.New, s.key)
	m.Write(canonical(r))
	return tagPrefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// canonical is the byte string the integrity tag covers: a domain label, then every field of r
// except Cursor and Integrity, in the order of custos.core.v1.ExportRecord, each as its length
// (uvarint) and bytes, so that no two records encode alike. Numbers and timestamps are decimal
// (timestamps as seconds "." nine-digit nanoseconds since the Unix epoch, UTC); r.Metadata must
// already be canonicalJSON.
func canonical(r Record) []byte {
	fields := []string{
		"custos/core/export-record/v1",
		r.ID, r.OwnerID, strconv.FormatInt(int64(r.Revision), 10), r.CipherText, r.EncryptionID, r.VersionID,
		r.Algorithm, string(r.Metadata), timestamp(r.CreatedAt), timestamp(r.UpdatedAt),
	}
	var b []byte
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	ns := strconv.Itoa(t.Nanosecond())
	return strconv.FormatInt(t.Unix(), 10) + "." + strings.Repeat("0", 9-len(ns)) + ns
}

// canonicalJSON re-encodes a JSON object the way it survives every transport an export takes
// (database jsonb, google.protobuf.Struct, JSON): numbers as float64, keys sorted, no spaces.
// Anything but a JSON object is an error.
func canonicalJSON(raw json.RawMessage) (json.RawMessage, error) {
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errs.E(errs.Invalid, "not a JSON object")
	}
	return json.Marshal(v)
}

func event(p principal.Principal, c Call, action string) postgres.AuditEvent {
	id := p.ID
	actor := postgres.ActorUser
	if p.Kind == principal.APIKey {
		actor = postgres.ActorAPIKey
	}
	return postgres.AuditEvent{ActorType: actor, ActorID: &id, Action: action, Outcome: postgres.OutcomeOK,
		RemoteAddr: c.RemoteAddr, RequestID: c.RequestID}
}
