package deploytest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// TestComposeHealthchecks: each service's healthcheck runs its probe command against the REST
// listener the service really has, with what the probe needs to pass the handshake: the listen
// address is set and published, the CA and server name match the dev certificate, and the
// encryption service's probe presents a client certificate.
func TestComposeHealthchecks(t *testing.T) {
	p := mustLoadCompose(t, nil)
	for _, img := range images {
		t.Run(img.service, func(t *testing.T) {
			svc := p.Services[img.service]
			env := map[string]string{}
			for k, v := range svc.Environment {
				if v != nil {
					env[k] = *v
				}
			}
			hc := svc.HealthCheck.Test
			if !slices.Equal(hc, []string{"CMD", "/usr/local/bin/" + img.binary, "probe", "--ready"}) {
				t.Errorf("healthcheck %v, want [CMD /usr/local/bin/%s probe --ready]", hc, img.binary)
			}
			targets := map[string]bool{}
			for _, port := range svc.Ports {
				targets[strconv.FormatUint(uint64(port.Target), 10)] = true
			}
			for _, listener := range []string{"HTTP", "GRPC"} {
				name := img.prefix + "_" + listener + "_ADDR"
				_, port, err := net.SplitHostPort(env[name])
				if err != nil || !targets[port] {
					t.Errorf("%s = %q, want :<port> of a published port (%v)", name, env[name], svc.Ports)
				}
			}
			// The probe trusts the CA the service's own certificate chains to, and expects the
			// name the dev certificate carries (scripts/gen-dev-certs.sh: custos-<service>).
			if ca, tls := env[img.prefix+"_PROBE_CA_FILE"], filepath.Dir(env[img.prefix+"_TLS_CERT_FILE"])+"/ca.crt"; ca != tls {
				t.Errorf("%s_PROBE_CA_FILE = %q, want the CA beside the server certificate, %q", img.prefix, ca, tls)
			}
			if got, want := env[img.prefix+"_PROBE_SERVER_NAME"], "custos-"+img.service; got != want {
				t.Errorf("%s_PROBE_SERVER_NAME = %q, want %q, a name of the dev certificate", img.prefix, got, want)
			}
			// Every listener of the encryption service requires a client certificate.
			if img.service == "encryption-service" {
				for _, v := range []string{"ES_PROBE_CERT_FILE", "ES_PROBE_KEY_FILE"} {
					if env[v] == "" {
						t.Errorf("%s unset: the probe could not pass the encryption service's handshake", v)
					}
				}
			}
		})
	}
}

// initCerts are the files compose-init.sh copies from certs/dev.
var initCerts = []string{"ca.crt", "encryption-service.crt", "encryption-service.key", "core.crt", "core.key", "core-client.crt", "core-client.key"}

