// Package keyring is the encryption service's key hierarchy: tenants' key contexts, their
// versioned data keys, and the master keys that wrap them.
//
// Every version's key material is stored only wrapped:
//
//	PLATFORM context:  version key ──AES-256-GCM──▶ platform master key (id stored per row)
//	CLIENT context:    version key ──HPKE seal──▶ context's X25519 public key
//	                   X25519 private key ──AES-256-GCM──▶ HKDF(client master key, tenant, context)
//	                   and each of those blobs once more ──AES-256-GCM──▶ platform master key
//
// So a CLIENT context rotates without the client master key (a new version is sealed to the public
// half), opening any of its versions needs the client master key (to unwrap the private half), a
// wrong client key fails authentication of the private half (PermissionDenied), and a database
// dump alone cannot even start guessing passwords offline (every blob is also under the platform
// key). Changing the client master key replaces the key pair: every version's key is opened with
// the old private half and sealed to a new pair whose private half the new client key wraps, so
// nothing the old client key unwraps stays in use.
//
// Public keys are stored in clear but authenticated under the platform master key: the platform
// wrapping of a CLIENT context's private sealing key binds the SHA-256 of its public half, and that
// of an RSA version's private key the SHA-256 of its public key (see sealingWrapAD and
// versionWrapAD). A public key altered in the database therefore fails before it is used to seal a
// new version or served by GetEncryption, even to someone who can write the database but holds no
// platform master key. Blobs written before that binding (legacy: they authenticate under the
// unbound associated data only) are still read. A PLATFORM RSA version's is bound when a platform
// master-key rotation rewrites it, once its public key matches its private key; a CLIENT context's
// keep the unbound associated data through master-key rotations and are bound only when the client
// master key is presented and the public keys have been checked against the private halves
// (bindLegacy, on first use, or a client master-key change).
//
// Ciphertexts are bound to tenant, context, version and algorithm through the AEAD's associated
// data (aead.AssociatedData), so a ciphertext moved anywhere else fails to decrypt.
//
// Versions go ACTIVE → DECRYPT_ONLY (rotation) → DISABLED ⇄ DECRYPT_ONLY → DESTROYED (key material
// erased). A context rotates by itself by age and by encryptions per version (RotationPolicy, and
// the service-wide bound that keeps random 96-bit GCM nonces far from a collision). Platform
// master-key rotation (RotateMasterKey) rewraps the outer layer of every stored blob, keeping its
// associated data. Batches (EncryptBatch, DecryptBatch, RewrapBatch) read each context and unwrap
// each key once per request, not per item.
//
// All errors are *errs.Error values; their messages name the context or version concerned and never
// hold plaintext, keys or secrets.
package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/errs"
	"github.com/custos-platform/custos/encryption-service/internal/keywrap"
	"github.com/custos-platform/custos/encryption-service/internal/masterkey"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// Key modes and version states, as stored and as shown on the wire.
const (
	ModePlatform = "PLATFORM"
	ModeClient   = "CLIENT"

	StateActive      = "ACTIVE"
	StateDecryptOnly = "DECRYPT_ONLY"
	StateDisabled    = "DISABLED"
	StateDestroyed   = "DESTROYED"
)

// Counter counts events, such as key cache hits, for metrics.
type Counter interface{ Inc() }

type noCounter struct{}

func (noCounter) Inc() {}

// Store is what the keyring needs from the database.
type Store interface {
	CreateEncryption(ctx context.Context, e postgres.Encryption, first postgres.KeyVersion, audit postgres.AuditEvent) error
	GetEncryption(ctx context.Context, tenantID, encryptionID uuid.UUID) (postgres.Encryption, error)
	Rotate(ctx context.Context, tenantID, encryptionID uuid.UUID,
		newVersion func(e postgres.Encryption, version int) (postgres.KeyVersion, error),
		audit postgres.AuditEvent) (postgres.KeyVersion, error)
	AddEncryptions(ctx context.Context, counts map[uuid.UUID]int64) error

	GetEncryptions(ctx context.Context, tenantID uuid.UUID, ids []uuid.UUID) ([]postgres.Encryption, error)
	RotateIfActive(ctx context.Context, tenantID, encryptionID, expectedActive uuid.UUID,
		newVersion func(e postgres.Encryption, version int) (postgres.KeyVersion, error),
		audit postgres.AuditEvent) (postgres.KeyVersion, bool, error)
	DueByEncryptions(ctx context.Context, versionIDs []uuid.UUID, bound int64) ([]postgres.DueVersion, error)
	SetRotationPolicy(ctx context.Context, tenantID, encryptionID uuid.UUID, maxAge time.Duration, maxEncryptions int64, audit postgres.AuditEvent) error
	SetVersionState(ctx context.Context, tenantID, encryptionID, versionID uuid.UUID, state string, audit postgres.AuditEvent) (postgres.KeyVersion, error)
	DestroyEncryption(ctx context.Context, tenantID, encryptionID uuid.UUID, audit postgres.AuditEvent) (int, error)
	ChangeSealingKey(ctx context.Context, tenantID, encryptionID uuid.UUID,
		change func(e postgres.Encryption) (postgres.SealingKeyChange, error), audit postgres.AuditEvent) (postgres.Encryption, error)
	BindLegacyKeys(ctx context.Context, tenantID, encryptionID uuid.UUID,
		bind func(e postgres.Encryption) (postgres.LegacyBinding, error), audit postgres.AuditEvent) (bool, error)
}

