package deploytest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = repoRoot + "/deploy/helm/custos"
	releaseName = "custos"
	namespace   = "custos"
)

// profile is a set of values the chart is rendered with: values files of the chart, then overrides.
type profile struct {
	name  string
	files []string
	set   map[string]any
}

// profiles are the documented profiles, and variants that turn on every optional object so that
// each template is rendered and decoded at least once.
var profiles = []profile{
	{name: "default"},
	{name: "platform", files: []string{"values-platform.yaml"}},
	{name: "sovereign", files: []string{"values-sovereign.yaml"}},
	{name: "platform-everything", files: []string{"values-platform.yaml"}, set: map[string]any{
		"serviceMonitor": map[string]any{
			"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"},
			"from": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}},
		},
		"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"certManager":    map[string]any{"createIssuer": false, "issuerRef": map[string]any{"name": "corporate-ca", "kind": "ClusterIssuer"}},
		"encryptionService": map[string]any{
			"migrations": map[string]any{"job": map[string]any{"enabled": true}},
			"admin":      map[string]any{"tokenHash": strings.Repeat("0f", 32), "tokenHashSecret": map[string]any{"name": ""}},
			"masterKeys": map[string]any{"activeKeyId": "2027-01"},
			"tls":        map[string]any{"clientCA": map[string]any{"secret": "custos-client-ca-bundle"}},
			"extraEnv":   []any{map[string]any{"name": "GODEBUG", "value": "tlsmlkem=1"}},
			"extraVolumes": []any{map[string]any{"name": "pg-ca", "secret": map[string]any{
				"secretName": "custos-es-db-ca", "defaultMode": 0o440}}},
			"extraVolumeMounts":   []any{map[string]any{"name": "pg-ca", "mountPath": "/var/run/custos/pg-ca", "readOnly": true}},
			"podDisruptionBudget": map[string]any{"minAvailable": "50%"},
			"autoscaling":         map[string]any{"targetMemoryUtilizationPercentage": 80, "behavior": map[string]any{"scaleDown": map[string]any{"stabilizationWindowSeconds": 300}}},
		},
		"core": map[string]any{
			"migrations": map[string]any{"job": map[string]any{"enabled": true}},
			"tls":        map[string]any{"clientCA": map[string]any{"configMap": "custos-api-clients"}, "dnsNames": []any{"api.custos.example"}},
			"encryptionService": map[string]any{
				"ca":         map[string]any{"configMap": "custos-es-ca-bundle"},
				"serverName": "custos-encryption-service",
			},
			"networkPolicy": map[string]any{"extraEgress": []any{map[string]any{
				"to":    []any{map[string]any{"ipBlock": map[string]any{"cidr": "198.51.100.7/32"}}},
				"ports": []any{map[string]any{"port": 9444, "protocol": "TCP"}},
			}}},
		},
	}},
	{name: "core-with-remote-es", set: map[string]any{
		"encryptionService": map[string]any{"enabled": false},
		"core":              map[string]any{"encryptionService": map[string]any{"addr": "custos-es.platform.example:9444"}},
	}},
}

// rendered is the chart rendered for one profile.
type rendered struct {
	files   map[string]string // template path (custos/templates/…) → output
	objects []object
}

// object is one decoded Kubernetes object.
type object struct {
	file string
	gvk  schema.GroupVersionKind
	obj  runtime.Object
	meta metav1.Object
}

// all returns the decoded objects of type T.
func all[T runtime.Object](r rendered) []T {
	var out []T
	for _, o := range r.objects {
		if t, ok := o.obj.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// byName returns the object of type T named name, or the zero T.
func byName[T interface {
	runtime.Object
	GetName() string
}](r rendered, name string) (T, bool) {
	for _, o := range all[T](r) {
		if o.GetName() == name {
			return o, true
		}
	}
	var zero T
	return zero, false
}

// strictCodec decodes YAML into the typed Kubernetes API objects of client-go's scheme, plus
// cert-manager's (cert-manager.io/v1) and the Prometheus Operator's (monitoring.coreos.com/v1)
// registered from their own Go API packages. Strict: an unknown or duplicate field fails, and so
// does a value of the wrong type or an unregistered kind.
func strictCodec(tb testing.TB) runtime.Decoder {
	tb.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cmv1.AddToScheme, monv1.AddToScheme} {
		if err := add(s); err != nil {
			tb.Fatalf("register API types: %v", err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
}

// mustValues reads the chart's values files of p and applies its overrides, the way helm's -f and
// --set merge them (maps merged key by key, anything else replaced).
func mustValues(tb testing.TB, p profile) map[string]any {
	tb.Helper()
	vals := map[string]any{}
	for _, f := range p.files {
		v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, f))
		if err != nil {
			tb.Fatalf("read %s: %v", f, err)
		}
		vals = mergeValues(vals, v)
	}
	// Round-trip through YAML so that the overrides have the types a values file yields.
	b, err := yaml.Marshal(p.set)
	if err != nil {
		tb.Fatalf("marshal overrides: %v", err)
	}
	set, err := chartutil.ReadValues(b)
	if err != nil {
		tb.Fatalf("read overrides: %v", err)
	}
	return mergeValues(vals, set)
}

func mergeValues(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(dm, sm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// render renders the chart as "helm install custos -n custos" would, with the engine in strict
// mode (a template reading a value that does not exist fails), and decodes every object strictly.
func render(tb testing.TB, vals map[string]any) (rendered, error) {
	tb.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		tb.Fatalf("load chart: %v", err)
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return rendered{}, err // includes values.schema.json violations
	}
	files, err := engine.Engine{Strict: true}.Render(ch, rv)
	if err != nil {
		return rendered{}, err
	}
	codec := strictCodec(tb)
	r := rendered{files: files}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, helpers
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(files[name])))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: split documents: %v", name, err)
			}
			var probe map[string]any
			if err := yaml.Unmarshal(doc, &probe); err != nil {
				tb.Fatalf("%s: not YAML: %v\n%s", name, err, doc)
			}
			if len(probe) == 0 {
				continue // only comments
			}
			obj, gvk, err := codec.Decode(doc, nil, nil)
			if err != nil {
				tb.Errorf("%s: strict decoding: %v\n%s", name, err, doc)
				continue
			}
			m, err := meta.Accessor(obj)
			if err != nil {
				tb.Fatalf("%s: %s has no metadata: %v", name, gvk, err)
			}
			r.objects = append(r.objects, object{file: name, gvk: *gvk, obj: obj, meta: m})
		}
	}
	return r, nil
}

