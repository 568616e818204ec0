package keyring

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// tally counts this replica's encryptions per key version in memory and adds them to the database
// in batches (FlushCounts): one write per version per flush instead of one per encryption. The
// counts bound how much a version encrypts (random 96-bit GCM nonces must stay far below 2^32 uses
// of one key), so every encryption takes its slot before it is made, atomically (entry.take):
// concurrent requests of this replica never push a version past its bound. A crash loses at most
// one flush interval of counts.
//
// A version's count is kept apart from the cached copies of its context, which come and go (a
// change anywhere drops them), so that the encryptions made through an older copy still count
// after a reload. A load notes, before it reads the database, how much of this replica's count the
// database held (noteFlushed); the stored count it then reads holds at least that much, so that
// stored − noted + made (entry.made) is never below what the version made, this replica's
// encryptions under way included.
type tally struct {
	mu       sync.Mutex
	versions map[uuid.UUID]*versionTally // by version id
	contexts map[uuid.UUID][]uuid.UUID   // the versions tallied, by context

	flushMu sync.Mutex // one flush at a time, so that a version's flushed count stays exact
}

// versionTally is this replica's count of one key version.
type versionTally struct {
	made    atomic.Int64 // slots taken, encryptions under way included, failed ones given back
	flushed atomic.Int64 // how much of made the database holds: written by FlushCounts only
	seen    time.Time    // the last load of its context that noted or bound it (guarded by tally.mu)
}

// noteFlushed returns, for each version of context encryptionID that this replica counts, how much
// of its count the database holds now. Call it before reading the context from the database.
func (t *tally) noteFlushed(encryptionID uuid.UUID, now time.Time) map[uuid.UUID]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := t.contexts[encryptionID]
	if len(ids) == 0 {
		return nil
	}
	noted := make(map[uuid.UUID]int64, len(ids))
	for _, id := range ids {
		v := t.versions[id]
		v.seen = now // a load is under way: not to be pruned before it binds
		noted[id] = v.flushed.Load()
	}
	return noted
}

// version returns the count of version versionID of context encryptionID, made on first use.
func (t *tally) version(encryptionID, versionID uuid.UUID, now time.Time) *versionTally {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.versions[versionID]
	if !ok {
		if t.versions == nil {
			t.versions = make(map[uuid.UUID]*versionTally)
			t.contexts = make(map[uuid.UUID][]uuid.UUID)
		}
		v = &versionTally{}
		t.versions[versionID] = v
		t.contexts[encryptionID] = append(t.contexts[encryptionID], versionID)
	}
	v.seen = now
	return v
}

// pending returns what each version made beyond what the database holds, with the counts.
func (t *tally) pending() (map[uuid.UUID]int64, map[uuid.UUID]*versionTally) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var deltas map[uuid.UUID]int64
	var counts map[uuid.UUID]*versionTally
	for id, v := range t.versions {
		// Negative after a slot given back once a flush had counted it: the database holds one
		// encryption too many, which later encryptions make true.
		if n := v.made.Load() - v.flushed.Load(); n > 0 {
			if deltas == nil {
				deltas = make(map[uuid.UUID]int64)
				counts = make(map[uuid.UUID]*versionTally)
			}
			deltas[id], counts[id] = n, v
		}
	}
	return deltas, counts
}

// prune forgets the counts that the database holds in full and that no cached copy of a context
// can still take slots from: none was loaded for longer than idle (the cache's longest trust in a
// copy, plus the longest request). A version used again later starts afresh from its stored count.
func (t *tally) prune(now time.Time, idle time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for encryptionID, ids := range t.contexts {
		kept := ids[:0]
		for _, id := range ids {
			v := t.versions[id]
			if v.made.Load() <= v.flushed.Load() && now.Sub(v.seen) > idle {
				delete(t.versions, id)
				continue
			}
			kept = append(kept, id)
		}
		if len(kept) == 0 {
			delete(t.contexts, encryptionID)
		} else {
			t.contexts[encryptionID] = kept
		}
	}
}

// countIdle is how long past the cache's longest trust in a copy of a context a version's count is
// kept once the database holds it: longer than any request that took the copy lasts.
const countIdle = time.Minute

// FlushCounts writes the encryption counts the database does not hold yet, then rotates the
// versions that the counts now show due (see RotationPolicy). On failure the counts stay pending
// for the next flush.
func (s *Service) FlushCounts(ctx context.Context) error {
	ids, err := s.flushCounts(ctx)
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		s.rotateDueVersions(ctx, ids)
	}
	return nil
}

// flushCounts adds the pending counts to the database and returns the versions it added to.
// Flushes run one at a time, so that a version's flushed count is exactly what the database got.
func (s *Service) flushCounts(ctx context.Context) ([]uuid.UUID, error) {
	s.counts.flushMu.Lock()
	defer s.counts.flushMu.Unlock()
	deltas, counts := s.counts.pending()
	if len(deltas) > 0 {
		if err := s.store.AddEncryptions(ctx, deltas); err != nil {
			return nil, err
		}
		for id, n := range deltas {
			counts[id].flushed.Add(n)
		}
	}
	s.counts.prune(s.now(), s.cache.maxAge+countIdle)
	ids := make([]uuid.UUID, 0, len(deltas))
	for id := range deltas {
		ids = append(ids, id)
	}
	return ids, nil
}

// RunCounter flushes the encryption counts every interval until ctx is done, then once more.
func (s *Service) RunCounter(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := s.FlushCounts(fctx); err != nil {
				s.log.Warn("keyring: final flush of encryption counts failed", "error", err)
			}
			cancel()
			return
		case <-t.C:
			if err := s.FlushCounts(ctx); err != nil {
				s.log.Warn("keyring: flush of encryption counts failed; will retry", "error", err)
			}
		}
	}
}