var _ Store = (*postgres.Store)(nil)

// Caller is who makes a request: an authenticated tenant, and the client master keys if the
// request carried them. MasterKey and NewMasterKey are never stored, logged or kept beyond the
// request.
type Caller struct {
	TenantID uuid.UUID
	// Actor names the caller in the audit trail (e.g. "admin:<CN>"); when empty, SecretID does:
	// "tenant:<secret id>", formatted only when an event is written.
	Actor     string
	SecretID  uuid.UUID // the tenant secret the call authenticated with
	RequestID string
	MasterKey []byte // 32 bytes, or nil when the request carried none
	// NewMasterKey is the client master key a ChangeMasterKey call changes to (X-New-Master-Key):
	// 32 bytes, or nil.
	NewMasterKey []byte
}

// DefaultMaxEncryptionsPerVersion is the default and highest service-wide bound on the
// encryptions one key version makes before it is rotated: 2^31. AES-256-GCM with random 96-bit
// nonces must stay below 2^32 encryptions under one key (NIST SP 800-38D, section 8.3); counts
// reach the database only once a second from each replica, so a version may overshoot the bound by
// a few seconds of traffic, and 2^31 leaves all of the other 2^31 for that.
const DefaultMaxEncryptionsPerVersion = 1 << 31

// Options tune a Service. Zero values mean the defaults.
type Options struct {
	MaxDataBytes    int           // largest plaintext accepted by Encrypt (default 1 MiB)
	CacheMaxAge     time.Duration // upper bound on how long a context stays cached (default 5 min)
	CacheMaxEntries int           // default 100,000
	Rand            io.Reader     // default crypto/rand
	Now             func() time.Time
	Logger          *slog.Logger
	// MaxEncryptionsPerVersion bounds the encryptions of every key version, whatever its context's
	// rotation policy: a version that reached it is rotated (default and at most
	// DefaultMaxEncryptionsPerVersion).
	MaxEncryptionsPerVersion int64
	// CacheHits and CacheMisses count lookups of key contexts in the cache (nil: not counted).
	CacheHits, CacheMisses Counter
}

// Service performs key-context operations for tenants.
type Service struct {
	store         Store
	masterKeys    *masterkey.Keyring
	rand          io.Reader
	now           func() time.Time
	maxDataBytes  int
	maxPerVersion int64
	cache         *cache
	counts        tally
	log           *slog.Logger
	hits, misses  Counter
}

// New returns a Service over store wrapping new key material under masterKeys' active key.
// masterKeys may be nil for a Service that only changes key versions' states (the version
// command): every operation that needs a master key then fails with Unavailable.
func New(store Store, masterKeys *masterkey.Keyring, opts Options) *Service {
	if opts.MaxDataBytes <= 0 {
		opts.MaxDataBytes = 1 << 20
	}
	if opts.MaxEncryptionsPerVersion <= 0 || opts.MaxEncryptionsPerVersion > DefaultMaxEncryptionsPerVersion {
		opts.MaxEncryptionsPerVersion = DefaultMaxEncryptionsPerVersion
	}
	if opts.CacheMaxAge <= 0 {
		opts.CacheMaxAge = 5 * time.Minute
	}
	if opts.CacheMaxEntries <= 0 {
		opts.CacheMaxEntries = 100_000
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		store:         store,
		masterKeys:    masterKeys,
		rand:          opts.Rand,
		now:           opts.Now,
		maxDataBytes:  opts.MaxDataBytes,
		maxPerVersion: opts.MaxEncryptionsPerVersion,
		cache:         newCache(opts.CacheMaxAge, opts.CacheMaxEntries, opts.Now),
		log:           opts.Logger,
		hits:          orNoCounter(opts.CacheHits),
		misses:        orNoCounter(opts.CacheMisses),
	}
}

func orNoCounter(c Counter) Counter {
	if c == nil {
		return noCounter{}
	}
	return c
}

// Invalidate drops a key context from the cache; the change listener calls it when any replica
// changed the context.
func (s *Service) Invalidate(encryptionID uuid.UUID) { s.cache.invalidate(encryptionID) }

// InvalidateTenant drops every cached key context of a tenant; the change listener calls it when
// any replica changed the tenant (a destroyed tenant's contexts are all destroyed).
func (s *Service) InvalidateTenant(tenantID uuid.UUID) { s.cache.invalidateTenant(tenantID) }

// ResetCache drops every cached context; the change listener calls it after (re)connecting, when
// it cannot know what it missed.
func (s *Service) ResetCache() { s.cache.reset() }

// Hearing tells the cache whether the change listener is connected: while it is not, cached key
// contexts are trusted for postgres.UnheardMaxAge only. A new Service is not hearing until told.
func (s *Service) Hearing(on bool) { s.cache.hearing.Store(on) }

// Created is the result of CreateEncryption.
type Created struct {
	EncryptionID, VersionID uuid.UUID
	Algorithm, KeyMode      string
}

