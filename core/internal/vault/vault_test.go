package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/esclient"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// fakeES creates and destroys contexts; only those two methods are used.
type fakeES struct {
	esclient.Client

	mu              sync.Mutex
	created, killed []string
}

func (f *fakeES) CreateContext(context.Context, string, []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := uuid.NewString()
	f.created = append(f.created, id)
	return id, nil
}

func (f *fakeES) DestroyContext(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, id)
	return nil
}

type router struct{ es esclient.Client }

func (r router) For(context.Context, uuid.UUID) (esclient.Client, error) { return r.es, nil }

// failingPut is the real store whose PutKeyContextUnder fails as an unreachable database does;
// after it calls the real one first (the transaction committed, but its answer was lost).
type failingPut struct {
	*postgres.Store
	after bool

	mu    sync.Mutex
	calls int
}

func (f *failingPut) PutKeyContextUnder(ctx context.Context, k postgres.KeyContext, stamp string) (postgres.KeyContext, error) {
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.mu.Unlock()
	if f.after {
		if _, err := f.Store.PutKeyContextUnder(ctx, k, stamp); err != nil {
			return postgres.KeyContext{}, err
		}
		if !first {
			return f.Store.GetKeyContext(ctx, k.UserID)
		}
	}
	return postgres.KeyContext{}, errs.E(errs.Unavailable, "the database is unavailable; try again")
}

// cancelAfterInsert cancels the request's context as soon as the INSERT of a key context has
// completed: a client that goes away at that moment.
type cancelAfterInsert struct{ cancel context.CancelFunc }

type sqlKey struct{}

func (c cancelAfterInsert) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, sqlKey{}, d.SQL)
}

func (c cancelAfterInsert) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if sql, _ := ctx.Value(sqlKey{}).(string); strings.Contains(sql, "INSERT INTO key_contexts") && d.Err == nil {
		c.cancel()
	}
}

// EnsureContext never destroys a key context it created: when recording it fails, the outcome is
// unknown (the transaction may have committed), so it records it again to find out. The context
// ends up the user's, or queued for erasure by the store, or — with the database gone — logged and
// left alone; never destroyed while the database may record it.
func TestEnsureContextNeverDestroysWhatMayBeRecorded(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	pool, err := postgres.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	secret := make([]byte, 60)
	_, _ = rand.Read(secret)
	tenant := postgres.Tenant{ID: uuid.New(), Name: "vault-" + rand.Text(), KeyMode: postgres.KeyModePlatform, PasswordHintsEnabled: true,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: secret}}
	audit := postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "x", Outcome: "ok"}
	if err := store.CreateTenant(t.Context(), tenant, audit); err != nil {
		t.Fatal(err)
	}
	newUser := func(t *testing.T) uuid.UUID {
		u := postgres.User{ID: uuid.New(), TenantID: tenant.ID, Username: "u" + strings.ToLower(rand.Text()), Role: "member",
			PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
			KDF:          postgres.KDF{Salt: make([]byte, 16), MemoryKiB: 65536, Iterations: 3, Parallelism: 4}, SecurityStamp: rand.Text()}
		if err := store.CreateUser(t.Context(), u, audit); err != nil {
			t.Fatal(err)
		}
		return u.ID
	}

	cases := []struct {
		name string
		// call runs EnsureContext for user with es, as the case has it fail.
		call     func(t *testing.T, user uuid.UUID, es *fakeES, log *slog.Logger) (postgres.KeyContext, error)
		ok       bool      // EnsureContext answers the created context
		kind     errs.Kind // of its error, unless ok
		recorded bool      // the created context is the user's
		queued   bool      // the created context is queued for erasure
		logged   bool      // a warning names the created context
	}{
		{"the request ends after the INSERT", func(t *testing.T, user uuid.UUID, es *fakeES, _ *slog.Logger) (postgres.KeyContext, error) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnConfig.Tracer = cancelAfterInsert{cancel: cancel}
			cfg.ConnConfig.RuntimeParams["search_path"] = postgres.Schema
			traced, err := pgxpool.NewWithConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer traced.Close()
			return New(postgres.NewStore(traced), router{es}, Limits{}).EnsureContext(ctx, user, tenant.ID, nil, "")
		}, false, errs.Unavailable, true, false, false},
		{"committed, the answer lost", func(_ *testing.T, user uuid.UUID, es *fakeES, _ *slog.Logger) (postgres.KeyContext, error) {
			return New(&failingPut{Store: store, after: true}, router{es}, Limits{}).EnsureContext(t.Context(), user, tenant.ID, nil, "")
		}, true, 0, true, false, false},
		{"the database unreachable", func(_ *testing.T, user uuid.UUID, es *fakeES, log *slog.Logger) (postgres.KeyContext, error) {
			v := New(&failingPut{Store: store}, router{es}, Limits{})
			v.Log = log
			return v.EnsureContext(t.Context(), user, tenant.ID, nil, "")
		}, false, errs.Unavailable, false, false, true},
		{"the user is gone", func(_ *testing.T, _ uuid.UUID, es *fakeES, _ *slog.Logger) (postgres.KeyContext, error) {
			return New(store, router{es}, Limits{}).EnsureContext(t.Context(), uuid.New(), tenant.ID, nil, "")
		}, false, errs.NotFound, false, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user := newUser(t)
			es := &fakeES{}
			var logged bytes.Buffer
			kc, err := c.call(t, user, es, slog.New(slog.NewTextHandler(&logged, nil)))
			if len(es.created) != 1 {
				t.Fatalf("created %v, want one context", es.created)
			}
			created := es.created[0]
			switch {
			case c.ok && (err != nil || kc.EncryptionID.String() != created):
				t.Errorf("EnsureContext() = %+v, %v; want the created context %s", kc, err, created)
			case !c.ok && !errs.Is(err, c.kind):
				t.Errorf("EnsureContext() = %+v, %v; want a %v error", kc, err, c.kind)
			}
			if len(es.killed) != 0 {
				t.Errorf("EnsureContext() destroyed %v on the encryption service, want nothing destroyed", es.killed)
			}
			got, err := store.GetKeyContext(t.Context(), user)
			if recorded := err == nil && got.EncryptionID.String() == created; recorded != c.recorded {
				t.Errorf("the created context recorded as the user's: %v (%+v, %v), want %v", recorded, got, err, c.recorded)
			}
			_, err = store.GetErasure(t.Context(), uuid.MustParse(created))
			if queued := err == nil; queued != c.queued {
				t.Errorf("the created context queued for erasure: %v (%v), want %v", queued, err, c.queued)
			}
			if l := strings.Contains(logged.String(), created); l != c.logged {
				t.Errorf("a warning names the created context: %v (log %q), want %v", l, logged.String(), c.logged)
			}
		})
	}
}

