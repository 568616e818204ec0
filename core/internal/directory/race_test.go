package directory_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/core/internal/directory"
	"github.com/custos-platform/custos/core/internal/errs"
	"github.com/custos-platform/custos/core/internal/password"
	"github.com/custos-platform/custos/core/internal/postgres"
	"github.com/custos-platform/custos/core/internal/principal"
	"github.com/custos-platform/custos/core/internal/testdb"
)

// promotingStore is the real store, except that reading the user named by promote makes them an
// owner right after the read: an owner's promotion landing between an admin's check and change.
type promotingStore struct {
	*postgres.Store
	promote uuid.UUID
}

func (s promotingStore) GetUser(ctx context.Context, id uuid.UUID) (postgres.User, error) {
	u, err := s.Store.GetUser(ctx, id)
	if err == nil && id == s.promote {
		_, err = s.Store.SetUserRole(ctx, id, postgres.RoleOwner, postgres.AuditEvent{
			ActorType: postgres.ActorSystem, Action: "user.role", Outcome: postgres.OutcomeOK})
	}
	return u, err
}

// TestAdminCannotChangeAnOwnerPromotedMeanwhile: an admin may disable, demote or delete members and
// admins but not owners; the rule holds on the user as they are when changed, so a promotion
// landing after the admin's request read a member still refuses the change and changes nothing.
func TestAdminCannotChangeAnOwnerPromotedMeanwhile(t *testing.T) {
	ctx := t.Context()
	pool, err := postgres.Open(ctx, testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.NewStore(pool)
	tn := postgres.Tenant{ID: uuid.New(), Name: "acme", KeyMode: postgres.KeyModePlatform,
		ES: postgres.ESEndpoint{Kind: postgres.ESKindPlatform, TenantID: uuid.New(), TenantSecretSealed: make([]byte, 60)}}
	if err := store.CreateTenant(ctx, tn, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "tenant.create", Outcome: postgres.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	user := func(role string) postgres.User {
		u := postgres.User{ID: uuid.New(), TenantID: tn.ID, Username: "u-" + strings.ToLower(rand.Text()[:10]), Role: role,
			PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", SecurityStamp: rand.Text(),
			KDF: postgres.KDF{Salt: make([]byte, 16), MemoryKiB: 65536, Iterations: 3, Parallelism: 4}}
		if err := store.CreateUser(ctx, u, postgres.AuditEvent{ActorType: postgres.ActorSystem, Action: "user.create", Outcome: postgres.OutcomeOK}); err != nil {
			t.Fatal(err)
		}
		return u
	}
	user(postgres.RoleOwner)
	admin := user(postgres.RoleAdmin)
	asAdmin := principal.NewContext(ctx, principal.Principal{Kind: principal.User, ID: admin.ID, TenantID: tn.ID, Role: principal.RoleAdmin})

	for _, tt := range []struct {
		name   string
		change func(*directory.Service, uuid.UUID) error
	}{
		{"disable", func(d *directory.Service, id uuid.UUID) error {
			_, err := d.SetDisabled(asAdmin, directory.Call{}, id, true)
			return err
		}},
		{"demote", func(d *directory.Service, id uuid.UUID) error {
			_, err := d.SetRole(asAdmin, directory.Call{}, id, principal.RoleMember)
			return err
		}},
		{"delete", func(d *directory.Service, id uuid.UUID) error {
			_, err := d.DeleteUser(asAdmin, directory.Call{}, id)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := user(postgres.RoleMember)
			d := directory.New(promotingStore{Store: store, promote: target.ID}, nil, nil, password.Params{}, nil)
			err := tt.change(d, target.ID)
			if !errs.Is(err, errs.PermissionDenied) {
				t.Errorf("admin's %s of a member promoted to owner meanwhile = %v, want PermissionDenied", tt.name, err)
			}
			got, err := store.GetUser(ctx, target.ID)
			if err != nil || got.Role != postgres.RoleOwner || got.DisabledAt != nil {
				t.Errorf("user after the refused %s = %+v, %v, want the enabled owner", tt.name, got, err)
			}
		})
	}
}
