package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// image describes one service image.
type image struct {
	service    string // README section and compose service
	dockerfile string // relative to the repository root
	binary     string // the command's name: ./<binary>/cmd/<binary>
	prefix     string // environment prefix
}

var images = []image{
	{service: "encryption-service", dockerfile: "deploy/docker/encryption-service.Dockerfile", binary: "encryption-service", prefix: "ES"},
	{service: "core", dockerfile: "deploy/docker/core.Dockerfile", binary: "core", prefix: "CORE"},
}

// dockerfile is a parsed Dockerfile.
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs map[string]string // ARGs before the first FROM, with their defaults
}

// mustParseDockerfile parses path with buildkit's parser and instruction parser, failing on parse
// warnings and on any finding of buildkit's Dockerfile linter (what "docker build --check" reports
// at parse time).
func mustParseDockerfile(tb testing.TB, path string) dockerfile {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		tb.Fatalf("parse %s: %v", path, err)
	}
	for _, w := range res.Warnings {
		tb.Errorf("%s: parser warning: %s", path, w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		lints = append(lints, fmt.Sprintf("%s (line %v): %s", rule, loc, msg))
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		tb.Fatalf("parse instructions of %s: %v", path, err)
	}
	for _, l := range lints {
		tb.Errorf("%s: lint: %s", path, l)
	}
	df := dockerfile{stages: stages, metaArgs: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			df.metaArgs[kv.Key] = kv.ValueString()
		}
	}
	return df
}

var varRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// expand replaces ${NAME} by the meta-argument's default.
func (df dockerfile) expand(s string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		return df.metaArgs[varRef.FindStringSubmatch(m)[1]]
	})
}

// stage returns the stage named name, or the last stage for "".
func (df dockerfile) stage(tb testing.TB, name string) instructions.Stage {
	tb.Helper()
	if name == "" {
		return df.stages[len(df.stages)-1]
	}
	for _, s := range df.stages {
		if s.Name == name {
			return s
		}
	}
	tb.Fatalf("no stage %q", name)
	return instructions.Stage{}
}