// Whatever the vault accepts fits the encryption service's default limit (ES_MAX_DATA_BYTES,
// 1 MiB) once encoded; what it refuses is refused naming the field and the limit that applies.
func TestItemLimits(t *testing.T) {
	t.Parallel()
	const esLimit = 1 << 20
	worstName := strings.Repeat("\x01", 1<<10) // 6 bytes each once encoded
	cases := []struct {
		name, itemName, data string
		err                  string // "" for accepted
	}{
		{"data at the limit, the largest name", worstName, strings.Repeat("a", DefaultMaxDataBytes), ""},
		{"HTML is not escaped", "n", strings.Repeat("<b>&</b>", 120<<10), ""},
		{"data over the limit", "n", strings.Repeat("a", DefaultMaxDataBytes+1), "data: 1040385 bytes is over the limit of 1040384 bytes"},
		{"name over the limit", strings.Repeat("n", 1<<10+1), "x", "name: 1025 bytes is over the limit of 1024 bytes"},
		{"data escaped beyond the item limit", "n", strings.Repeat(`"`, 600<<10),
			"data: 614400 bytes take 1228822 with the name once encoded (quotes and backslashes count 2 bytes, control characters up to 6), over the limit of 1048576 bytes"},
		{"empty name", "", "x", "name: required"},
		{"invalid UTF-8", "n", "\xff", "name and data: must be valid UTF-8"},
	}
	v := New(nil, nil, Limits{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plain, err := v.encode(c.itemName, c.data)
			if c.err != "" {
				if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), c.err) {
					t.Errorf("encode() = %v, want Invalid %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("encode() = %v, want it accepted", err)
			}
			if len(plain) > esLimit {
				t.Errorf("encode() = %d bytes, over the encryption service's %d", len(plain), esLimit)
			}
			var env envelope
			if err := json.Unmarshal(plain, &env); err != nil || env.Name != c.itemName || env.Data != c.data {
				t.Errorf("encode() does not decode back to the name and data: %v", err)
			}
		})
	}
	if plain, _ := encodeItem("a<b", "x&y>"); string(plain) != `{"name":"a<b","data":"x&y>"}` {
		t.Errorf(`encodeItem("a<b", "x&y>") = %s, want no HTML escaping`, plain)
	}
}