func mustRender(tb testing.TB, p profile) rendered {
	tb.Helper()
	r, err := render(tb, mustValues(tb, p))
	if err != nil {
		tb.Fatalf("render %s: %v", p.name, err)
	}
	if len(r.objects) == 0 {
		tb.Fatalf("render %s: no objects", p.name)
	}
	return r
}

// TestChartLint runs helm's linter ("helm lint --strict": warnings fail too) for every profile.
func TestChartLint(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.name, func(t *testing.T) {
			linter := lint.AllWithKubeVersionAndSchemaValidation(chartDir, mustValues(t, p), namespace, nil, false)
			for _, m := range linter.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint --strict: %s", m.Error())
				}
			}
		})
	}
}

// TestChartRenders renders every profile, decodes each object strictly, and checks the objects
// against each other and against the README's configuration tables.
func TestChartRenders(t *testing.T) {
	cfg := readmeConfig(t)
	for _, p := range profiles {
		t.Run(p.name, func(t *testing.T) {
			r := mustRender(t, p)
			vals := mustValues(t, p)
			checkUniqueNames(t, r)
			checkWorkloads(t, r, cfg)
			checkServices(t, r)
			checkScaling(t, r)
			checkNetworkPolicies(t, r, vals)
			checkCertificates(t, r)
			checkChecksums(t, r)
			if sm := all[*monv1.ServiceMonitor](r); len(sm) > 0 != enabled(vals, "serviceMonitor") {
				t.Errorf("%d ServiceMonitors with serviceMonitor.enabled = %v", len(sm), enabled(vals, "serviceMonitor"))
			}
			checkMetricsPorts(t, r, enabled(vals, "serviceMonitor"))
			checkMetricsReachable(t, r, vals)
			checkNotesNameSecrets(t, r, vals)
			checkPrometheusRules(t, r, enabled(vals, "prometheusRule"))
		})
	}
}

// enabled reports whether the values' <path>.enabled is true (absent: the chart's default, read from
// values.yaml).
func enabled(vals map[string]any, path string) bool {
	v, ok := dig(vals, path+".enabled")
	if !ok {
		defaults, _ := chartutil.ReadValuesFile(filepath.Join(chartDir, "values.yaml"))
		v, _ = dig(defaults, path+".enabled")
	}
	b, _ := v.(bool)
	return b
}

func dig(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func checkUniqueNames(t *testing.T, r rendered) {
	t.Helper()
	seen := map[string]string{}
	for _, o := range r.objects {
		key := o.gvk.Kind + "/" + o.meta.GetNamespace() + "/" + o.meta.GetName()
		if prev, dup := seen[key]; dup {
			t.Errorf("%s rendered twice: %s and %s", key, prev, o.file)
		}
		seen[key] = o.file
		if o.meta.GetLabels()["app.kubernetes.io/instance"] != releaseName {
			t.Errorf("%s %s lacks label app.kubernetes.io/instance", o.gvk.Kind, o.meta.GetName())
		}
	}
}

// component returns the README section of a workload by its component label.
func componentOf(m metav1.Object) string { return m.GetLabels()["app.kubernetes.io/component"] }

// workload is a pod template with where it came from.
type workload struct {
	kind, name, component string
	pod                   corev1.PodTemplateSpec
}

func workloads(r rendered) []workload {
	var out []workload
	for _, d := range all[*appsv1.Deployment](r) {
		out = append(out, workload{"Deployment", d.Name, componentOf(d), d.Spec.Template})
	}
	for _, j := range all[*batchv1.Job](r) {
		out = append(out, workload{"Job", j.Name, componentOf(j), j.Spec.Template})
	}
	return out
}

// checkWorkloads checks the pods of every Deployment and Job: hardened security contexts, no
// service-account token, probes, resources, mounts, and an environment that sets what the README
// requires and nothing it does not document.
func checkWorkloads(t *testing.T, r rendered, cfg map[string]serviceConfig) {
	t.Helper()
	if len(all[*appsv1.Deployment](r)) == 0 {
		t.Fatalf("no Deployment rendered")
	}
	for _, w := range workloads(r) {
		t.Run(w.kind+"/"+w.name, func(t *testing.T) {
			spec := w.pod.Spec
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken is not false")
			}
			if sa, ok := byName[*corev1.ServiceAccount](r, spec.ServiceAccountName); !ok {
				t.Errorf("serviceAccountName %q is not rendered", spec.ServiceAccountName)
			} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s: automountServiceAccountToken is not false", sa.Name)
			}
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
				psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext = %+v, want runAsNonRoot, a non-zero runAsUser, seccomp RuntimeDefault", psc)
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range spec.Volumes {
				volumes[v.Name] = v
				if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
					t.Errorf("secret volume %s: defaultMode %v readable by others", v.Name, v.Secret.DefaultMode)
				}
			}
			if len(spec.InitContainers) > 0 {
				t.Errorf("init containers %v: none expected", spec.InitContainers)
			}
			for _, c := range spec.Containers {
				checkContainer(t, r, w, c, volumes, cfg)
			}
		})
	}
}

