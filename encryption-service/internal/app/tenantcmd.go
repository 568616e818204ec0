package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/google/uuid"

	"github.com/custos-platform/custos/encryption-service/internal/config"
	"github.com/custos-platform/custos/encryption-service/internal/postgres"
	"github.com/custos-platform/custos/encryption-service/internal/tenants"
)

// runTenant runs "tenant create|list|rotate-secret|revoke-secret|destroy" against the database
// directly, for operators of an on-premises service (no admin token needed: database access is the
// credential). Changes are audited with actor "cli:$USER" and reach running replicas at once.
func runTenant(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	asJSON, args := flag(args, "--json")
	confirmed, args := flag(args, "--yes")
	if len(args) == 0 {
		return fmt.Errorf("%w: tenant needs a subcommand: create, list, rotate-secret, revoke-secret or destroy\n\n%s", ErrUsage, usage)
	}
	sub, args := args[0], args[1:]
	want := map[string]int{"create": 1, "list": 0, "rotate-secret": 1, "revoke-secret": 2, "destroy": 1}
	n, ok := want[sub]
	if !ok {
		return fmt.Errorf("%w: unknown tenant subcommand %q\n\n%s", ErrUsage, sub, usage)
	}
	if len(args) != n {
		return fmt.Errorf("%w: tenant %s takes %d argument(s), got %d\n\n%s", ErrUsage, sub, n, len(args), usage)
	}
	if sub == "destroy" && !confirmed {
		return fmt.Errorf("%w: tenant destroy erases every key of the tenant, so all its data becomes unrecoverable, "+
			"and it cannot be undone: add --yes to confirm", ErrUsage)
	}

	store, done, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer done()
	svc := tenants.New(store, nil)
	actor := tenants.Actor{Name: cliActor(getenv)}

	switch sub {
	case "create":
		issued, err := svc.Create(ctx, actor, args[0])
		if err != nil {
			return err
		}
		return printIssued(stdout, asJSON, issued)
	case "destroy":
		id, err := uuid.Parse(args[0])
		if err != nil {
			return fmt.Errorf("%w: TENANT_ID must be a UUID", ErrUsage)
		}
		n, err := svc.Destroy(ctx, actor, id)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(stdout).Encode(map[string]any{"tenantId": id, "encryptionsDestroyed": n})
		}
		fmt.Fprintf(stdout, "tenant %s is destroyed: %d key contexts erased, its data is unrecoverable and its secrets are revoked\n", id, n)
		return nil
	case "rotate-secret":
		id, err := uuid.Parse(args[0])
		if err != nil {
			return fmt.Errorf("%w: TENANT_ID must be a UUID", ErrUsage)
		}
		issued, err := svc.RotateSecret(ctx, actor, id)
		if err != nil {
			return err
		}
		return printIssued(stdout, asJSON, issued)
	case "revoke-secret":
		tenantID, err1 := uuid.Parse(args[0])
		secretID, err2 := uuid.Parse(args[1])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%w: TENANT_ID and SECRET_ID must be UUIDs", ErrUsage)
		}
		sec, err := svc.RevokeSecret(ctx, actor, tenantID, secretID)
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(stdout).Encode(map[string]any{"tenantId": tenantID, "secretId": sec.ID, "state": "REVOKED"})
		}
		fmt.Fprintf(stdout, "secret %s of tenant %s is revoked\n", sec.ID, tenantID)
		return nil
	default: // list
		var all []postgres.Tenant
		after := uuid.Nil
		for {
			page, next, err := svc.List(ctx, 500, after)
			if err != nil {
				return err
			}
			all = append(all, page...)
			if next == uuid.Nil {
				break
			}
			after = next
		}
		return printTenants(stdout, asJSON, all)
	}
}

func printIssued(w io.Writer, asJSON bool, t tenants.Issued) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]string{
			"tenantId": t.TenantID.String(), "secretId": t.SecretID.String(), "secret": t.Secret,
		})
	}
	_, err := fmt.Fprintf(w, "tenant id:  %s\nsecret id:  %s\nsecret:     %s\n\nThe secret is shown only now; store it safely. Send it as X-Tenant-Secret with X-Tenant-Id.\n",
		t.TenantID, t.SecretID, t.Secret)
	return err
}

func printTenants(w io.Writer, asJSON bool, list []postgres.Tenant) error {
	type secret struct {
		SecretID string `json:"secretId"`
		State    string `json:"state"`
	}
	type tenant struct {
		TenantID string   `json:"tenantId"`
		Name     string   `json:"name"`
		Secrets  []secret `json:"secrets"`
	}
	out := make([]tenant, 0, len(list))
	for _, t := range list {
		tt := tenant{TenantID: t.ID.String(), Name: t.Name, Secrets: []secret{}}
		for _, s := range t.Secrets {
			state := "ACTIVE"
			if s.RevokedAt != nil {
				state = "REVOKED"
			}
			tt.Secrets = append(tt.Secrets, secret{SecretID: s.ID.String(), State: state})
		}
		out = append(out, tt)
	}
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{"tenants": out})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT ID\tNAME\tSECRET ID\tSTATE")
	for _, t := range out {
		if len(t.Secrets) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\n", t.TenantID, t.Name)
		}
		for _, s := range t.Secrets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.TenantID, t.Name, s.SecretID, s.State)
		}
	}
	return tw.Flush()
}

// flag removes every occurrence of name from args and reports whether there was one.
func flag(args []string, name string) (bool, []string) {
	found := slices.Contains(args, name)
	return found, slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == name })
}

// cliActor names the operator of a command in the audit trail: "cli:$USER".
func cliActor(getenv func(string) string) string {
	user := getenv("USER")
	if user == "" {
		user = "unknown"
	}
	return "cli:" + user
}

// openStore opens the database of a command that needs only it, checks that it is migrated and
// returns the store with a function that closes it.
func openStore(ctx context.Context, getenv func(string) string) (*postgres.Store, func(), error) {
	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("configuration:\n%w", err)
	}
	return openMigrated(ctx, db.DatabaseURL)
}

// openMigrated opens databaseURL and checks that it is migrated.
func openMigrated(ctx context.Context, databaseURL string) (*postgres.Store, func(), error) {
	pool, err := postgres.Open(ctx, databaseURL, postgres.WithMaxConns(2))
	if err != nil {
		return nil, nil, err
	}
	if err := postgres.CheckReady(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("%w (run: encryption-service migrate)", err)
	}
	return postgres.NewStore(pool), pool.Close, nil
}

// generateAdminToken prints a fresh admin token and the hash the service is configured with.
func generateAdminToken(w io.Writer) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	token := "cat_" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(token))
	_, err := fmt.Fprintf(w, "X-Admin-Token:        %s\nES_ADMIN_TOKEN_HASH=%s\n", token, hex.EncodeToString(h[:]))
	return err
}
