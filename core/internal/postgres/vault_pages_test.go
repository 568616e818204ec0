package postgres_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/postgres"
)

// mustItemOfSize stores an item of f's user whose ciphertext has size bytes.
func mustItemOfSize(tb testing.TB, s *postgres.Store, f vaultFixture, size int) postgres.Item {
	tb.Helper()
	it, err := s.CreateItem(tb.Context(), postgres.Item{
		ID: uuid.New(), TenantID: f.tenant.ID, OwnerID: f.user.ID, CipherText: strings.Repeat("A", size),
		EncryptionID: f.kc.EncryptionID, VersionID: uuid.New(), Algorithm: "AES-256-GCM",
		Metadata: json.RawMessage(`{"v":1,"iv":"aXY="}`),
	}, auditEvent("item.create"))
	if err != nil {
		tb.Fatalf("CreateItem() = %v", err)
	}
	return it
}

// A page of ListItems holds at most ListPageBytes of ciphertext as well as at most pageSize
// items, and at least one item however large; the next page token goes on after the last item
// of the page, so that a listing of large items has every item, once, newest first.
func TestListItemsPagesByBytes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	third := postgres.ListPageBytes/3 + 1 // two fit in a page, three do not
	var want []uuid.UUID
	for range 5 {
		want = append([]uuid.UUID{mustItemOfSize(t, s, f, third).ID}, want...)
	}
	huge := mustItemOfSize(t, s, f, postgres.ListPageBytes+1) // the newest: a page of its own
	want = append([]uuid.UUID{huge.ID}, want...)

	tests := []struct {
		pageSize int
		want     []int // items per page
	}{
		{100, []int{1, 2, 2, 1}},
		{1, []int{1, 1, 1, 1, 1, 1}},
		{0, []int{1, 2, 2, 1}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("pageSize %d", tc.pageSize), func(t *testing.T) {
			var got []uuid.UUID
			var sizes []int
			token := ""
			for range 10 {
				page, next, err := s.ListItems(ctx, f.user.ID, tc.pageSize, token)
				if err != nil {
					t.Fatalf("ListItems(%d, %q) = %v", tc.pageSize, token, err)
				}
				bytes := 0
				for _, it := range page {
					got = append(got, it.ID)
					bytes += len(it.CipherText)
				}
				if len(page) > 1 && bytes > postgres.ListPageBytes {
					t.Errorf("ListItems(%d) page %d = %d items of %d bytes, over ListPageBytes (%d)", tc.pageSize, len(sizes)+1, len(page), bytes, postgres.ListPageBytes)
				}
				sizes = append(sizes, len(page))
				if token = next; token == "" {
					break
				}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tc.want) {
				t.Errorf("ListItems(%d) pages = %v items, want %v", tc.pageSize, sizes, tc.want)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ListItems(%d) listed %v, want every item once, newest first: %v", tc.pageSize, got, want)
			}
		})
	}
}