func checkContainer(t *testing.T, r rendered, w workload, c corev1.Container, volumes map[string]corev1.Volume, cfg map[string]serviceConfig) {
	t.Helper()
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatalf("container %s: no securityContext", c.Name)
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("container %s: runAsNonRoot not true", c.Name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container %s: readOnlyRootFilesystem not true", c.Name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container %s: allowPrivilegeEscalation not false", c.Name)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("container %s: privileged", c.Name)
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Errorf("container %s: capabilities %+v, want drop ALL and add none", c.Name, sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("container %s: seccompProfile not RuntimeDefault", c.Name)
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("container %s: image %q, want a pinned tag or digest", c.Name, c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("container %s: resources %+v, want cpu and memory requests and a memory limit", c.Name, c.Resources)
	}

	var mounts []string
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, m.MountPath)
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("container %s mounts volume %q, which the pod does not have", c.Name, m.Name)
			continue
		}
		if m.SubPath != "" {
			t.Errorf("container %s mounts %s with subPath: renewed certificates would never reach it", c.Name, m.Name)
		}
		if (v.Secret != nil || v.ConfigMap != nil) && !m.ReadOnly {
			t.Errorf("container %s mounts %s writable", c.Name, m.Name)
		}
	}

	// The environment: the ConfigMaps of envFrom, then env.
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Errorf("container %s: envFrom %+v, want ConfigMaps only (secrets are files)", c.Name, from)
			continue
		}
		cm, ok := byName[*corev1.ConfigMap](r, from.ConfigMapRef.Name)
		if !ok {
			t.Errorf("container %s: envFrom ConfigMap %q is not rendered", c.Name, from.ConfigMapRef.Name)
			continue
		}
		maps.Copy(env, cm.Data)
	}
	var names []string
	for _, e := range c.Env {
		if slices.Contains(names, e.Name) {
			t.Errorf("container %s: env %s set twice", c.Name, e.Name)
		}
		names = append(names, e.Name)
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "(from " + e.ValueFrom.String() + ")"
		}
	}
	service := strings.TrimSuffix(w.component, "-migrate")
	sc2, ok := cfg[service]
	if !ok {
		t.Fatalf("%s: component %q is neither service of the README", w.name, w.component)
	}
	for name, value := range env {
		if !knownVar(sc2, service, name) {
			t.Errorf("container %s sets %s, which the README does not document", c.Name, name)
		}
		if fileVar(name) && !underAny(value, mounts) {
			t.Errorf("container %s: %s=%s is not inside a mounted volume (%v)", c.Name, name, value, mounts)
		}
	}
	if w.kind == "Job" {
		if _, ok := env[strings.ToUpper(map[string]string{"encryption-service": "ES", "core": "CORE"}[service])+"_DATABASE_URL_FILE"]; !ok {
			t.Errorf("migration job %s has no database URL file", w.name)
		}
		if !slices.Equal(c.Args, []string{"migrate"}) {
			t.Errorf("migration job %s args = %v, want [migrate]", w.name, c.Args)
		}
		return
	}
	for _, name := range sc2.required() {
		if !sc2.satisfied(name, env) {
			t.Errorf("container %s does not set %s, which the README marks %q", c.Name, name, mustRow(t, sc2, name).Default)
		}
	}

	// Probes: every Deployment has all three. kubelet cannot present a client certificate, so the
	// encryption service is probed by its own probe command; core by HTTPS GETs.
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	for kind, p := range probes {
		if p == nil {
			t.Errorf("container %s: no %s probe", c.Name, kind)
			continue
		}
		want := map[string]string{"startup": "live", "liveness": "live", "readiness": "ready"}[kind]
		switch service {
		case "encryption-service":
			wantCmd := []string{"/usr/local/bin/encryption-service", "probe", "--" + want}
			if p.Exec == nil || !slices.Equal(p.Exec.Command, wantCmd) {
				t.Errorf("container %s: %s probe %+v, want exec %v", c.Name, kind, p.ProbeHandler, wantCmd)
			}
		case "core":
			path := map[string]string{"live": "/healthz", "ready": "/readyz"}[want]
			if p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "https" {
				t.Errorf("container %s: %s probe %+v, want HTTPS GET %s on port https", c.Name, kind, p.ProbeHandler, path)
			}
		}
		if p.TimeoutSeconds < 1 || p.PeriodSeconds < 1 || p.FailureThreshold < 1 {
			t.Errorf("container %s: %s probe timings %+v", c.Name, kind, p)
		}
	}
	if service == "encryption-service" {
		for _, v := range probeVars[service] {
			if env[v] == "" {
				t.Errorf("container %s: %s unset; the probe command needs it", c.Name, v)
			}
		}
	}
	if w.pod.Spec.TerminationGracePeriodSeconds == nil || *w.pod.Spec.TerminationGracePeriodSeconds <= 20 {
		t.Errorf("terminationGracePeriodSeconds %v: want more than the 20 s shutdown timeout", w.pod.Spec.TerminationGracePeriodSeconds)
	}
}

// selects reports whether selector matches the pod labels.
func selects(t *testing.T, selector *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		t.Fatalf("selector %+v: %v", selector, err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// deploymentsSelected returns the Deployments whose pods selector matches.
func deploymentsSelected(t *testing.T, r rendered, selector *metav1.LabelSelector) []*appsv1.Deployment {
	t.Helper()
	var out []*appsv1.Deployment
	for _, d := range all[*appsv1.Deployment](r) {
		if selects(t, selector, d.Spec.Template.Labels) {
			out = append(out, d)
		}
	}
	return out
}

func checkServices(t *testing.T, r rendered) {
	t.Helper()
	for _, d := range all[*appsv1.Deployment](r) {
		if !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Deployment %s: selector does not match its pod labels", d.Name)
		}
	}
	for _, s := range all[*corev1.Service](r) {
		ds := deploymentsSelected(t, r, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(ds) != 1 {
			t.Errorf("Service %s selects %d Deployments, want 1", s.Name, len(ds))
			continue
		}
		var ports []string
		for _, c := range ds[0].Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports = append(ports, p.Name)
			}
		}
		for _, p := range s.Spec.Ports {
			if !slices.Contains(ports, p.TargetPort.String()) {
				t.Errorf("Service %s port %s targets %s, not a container port of %s (%v)", s.Name, p.Name, p.TargetPort.String(), ds[0].Name, ports)
			}
		}
	}
	virtual := 0
	for _, s := range all[*corev1.Service](r) {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			virtual++
		}
	}
	if virtual != len(all[*appsv1.Deployment](r)) {
		t.Errorf("%d Services with a virtual IP for %d Deployments", virtual, len(all[*appsv1.Deployment](r)))
	}
	// Core reaches this release's encryption service through a headless Service, whose name
	// resolves to every ready pod, so that its round_robin client calls them all.
	if core, ok := byName[*corev1.ConfigMap](r, releaseName+"-core"); ok {
		host, _, _ := strings.Cut(core.Data["CORE_ES_ADDR"], ":")
		if s, ok := byName[*corev1.Service](r, host); ok && s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("CORE_ES_ADDR %s is the virtual IP of Service %s: core would call one encryption-service pod; want the headless Service",
				core.Data["CORE_ES_ADDR"], s.Name)
		}
	}
}

