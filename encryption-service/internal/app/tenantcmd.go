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

// runTenant runs "tenant create|list|rotate-secret|revoke-secret" against the database directly,
// for operators of an on-premises service (no admin token needed: database access is the
// credential). Changes are audited with actor "cli:$USER" and reach running replicas at once.
func runTenant(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	asJSON := slices.Contains(args, "--json")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--json" })
	if len(args) == 0 {
		return fmt.Errorf("%w: tenant needs a subcommand: create, list, rotate-secret or revoke-secret\n\n%s", ErrUsage, usage)
	}
	sub, args := args[0], args[1:]
	want := map[string]int{"create": 1, "list": 0, "rotate-secret": 1, "revoke-secret": 2}
	n, ok := want[sub]
	if !ok {
		return fmt.Errorf("%w: unknown tenant subcommand %q\n\n%s", ErrUsage, sub, usage)
	}
	if len(args) != n {
		return fmt.Errorf("%w: tenant %s takes %d argument(s), got %d\n\n%s", ErrUsage, sub, n, len(args), usage)
	}

	db, err := config.LoadDatabase(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	pool, err := postgres.Open(ctx, db.DatabaseURL, postgres.WithMaxConns(2))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.CheckReady(ctx, pool); err != nil {
		return fmt.Errorf("%w (run: encryption-service migrate)", err)
	}
	svc := tenants.New(postgres.NewStore(pool), nil)
	user := getenv("USER")
	if user == "" {
		user = "unknown"
	}
	actor := tenants.Actor{Name: "cli:" + user}

	switch sub {
	case "create":
		issued, err := svc.Create(ctx, actor, args[0])
		if err != nil {
			return err
		}
		return printIssued(stdout, asJSON, issued)
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
			page, err := svc.List(ctx, 500, after)
			if err != nil {
				return err
			}
			all = append(all, page...)
			if len(page) < 500 {
				break
			}
			after = page[len(page)-1].ID
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
