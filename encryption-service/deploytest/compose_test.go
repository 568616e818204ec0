package deploytest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// mustLoadCompose loads deploy/compose.yaml with compose-go (schema validation, interpolation,
// merging of the x-hardening anchor) in an environment holding only env.
func mustLoadCompose(tb testing.TB, env []string) *types.Project {
	tb.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "deploy", "compose.yaml")},
		cli.WithEnv(env),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		tb.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		tb.Fatalf("load deploy/compose.yaml: %v", err)
	}
	return p
}

func TestComposeFile(t *testing.T) {
	cfg := readmeConfig(t)
	p := mustLoadCompose(t, []string{"CUSTOS_ADMIN_TOKEN_HASH=" + strings.Repeat("ab", 32)})
	if p.Name != "custos" {
		t.Errorf("project name = %q, want custos", p.Name)
	}

	for _, name := range []string{"init", "postgres", "encryption-service", "core"} {
		svc, ok := p.Services[name]
		if !ok {
			t.Errorf("no service %q", name)
			continue
		}
		t.Run(name+"/hardening", func(t *testing.T) {
			if !svc.ReadOnly {
				t.Errorf("read_only = false, want true")
			}
			if !slices.Contains(svc.CapDrop, "ALL") {
				t.Errorf("cap_drop = %v, want ALL", svc.CapDrop)
			}
			if !slices.Contains(svc.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("security_opt = %v, want no-new-privileges:true", svc.SecurityOpt)
			}
			if name != "init" && len(svc.CapAdd) > 0 {
				t.Errorf("cap_add = %v, want none", svc.CapAdd)
			}
			if name != "init" && (svc.HealthCheck == nil || len(svc.HealthCheck.Test) < 2) {
				t.Errorf("no healthcheck")
			}
			for _, port := range svc.Ports {
				if port.HostIP != "127.0.0.1" {
					t.Errorf("port %s published on %q, want 127.0.0.1 only", port.Published, port.HostIP)
				}
			}
		})
	}

	for _, img := range images {
		svc := p.Services[img.service]
		t.Run(img.service, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range svc.Environment {
				if v != nil {
					env[k] = *v
				}
			}
			c := cfg[img.service]
			// Every variable the README marks required is set (or its _FILE, or its alternative).
			for _, name := range c.required() {
				if !c.satisfied(name, env) {
					t.Errorf("environment does not set %s, which the README marks %q", name, mustRow(t, c, name).Default)
				}
			}
			// Nothing unknown: a misspelt variable would be ignored by the service.
			var mounts []string
			for _, v := range svc.Volumes {
				mounts = append(mounts, v.Target)
				if !v.ReadOnly {
					t.Errorf("volume %s at %s is writable; want read-only", v.Source, v.Target)
				}
			}
			for name, value := range env {
				if !knownVar(c, img.service, name) {
					t.Errorf("environment sets %s, which the README does not document", name)
				}
				if fileVar(name) && !underAny(value, mounts) {
					t.Errorf("%s=%s is not inside a mounted volume (%v)", name, value, mounts)
				}
			}
			// The secrets are files, never values in the compose file.
			for _, name := range []string{img.prefix + "_DATABASE_URL", "ES_MASTER_KEYS"} {
				if _, ok := env[name]; ok {
					t.Errorf("environment sets %s itself; want %s_FILE (or ES_MASTER_KEY_DIR)", name, name)
				}
			}
			// The image has no shell: the healthcheck runs the binary's probe command directly.
			hc := svc.HealthCheck.Test
			if hc[0] != "CMD" || hc[1] != "/usr/local/bin/"+img.binary || !slices.Contains(hc, "probe") {
				t.Errorf("healthcheck %v, want [CMD /usr/local/bin/%s probe …]", hc, img.binary)
			}
			if svc.Build == nil || svc.Build.Dockerfile != img.dockerfile {
				t.Errorf("build = %+v, want dockerfile %s", svc.Build, img.dockerfile)
			} else if ctx, _ := filepath.Abs(repoRoot); filepath.Clean(svc.Build.Context) != ctx {
				t.Errorf("build context = %s, want the repository root %s", svc.Build.Context, ctx)
			}
			for _, dep := range []string{"init", "postgres"} {
				if _, ok := svc.DependsOn[dep]; !ok {
					t.Errorf("depends_on lacks %s", dep)
				}
			}
			if got := svc.DependsOn["postgres"].Condition; got != types.ServiceConditionHealthy {
				t.Errorf("depends_on postgres condition = %q, want %q", got, types.ServiceConditionHealthy)
			}
		})
	}

	if got := p.Services["core"].DependsOn["encryption-service"].Condition; got != types.ServiceConditionHealthy {
		t.Errorf("core depends_on encryption-service condition = %q, want %q", got, types.ServiceConditionHealthy)
	}
	// Core reaches the encryption service by its compose name and checks the name the dev
	// certificate carries.
	coreEnv := p.Services["core"].Environment
	if addr := coreEnv["CORE_ES_ADDR"]; addr == nil || !strings.HasPrefix(*addr, "encryption-service:") {
		t.Errorf("CORE_ES_ADDR = %v, want encryption-service:<port>", addr)
	}
	// The init script exists and is what init runs.
	init := p.Services["init"]
	var script string
	for _, v := range init.Volumes {
		if v.Target == "/init.sh" {
			script = v.Source
		}
	}
	if _, err := os.Stat(script); script == "" || err != nil {
		t.Errorf("init mounts its script from %q: %v", script, err)
	}
	if init.NetworkMode != "none" {
		t.Errorf("init network_mode = %q, want none", init.NetworkMode)
	}
}

// TestComposeAdminPlaneOptional: without CUSTOS_ADMIN_TOKEN_HASH the file still loads, with the
// admin plane off.
func TestComposeAdminPlaneOptional(t *testing.T) {
	p := mustLoadCompose(t, nil)
	if v := p.Services["encryption-service"].Environment["ES_ADMIN_TOKEN_HASH"]; v == nil || *v != "" {
		t.Errorf("ES_ADMIN_TOKEN_HASH without CUSTOS_ADMIN_TOKEN_HASH = %v, want empty", v)
	}
}

func mustRow(tb testing.TB, c serviceConfig, name string) envVar {
	tb.Helper()
	v, ok := c.byName(name)
	if !ok {
		tb.Fatalf("README: no row for %s", name)
	}
	return v
}