func checkScaling(t *testing.T, r rendered) {
	t.Helper()
	for _, p := range all[*policyv1.PodDisruptionBudget](r) {
		if n := len(deploymentsSelected(t, r, p.Spec.Selector)); n != 1 {
			t.Errorf("PodDisruptionBudget %s selects %d Deployments, want 1", p.Name, n)
		}
	}
	if len(all[*policyv1.PodDisruptionBudget](r)) == 0 {
		t.Errorf("no PodDisruptionBudget")
	}
	for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](r) {
		d, ok := byName[*appsv1.Deployment](r, h.Spec.ScaleTargetRef.Name)
		if !ok || h.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("HorizontalPodAutoscaler %s targets %+v, which is not rendered", h.Name, h.Spec.ScaleTargetRef)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas under an HorizontalPodAutoscaler: every upgrade would reset the scale", d.Name)
		}
	}
}

// checkNetworkPolicies: the encryption service's policy selects its pods (and no other), admits
// this release's core when core is installed, and admits nothing from everywhere.
func checkNetworkPolicies(t *testing.T, r rendered, vals map[string]any) {
	t.Helper()
	nps := all[*networkingv1.NetworkPolicy](r)
	if !enabled(vals, "networkPolicy") {
		if len(nps) > 0 {
			t.Errorf("%d NetworkPolicies with networkPolicy.enabled false", len(nps))
		}
		return
	}
	es, hasES := byName[*appsv1.Deployment](r, releaseName+"-encryption-service")
	core, hasCore := byName[*appsv1.Deployment](r, releaseName+"-core")
	for _, d := range all[*appsv1.Deployment](r) {
		var n int
		for _, np := range nps {
			if np.Namespace == "" && selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d NetworkPolicies select the pods of %s, want 1", n, d.Name)
		}
	}
	if !hasES {
		return
	}
	np, ok := byName[*networkingv1.NetworkPolicy](r, releaseName+"-encryption-service")
	if !ok {
		t.Fatalf("no NetworkPolicy for the encryption service")
	}
	if !selects(t, &np.Spec.PodSelector, es.Spec.Template.Labels) {
		t.Errorf("NetworkPolicy %s does not select the encryption service's pods", np.Name)
	}
	if hasCore && selects(t, &np.Spec.PodSelector, core.Spec.Template.Labels) {
		t.Errorf("NetworkPolicy %s selects core's pods too", np.Name)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy %s: policyTypes %v lack Ingress", np.Name, np.Spec.PolicyTypes)
	}
	var coreAdmitted bool
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 {
			t.Errorf("NetworkPolicy %s: an ingress rule without from admits everyone", np.Name)
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil && peer.IPBlock.CIDR == "0.0.0.0/0" {
				t.Errorf("NetworkPolicy %s admits 0.0.0.0/0", np.Name)
			}
			if hasCore && peer.PodSelector != nil && peer.NamespaceSelector == nil && selects(t, peer.PodSelector, core.Spec.Template.Labels) {
				coreAdmitted = true
			}
		}
	}
	if hasCore && !coreAdmitted {
		t.Errorf("NetworkPolicy %s does not admit core's pods", np.Name)
	}
	if !hasCore {
		if sources, _ := dig(vals, "encryptionService.networkPolicy.allowedSources"); sources != nil {
			var from int
			for _, rule := range np.Spec.Ingress {
				from += len(rule.From)
			}
			if from == 0 {
				t.Errorf("NetworkPolicy %s admits nobody although allowedSources are set", np.Name)
			}
		}
	}
}

// checkMetricsReachable: with ServiceMonitors and NetworkPolicies on, the policy of each
// Deployment admits someone (serviceMonitor.from) to its metrics port; Prometheus could not scrape
// otherwise.
func checkMetricsReachable(t *testing.T, r rendered, vals map[string]any) {
	t.Helper()
	if !enabled(vals, "serviceMonitor") || !enabled(vals, "networkPolicy") {
		return
	}
	for _, d := range all[*appsv1.Deployment](r) {
		admitted := false
		for _, np := range all[*networkingv1.NetworkPolicy](r) {
			if np.Namespace != "" || !selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
				continue
			}
			for _, rule := range np.Spec.Ingress {
				for _, port := range rule.Ports {
					if port.Port != nil && port.Port.String() == "metrics" && len(rule.From) > 0 {
						admitted = true
					}
				}
			}
		}
		if !admitted {
			t.Errorf("no NetworkPolicy admits Prometheus to the metrics port of %s", d.Name)
		}
	}
}