// runComposeInit runs deploy/compose-init.sh with sh against certs and out, as the current user
// (the files it hands over are owned by it), and returns its standard error and exit error.
func runComposeInit(tb testing.TB, certs, out string) (string, error) {
	tb.Helper()
	owner := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	cmd := exec.Command("sh", filepath.Join(repoRoot, "deploy", "compose-init.sh"))
	cmd.Env = append(os.Environ(), "COMPOSE_INIT_CERTS="+certs, "COMPOSE_INIT_OUT="+out,
		"COMPOSE_INIT_SERVICE_USER="+owner, "COMPOSE_INIT_POSTGRES_USER="+owner)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// mustInitDirs makes a certs/dev with every file but skip, and the three empty volumes compose
// mounts under /out.
func mustInitDirs(tb testing.TB, skip string) (certs, out string) {
	tb.Helper()
	dir := tb.TempDir()
	certs, out = filepath.Join(dir, "certs"), filepath.Join(dir, "out")
	for _, d := range []string{certs, out + "/encryption-service", out + "/core", out + "/postgres"} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	for _, f := range initCerts {
		if f != skip {
			if err := os.WriteFile(filepath.Join(certs, f), []byte("PEM of "+f+"\n"), 0o600); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return certs, out
}

// readTree returns every regular file under dir (path relative to dir → content), failing on a
// file that is not private to its owner, read-only.
func readTree(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if info.Mode().Perm() != 0o400 {
			tb.Errorf("%s: mode %v, want 0400 (readable by the service alone)", rel, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		tb.Fatalf("walk %s: %v", dir, err)
	}
	return files
}

// TestComposeInit runs the init service's script against temporary directories: it refuses to run
// without the dev certificates (writing nothing), then makes every secret once, private.
func TestComposeInit(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Fatalf("sh: %v", err)
	}
	t.Run("missing certificate", func(t *testing.T) {
		certs, out := mustInitDirs(t, "core-client.key")
		stderr, err := runComposeInit(t, certs, out)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr, "certs/dev/core-client.key is missing") {
			t.Errorf("compose-init.sh without core-client.key = %v, %q; want exit 1 naming the file", err, stderr)
		}
		if files := readTree(t, out); len(files) > 0 {
			t.Errorf("compose-init.sh without a certificate wrote %v, want nothing", slices.Sorted(maps.Keys(files)))
		}
	})

	certs, out := mustInitDirs(t, "")
	// An earlier version of the script could leave a world-readable secret-keys.new behind.
	if err := os.WriteFile(filepath.Join(out, "core", "secret-keys.new"), []byte("compose1:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if stderr, err := runComposeInit(t, certs, out); err != nil {
		t.Fatalf("compose-init.sh = %v\n%s", err, stderr)
	}
	first := readTree(t, out)
	want := []string{
		"core/admin-password", "core/database-url", "core/secret-keys",
		"encryption-service/database-url", "encryption-service/master-keys/compose1", "postgres/password",
	}
	for _, f := range []string{"ca.crt", "encryption-service.crt", "encryption-service.key", "core-client.crt", "core-client.key"} {
		want = append(want, "encryption-service/tls/"+f)
	}
	for _, f := range []string{"ca.crt", "core.crt", "core.key", "core-client.crt", "core-client.key"} {
		want = append(want, "core/tls/"+f)
	}
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(first)); !slices.Equal(got, want) {
		t.Errorf("compose-init.sh wrote %v, want %v", got, want)
	}
	for _, f := range []string{"encryption-service/tls/encryption-service.key", "core/tls/core.key"} {
		if name := filepath.Base(f); first[f] != "PEM of "+name+"\n" {
			t.Errorf("%s = %q, want a copy of certs/dev/%s", f, first[f], name)
		}
	}
	base64Of := func(n int) *regexp.Regexp {
		return regexp.MustCompile(`^[A-Za-z0-9+/]{` + strconv.Itoa(n/3*4) + `}[A-Za-z0-9+/=]{0,4}$`)
	}
	if k, ok := strings.CutPrefix(strings.TrimSuffix(first["core/secret-keys"], "\n"), "compose1:"); !ok || !base64Of(32).MatchString(k) {
		t.Errorf("core/secret-keys = %q, want compose1:<base64 of 32 bytes>", first["core/secret-keys"])
	} else if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 {
		t.Errorf("core/secret-keys: %d bytes, %v; want 32", len(b), err)
	}
	if b, err := base64.StdEncoding.DecodeString(first["encryption-service/master-keys/compose1"]); err != nil || len(b) != 32 {
		t.Errorf("master key: %d bytes, %v; want 32", len(b), err)
	}
	password := strings.TrimSpace(first["postgres/password"])
	if len(password) < 24 || !strings.Contains(first["core/database-url"], ":"+password+"@postgres:5432/") ||
		first["core/database-url"] != first["encryption-service/database-url"] {
		t.Errorf("database URLs %q and %q, want both with the PostgreSQL password", first["core/database-url"], first["encryption-service/database-url"])
	}
	if len(strings.TrimSpace(first["core/admin-password"])) < 20 {
		t.Errorf("core/admin-password = %q, want a random password", first["core/admin-password"])
	}

	// A second start keeps every secret (the database and its data depend on them) and copies the
	// certificates again.
	if err := os.WriteFile(filepath.Join(certs, "core.crt"), []byte("renewed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if stderr, err := runComposeInit(t, certs, out); err != nil {
		t.Fatalf("compose-init.sh, again = %v\n%s", err, stderr)
	}
	second := readTree(t, out)
	for f, v := range first {
		switch {
		case f == "core/tls/core.crt":
			if second[f] != "renewed\n" {
				t.Errorf("%s = %q after the certificate was renewed, want the new one", f, second[f])
			}
		case second[f] != v:
			t.Errorf("%s changed on the second start", f)
		}
	}
}
