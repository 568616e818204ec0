package keyring

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/postgres"
)

// A cached key context is trusted until maxAge while the change listener is connected, and for
// postgres.UnheardMaxAge only while it is not (changes made elsewhere go unheard then).
func TestCacheTrustsEntriesBrieflyWhileUnheard(t *testing.T) {
	t.Parallel()
	clock := time.Now()
	c := newCache(5*time.Minute, 10, func() time.Time { return clock })
	id := uuid.New()
	for _, hearing := range []bool{false, true} {
		c.hearing.Store(hearing)
		c.put(c.generation(), postgres.Encryption{ID: id})
		clock = clock.Add(postgres.UnheardMaxAge / 2)
		if _, ok := c.get(id); !ok {
			t.Errorf("hearing %v: entry gone within UnheardMaxAge", hearing)
		}
		clock = clock.Add(postgres.UnheardMaxAge)
		if _, ok := c.get(id); ok != hearing {
			t.Errorf("hearing %v: entry kept after UnheardMaxAge = %v, want %v", hearing, ok, hearing)
		}
		clock = clock.Add(5 * time.Minute)
		if _, ok := c.get(id); ok {
			t.Errorf("hearing %v: entry kept after maxAge", hearing)
		}
	}
	// A lost connection makes entries cached while hearing short-lived too.
	c.hearing.Store(true)
	c.put(c.generation(), postgres.Encryption{ID: id})
	clock = clock.Add(2 * postgres.UnheardMaxAge)
	c.hearing.Store(false)
	if _, ok := c.get(id); ok {
		t.Error("after the listener was lost, an entry older than UnheardMaxAge is still trusted")
	}
}