// checkNotesNameSecrets: every Secret the pods need and the chart does not have cert-manager issue
// is named in NOTES.txt, which is what "helm install" prints: the pods would wait for it. Secrets of
// <component>.extraVolumes are the values' own business.
func checkNotesNameSecrets(t *testing.T, r rendered, vals map[string]any) {
	t.Helper()
	extra := map[string]bool{}
	for _, c := range []string{"encryptionService", "core"} {
		vs, _ := dig(vals, c+".extraVolumes")
		list, _ := vs.([]any)
		for _, v := range list {
			if name, ok := dig(map[string]any{"v": v}, "v.secret.secretName"); ok {
				extra[fmt.Sprint(name)] = true
			}
		}
	}
	notes, ok := r.files["custos/templates/NOTES.txt"]
	if !ok {
		t.Fatalf("no NOTES.txt rendered")
	}
	issued := map[string]bool{}
	for _, c := range all[*cmv1.Certificate](r) {
		issued[c.Spec.SecretName] = true
	}
	for _, d := range all[*appsv1.Deployment](r) {
		var names []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && (v.Secret.Optional == nil || !*v.Secret.Optional) {
				names = append(names, v.Secret.SecretName)
			}
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					names = append(names, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
		for _, name := range names {
			if !issued[name] && !extra[name] && !regexp.MustCompile(`(?m)^\s+`+regexp.QuoteMeta(name)+`\s`).MatchString(notes) {
				t.Errorf("Deployment %s needs Secret %s, which NOTES.txt does not list", d.Name, name)
			}
		}
	}
}

// checkCertificates: with cert-manager, every certificate Secret a pod mounts is a Certificate's,
// and the names the probe and core expect are in the encryption service's certificate.
func checkCertificates(t *testing.T, r rendered) {
	t.Helper()
	certs := all[*cmv1.Certificate](r)
	if len(certs) == 0 {
		return
	}
	bySecret := map[string]*cmv1.Certificate{}
	for _, c := range certs {
		bySecret[c.Spec.SecretName] = c
		if c.Spec.IssuerRef.Name == "" {
			t.Errorf("Certificate %s has no issuer", c.Name)
		}
	}
	for _, w := range workloads(r) {
		for _, v := range w.pod.Spec.Volumes {
			if v.Secret == nil || !strings.HasSuffix(v.Secret.SecretName, "-tls") {
				continue
			}
			if _, ok := bySecret[v.Secret.SecretName]; !ok {
				t.Errorf("%s mounts Secret %s, which no Certificate issues", w.name, v.Secret.SecretName)
			}
		}
	}
	es, ok := byName[*corev1.ConfigMap](r, releaseName+"-encryption-service")
	if !ok {
		return
	}
	cert, ok := byName[*cmv1.Certificate](r, releaseName+"-encryption-service")
	if !ok {
		t.Fatalf("no Certificate for the encryption service")
	}
	names := []string{es.Data["ES_PROBE_SERVER_NAME"]}
	if core, ok := byName[*corev1.ConfigMap](r, releaseName+"-core"); ok {
		host, _, _ := strings.Cut(core.Data["CORE_ES_ADDR"], ":")
		names = append(names, cmp(core.Data["CORE_ES_SERVER_NAME"], host))
	}
	for _, n := range names {
		if !slices.Contains(cert.Spec.DNSNames, n) {
			t.Errorf("Certificate %s: dnsNames %v lack %q", cert.Name, cert.Spec.DNSNames, n)
		}
	}
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkChecksums: the pods' checksum/config annotation is the SHA-256 of their ConfigMap's template
// output, so that a change of configuration rolls them.
func checkChecksums(t *testing.T, r rendered) {
	t.Helper()
	for _, d := range all[*appsv1.Deployment](r) {
		file := "custos/templates/" + componentOf(d) + "/configmap.yaml"
		out, ok := r.files[file]
		if !ok {
			t.Errorf("Deployment %s: no %s", d.Name, file)
			continue
		}
		sum := sha256.Sum256([]byte(out))
		if got := d.Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
			t.Errorf("Deployment %s: checksum/config = %q, want the SHA-256 of %s", d.Name, got, file)
		}
	}
}

// TestChartSovereign: the sovereign profile installs the encryption service alone.
func TestChartSovereign(t *testing.T) {
	r := mustRender(t, profile{name: "sovereign", files: []string{"values-sovereign.yaml"}})
	for _, o := range r.objects {
		if c := componentOf(o.meta); c == "core" || c == "core-migrate" || strings.Contains(o.meta.GetName(), "-core") {
			t.Errorf("sovereign render holds core's %s %s (%s)", o.gvk.Kind, o.meta.GetName(), o.file)
		}
	}
	for name, out := range r.files {
		if strings.Contains(out, "CORE_") {
			t.Errorf("sovereign render: %s mentions a CORE_ variable", name)
		}
	}
	ds := all[*appsv1.Deployment](r)
	if len(ds) != 1 || componentOf(ds[0]) != "encryption-service" {
		t.Fatalf("sovereign Deployments = %d, want the encryption service's alone", len(ds))
	}
	svc, _ := byName[*corev1.Service](r, releaseName+"-encryption-service")
	if svc == nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("sovereign Service = %+v, want a LoadBalancer keeping callers' addresses", svc)
	}
	np, _ := byName[*networkingv1.NetworkPolicy](r, releaseName+"-encryption-service")
	if np == nil {
		t.Fatalf("sovereign: no NetworkPolicy for the encryption service")
	}
	for _, rule := range np.Spec.Ingress {
		for _, peer := range rule.From {
			if peer.IPBlock == nil {
				t.Errorf("sovereign NetworkPolicy admits %+v; want only the platform's addresses (ipBlock)", peer)
			}
		}
	}
	// Its own database and master key, and client certificates checked against its own bundle.
	cm, _ := byName[*corev1.ConfigMap](r, releaseName+"-encryption-service")
	if cm == nil || cm.Data["ES_TLS_CLIENT_CA_FILE"] != "/var/run/custos/client-ca/ca.crt" || cm.Data["ES_MASTER_KEY_DIR"] == "" {
		t.Errorf("sovereign ConfigMap = %v, want the client CA bundle and the master-key directory", cm)
	}
}

// TestChartChecksumFollowsConfig: changing a setting changes the annotation of that component only.
func TestChartChecksumFollowsConfig(t *testing.T) {
	base := mustRender(t, profile{name: "default"})
	changed := mustRender(t, profile{name: "debug", set: map[string]any{"encryptionService": map[string]any{"logLevel": "debug"}}})
	sum := func(r rendered, name string) string {
		d, _ := byName[*appsv1.Deployment](r, name)
		return d.Spec.Template.Annotations["checksum/config"]
	}
	if sum(base, "custos-encryption-service") == sum(changed, "custos-encryption-service") {
		t.Errorf("encryption service's checksum/config unchanged by a new log level")
	}
	if sum(base, "custos-core") != sum(changed, "custos-core") {
		t.Errorf("core's checksum/config changed by the encryption service's log level")
	}
}