// commandsOf returns the commands of stage s of type T.
func commandsOf[T instructions.Command](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if t, ok := c.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// makefileToolchain returns the GOTOOLCHAIN the Makefile exports.
func makefileToolchain(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		tb.Fatalf("read Makefile: %v", err)
	}
	m := regexp.MustCompile(`(?m)^export GOTOOLCHAIN\s*:?=\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		tb.Fatalf("Makefile exports no GOTOOLCHAIN")
	}
	return string(m[1])
}

func TestDockerfiles(t *testing.T) {
	cfg := readmeConfig(t)
	toolchain := makefileToolchain(t)
	for _, img := range images {
		t.Run(img.service, func(t *testing.T) {
			df := mustParseDockerfile(t, filepath.Join(repoRoot, img.dockerfile))
			if len(df.stages) < 2 {
				t.Fatalf("%d stages, want a build stage and a final stage", len(df.stages))
			}

			// The build stage: the pinned toolchain, static, reproducible, versioned.
			build := df.stage(t, "build")
			if base := df.expand(build.BaseName); !strings.HasPrefix(base, "golang:1.27") {
				t.Errorf("build stage FROM %q, want a golang:1.27 image", base)
			}
			env := map[string]string{}
			for _, e := range commandsOf[*instructions.EnvCommand](build) {
				for _, kv := range e.Env {
					env[kv.Key] = kv.Value
				}
			}
			if env["GOTOOLCHAIN"] != toolchain || env["CGO_ENABLED"] != "0" {
				t.Errorf("build stage ENV GOTOOLCHAIN=%q CGO_ENABLED=%q, want %q (the Makefile's) and \"0\"",
					env["GOTOOLCHAIN"], env["CGO_ENABLED"], toolchain)
			}
			var buildRun string
			for _, r := range commandsOf[*instructions.RunCommand](build) {
				if line := strings.Join(r.CmdLine, " "); strings.Contains(line, "go build") {
					buildRun = line
				}
			}
			for _, want := range []string{"-trimpath", `-s -w -X main.version=${VERSION}`, "./" + img.binary + "/cmd/" + img.binary} {
				if !strings.Contains(buildRun, want) {
					t.Errorf("build RUN %q lacks %q", buildRun, want)
				}
			}
			if !hasArg(build, "VERSION") {
				t.Errorf("build stage declares no ARG VERSION")
			}

			// The final stage: distroless static nonroot, no shell, no RUN, numeric non-root USER.
			final := df.stage(t, "")
			base := df.expand(final.BaseName)
			if !(strings.Contains(base, "distroless/static") && strings.HasSuffix(base, ":nonroot")) && base != "scratch" {
				t.Errorf("final stage FROM %q, want distroless static :nonroot (or scratch)", base)
			}
			if runs := commandsOf[*instructions.RunCommand](final); len(runs) > 0 {
				t.Errorf("final stage has %d RUN instructions; the image has no shell", len(runs))
			}
			users := commandsOf[*instructions.UserCommand](final)
			if len(users) == 0 {
				t.Fatalf("final stage has no USER")
			}
			user := users[len(users)-1].User
			uid, gid, _ := strings.Cut(user, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("USER %q: want a numeric non-root uid (Kubernetes' runAsNonRoot checks it)", user)
			}
			if n, err := strconv.Atoi(gid); err != nil || n == 0 {
				t.Errorf("USER %q: want a numeric non-root gid", user)
			}
			binPath := "/usr/local/bin/" + img.binary
			eps := commandsOf[*instructions.EntrypointCommand](final)
			if len(eps) != 1 || eps[0].PrependShell || !slices.Equal(eps[0].CmdLine, []string{binPath}) {
				t.Errorf("ENTRYPOINT = %+v, want exec form [%q]", eps, binPath)
			}
			cmds := commandsOf[*instructions.CmdCommand](final)
			if len(cmds) != 1 || cmds[0].PrependShell {
				t.Errorf("CMD = %+v, want one in exec form", cmds)
			}
			var copied bool
			for _, c := range commandsOf[*instructions.CopyCommand](final) {
				if c.From == "build" && c.DestPath == binPath {
					copied = true
				}
			}
			if !copied {
				t.Errorf("final stage does not COPY --from=build the binary to %s", binPath)
			}
			var exposed []string
			for _, e := range commandsOf[*instructions.ExposeCommand](final) {
				exposed = append(exposed, e.Ports...)
			}
			c := cfg[img.service]
			for _, v := range []string{img.prefix + "_HTTP_ADDR", img.prefix + "_GRPC_ADDR"} {
				_, port, _ := strings.Cut(c.defaultOf(v), ":")
				if port == "" || !slices.Contains(exposed, port) {
					t.Errorf("EXPOSE %v lacks the port of %s's default %q (README)", exposed, v, c.defaultOf(v))
				}
			}
			labels := map[string]string{}
			for _, l := range commandsOf[*instructions.LabelCommand](final) {
				for _, kv := range l.Labels {
					labels[kv.Key] = kv.Value
				}
			}
			for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.revision"} {
				if labels[k] == "" {
					t.Errorf("no LABEL %s", k)
				}
			}
			if strings.Trim(labels["org.opencontainers.image.version"], `"`) != "${VERSION}" || !hasArg(final, "VERSION") {
				t.Errorf("LABEL org.opencontainers.image.version = %q, want ${VERSION} from an ARG VERSION of the final stage",
					labels["org.opencontainers.image.version"])
			}
		})
	}
}

func hasArg(s instructions.Stage, name string) bool {
	for _, a := range commandsOf[*instructions.ArgCommand](s) {
		for _, kv := range a.Args {
			if kv.Key == name {
				return true
			}
		}
	}
	return false
}

