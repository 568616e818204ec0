package keyring

import (
	"bytes"
	"context"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// session is one request's use of one key context. It reads the context again at most once when a
// version is missing from the cached copy, builds each version's cipher at most once and, for a
// CLIENT context, unwraps the private sealing key at most once, however many items of a batch use
// it. close clears the keys it holds. A session is used by one goroutine.
type session struct {
	s     *Service
	c     Caller
	id    uuid.UUID
	e     *entry
	err   error // the context could not be loaded: every use fails with it
	fresh bool  // e was read from the database during this request

	// Versions used so far: their associated data and cipher, so that the items of a batch
	// neither rebuild the one nor look up the other again.
	prepared []prepared

	// CLIENT contexts only.
	priv    []byte
	privErr error
}

// prepared is a version ready to encrypt and decrypt within a session.
type prepared struct {
	id     uuid.UUID
	ad     []byte
	cipher aead.Cipher
}

// session loads key context id for c, from the cache when it holds it.
func (s *Service) session(ctx context.Context, c Caller, id uuid.UUID) *session {
	ss := &session{s: s, c: c, id: id}
	ss.e, ss.err = s.load(ctx, c.TenantID, id, false)
	return ss
}

// sessions returns a session for every distinct context in ids. Contexts missing from the cache
// are read with one query for all of them; a context that cannot be read gets a session holding
// the error.
func (s *Service) sessions(ctx context.Context, c Caller, ids []uuid.UUID) map[uuid.UUID]*session {
	out := make(map[uuid.UUID]*session, 4)
	var missing []uuid.UUID
	for _, id := range ids {
		if _, ok := out[id]; ok {
			continue
		}
		ss := &session{s: s, c: c, id: id}
		out[id] = ss
		if e, ok := s.cache.get(id); ok {
			if e.enc.TenantID != c.TenantID {
				ss.err = errNotFound(id)
			} else {
				ss.e = e
			}
			continue
		}
		missing = append(missing, id)
	}
	if len(missing) == 0 {
		return out
	}
	gen := s.cache.generation()
	noted := make(map[uuid.UUID]map[uuid.UUID]int64, len(missing))
	for _, id := range missing {
		noted[id] = s.counts.noteFlushed(id, s.now())
	}
	encs, err := s.store.GetEncryptions(ctx, c.TenantID, missing)
	for _, enc := range encs {
		out[enc.ID].e = s.cache.putEntry(gen, s.entryOf(enc, noted[enc.ID]))
	}
	for _, id := range missing {
		ss := out[id]
		switch {
		case err != nil:
			ss.err = err
		case ss.e == nil:
			ss.err = errNotFound(id)
		}
	}
	return out
}

// close clears the key material the session unwrapped.
func (ss *session) close() {
	clear(ss.priv)
	ss.priv = nil
}

// reload reads the context again from the database. A private sealing key unwrapped from the
// previous copy is dropped when the copy read now has another key pair (the client master key was
// changed meanwhile): its versions are now sealed to the new pair. Ciphers prepared so far stay
// valid, as a change of key pair keeps every version's key.
func (ss *session) reload(ctx context.Context) error {
	e, err := ss.s.load(ctx, ss.c.TenantID, ss.id, true)
	if err != nil {
		return err
	}
	ss.use(e)
	ss.fresh = true
	return nil
}

// refresh continues with the context as cached now, which another request of this replica read
// again after changing it, or as read from the database when the cache holds no newer copy.
func (ss *session) refresh(ctx context.Context) error {
	e, err := ss.s.load(ctx, ss.c.TenantID, ss.id, false)
	if err != nil {
		return err
	}
	if e == ss.e {
		return ss.reload(ctx)
	}
	ss.use(e)
	return nil
}

// use continues the session with e, a newer copy of its context.
func (ss *session) use(e *entry) {
	if ss.e != nil && !bytes.Equal(ss.e.enc.SealingPublicKey, e.enc.SealingPublicKey) {
		clear(ss.priv)
		ss.priv, ss.privErr = nil, nil
	}
	ss.e = e
}

// version returns version id of the context, reading the context again once if the cached copy
// lacks it (another replica may have rotated since).
func (ss *session) version(ctx context.Context, id uuid.UUID) (postgres.KeyVersion, error) {
	if v, ok := ss.e.version(id); ok {
		return v, nil
	}
	if !ss.fresh {
		if err := ss.reload(ctx); err != nil {
			return postgres.KeyVersion{}, err
		}
		if v, ok := ss.e.version(id); ok {
			return v, nil
		}
	}
	return postgres.KeyVersion{}, errs.E(errs.NotFound, "version %s of key context %s not found", id, ss.id)
}

// checkMode refuses a caller whose client master key does not fit the context's key mode: a
// PLATFORM context refuses one (Invalid), a CLIENT context needs one (Unauthenticated). It reads
// nothing and changes nothing.
func (ss *session) checkMode() error {
	enc := ss.e.enc
	switch {
	case enc.KeyMode == ModePlatform && ss.c.MasterKey != nil:
		return errPlatformWithMasterKey(enc.ID)
	case enc.KeyMode == ModeClient && ss.c.MasterKey == nil:
		return errs.E(errs.Unauthenticated,
			"key context %s is zero-knowledge (CLIENT): send its client master key in X-Master-Key", enc.ID)
	}
	return nil
}

// unlock checks the caller's key (checkMode) and, for a CLIENT context, unwraps the private
// sealing key with it, once per session: a wrong client master key is PermissionDenied. The first
// unwrap binds a legacy context's public keys (bindLegacy).
func (ss *session) unlock(ctx context.Context) error {
	if err := ss.checkMode(); err != nil {
		return err
	}
	if ss.e.enc.KeyMode == ModePlatform {
		return nil
	}
	if ss.priv == nil && ss.privErr == nil {
		var legacy bool
		ss.priv, legacy, ss.privErr = ss.s.unwrapSealingKey(ss.e.enc, ss.c.MasterKey)
		if ss.privErr == nil {
			// The client master key can check what legacy rows left unbound: do, and bind it.
			if ss.privErr = ss.s.bindLegacy(ctx, ss.c, ss.e, ss.priv, legacy); ss.privErr != nil {
				clear(ss.priv)
				ss.priv = nil
			}
		}
	}
	return ss.privErr
}

// prepare returns version v's associated data and cipher: the cached cipher for a PLATFORM
// context, or for a CLIENT context one opened with the caller's client master key for this session
// only. The caller's key is checked first (unlock).
func (ss *session) prepare(ctx context.Context, v postgres.KeyVersion) ([]byte, aead.Cipher, error) {
	enc := ss.e.enc
	if v.Material == nil {
		return nil, nil, errDestroyed(v, enc.ID)
	}
	for i := range ss.prepared {
		if p := &ss.prepared[i]; p.id == v.ID {
			return p.ad, p.cipher, nil
		}
	}
	if err := ss.unlock(ctx); err != nil {
		return nil, nil, err
	}
	var c aead.Cipher
	var ad []byte
	var err error
	if enc.KeyMode == ModePlatform {
		c, ad, err = ss.s.platformCipher(ss.e, v)
	} else {
		c, err = ss.s.clientCipher(enc, v, ss.priv)
	}
	if err != nil {
		return nil, nil, err
	}
	if ad == nil {
		ad = associatedData(enc, v.ID)
	}
	ss.prepared = append(ss.prepared, prepared{id: v.ID, ad: ad, cipher: c})
	return ad, c, nil
}

// decrypt is Decrypt within the session.
func (ss *session) decrypt(ctx context.Context, versionID uuid.UUID, ciphertext []byte, meta aead.Metadata) ([]byte, error) {
	if ss.err != nil {
		return nil, ss.err
	}
	v, err := ss.version(ctx, versionID)
	if err != nil {
		return nil, err
	}
	switch v.State {
	case StateActive, StateDecryptOnly:
	case StateDisabled:
		return nil, errs.E(errs.FailedPrecondition, "version %d of key context %s is disabled: enable it to decrypt", v.Version, ss.id)
	default:
		return nil, errDestroyed(v, ss.id)
	}
	if err := meta.Check(ss.e.enc.Algorithm); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "metadata."+metadataProblem(err))
	}
	ad, ciph, err := ss.prepare(ctx, v)
	if err != nil {
		return nil, err
	}
	pt, err := ciph.Decrypt(ciphertext, meta, ad)
	if err != nil {
		return nil, errs.E(errs.Invalid,
			"cipherText does not authenticate under version %d of key context %s: it was altered, truncated, or encrypted under another context or version",
			v.Version, ss.id)
	}
	return pt, nil
}