// TestChartRejectsBadValues: inconsistent or misspelt values fail the render with a clear message.
func TestChartRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]any
		want string
	}{
		{"nothing enabled", map[string]any{"core": map[string]any{"enabled": false}, "encryptionService": map[string]any{"enabled": false}},
			"nothing to install"},
		{"core without an encryption service", map[string]any{"encryptionService": map[string]any{"enabled": false}},
			"core.encryptionService.addr is required"},
		{"misspelt key", map[string]any{"encryptionService": map[string]any{"replicas": 3}}, "replicas"},
		{"misspelt top-level key", map[string]any{"encryptionservice": map[string]any{"enabled": false}}, "encryptionservice"},
		{"bad token hash", map[string]any{"encryptionService": map[string]any{"admin": map[string]any{"tokenHash": "secret"}}}, "tokenHash"},
		{"bad log level", map[string]any{"core": map[string]any{"logLevel": "verbose"}}, "logLevel"},
		{"postgres policy selecting everything", map[string]any{"networkPolicy": map[string]any{"postgresql": map[string]any{"enabled": true}}},
			"podSelector must select"},
		{"issuer missing", map[string]any{"certManager": map[string]any{"enabled": true, "createIssuer": false}}, "issuerRef.name is required"},
		{"alerts without scraping", map[string]any{"prometheusRule": map[string]any{"enabled": true}}, "prometheusRule.enabled needs serviceMonitor.enabled"},
		// NetworkPolicies would admit nobody to the metrics ports.
		{"scraping without Prometheus' address", map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
			"serviceMonitor.from is required"},
		// Budgets that let no replica be evicted block every node drain.
		{"minAvailable of every replica", map[string]any{"encryptionService": map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": 2}}},
			"encryptionService.podDisruptionBudget.minAvailable (2) must be less than encryptionService.replicaCount (2)"},
		{"minAvailable above the replicas", map[string]any{"core": map[string]any{"replicaCount": 3, "podDisruptionBudget": map[string]any{"minAvailable": 5}}},
			"core.podDisruptionBudget.minAvailable (5) must be less than core.replicaCount (3)"},
		{"minAvailable of every autoscaled replica", map[string]any{"core": map[string]any{
			"autoscaling": map[string]any{"enabled": true, "minReplicas": 3}, "podDisruptionBudget": map[string]any{"minAvailable": 3}}},
			"core.podDisruptionBudget.minAvailable (3) must be less than core.autoscaling.minReplicas (3)"},
		{"minAvailable 100%", map[string]any{"core": map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": "100%"}}},
			"core.podDisruptionBudget.minAvailable 100%"},
		{"maxUnavailable 0", map[string]any{"encryptionService": map[string]any{"podDisruptionBudget": map[string]any{"maxUnavailable": 0}}},
			"encryptionService.podDisruptionBudget.maxUnavailable 0"},
		// Core refuses access tokens living longer than an hour (README: CORE_ACCESS_TOKEN_TTL).
		{"access tokens of 2h", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "2h"}}}, "accessTokenTTL"},
		{"access tokens of 24h", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "24h"}}}, "accessTokenTTL"},
		{"access tokens of 30s", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "30s"}}}, "accessTokenTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, mustValues(t, profile{name: tt.name, set: tt.set}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render(%v) error = %v, want one mentioning %q", tt.set, err, tt.want)
			}
		})
	}
}

// TestChartAcceptsValues: values next to those TestChartRejectsBadValues refuses still render.
func TestChartAcceptsValues(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]any
	}{
		{"scraping without NetworkPolicies", map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "networkPolicy": map[string]any{"enabled": false}}},
		{"minAvailable below the replicas", map[string]any{"encryptionService": map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": 1}}}},
		{"minAvailable below the autoscaler's minimum", map[string]any{"core": map[string]any{
			"autoscaling": map[string]any{"enabled": true, "minReplicas": 3}, "podDisruptionBudget": map[string]any{"minAvailable": 2}}}},
		{"minAvailable as a percentage", map[string]any{"core": map[string]any{"podDisruptionBudget": map[string]any{"minAvailable": "50%"}}}},
		{"budget of a component not installed", map[string]any{"encryptionService": map[string]any{"enabled": false, "podDisruptionBudget": map[string]any{"minAvailable": 9}},
			"core": map[string]any{"encryptionService": map[string]any{"addr": "es.example:9444"}}}},
		{"access tokens of 1h", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "1h"}}}},
		{"access tokens of 90s", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "90s"}}}},
		{"access tokens of 1m", map[string]any{"core": map[string]any{"tokens": map[string]any{"accessTokenTTL": "1m"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := render(t, mustValues(t, profile{name: tt.name, set: tt.set})); err != nil {
				t.Errorf("render(%v) = %v, want it rendered", tt.set, err)
			}
		})
	}
}

// TestChartPostgresPolicyAdmitsMigrationHook: the upgrade that turns on the migration Jobs runs
// them as pre-upgrade hooks while the previous release's NetworkPolicies still apply, so the
// database's policy of a release without Jobs already admits the Jobs' pods.
func TestChartPostgresPolicyAdmitsMigrationHook(t *testing.T) {
	before := mustRender(t, profile{name: "platform", files: []string{"values-platform.yaml"}})
	jobs := map[string]any{"migrations": map[string]any{"job": map[string]any{"enabled": true}}}
	after := mustRender(t, profile{name: "platform with migration jobs", files: []string{"values-platform.yaml"},
		set: map[string]any{"encryptionService": jobs, "core": jobs}})
	if n := len(all[*batchv1.Job](before)); n != 0 {
		t.Fatalf("platform profile renders %d Jobs, want none", n)
	}
	hooks := all[*batchv1.Job](after)
	if len(hooks) != 2 {
		t.Fatalf("%d migration Jobs, want one per component", len(hooks))
	}
	for _, r := range []rendered{before, after} {
		np, ok := byName[*networkingv1.NetworkPolicy](r, releaseName+"-postgresql")
		if !ok {
			t.Fatalf("no NetworkPolicy %s-postgresql in the platform profile", releaseName)
		}
		for _, job := range hooks {
			if !admitsPod(t, np, namespace, job.Spec.Template.Labels) {
				t.Errorf("NetworkPolicy %s does not admit the pods of Job %s (%v)", np.Name, job.Name, job.Spec.Template.Labels)
			}
		}
		// The migration pods' own policy lets them reach the database before they exist, too.
		migrate, ok := byName[*networkingv1.NetworkPolicy](r, releaseName+"-migrate")
		if !ok {
			t.Fatalf("no NetworkPolicy %s-migrate", releaseName)
		}
		for _, job := range hooks {
			if !selects(t, &migrate.Spec.PodSelector, job.Spec.Template.Labels) {
				t.Errorf("NetworkPolicy %s does not select the pods of Job %s", migrate.Name, job.Name)
			}
		}
	}
}