// goListFiles lists, relative to the repository root, the Go and embedded files of the workspace's
// packages that the binary is built from, with the go.mod and go.sum of their modules.
func goListFiles(tb testing.TB, root, pkg string) []string {
	tb.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,ImportPath,GoFiles,EmbedFiles,Module", pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"), "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr.String())
	}
	seen := map[string]bool{}
	var files []string
	add := func(abs string) {
		rel, err := filepath.Rel(root, abs)
		if err != nil || strings.HasPrefix(rel, "..") {
			return
		}
		rel = filepath.ToSlash(rel)
		if !seen[rel] {
			seen[rel] = true
			files = append(files, rel)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct {
				Main  bool
				Dir   string
				GoMod string
			}
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			tb.Fatalf("decode go list output: %v", err)
		}
		if p.Module == nil || !p.Module.Main {
			continue // standard library or a dependency from the module cache
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			add(filepath.Join(p.Dir, f))
		}
		add(p.Module.GoMod)
		add(filepath.Join(p.Module.Dir, "go.sum"))
	}
	return files
}

// TestDockerBuildContext checks each Dockerfile's build context as its .dockerignore filters it:
// every file the binary is built from (go list) is sent and copied into the build stage, the
// workspace's go.work and every module's go.mod are there, and keys, local state and tests are not.
func TestDockerBuildContext(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		t.Run(img.service, func(t *testing.T) {
			ignorePath := filepath.Join(root, img.dockerfile+".dockerignore")
			f, err := os.Open(ignorePath)
			if err != nil {
				t.Fatalf("open %s (BuildKit reads <Dockerfile>.dockerignore): %v", ignorePath, err)
			}
			patterns, err := ignorefile.ReadAll(f)
			f.Close()
			if err != nil {
				t.Fatalf("read %s: %v", ignorePath, err)
			}
			pm, err := patternmatcher.New(patterns)
			if err != nil {
				t.Fatalf("patterns of %s: %v", ignorePath, err)
			}
			excluded := func(rel string) bool {
				ex, err := pm.MatchesOrParentMatches(rel)
				if err != nil {
					t.Fatalf("match %s: %v", rel, err)
				}
				return ex
			}

			df := mustParseDockerfile(t, filepath.Join(root, img.dockerfile))
			var sources []string
			for _, c := range commandsOf[*instructions.CopyCommand](df.stage(t, "build")) {
				if c.From == "" {
					for _, s := range c.SourcePaths {
						sources = append(sources, strings.TrimSuffix(s, "/"))
					}
				}
			}
			copied := func(rel string) bool {
				for _, s := range sources {
					if rel == s || strings.HasPrefix(rel, s+"/") {
						return true
					}
				}
				return false
			}

			needed := goListFiles(t, root, "./"+img.binary+"/cmd/"+img.binary)
			needed = append(needed, "go.work", "go.work.sum")
			for _, m := range []string{"proto", "core", "encryption-service"} {
				needed = append(needed, m+"/go.mod", m+"/go.sum")
			}
			if len(needed) < 20 {
				t.Fatalf("go list found only %d files for %s", len(needed), img.binary)
			}
			for _, rel := range needed {
				if excluded(rel) {
					t.Errorf("%s is needed by the build but excluded from the context", rel)
				} else if !copied(rel) {
					t.Errorf("%s is needed by the build but no COPY of the build stage copies it (sources %v)", rel, sources)
				}
			}
			for _, rel := range []string{
				"certs/dev/ca.key", "certs/dev/core.key", "certs/dev/ca.crt", ".run/dev.env", ".run/dev-master-keys",
				".git/config", "bin/" + img.binary, "encryption-service/internal/keyring/keyring_test.go",
				"encryption-service/deploytest/readme_test.go", "encryption-service/internal/aead/testdata/fuzz/FuzzDecrypt/x",
				"deploy/compose.yaml", "README.md",
			} {
				if !excluded(rel) {
					t.Errorf("%s is sent in the build context; want it excluded", rel)
				}
			}
		})
	}
}
