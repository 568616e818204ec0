// Package deploytest checks the deployment material under deploy/ — the container images, the
// compose file and the Helm chart — against the Kubernetes API types, the Dockerfile and compose
// parsers, and the configuration the services document in the README. It holds tests only.
package deploytest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository root, relative to this package's directory (the test's working
// directory).
const repoRoot = "../.."

// envVar is one row of a README configuration table.
type envVar struct {
	Names    []string // the variables the row names (a row may name two, e.g. cert and key)
	Default  string   // the default column as written
	Required bool     // the default column starts with "required"
	Secret   bool     // marked *secret*: NAME_FILE may stand in for NAME
	Unless   []string // "required unless `X`": X satisfies the requirement instead
}

// serviceConfig is a service's configuration table from the README.
type serviceConfig struct {
	Vars []envVar
}

// byName returns the row naming name.
func (c serviceConfig) byName(name string) (envVar, bool) {
	for _, v := range c.Vars {
		if slices.Contains(v.Names, name) {
			return v, true
		}
	}
	return envVar{}, false
}

// documented reports whether name is a variable of the table, or NAME_FILE of a secret one.
func (c serviceConfig) documented(name string) bool {
	if _, ok := c.byName(name); ok {
		return true
	}
	if base, ok := strings.CutSuffix(name, "_FILE"); ok {
		if v, ok := c.byName(base); ok && v.Secret {
			return true
		}
	}
	return false
}

// satisfied reports whether env (name → value) sets variable name as the README requires it:
// name itself, NAME_FILE for a secret, or one of its "unless" alternatives, with a non-empty value.
func (c serviceConfig) satisfied(name string, env map[string]string) bool {
	if env[name] != "" {
		return true
	}
	v, _ := c.byName(name)
	if v.Secret && env[name+"_FILE"] != "" {
		return true
	}
	for _, alt := range v.Unless {
		if c.satisfied(alt, env) {
			return true
		}
	}
	return false
}

// required lists every variable the README marks required.
func (c serviceConfig) required() []string {
	var names []string
	for _, v := range c.Vars {
		if v.Required {
			names = append(names, v.Names...)
		}
	}
	return names
}

// defaultOf returns the default column of name, unquoted: ":9443" for ES_HTTP_ADDR.
func (c serviceConfig) defaultOf(name string) string {
	v, _ := c.byName(name)
	return strings.Trim(v.Default, "` ")
}

var (
	backticked = regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	unlessRe   = regexp.MustCompile("unless ((?:`[A-Z0-9_]+`(?:,? (?:or )?)?)+)")
)

// readmeConfig parses the configuration tables of the README ("## Configuration", one "### <service>"
// section per service): service name → its variables. It fails the test when a table is missing or
// holds no required variable, so that a change of the README's layout cannot make the checks built
// on it pass vacuously.
func readmeConfig(tb testing.TB) map[string]serviceConfig {
	tb.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		tb.Fatalf("open README: %v", err)
	}
	defer f.Close()
	configs := map[string]serviceConfig{}
	var inConfig bool
	var service string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			inConfig = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == "Configuration"
			service = ""
			continue
		case strings.HasPrefix(line, "### ") && inConfig:
			service = strings.TrimSpace(strings.TrimPrefix(line, "### "))
			continue
		}
		if !inConfig || service == "" || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		var names []string
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, m[1])
		}
		if len(names) == 0 {
			continue // header or separator row
		}
		def := strings.TrimSpace(cells[1])
		v := envVar{
			Names:    names,
			Default:  def,
			Required: strings.HasPrefix(def, "required"),
			Secret:   strings.Contains(def, "*secret*"),
		}
		if m := unlessRe.FindStringSubmatch(def); m != nil {
			for _, u := range backticked.FindAllStringSubmatch(m[1], -1) {
				v.Unless = append(v.Unless, u[1])
			}
		}
		c := configs[service]
		c.Vars = append(c.Vars, v)
		configs[service] = c
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("read README: %v", err)
	}
	for _, s := range []string{"encryption-service", "core"} {
		if len(configs[s].required()) < 3 {
			tb.Fatalf("README configuration of %s: found required variables %v; want its table under ## Configuration / ### %s",
				s, configs[s].required(), s)
		}
	}
	return configs
}

// probeVars are the variables of the probe command that the deployment material uses and the lead
// is adding to the binaries ("<binary> probe --live|--ready"); they are not in the README yet.
var probeVars = map[string][]string{
	"encryption-service": {"ES_PROBE_CERT_FILE", "ES_PROBE_KEY_FILE", "ES_PROBE_CA_FILE", "ES_PROBE_SERVER_NAME"},
	"core":               {"CORE_PROBE_CERT_FILE", "CORE_PROBE_KEY_FILE", "CORE_PROBE_CA_FILE", "CORE_PROBE_SERVER_NAME"},
}

// runtimeVars are variables of the Go runtime, not of the services.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"}

// knownVar reports whether a deployment may set name for service: documented in the README, a probe
// variable, or a Go runtime variable.
func knownVar(cfg serviceConfig, service, name string) bool {
	return cfg.documented(name) || slices.Contains(probeVars[service], name) || slices.Contains(runtimeVars, name)
}

// fileVar reports whether the variable names a path (a file or a directory) that must be mounted.
func fileVar(name string) bool {
	return strings.HasSuffix(name, "_FILE") || strings.HasSuffix(name, "_DIR")
}

// underAny reports whether path lies inside one of dirs.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if rel, err := filepath.Rel(d, path); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return true
		}
		if path == d {
			return true
		}
	}
	return false
}

func TestReadmeConfig(t *testing.T) {
	cfg := readmeConfig(t)
	es := cfg["encryption-service"]
	tests := []struct {
		name             string
		required, secret bool
		unless           []string
	}{
		{name: "ES_DATABASE_URL", required: true, secret: true},
		{name: "ES_TLS_KEY_FILE", required: true},
		{name: "ES_MASTER_KEYS", required: true, secret: true, unless: []string{"ES_MASTER_KEY_DIR"}},
		{name: "ES_ADMIN_TOKEN_HASH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := es.byName(tt.name)
			if !ok {
				t.Fatalf("README: no row for %s", tt.name)
			}
			if v.Required != tt.required || v.Secret != tt.secret || !slices.Equal(v.Unless, tt.unless) {
				t.Errorf("README row %s = required %v secret %v unless %v, want %v %v %v",
					tt.name, v.Required, v.Secret, v.Unless, tt.required, tt.secret, tt.unless)
			}
		})
	}
	env := map[string]string{"ES_MASTER_KEY_DIR": "/keys", "ES_DATABASE_URL_FILE": "/url"}
	for _, name := range []string{"ES_MASTER_KEYS", "ES_DATABASE_URL"} {
		if !es.satisfied(name, env) {
			t.Errorf("satisfied(%s, %v) = false, want true", name, env)
		}
	}
	if es.satisfied("ES_TLS_CERT_FILE", env) {
		t.Errorf("satisfied(ES_TLS_CERT_FILE, %v) = true, want false", env)
	}
	if got := es.defaultOf("ES_HTTP_ADDR"); got != ":9443" {
		t.Errorf("default of ES_HTTP_ADDR = %q, want %q", got, ":9443")
	}
}