// CreateEncryption creates a key context with its first, active version and rotation policy p
// (the zero policy: the service's bound only). algorithm "" means AES-256-GCM and mode "" means
// PLATFORM. A CLIENT context needs c.MasterKey (Unauthenticated without it); a PLATFORM context
// refuses one (Invalid); a policy out of bounds is Invalid (see SetRotationPolicy).
func (s *Service) CreateEncryption(ctx context.Context, c Caller, algorithm, mode string, p RotationPolicy) (Created, error) {
	if algorithm == "" {
		algorithm = aead.AES256GCM
	}
	if mode == "" {
		mode = ModePlatform
	}
	if !validAlgorithm(algorithm) {
		return Created{}, errs.E(errs.Invalid, "algorithm: want one of %v, got %s", aead.Algorithms(), quoteShort(algorithm))
	}
	if err := s.checkPolicy(p); err != nil {
		return Created{}, err
	}
	enc := postgres.Encryption{
		ID:                     uuid.New(),
		TenantID:               c.TenantID,
		Algorithm:              algorithm,
		KeyMode:                mode,
		RotationMaxAge:         p.MaxAge,
		RotationMaxEncryptions: p.MaxEncryptions,
	}
	switch mode {
	case ModePlatform:
		if c.MasterKey != nil {
			return Created{}, errs.E(errs.Invalid,
				"X-Master-Key must not be sent to create a PLATFORM key context, whose keys are platform-managed: send it only with keyMode CLIENT")
		}
	case ModeClient:
		if c.MasterKey == nil {
			return Created{}, errs.E(errs.Unauthenticated,
				"a CLIENT key context needs the client master key: send it in X-Master-Key")
		}
		priv, pub, err := keywrap.NewSealingKey(s.rand)
		if err != nil {
			return Created{}, errs.Wrap(errs.Internal, err, "generate sealing key")
		}
		enc.SealingPublicKey = pub
		wrapped, err := s.wrapSealingKey(enc, c.MasterKey, priv)
		clear(priv)
		if err != nil {
			return Created{}, err
		}
		enc.SealingPrivateKey = &wrapped
	default:
		return Created{}, errs.E(errs.Invalid, "keyMode: want PLATFORM or CLIENT, got %s", quoteShort(mode))
	}
	first, err := s.newVersion(enc, 1)
	if err != nil {
		return Created{}, err
	}
	audit := s.audit(c, "encryption.create", &enc.ID, &first.ID)
	if err := s.store.CreateEncryption(ctx, enc, first, audit); err != nil {
		return Created{}, err
	}
	return Created{EncryptionID: enc.ID, VersionID: first.ID, Algorithm: algorithm, KeyMode: mode}, nil
}

// GetEncryption returns a key context of the caller's tenant with its versions (never key
// material), read from the database: its encryption counts include every replica's flushed counts
// and this replica's pending ones. Each RSA version's public key is checked against its key
// material under the platform master key (see checkPublicKeys) before it is returned; a DESTROYED
// version's, which nothing can check any more, is left out. Errors: Invalid when c carries a
// client master key and the context is PLATFORM; NotFound for an unknown, destroyed or other
// tenant's context; Internal for a public key that does not authenticate (the database was
// altered); Unavailable when a platform master key it needs is not configured.
func (s *Service) GetEncryption(ctx context.Context, c Caller, encryptionID uuid.UUID) (postgres.Encryption, error) {
	if err := s.FlushCounts(ctx); err != nil {
		s.log.Warn("keyring: flush of encryption counts failed", "error", err)
	}
	e, err := s.load(ctx, c.TenantID, encryptionID, true)
	if err != nil {
		return postgres.Encryption{}, err
	}
	if err := refusePlatformMasterKey(c, e.enc); err != nil {
		return postgres.Encryption{}, err
	}
	enc := e.enc // the cache's copy is shared: the versions are copied before they change
	if enc.Versions, err = s.checkPublicKeys(enc, slices.Clone(enc.Versions)); err != nil {
		return postgres.Encryption{}, err
	}
	return enc, nil
}

// refuseMasterKeyOnPlatform fails with Invalid when c carries a client master key and key context
// encryptionID is PLATFORM: the header must not be sent for it, whatever the method. A context
// that cannot be read gets its error (NotFound for an unknown one). Without a client master key it
// reads nothing. The key mode never changes, so the cache's copy is enough.
func (s *Service) refuseMasterKeyOnPlatform(ctx context.Context, c Caller, encryptionID uuid.UUID) error {
	if c.MasterKey == nil {
		return nil
	}
	e, err := s.load(ctx, c.TenantID, encryptionID, false)
	if err != nil {
		return err
	}
	return refusePlatformMasterKey(c, e.enc)
}

func refusePlatformMasterKey(c Caller, enc postgres.Encryption) error {
	if c.MasterKey != nil && enc.KeyMode == ModePlatform {
		return errPlatformWithMasterKey(enc.ID)
	}
	return nil
}

// Rotate makes a new active version; the previous active one becomes DECRYPT_ONLY. It needs no
// client master key, also for CLIENT contexts; for a PLATFORM context one is refused (Invalid).
// Concurrent rotations serialize in the database and yield consecutive versions. A CLIENT
// context's sealing public key must authenticate under the platform master key before the new
// version is sealed to it (Internal otherwise).
func (s *Service) Rotate(ctx context.Context, c Caller, encryptionID uuid.UUID) (uuid.UUID, error) {
	if err := s.refuseMasterKeyOnPlatform(ctx, c, encryptionID); err != nil {
		return uuid.Nil, err
	}
	audit := s.audit(c, "encryption.rotate", &encryptionID, nil)
	v, err := s.store.Rotate(ctx, c.TenantID, encryptionID, s.newVersion, audit)
	if err != nil {
		return uuid.Nil, err
	}
	s.cache.invalidate(encryptionID)
	return v.ID, nil
}

