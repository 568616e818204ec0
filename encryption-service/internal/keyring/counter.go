package keyring

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
)

// counter counts encryptions per key version in memory and adds them to the database in batches:
// one write per version per flush instead of one per encryption. The counts bound how much a
// version has encrypted (random 96-bit GCM nonces must stay far below 2^32 uses of one key); a crash
// loses at most one flush interval of counts.
type counter struct {
	mu      sync.Mutex
	pending map[uuid.UUID]int64
}

func (c *counter) add(versionID uuid.UUID, n int64) {
	c.mu.Lock()
	if c.pending == nil {
		c.pending = make(map[uuid.UUID]int64)
	}
	c.pending[versionID] += n
	c.mu.Unlock()
}

// of returns the count of versionID not yet taken for a flush.
func (c *counter) of(versionID uuid.UUID) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[versionID]
}

func (c *counter) take() map[uuid.UUID]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	c.pending = nil
	return p
}

// FlushCounts writes the pending encryption counts to the database, then rotates the versions
// that the counts now show due (see RotationPolicy). On failure the counts are kept for the next
// flush.
func (s *Service) FlushCounts(ctx context.Context) error {
	p := s.counts.take()
	if len(p) == 0 {
		return nil
	}
	if err := s.store.AddEncryptions(ctx, p); err != nil {
		for id, n := range p {
			s.counts.add(id, n)
		}
		return err
	}
	ids := make([]uuid.UUID, 0, len(p))
	for id := range p {
		ids = append(ids, id)
	}
	s.rotateDueVersions(ctx, ids)
	return nil
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