// admitsPod reports whether one of np's ingress rules admits a pod with labels podLabels in
// namespace ns (peers by pod and namespace selector; namespaces carry kubernetes.io/metadata.name).
func admitsPod(t *testing.T, np *networkingv1.NetworkPolicy, ns string, podLabels map[string]string) bool {
	t.Helper()
	nsLabels := map[string]string{"kubernetes.io/metadata.name": ns}
	policyNS := cmp(np.Namespace, namespace)
	for _, rule := range np.Spec.Ingress {
		for _, peer := range rule.From {
			if peer.PodSelector == nil && peer.NamespaceSelector == nil {
				continue
			}
			nsOK := peer.NamespaceSelector == nil && ns == policyNS
			if peer.NamespaceSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
				if err != nil {
					t.Fatalf("namespaceSelector %+v: %v", peer.NamespaceSelector, err)
				}
				nsOK = s.Matches(labels.Set(nsLabels))
			}
			podOK := peer.PodSelector == nil || selects(t, peer.PodSelector, podLabels)
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// TestChartValuesDocumented: every top-level value, and every value of a component, is explained in
// the chart's README (values.yaml explains each one in a comment as well). Values both components
// have may be documented once as `<component>.name`.
func TestChartValuesDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatalf("chart README: %v", err)
	}
	vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	documented := func(path string) bool { return bytes.Contains(readme, []byte("`"+path)) }
	for _, top := range slices.Sorted(maps.Keys(vals)) {
		if !documented(top) {
			t.Errorf("chart README.md does not document `%s`", top)
		}
		sub, ok := vals[top].(map[string]any)
		if !ok || top == "podSecurityContext" || top == "containerSecurityContext" {
			continue // Kubernetes objects passed through whole
		}
		for _, k := range slices.Sorted(maps.Keys(sub)) {
			path := top + "." + k
			shared := (top == "encryptionService" || top == "core") && documented("<component>."+k)
			if !documented(path) && !shared {
				t.Errorf("chart README.md does not document `%s`", path)
			}
		}
	}
}

// TestChartPlatformAdminPlane: in the platform profile core holds the admin token and provisions
// tenants on the encryption service's admin plane with its client certificate, so that certificate's
// name is admitted there next to the operators'.
func TestChartPlatformAdminPlane(t *testing.T) {
	r := mustRender(t, profile{name: "platform", files: []string{"values-platform.yaml"}})
	es, _ := byName[*corev1.ConfigMap](r, releaseName+"-encryption-service")
	core, _ := byName[*corev1.ConfigMap](r, releaseName+"-core")
	if es == nil || core == nil {
		t.Fatalf("platform render lacks a ConfigMap")
	}
	cns := strings.Split(es.Data["ES_ADMIN_CLIENT_CNS"], ",")
	for _, want := range []string{"custos-operator", "custos-core"} {
		if !slices.Contains(cns, want) {
			t.Errorf("ES_ADMIN_CLIENT_CNS = %v, want %s in it", cns, want)
		}
	}
	if core.Data["CORE_ES_ADMIN_TOKEN_FILE"] == "" {
		t.Errorf("core has no CORE_ES_ADMIN_TOKEN_FILE in the platform profile")
	}
	d, _ := byName[*appsv1.Deployment](r, releaseName+"-encryption-service")
	var fromSecret bool
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "ES_ADMIN_TOKEN_HASH" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
			e.ValueFrom.SecretKeyRef.Name == "custos-es-admin" {
			fromSecret = true
		}
	}
	if !fromSecret {
		t.Errorf("ES_ADMIN_TOKEN_HASH does not come from Secret custos-es-admin")
	}
}

// checkPrometheusRules: with PrometheusRules on, each installed component has one, whose alerts
// select the series of that component's own Service (the labels the ServiceMonitor's targets
// carry), wait a valid duration and say how severe they are; with them off there is none. That the
// metric names exist is checked by each service's telemetry tests, against its registry.
func checkPrometheusRules(t *testing.T, r rendered, on bool) {
	t.Helper()
	rules := all[*monv1.PrometheusRule](r)
	services := map[string]bool{}
	for _, svc := range all[*corev1.Service](r) {
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			services[svc.Name] = true
		}
	}
	if want := map[bool]int{true: len(services), false: 0}[on]; len(rules) != want {
		t.Errorf("%d PrometheusRules with prometheusRule.enabled = %v, want %d (one per component)", len(rules), on, want)
	}
	for _, pr := range rules {
		if !services[pr.Name] {
			t.Errorf("PrometheusRule %s is named after no Service of the release", pr.Name)
		}
		if pr.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("PrometheusRule %s lacks prometheusRule.labels: %v", pr.Name, pr.Labels)
		}
		selector := fmt.Sprintf(`namespace="%s", service="%s"`, namespace, pr.Name)
		n := 0
		for _, g := range pr.Spec.Groups {
			for _, rule := range g.Rules {
				n++
				expr := rule.Expr.String()
				if rule.Alert == "" || !strings.Contains(expr, selector) || strings.Count(expr, "(") != strings.Count(expr, ")") {
					t.Errorf("PrometheusRule %s: rule %q: expr %q must name its alert and select %s", pr.Name, rule.Alert, expr, selector)
				}
				if rule.For != nil && !promDuration.MatchString(string(*rule.For)) {
					t.Errorf("PrometheusRule %s: %s: for %q is not a Prometheus duration", pr.Name, rule.Alert, *rule.For)
				}
				if s := rule.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
					t.Errorf("PrometheusRule %s: %s: severity %q, want critical, warning or info", pr.Name, rule.Alert, s)
				}
				if rule.Annotations["summary"] == "" {
					t.Errorf("PrometheusRule %s: %s has no summary", pr.Name, rule.Alert)
				}
				// Prometheus fills in {{ $labels.x }} and {{ $value }}; anything else left of Helm's
				// escaping would show as written, or fail the rule.
				for _, a := range rule.Annotations {
					if strings.Count(a, "{{") != len(promTemplate.FindAllString(a, -1)) {
						t.Errorf("PrometheusRule %s: %s: annotation %q holds a template other than {{ $labels.<name> }} or {{ $value }}", pr.Name, rule.Alert, a)
					}
				}
			}
		}
		if n < 3 {
			t.Errorf("PrometheusRule %s has %d alerts, want at least 3", pr.Name, n)
		}
	}
}