// Encrypted is the result of Encrypt and Rewrap.
type Encrypted struct {
	CipherText []byte
	VersionID  uuid.UUID
	Algorithm  string
	Metadata   aead.Metadata
}

// Encrypt encrypts data under the context's active version. A valid versionID must name that
// version: an unknown one (the nil UUID among them) is NotFound, a DECRYPT_ONLY, DISABLED or
// DESTROYED one FailedPrecondition. When the active version is due for rotation (its context's
// policy or the service's bound), it is rotated first and the new version encrypts; concurrent
// encryptions of this replica wait for that rotation rather than pass the bound (see reserve).
// Data over the size limit is Invalid; a client master key that does not fit the context's key
// mode is Invalid (PLATFORM), Unauthenticated (CLIENT, missing) or PermissionDenied (CLIENT,
// wrong). Every check of the caller comes first: a refused request changes nothing, not even the
// rotation of a due version. Encrypt only reads data: it never changes or keeps it, so callers may
// pass the bytes of a string.
func (s *Service) Encrypt(ctx context.Context, c Caller, encryptionID uuid.UUID, versionID uuid.NullUUID, data []byte) (Encrypted, error) {
	if err := s.checkDataSize(data); err != nil {
		return Encrypted{}, err
	}
	ss := s.session(ctx, c, encryptionID)
	defer ss.close()
	return ss.encrypt(ctx, versionID, data)
}

// Lengths of the data keys GenerateDataKey makes: AES-128, AES-192 and AES-256 (or
// XChaCha20-Poly1305) keys.
var dataKeyBytes = map[int]bool{16: true, 24: true, 32: true}

// GenerateDataKey makes a random key of n bytes (16, 24 or 32) and encrypts its standard base64
// text under the context's active version exactly as Encrypt would, so that Decrypt of the copy
// returns that text. It returns the text, which the caller clears once it has answered, and the
// copy. The data size limit does not apply: the key is the service's, at most 44 bytes of text,
// whatever the limit on callers' data. Errors: Invalid for another n (naming keyBytes); otherwise
// Encrypt's, checked in the same order.
func (s *Service) GenerateDataKey(ctx context.Context, c Caller, encryptionID uuid.UUID, n int) ([]byte, Encrypted, error) {
	if !dataKeyBytes[n] {
		return nil, Encrypted{}, errs.E(errs.Invalid, "keyBytes: want 16, 24 or 32, got %d", n)
	}
	raw := make([]byte, n)
	defer clear(raw)
	if _, err := io.ReadFull(s.rand, raw); err != nil {
		return nil, Encrypted{}, errs.Wrap(errs.Internal, err, "generate data key")
	}
	text := make([]byte, base64.StdEncoding.EncodedLen(n))
	base64.StdEncoding.Encode(text, raw)
	ss := s.session(ctx, c, encryptionID)
	defer ss.close()
	enc, err := ss.encrypt(ctx, uuid.NullUUID{}, text)
	if err != nil {
		clear(text)
		return nil, Encrypted{}, err
	}
	return text, enc, nil
}

// Decrypt returns the data that Encrypt was given. Metadata malformed for the context's algorithm (Metadata.Check) gets Invalid naming the field; a ciphertext that does not authenticate —
// altered, truncated, or moved from another tenant, context or version — gets Invalid; a DISABLED or
// DESTROYED version gets FailedPrecondition.
func (s *Service) Decrypt(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID, ciphertext []byte, meta aead.Metadata) ([]byte, error) {
	ss := s.session(ctx, c, encryptionID)
	defer ss.close()
	return ss.decrypt(ctx, versionID, ciphertext, meta)
}

// Rewrap decrypts ciphertext as Decrypt does and encrypts the data again under the context's
// active version as Encrypt does (rotating first when it is due); the data never leaves the
// service. Errors are Decrypt's and Encrypt's. A CLIENT context's private key is unwrapped once.
func (s *Service) Rewrap(ctx context.Context, c Caller, encryptionID, versionID uuid.UUID, ciphertext []byte, meta aead.Metadata) (Encrypted, error) {
	ss := s.session(ctx, c, encryptionID)
	defer ss.close()
	return ss.rewrap(ctx, versionID, ciphertext, meta)
}

func (s *Service) checkDataSize(data []byte) error {
	if len(data) > s.maxDataBytes {
		return errs.E(errs.Invalid, "data: %d bytes is over the limit of %d bytes", len(data), s.maxDataBytes)
	}
	return nil
}

// metadataProblem is the safe part of an aead.Metadata.Check error: the field and what is wrong
// with it ("nonce: want 12 bytes, got 11"), without the package's prefix. The metadata holds no
// secrets (nonces and encrypted keys are public) and Check never quotes values, but keep it short.
func metadataProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), aead.ErrMetadata.Error()+": ")
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

// load returns the cached entry for the context, reading it when missing or when fresh is set.
// Another tenant's context gets the same NotFound as an unknown one.
func (s *Service) load(ctx context.Context, tenantID, encryptionID uuid.UUID, fresh bool) (*entry, error) {
	if !fresh {
		if e, ok := s.cache.get(encryptionID); ok {
			s.hits.Inc()
			if e.enc.TenantID != tenantID {
				return nil, errNotFound(encryptionID)
			}
			return e, nil
		}
		s.misses.Inc()
	}
	gen := s.cache.generation()
	noted := s.counts.noteFlushed(encryptionID, s.now())
	enc, err := s.store.GetEncryption(ctx, tenantID, encryptionID)
	if err != nil {
		return nil, err
	}
	return s.cache.putEntry(gen, s.entryOf(enc, noted)), nil
}

