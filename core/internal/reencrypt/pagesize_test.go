package reencrypt

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
)

// sizedItems stores n items of p under kc's active version, item i holding "<i> " followed by
// size bytes, and returns their ids and data.
func (e *env) sizedItems(tb testing.TB, p principal.Principal, kc postgres.KeyContext, n, size int) ([]uuid.UUID, []string) {
	tb.Helper()
	ctx := context.Background()
	ids, data := make([]uuid.UUID, n), make([]string, n)
	for i := range ids {
		data[i] = fmt.Sprintf("%d ", i) + strings.Repeat("x", size)
		ct, err := e.es.Encrypt(ctx, kc.EncryptionID.String(), data[i], nil)
		if err != nil {
			tb.Fatal(err)
		}
		it, err := e.store.CreateItem(ctx, postgres.Item{ID: uuid.New(), TenantID: e.tenant.ID, OwnerID: p.ID, CipherText: ct.CipherText,
			EncryptionID: kc.EncryptionID, VersionID: uuid.MustParse(ct.VersionID), Algorithm: ct.Algorithm, Metadata: ct.Metadata}, sysAudit)
		if err != nil {
			tb.Fatal(err)
		}
		ids[i] = it.ID
	}
	return ids, data
}

// wantOnActive checks that items ids of p read data from kc's active version.
func (e *env) wantOnActive(tb testing.TB, p principal.Principal, kc postgres.KeyContext, ids []uuid.UUID, data []string) {
	tb.Helper()
	info, _ := e.es.GetContext(context.Background(), kc.EncryptionID.String())
	bad := 0
	for i, id := range ids {
		if got, ver := e.read(tb, p, id, nil); got != data[i] || ver.String() != info.ActiveVersionID {
			if bad++; bad <= 3 {
				tb.Errorf("item %d reads %d bytes on version %s, want its %d bytes on the active %s", i, len(got), ver, len(data[i]), info.ActiveVersionID)
			}
		}
	}
	if bad > 3 {
		tb.Errorf("... and %d more items", bad-3)
	}
}

// TestRewrapCallsKeepToThePageBudget moves 200 items of 22 KiB, 4.4 MiB in all, over the
// encryption service's 4 MiB limit on a request if sent in one call: pages are cut by the size
// of their ciphertexts, so that no call exceeds PageBytes, and the job succeeds.
func TestRewrapCallsKeepToThePageBudget(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	opts := testOptions("a")
	opts.PageSize = DefaultPageSize
	s := New(e.store, router{e.es}, opts)
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids, data := e.sizedItems(t, p, kc, 200, 22<<10)
	e.es.limitRequests(4 << 20)

	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	if end := waitJob(t, s, e.admin, job.ID); end.State != postgres.JobSucceeded || end.Done != 200 || end.Total != 200 {
		t.Fatalf("job = %+v; want SUCCEEDED with 200 moved", end)
	}
	calls := e.es.taken()
	for _, size := range calls {
		if size > DefaultPageBytes {
			t.Errorf("a rewrap call carried %d bytes of ciphertext, over the page budget of %d", size, DefaultPageBytes)
		}
	}
	if len(calls) < 3 {
		t.Errorf("the job made %d rewrap calls, want at least 3 for 6 MiB of ciphertext", len(calls))
	}
	e.wantOnActive(t, p, kc, ids, data)
}

// TestRewrapCallsSplitWhenTheServiceRefusesTheirSize gives the encryption service a limit on a
// request far below PageBytes (ES_MAX_REQUEST_BYTES set low): a refused call is split in halves
// down to what the service takes, later calls keep to that size, and an item over the limit on
// its own fails alone, named in the job's message.
func TestRewrapCallsSplitWhenTheServiceRefusesTheirSize(t *testing.T) {
	e := newEnv(t, postgres.KeyModePlatform)
	opts := testOptions("a")
	opts.PageSize = DefaultPageSize
	s := New(e.store, router{e.es}, opts)
	run(t, s)
	p, kc := e.user(t, principal.RoleMember, nil)
	ids, data := e.sizedItems(t, p, kc, 120, 22<<10)
	big, _ := e.sizedItems(t, p, kc, 1, 120<<10)
	const limit = 100 << 10 // three items of 30 KiB (as the fake's base64) fit, four do not
	e.es.limitRequests(limit)

	_, job, err := s.RotateKeys(as(e.admin), Call{})
	if err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, s, e.admin, job.ID)
	if end.State != postgres.JobFailed || end.Done != 120 || end.Failed != 1 || !strings.Contains(end.Message, big[0].String()) {
		t.Errorf("job = %+v; want FAILED with 120 moved and the one item over the limit failed, named", end)
	}
	calls := e.es.taken()
	for _, size := range calls {
		if size > limit {
			t.Errorf("the service took a call of %d bytes, over its limit of %d", size, limit)
		}
	}
	e.es.mu.Lock()
	refused := e.es.rewraps - len(calls)
	e.es.mu.Unlock()
	// A page of 68 items is halved 5 times down to 2; later calls start at that size, and the
	// big item is tried once within its page's calls and once on its own.
	if refused > 12 {
		t.Errorf("the service refused %d calls as too large; want the run to keep to the size it took", refused)
	}
	e.wantOnActive(t, p, kc, ids, data)
}
