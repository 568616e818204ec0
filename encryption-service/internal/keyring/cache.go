package keyring

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/aead"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// cache holds key contexts as last read from the database, so that the hot path (encrypt,
// decrypt) needs no database round trip. For PLATFORM contexts it also holds each version's
// ready-to-use cipher; for CLIENT contexts it holds only what is stored (wrapped blobs): their keys
// exist unwrapped only for the duration of one request.
//
// Entries are dropped when another replica (or this one) changes the context — the database's
// LISTEN/NOTIFY delivers the change — and after maxAge at the latest; while the change listener is
// not connected (at start, and from a lost connection until the next reset) changes go unheard, so
// entries are then trusted for postgres.UnheardMaxAge only. A read racing an
// invalidation must not re-insert stale data: loaders take the generation before reading the
// database and put only if no invalidation happened since.
type cache struct {
	maxAge     time.Duration
	maxEntries int
	now        func() time.Time
	hearing    atomic.Bool // the change listener is connected

	mu      sync.Mutex
	gen     uint64
	entries map[uuid.UUID]*entry
}

// entry is one key context.
type entry struct {
	enc      postgres.Encryption
	loadedAt time.Time

	// count is this replica's count of the context's active version as read (nil without one),
	// and base the stored count less what of this replica's count it held: base + count.made is
	// never below what the version made (see tally), so that the hot path tells when the version
	// is due without a database round trip.
	count *versionTally
	base  int64
	// rotation is this replica's automatic rotation of the context, set by the request that
	// rotates while it does, so that concurrent requests wait for it rather than rotate again;
	// once it succeeded it stays, marking this copy as outdated. retryAt (Unix nanoseconds)
	// delays the next attempt after a failed one.
	rotation atomic.Pointer[rotation]
	retryAt  atomic.Int64
	// bound is set (CLIENT only) once bindLegacy found no legacy RSA version in enc, so that the
	// next requests skip the check.
	bound atomic.Bool

	mu      sync.Mutex
	ciphers map[uuid.UUID]versionCipher // PLATFORM only, by version id
}

func newCache(maxAge time.Duration, maxEntries int, now func() time.Time) *cache {
	return &cache{maxAge: maxAge, maxEntries: maxEntries, now: now, entries: make(map[uuid.UUID]*entry)}
}

// generation returns the current invalidation generation.
func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// get returns the live entry for id, if any.
func (c *cache) get(id uuid.UUID) (*entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok {
		return nil, false
	}
	maxAge := c.maxAge
	if !c.hearing.Load() {
		maxAge = min(maxAge, postgres.UnheardMaxAge)
	}
	if c.now().Sub(e.loadedAt) > maxAge {
		delete(c.entries, id)
		return nil, false
	}
	return e, true
}

// put stores a new entry for enc unless an invalidation happened after gen was taken. It returns
// the entry to use either way.
func (c *cache) put(gen uint64, enc postgres.Encryption) *entry {
	return c.putEntry(gen, newEntry(enc))
}

// newEntry returns an entry for enc, not yet stored.
func newEntry(enc postgres.Encryption) *entry {
	return &entry{enc: enc, ciphers: make(map[uuid.UUID]versionCipher)}
}

// putEntry stores e, loaded now, unless an invalidation happened after gen was taken. It returns e
// either way.
func (c *cache) putEntry(gen uint64, e *entry) *entry {
	e.loadedAt = c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return e
	}
	if len(c.entries) >= c.maxEntries {
		// Crude but bounded: a full cache starts over rather than tracking recency on the hot path.
		clear(c.entries)
	}
	c.entries[e.enc.ID] = e
	return e
}

// take takes one of the encryptions the active version may still make below limit; it reports
// false, taking nothing, when none is left.
func (e *entry) take(limit int64) bool {
	if e.count == nil {
		return false
	}
	for {
		n := e.count.made.Load()
		if e.base+n >= limit {
			return false
		}
		if e.count.made.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// invalidate drops one context.
func (c *cache) invalidate(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.entries, id)
}

// invalidateTenant drops every context of one tenant.
func (c *cache) invalidateTenant(tenantID uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for id, e := range c.entries {
		if e.enc.TenantID == tenantID {
			delete(c.entries, id)
		}
	}
}

// reset drops everything.
func (c *cache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}

// cipher returns the cached cipher of a version, or builds it with mk and caches it.
// versionCipher is a PLATFORM version's cipher with the associated data of its ciphertexts.
type versionCipher struct {
	cipher aead.Cipher
	ad     []byte // read-only once cached
}

// cipher returns version v's cached cipher and associated data, making and caching the cipher with
// mk the first time.
func (e *entry) cipher(v uuid.UUID, mk func() (aead.Cipher, error)) (aead.Cipher, []byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if vc, ok := e.ciphers[v]; ok {
		return vc.cipher, vc.ad, nil
	}
	c, err := mk()
	if err != nil {
		return nil, nil, err
	}
	vc := versionCipher{cipher: c, ad: associatedData(e.enc, v)}
	e.ciphers[v] = vc
	return vc.cipher, vc.ad, nil
}

// version returns the context's version with id.
func (e *entry) version(id uuid.UUID) (postgres.KeyVersion, bool) {
	for _, v := range e.enc.Versions {
		if v.ID == id {
			return v, true
		}
	}
	return postgres.KeyVersion{}, false
}

// active returns the context's active version.
func (e *entry) active() (postgres.KeyVersion, bool) {
	for _, v := range e.enc.Versions {
		if v.State == StateActive {
			return v, true
		}
	}
	return postgres.KeyVersion{}, false
}

// Listening reports whether the change listener is connected, as last told through Hearing: what
// the cache goes by to trust its entries for maxAge rather than postgres.UnheardMaxAge. It is
// cheap and never blocks, for the custos_change_listener_connected gauge.
func (s *Service) Listening() bool { return s.cache.hearing.Load() }