// entryOf returns a cache entry for enc, bound to this replica's count of its active version;
// noted is what tally.noteFlushed returned before enc was read from the database.
func (s *Service) entryOf(enc postgres.Encryption, noted map[uuid.UUID]int64) *entry {
	e := newEntry(enc)
	if v, ok := e.active(); ok {
		e.count = s.counts.version(enc.ID, v.ID, s.now())
		e.base = v.Encryptions - noted[v.ID]
	}
	return e
}

// platformCipher returns the cached cipher of version v of a PLATFORM context, building it on
// first use.
func (s *Service) platformCipher(e *entry, v postgres.KeyVersion) (aead.Cipher, []byte, error) {
	return e.cipher(v.ID, func() (aead.Cipher, error) {
		key, _, err := s.unwrapVersion(e.enc, v)
		if err != nil {
			return nil, err
		}
		defer clear(key)
		return newCipher(e.enc.Algorithm, key)
	})
}

// clientCipher builds the cipher of version v of a CLIENT context from the context's unwrapped
// private sealing key.
func (s *Service) clientCipher(enc postgres.Encryption, v postgres.KeyVersion, priv []byte) (aead.Cipher, error) {
	sealed, _, err := s.unwrapVersion(enc, v)
	if err != nil {
		return nil, err
	}
	key, err := keywrap.Open(priv, sealed, versionAD(enc, v.ID))
	clear(sealed)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, fmt.Sprintf("open version %d of key context %s", v.Version, enc.ID))
	}
	defer clear(key)
	return newCipher(enc.Algorithm, key)
}

// newVersion makes fresh key material for version n of enc and wraps it: under the platform master
// key for PLATFORM contexts, sealed to the context's public key (then under the platform key) for
// CLIENT ones, once that public key has authenticated (checkSealingPublicKey). An RSA version's
// wrapping binds its public key (versionWrapAD).
func (s *Service) newVersion(enc postgres.Encryption, n int) (postgres.KeyVersion, error) {
	v := postgres.KeyVersion{ID: uuid.New(), EncryptionID: enc.ID, Version: n, State: StateActive}
	if enc.KeyMode == ModeClient {
		if err := s.checkSealingPublicKey(enc); err != nil {
			return v, err
		}
	}
	key, err := aead.NewKey(enc.Algorithm, s.rand)
	if err != nil {
		return v, errs.Wrap(errs.Internal, err, "generate key")
	}
	defer clear(key)
	if enc.Algorithm == aead.RSAOAEP3072SHA256 {
		pemKey, err := aead.PublicKeyPEM(enc.Algorithm, key)
		if err != nil {
			return v, errs.Wrap(errs.Internal, err, "derive public key")
		}
		v.PublicKey = []byte(pemKey)
	}
	wrapped, err := s.wrapVersion(enc, v, enc.SealingPublicKey, key)
	if err != nil {
		return v, err
	}
	v.Material = &wrapped
	return v, nil
}

// wrapVersion stores key, version v's key, as its key material: for a CLIENT context sealed to
// sealingPublic first, then under the platform master key, bound to v's public key.
func (s *Service) wrapVersion(enc postgres.Encryption, v postgres.KeyVersion, sealingPublic, key []byte) (postgres.WrappedKey, error) {
	material := key
	if enc.KeyMode == ModeClient {
		sealed, err := keywrap.Seal(sealingPublic, key, versionAD(enc, v.ID))
		if err != nil {
			return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err, "seal version key")
		}
		material = sealed
	}
	return s.wrapPlatform(material, versionWrapAD(enc, v))
}

// unwrapVersion removes the platform master key's wrapping of version v's key material: the key
// itself for a PLATFORM context, the sealed key for a CLIENT one. legacy reports a blob written
// before public keys were bound, which authenticated under the unbound associated data only.
func (s *Service) unwrapVersion(enc postgres.Encryption, v postgres.KeyVersion) (out []byte, legacy bool, err error) {
	if v.Material == nil {
		return nil, false, errDestroyed(v, enc.ID)
	}
	if enc.Algorithm != aead.RSAOAEP3072SHA256 {
		out, err = s.unwrapPlatform(*v.Material, versionAD(enc, v.ID))
		return out, false, err
	}
	return s.unwrapBound(*v.Material, versionWrapAD(enc, v), versionAD(enc, v.ID))
}

// unwrapBound unwraps w under ad or, failing that, under legacyAD, the associated data of blobs
// written before public keys were bound; legacy reports the latter. A missing master key is not
// retried.
func (s *Service) unwrapBound(w postgres.WrappedKey, ad, legacyAD []byte) (out []byte, legacy bool, err error) {
	out, err = s.unwrapPlatform(w, ad)
	if err == nil || errs.KindOf(err) != errs.Internal {
		return out, false, err
	}
	out, legacyErr := s.unwrapPlatform(w, legacyAD)
	if legacyErr != nil {
		return nil, false, err
	}
	return out, true, nil
}