// encrypt is Encrypt within the session, without the size check (rewrap encrypts data that was
// accepted before). Every check of the caller — the client master key, the version named — comes
// before anything changes: a refused request never rotates a due version.
func (ss *session) encrypt(ctx context.Context, versionID uuid.NullUUID, data []byte) (Encrypted, error) {
	if ss.err != nil {
		return Encrypted{}, ss.err
	}
	if err := ss.checkMode(); err != nil {
		return Encrypted{}, err
	}
	if err := ss.checkVersion(ctx, versionID); err != nil {
		return Encrypted{}, err
	}
	if err := ss.unlock(ctx); err != nil {
		return Encrypted{}, err
	}
	v, slot, err := ss.reserve(ctx, versionID)
	if err != nil {
		return Encrypted{}, err
	}
	ad, ciph, err := ss.prepare(ctx, v)
	if err != nil {
		slot.made.Add(-1)
		return Encrypted{}, err
	}
	ct, meta, err := ciph.Encrypt(data, ad)
	if err != nil {
		slot.made.Add(-1)
		return Encrypted{}, errs.Wrap(errs.Internal, err, "encrypt")
	}
	return Encrypted{CipherText: ct, VersionID: v.ID, Algorithm: ss.e.enc.Algorithm, Metadata: meta}, nil
}

// rewrap is Rewrap within the session.
func (ss *session) rewrap(ctx context.Context, versionID uuid.UUID, ciphertext []byte, meta aead.Metadata) (Encrypted, error) {
	pt, err := ss.decrypt(ctx, versionID, ciphertext, meta)
	if err != nil {
		return Encrypted{}, err
	}
	defer clear(pt)
	return ss.encrypt(ctx, uuid.NullUUID{}, pt)
}