// promTemplate matches the alert templates the chart's annotations may use.
var promTemplate = regexp.MustCompile(`\{\{ \$(labels\.[a-z_]+|value) \}\}`)

// promDuration matches a Prometheus duration such as 5m or 1h30m.
var promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

// checkMetricsPorts: with ServiceMonitors on, each service serves metrics on its own listener, and
// the ServiceMonitors, Services and Deployments agree on the port; with them off there is none.
func checkMetricsPorts(t *testing.T, r rendered, on bool) {
	t.Helper()
	for _, svc := range all[*corev1.Service](r) {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue // the headless Service only lets core find the pods; nothing scrapes it
		}
		has := false
		for _, p := range svc.Spec.Ports {
			has = has || p.Name == "metrics"
		}
		if has != on {
			t.Errorf("Service %s has a metrics port: %v, want %v", svc.Name, has, on)
		}
	}
	for _, cm := range all[*corev1.ConfigMap](r) {
		_, es := cm.Data["ES_METRICS_ADDR"]
		_, core := cm.Data["CORE_METRICS_ADDR"]
		if (es || core) != on && (cm.Data["ES_HTTP_ADDR"] != "" || cm.Data["CORE_HTTP_ADDR"] != "") {
			t.Errorf("ConfigMap %s sets a metrics address: %v, want %v", cm.Name, es || core, on)
		}
	}
	// Core's metrics listener requires a client certificate, verified against the CA of Prometheus'
	// (ca.crt of its Secret, and nothing else of it).
	for _, cm := range all[*corev1.ConfigMap](r) {
		if _, ok := cm.Data["CORE_METRICS_ADDR"]; ok && cm.Data["CORE_METRICS_CLIENT_CA_FILE"] != "/var/run/custos/metrics-client-ca/ca.crt" {
			t.Errorf("ConfigMap %s: CORE_METRICS_CLIENT_CA_FILE = %q, want the mounted CA of Prometheus' certificate", cm.Name, cm.Data["CORE_METRICS_CLIENT_CA_FILE"])
		}
	}
	for _, d := range all[*appsv1.Deployment](r) {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != "metrics-client-ca" {
				continue
			}
			if !on || v.Secret == nil || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "ca.crt" {
				t.Errorf("Deployment %s: volume metrics-client-ca = %+v, want only ca.crt of Prometheus' Secret, with ServiceMonitors on", d.Name, v.VolumeSource)
			}
		}
	}
	for _, sm := range all[*monv1.ServiceMonitor](r) {
		for _, ep := range sm.Spec.Endpoints {
			if ep.Port != "metrics" {
				t.Errorf("ServiceMonitor %s scrapes port %q, want the metrics port", sm.Name, ep.Port)
			}
		}
	}
}

// TestChartProxyProtocol: the balancers named in <component>.service.proxyProtocolFrom reach the
// services' configuration, and nothing is set without them.
func TestChartProxyProtocol(t *testing.T) {
	base := mustRender(t, profile{name: "default"})
	for _, name := range []string{releaseName + "-core", releaseName + "-encryption-service"} {
		cm, _ := byName[*corev1.ConfigMap](base, name)
		if cm == nil {
			t.Fatalf("no ConfigMap %s", name)
		}
		for k := range cm.Data {
			if strings.HasSuffix(k, "_PROXY_PROTOCOL_FROM") {
				t.Errorf("default %s sets %s; want no PROXY protocol unless asked", name, k)
			}
		}
	}
	r := mustRender(t, profile{name: "proxied", set: map[string]any{
		"core":              map[string]any{"service": map[string]any{"proxyProtocolFrom": []any{"10.0.0.0/8", "192.0.2.7"}}},
		"encryptionService": map[string]any{"service": map[string]any{"proxyProtocolFrom": []any{"198.51.100.0/24"}}},
	}})
	core, _ := byName[*corev1.ConfigMap](r, releaseName+"-core")
	es, _ := byName[*corev1.ConfigMap](r, releaseName+"-encryption-service")
	if got := core.Data["CORE_PROXY_PROTOCOL_FROM"]; got != "10.0.0.0/8,192.0.2.7" {
		t.Errorf("CORE_PROXY_PROTOCOL_FROM = %q, want 10.0.0.0/8,192.0.2.7", got)
	}
	if got := es.Data["ES_PROXY_PROTOCOL_FROM"]; got != "198.51.100.0/24" {
		t.Errorf("ES_PROXY_PROTOCOL_FROM = %q, want 198.51.100.0/24", got)
	}
	if _, err := render(t, mustValues(t, profile{name: "bad", set: map[string]any{
		"core": map[string]any{"service": map[string]any{"proxyProtocolFrom": "10.0.0.0/8"}}}})); err == nil || !strings.Contains(err.Error(), "proxyProtocolFrom") {
		t.Errorf("render with proxyProtocolFrom a string = %v, want an error naming it", err)
	}
}
