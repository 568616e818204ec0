package postgres_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/postgres"
)

// A listing goes on from where its page token says, even when the items of the last page (the
// one the token was made from included) have been deleted since; a token ListItems did not make
// is Invalid naming pageToken.
func TestListItemsPageTokenIsAPosition(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _, _ := mustStore(t)
	f := mustVaultUser(t, s, mustTenant(t, s, ""), postgres.KeyModePlatform)
	other := mustVaultUser(t, s, f.tenant, postgres.KeyModePlatform)
	items := mustItems(t, s, f, uuid.New(), 5)
	mustItems(t, s, other, uuid.New(), 2)

	var all []postgres.Item
	token := ""
	for range 5 {
		page, next, err := s.ListItems(ctx, f.user.ID, 2, token)
		if err != nil {
			t.Fatalf("ListItems(token %q) = %v", token, err)
		}
		all = append(all, page...)
		if token = next; token == "" {
			break
		}
	}
	if len(all) != len(items) {
		t.Fatalf("ListItems() pages = %d items, want the owner's %d", len(all), len(items))
	}
	for i := 1; i < len(all); i++ {
		p, q := all[i-1], all[i]
		if q.CreatedAt.After(p.CreatedAt) || (q.CreatedAt.Equal(p.CreatedAt) && q.ID.String() >= p.ID.String()) {
			t.Errorf("ListItems() not newest first by (created_at, id) at %d", i)
		}
	}

	// The caller deletes what the first page showed, then asks for the next one.
	page1, next, err := s.ListItems(ctx, f.user.ID, 2, "")
	if err != nil || len(page1) != 2 || next == "" {
		t.Fatalf("ListItems(first page) = %d items, %q, %v", len(page1), next, err)
	}
	for _, it := range page1 {
		if err := s.DeleteItem(ctx, f.user.ID, it.ID, auditEvent("item.delete")); err != nil {
			t.Fatal(err)
		}
	}
	page2, _, err := s.ListItems(ctx, f.user.ID, 2, next)
	if err != nil || len(page2) != 2 || page2[0].ID != all[2].ID || page2[1].ID != all[3].ID {
		t.Errorf("ListItems(after deleting the first page) = %d items, %v; want the 3rd and 4th items", len(page2), err)
	}

	for _, bad := range []string{"not-a-token", items[0].ID.String(), "MTIz",
		// Times no item has, which PostgreSQL's encoding would wrap into "before everything".
		base64.RawURLEncoding.EncodeToString([]byte("-9223372036854775807." + uuid.NewString())),
		base64.RawURLEncoding.EncodeToString([]byte("253402300800000000." + uuid.NewString()))} {
		_, _, err := s.ListItems(ctx, f.user.ID, 2, bad)
		wantKind(t, "ListItems(token "+bad+")", err, errs.Invalid, "pageToken")
	}
}

// cancelAfter cancels a context once a statement containing sql has completed: a client that
// goes away at that moment.
type cancelAfter struct {
	sql    string
	cancel context.CancelFunc
}

type statementKey struct{}

func (c cancelAfter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, statementKey{}, d.SQL)
}

func (c cancelAfter) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if sql, _ := ctx.Value(statementKey{}).(string); strings.Contains(sql, c.sql) && d.Err == nil {
		c.cancel()
	}
}

// mustTracedStore returns a Store on the database at url whose connections call tracer.
func mustTracedStore(tb testing.TB, url string, tracer pgx.QueryTracer) *postgres.Store {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer
	cfg.ConnConfig.RuntimeParams["search_path"] = postgres.Schema
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return postgres.NewStore(pool)
}

// PutKeyContext records a context and reads it back in one transaction: a request that ends
// between the two records nothing, and recording the same context again settles it.
func TestPutKeyContextIsOneTransaction(t *testing.T) {
	t.Parallel()
	s, _, url := mustStore(t)
	tn := mustTenant(t, s, "")
	u := mustUser(t, s, tn.ID, postgres.RoleMember)
	k := postgres.KeyContext{UserID: u.ID, TenantID: tn.ID, EncryptionID: uuid.New(), KeyMode: postgres.KeyModePlatform}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	traced := mustTracedStore(t, url, cancelAfter{sql: "INSERT INTO key_contexts", cancel: cancel})
	if _, err := traced.PutKeyContext(ctx, k); err == nil {
		t.Fatal("PutKeyContext() with the request ending after the INSERT = nil error, want one")
	}
	if kc, err := s.GetKeyContext(t.Context(), u.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("GetKeyContext() after a failed PutKeyContext = %+v, %v; want NotFound: nothing recorded", kc, err)
	}
	kc, err := s.PutKeyContext(t.Context(), k)
	if err != nil || kc.EncryptionID != k.EncryptionID {
		t.Errorf("PutKeyContext(again) = %+v, %v; want the context recorded", kc, err)
	}
	if _, err := s.GetErasure(t.Context(), k.EncryptionID); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetErasure(recorded context) = %v, want NotFound", err)
	}
}