// checkVersion checks that versionID, when given, names the context's active version, reading the
// context again once when the cached copy lacks it (another replica may have rotated since).
// Errors: NotFound for a version the context does not have (the nil UUID among them);
// FailedPrecondition for one that no longer encrypts, or a context without an active version.
func (ss *session) checkVersion(ctx context.Context, versionID uuid.NullUUID) error {
	v, ok := ss.e.active()
	if !ok {
		return errNoActive(ss.id)
	}
	if !versionID.Valid || versionID.UUID == v.ID {
		return nil
	}
	named, err := ss.version(ctx, versionID.UUID)
	if err != nil {
		return err
	}
	if named.State != StateActive {
		return errNoLongerEncrypts(named, ss.id)
	}
	return nil // active in a fresher copy of the context
}

func errNoActive(encryptionID uuid.UUID) error {
	return errs.E(errs.FailedPrecondition, "key context %s has no active version", encryptionID)
}

func errNoLongerEncrypts(v postgres.KeyVersion, encryptionID uuid.UUID) error {
	return errs.E(errs.FailedPrecondition,
		"version %d of key context %s is %s and no longer encrypts: omit encryptionVersionId to use the active version",
		v.Version, encryptionID, v.State)
}

func errDestroyed(v postgres.KeyVersion, encryptionID uuid.UUID) error {
	return errs.E(errs.FailedPrecondition,
		"version %d of key context %s is destroyed: its key material is erased and its data is unrecoverable", v.Version, encryptionID)
}

// EncryptItem is one item of EncryptBatch: Encrypt's arguments.
type EncryptItem struct {
	EncryptionID uuid.UUID
	VersionID    uuid.NullUUID // not Valid: the active version
	Data         []byte
}

// DecryptItem is one item of DecryptBatch and RewrapBatch: Decrypt's arguments.
type DecryptItem struct {
	EncryptionID, VersionID uuid.UUID
	CipherText              []byte
	Metadata                aead.Metadata
}

// EncryptBatch encrypts every item as Encrypt does: results[i] is items[i]'s result when
// failures[i] is nil. One item's failure does not affect the others. Each context is read at most
// once (all that the cache misses, in one query) and a CLIENT context's private key is unwrapped
// once, whatever the number of items. Like Encrypt, it only reads the items' data.
func (s *Service) EncryptBatch(ctx context.Context, c Caller, items []EncryptItem) (results []Encrypted, failures []error) {
	ids := make([]uuid.UUID, len(items))
	for i, it := range items {
		ids[i] = it.EncryptionID
	}
	sessions := s.sessions(ctx, c, ids)
	defer closeAll(sessions)
	results, failures = make([]Encrypted, len(items)), make([]error, len(items))
	for i, it := range items {
		if failures[i] = s.checkDataSize(it.Data); failures[i] != nil {
			continue
		}
		results[i], failures[i] = sessions[it.EncryptionID].encrypt(ctx, it.VersionID, it.Data)
	}
	return results, failures
}

// DecryptBatch decrypts every item as Decrypt does: data[i] is items[i]'s data when failures[i] is
// nil. One item's failure does not affect the others; contexts and keys are loaded as by
// EncryptBatch.
func (s *Service) DecryptBatch(ctx context.Context, c Caller, items []DecryptItem) (data [][]byte, failures []error) {
	sessions := s.sessions(ctx, c, decryptIDs(items))
	defer closeAll(sessions)
	data, failures = make([][]byte, len(items)), make([]error, len(items))
	for i, it := range items {
		data[i], failures[i] = sessions[it.EncryptionID].decrypt(ctx, it.VersionID, it.CipherText, it.Metadata)
	}
	return data, failures
}

// RewrapBatch rewraps every item as Rewrap does: results[i] is items[i]'s result when failures[i]
// is nil. One item's failure does not affect the others; contexts and keys are loaded as by
// EncryptBatch.
func (s *Service) RewrapBatch(ctx context.Context, c Caller, items []DecryptItem) (results []Encrypted, failures []error) {
	sessions := s.sessions(ctx, c, decryptIDs(items))
	defer closeAll(sessions)
	results, failures = make([]Encrypted, len(items)), make([]error, len(items))
	for i, it := range items {
		results[i], failures[i] = sessions[it.EncryptionID].rewrap(ctx, it.VersionID, it.CipherText, it.Metadata)
	}
	return results, failures
}

func decryptIDs(items []DecryptItem) []uuid.UUID {
	ids := make([]uuid.UUID, len(items))
	for i, it := range items {
		ids[i] = it.EncryptionID
	}
	return ids
}

func closeAll(sessions map[uuid.UUID]*session) {
	for _, ss := range sessions {
		ss.close()
	}
}

// associatedData is the associated data of every ciphertext of version v of enc.
func associatedData(enc postgres.Encryption, v uuid.UUID) []byte {
	return aead.AssociatedData(enc.TenantID.String(), enc.ID.String(), v.String(), enc.Algorithm)
}