// checkSealingPublicKey fails with Internal unless enc's sealing public key is the one its
// wrapped private half was stored with: the platform wrapping of the private half binds the public
// half's hash (sealingWrapAD), so a public key replaced in the database fails here, before a new
// version is sealed to it. A legacy blob (written before the binding) binds nothing and passes;
// the private half is checked against it whenever the client master key unwraps it, which then
// binds it (bindLegacy).
func (s *Service) checkSealingPublicKey(enc postgres.Encryption) error {
	if enc.SealingPrivateKey == nil {
		return errs.E(errs.Internal, "key context %s has no sealing key", enc.ID)
	}
	inner, _, err := s.unwrapBound(*enc.SealingPrivateKey, sealingWrapAD(enc), sealingAD(enc))
	if err != nil {
		return errAltered(err, "the sealing public key of key context "+enc.ID.String())
	}
	clear(inner)
	return nil
}

// checkPublicKeys returns versions, versions of enc, with each RSA version's public key checked:
// its key material must authenticate under the platform master key with the public key bound
// (versionWrapAD); a legacy blob of a PLATFORM context, which binds nothing, must hold the private
// key the public key derives from. A legacy blob of a CLIENT context cannot be checked without the
// client master key and passes (the client master key checks and binds it at its next use,
// bindLegacy; a platform master-key rotation leaves it legacy). A DESTROYED version's public key, which nothing can check any more
// (and to which nothing should encrypt), is left out. versions is changed in place.
func (s *Service) checkPublicKeys(enc postgres.Encryption, versions []postgres.KeyVersion) ([]postgres.KeyVersion, error) {
	for i := range versions {
		v := &versions[i]
		if len(v.PublicKey) == 0 {
			continue
		}
		if v.Material == nil {
			v.PublicKey = nil
			continue
		}
		if err := s.checkPublicKey(enc, *v); err != nil {
			return nil, err
		}
	}
	return versions, nil
}

func (s *Service) checkPublicKey(enc postgres.Encryption, v postgres.KeyVersion) error {
	what := fmt.Sprintf("the public key of version %d of key context %s", v.Version, enc.ID)
	material, legacy, err := s.unwrapVersion(enc, v)
	if err != nil {
		return errAltered(err, what)
	}
	defer clear(material)
	if !legacy || enc.KeyMode != ModePlatform {
		return nil
	}
	derived, err := aead.PublicKeyPEM(enc.Algorithm, material)
	if err != nil {
		return errs.Wrap(errs.Internal, err, what+": its private key does not load")
	}
	if derived != string(v.PublicKey) {
		return errs.E(errs.Internal, "%s does not match its private key: the stored key version was altered", what)
	}
	return nil
}

// errAltered is err, a failure to unwrap what authenticates a public key; Internal ones (the blob
// does not authenticate) say that the stored row was altered.
func errAltered(err error, what string) error {
	if errs.KindOf(err) != errs.Internal {
		return err
	}
	return errs.Wrap(errs.Internal, err, what+" does not authenticate under the platform master key: the stored row was altered, or the configured key of its id is another")
}

// wrapSealingKey protects a CLIENT context's private sealing key: under the client master key
// (bound to tenant and context by HKDF), then under the platform master key, bound to
// enc.SealingPublicKey, which must be priv's public half.
func (s *Service) wrapSealingKey(enc postgres.Encryption, masterKey, priv []byte) (postgres.WrappedKey, error) {
	kek, err := keywrap.DeriveClientKEK(masterKey, enc.TenantID.String(), enc.ID.String())
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Invalid, err, "X-Master-Key: want base64 of 32 bytes")
	}
	defer clear(kek)
	inner, err := keywrap.Wrap(kek, priv, sealingAD(enc))
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err, "wrap sealing key")
	}
	return s.wrapPlatform(inner, sealingWrapAD(enc))
}

// unwrapSealingKey recovers a CLIENT context's private sealing key; legacy reports that its
// platform wrapping is a legacy blob (no public key bound). A wrong client master key fails the
// inner unwrap's authentication: PermissionDenied. A private half whose public half is not
// enc.SealingPublicKey (the stored row was altered) is Internal.
func (s *Service) unwrapSealingKey(enc postgres.Encryption, masterKey []byte) (priv []byte, legacy bool, err error) {
	if enc.SealingPrivateKey == nil {
		return nil, false, errs.E(errs.Internal, "key context %s has no sealing key", enc.ID)
	}
	inner, legacy, err := s.unwrapBound(*enc.SealingPrivateKey, sealingWrapAD(enc), sealingAD(enc))
	if err != nil {
		return nil, false, errAltered(err, "the sealing public key of key context "+enc.ID.String())
	}
	defer clear(inner)
	kek, err := keywrap.DeriveClientKEK(masterKey, enc.TenantID.String(), enc.ID.String())
	if err != nil {
		return nil, false, errs.Wrap(errs.Invalid, err, "X-Master-Key: want base64 of 32 bytes")
	}
	defer clear(kek)
	priv, err = keywrap.Unwrap(kek, inner, sealingAD(enc))
	if err != nil {
		return nil, false, errs.E(errs.PermissionDenied, "wrong client master key for key context %s", enc.ID)
	}
	// A legacy blob binds no public key: check the stored one against the private half here.
	if pub, err := keywrap.SealingPublicKey(priv); err != nil || !bytes.Equal(pub, enc.SealingPublicKey) {
		clear(priv)
		return nil, false, errs.E(errs.Internal,
			"the sealing public key of key context %s does not match its private key: the stored row was altered", enc.ID)
	}
	return priv, legacy, nil
}

// checkClientVersion opens the sealed key of RSA version v of CLIENT context enc with priv, the
// context's private sealing key, and checks that v's stored public key is the one its private key
// derives. It returns the version's platform-unwrapped (still sealed) material and whether that
// was a legacy blob. A mismatch is Internal: the stored key version was altered.
func (s *Service) checkClientVersion(enc postgres.Encryption, v postgres.KeyVersion, priv []byte) (sealed []byte, legacy bool, err error) {
	sealed, legacy, err = s.unwrapVersion(enc, v)
	if err != nil {
		return nil, false, errAltered(err, fmt.Sprintf("the public key of version %d of key context %s", v.Version, enc.ID))
	}
	key, err := keywrap.Open(priv, sealed, versionAD(enc, v.ID))
	if err != nil {
		clear(sealed)
		return nil, false, errs.Wrap(errs.Internal, err, fmt.Sprintf("open version %d of key context %s", v.Version, enc.ID))
	}
	defer clear(key)
	derived, err := aead.PublicKeyPEM(enc.Algorithm, key)
	if err != nil || derived != string(v.PublicKey) {
		clear(sealed)
		return nil, false, errs.E(errs.Internal,
			"the public key of version %d of key context %s does not match its private key: the stored key version was altered", v.Version, enc.ID)
	}
	return sealed, legacy, nil
}

// bindLegacy is called once the client master key has opened priv, the private sealing key of
// CLIENT context e.enc (whose platform wrapping is legacy when sealingLegacy is set). Legacy blobs
// bind no public key, and a platform master-key rotation keeps them so (RotateMasterKey), since
// only the private halves can tell a genuine public key from one swapped in the database. Here
// they can: every legacy RSA version's public key is checked against its private key (a mismatch
// fails with Internal, refusing the request), then the legacy blobs are rewritten bound to the
// public keys they were checked against, in one transaction that checks the rows again as they
// are then, locked: only the legacy blobs are written, so that a blob a platform master-key rotation
// rewrapped meanwhile is never written back as it was (RotateMasterKey's final count stays true).
// Failing to store the upgrade (database unavailable, a concurrent change) does not fail the
// request, whose keys were checked: it is logged, and retried at the next use.
func (s *Service) bindLegacy(ctx context.Context, c Caller, e *entry, priv []byte, sealingLegacy bool) error {
	enc := e.enc
	if !sealingLegacy && e.bound.Load() {
		return nil
	}
	legacyVersions := false
	for _, v := range enc.Versions {
		if v.Material == nil || enc.Algorithm != aead.RSAOAEP3072SHA256 {
			continue
		}
		sealed, legacy, err := s.unwrapVersion(enc, v)
		clear(sealed)
		if err != nil || !legacy {
			continue // a blob that does not unwrap fails where it is used
		}
		legacyVersions = true
		// Only the private key can tell whether this public key is genuine.
		if sealed, _, err = s.checkClientVersion(enc, v, priv); err != nil {
			return err
		}
		clear(sealed)
	}
	if !sealingLegacy && !legacyVersions {
		e.bound.Store(true)
		return nil
	}
	audit := s.audit(c, "encryption.legacy-binding", &enc.ID, nil)
	written, err := s.store.BindLegacyKeys(ctx, c.TenantID, enc.ID, func(cur postgres.Encryption) (postgres.LegacyBinding, error) {
		return s.rebindContext(cur, c.MasterKey)
	}, audit)
	if err != nil {
		s.log.Warn("keyring: binding the public keys of a legacy key context failed; retried at its next use",
			"encryption_id", enc.ID, "error", err)
		return nil
	}
	s.cache.invalidate(enc.ID)
	if written {
		s.log.Info("keyring: legacy key context bound to its checked public keys", "encryption_id", enc.ID)
	}
	return nil
}

// rebindContext returns the binding of CLIENT context enc's legacy blobs to their public keys,
// keeping its key pair and every version's key: the private sealing key and each RSA version are
// checked with the private halves that masterKey opens (Internal on a mismatch), and only legacy
// blobs are rewrapped, under the active platform master key. A blob that is already bound is left
// out, so that the store keeps it as it is.
func (s *Service) rebindContext(enc postgres.Encryption, masterKey []byte) (postgres.LegacyBinding, error) {
	priv, sealingLegacy, err := s.unwrapSealingKey(enc, masterKey)
	if err != nil {
		return postgres.LegacyBinding{}, err
	}
	defer clear(priv)
	var b postgres.LegacyBinding
	if sealingLegacy {
		inner, err := s.unwrapPlatform(*enc.SealingPrivateKey, sealingAD(enc))
		if err != nil {
			return postgres.LegacyBinding{}, err
		}
		w, err := s.wrapPlatform(inner, sealingWrapAD(enc))
		clear(inner)
		if err != nil {
			return postgres.LegacyBinding{}, err
		}
		b.SealingPrivateKey = &w
	}
	if enc.Algorithm != aead.RSAOAEP3072SHA256 {
		return b, nil // only RSA versions bind a public key
	}
	for _, v := range enc.Versions {
		if v.State == StateDestroyed || v.Material == nil {
			continue
		}
		sealed, legacy, err := s.checkClientVersion(enc, v, priv)
		if err != nil {
			return postgres.LegacyBinding{}, err
		}
		if !legacy {
			clear(sealed)
			continue
		}
		w, err := s.wrapPlatform(sealed, versionWrapAD(enc, v))
		clear(sealed)
		if err != nil {
			return postgres.LegacyBinding{}, err
		}
		if b.Versions == nil {
			b.Versions = make(map[uuid.UUID]postgres.WrappedKey)
		}
		b.Versions[v.ID] = w
	}
	return b, nil
}

func (s *Service) wrapPlatform(material, ad []byte) (postgres.WrappedKey, error) {
	if s.masterKeys == nil {
		return postgres.WrappedKey{}, errNoMasterKeys
	}
	mk := s.masterKeys.Active()
	defer clear(mk.Bytes)
	blob, err := keywrap.Wrap(mk.Bytes, material, ad)
	if err != nil {
		return postgres.WrappedKey{}, errs.Wrap(errs.Internal, err, "wrap under the platform master key")
	}
	return postgres.WrappedKey{MasterKeyID: mk.ID, Blob: blob}, nil
}

func (s *Service) unwrapPlatform(w postgres.WrappedKey, ad []byte) ([]byte, error) {
	if s.masterKeys == nil {
		return nil, errNoMasterKeys
	}
	mk, ok := s.masterKeys.Get(w.MasterKeyID)
	if !ok {
		return nil, errs.E(errs.Unavailable,
			"stored key is wrapped by platform master key %q, which this service is not configured with", w.MasterKeyID)
	}
	out, err := keywrap.Unwrap(mk.Bytes, w.Blob, ad)
	clear(mk.Bytes)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, fmt.Sprintf("stored key does not authenticate under platform master key %q", w.MasterKeyID))
	}
	return out, nil
}

// actor is the caller's name in the audit trail.
func (c Caller) actor() string {
	if c.Actor == "" && c.SecretID != uuid.Nil {
		return "tenant:" + c.SecretID.String()
	}
	return c.Actor
}

func (s *Service) audit(c Caller, action string, encryptionID, versionID *uuid.UUID) postgres.AuditEvent {
	tenant := c.TenantID
	return postgres.AuditEvent{
		ID:           uuid.New(),
		TenantID:     &tenant,
		Actor:        c.actor(),
		Action:       action,
		EncryptionID: encryptionID,
		VersionID:    versionID,
		Outcome:      "ok",
		RequestID:    c.RequestID,
	}
}

// versionAD binds a version's key material to where it is stored: the HPKE info of a CLIENT
// version's sealed key, and the associated data of the platform wrapping of a symmetric version's
// key and of a legacy RSA version's.
func versionAD(enc postgres.Encryption, versionID uuid.UUID) []byte {
	return []byte("custos/es/version-key/v1\x00" + enc.TenantID.String() + "\x00" + enc.ID.String() + "\x00" + versionID.String() + "\x00" + enc.Algorithm)
}

// versionWrapAD is the associated data of the platform wrapping of version v's key material: for
// an RSA version, versionAD's fields under a v2 label followed by the SHA-256 of v.PublicKey, so
// that the stored public key authenticates under the platform master key; for others versionAD.
func versionWrapAD(enc postgres.Encryption, v postgres.KeyVersion) []byte {
	if enc.Algorithm != aead.RSAOAEP3072SHA256 {
		return versionAD(enc, v.ID)
	}
	h := sha256.Sum256(v.PublicKey)
	return append([]byte("custos/es/version-key/v2\x00"+enc.TenantID.String()+"\x00"+enc.ID.String()+"\x00"+v.ID.String()+"\x00"+enc.Algorithm+"\x00"), h[:]...)
}

// sealingAD binds a CLIENT context's wrapped private sealing key to its context: the associated
// data of the client-key wrapping, and of the platform wrapping of a legacy blob.
func sealingAD(enc postgres.Encryption) []byte {
	return []byte("custos/es/sealing-key/v1\x00" + enc.TenantID.String() + "\x00" + enc.ID.String())
}

// sealingWrapAD is the associated data of the platform wrapping of a CLIENT context's private
// sealing key: sealingAD's fields under a v2 label followed by the SHA-256 of the context's sealing
// public key, so that the stored public key authenticates under the platform master key.
func sealingWrapAD(enc postgres.Encryption) []byte {
	h := sha256.Sum256(enc.SealingPublicKey)
	return append([]byte("custos/es/sealing-key/v2\x00"+enc.TenantID.String()+"\x00"+enc.ID.String()+"\x00"), h[:]...)
}

// quoteShort quotes s for an error message, cut to a length that cannot flood a log line (the
// rule of aead's message for an unknown algorithm).
func quoteShort(s string) string {
	const maxLen = 40
	if len(s) > maxLen {
		return fmt.Sprintf("%q…", s[:maxLen])
	}
	return fmt.Sprintf("%q", s)
}

func newCipher(alg string, key []byte) (aead.Cipher, error) {
	c, err := aead.New(alg, key)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "load key")
	}
	return c, nil
}

func validAlgorithm(alg string) bool {
	for _, a := range aead.Algorithms() {
		if a == alg {
			return true
		}
	}
	return false
}

func errNotFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "key context %s not found", id)
}

var errNoMasterKeys = errs.E(errs.Unavailable, "no platform master keys are configured")

func errPlatformWithMasterKey(id uuid.UUID) error {
	return errs.E(errs.Invalid,
		"X-Master-Key must not be sent for key context %s: its keys are platform-managed (PLATFORM)", id)
}
