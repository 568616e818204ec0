{{/*
Names. The full name prefixes every object; with the release named "custos" the components are
custos-encryption-service and custos-core, the names the dev certificates and certs/README.md use.
*/}}
{{- define "custos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "custos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custos.es.fullname" -}}
{{- printf "%s-encryption-service" (include "custos.fullname" .) }}
{{- end }}

{{- define "custos.core.fullname" -}}
{{- printf "%s-core" (include "custos.fullname" .) }}
{{- end }}

{{/*
Labels. Call with (dict "ctx" $ "component" "encryption-service").
*/}}
{{- define "custos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "custos.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "custos.labels" -}}
helm.sh/chart: {{ include "custos.chart" .ctx }}
{{ include "custos.selectorLabels" . }}
app.kubernetes.io/part-of: custos
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- if .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to no component (issuers, the ServiceAccount). */}}
{{- define "custos.commonLabels" -}}
{{ include "custos.labels" (dict "ctx" . "component" "platform") }}
{{- end }}

{{- define "custos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "custos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image of a component: (dict "ctx" $ "image" .Values.x.image). */}}
{{- define "custos.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Secret names: the value if given, else the name cert-manager (or you) create. */}}
{{- define "custos.es.tlsSecret" -}}
{{- default (printf "%s-tls" (include "custos.es.fullname" .)) .Values.encryptionService.tls.existingSecret }}
{{- end }}
{{- define "custos.es.probeSecret" -}}
{{- default (printf "%s-probe-tls" (include "custos.es.fullname" .)) .Values.encryptionService.probe.existingSecret }}
{{- end }}
{{- define "custos.es.databaseSecret" -}}
{{- default (printf "%s-database" (include "custos.es.fullname" .)) .Values.encryptionService.database.existingSecret }}
{{- end }}
{{- define "custos.es.masterKeysSecret" -}}
{{- default (printf "%s-master-keys" (include "custos.fullname" .)) .Values.encryptionService.masterKeys.existingSecret }}
{{- end }}
{{- define "custos.core.tlsSecret" -}}
{{- default (printf "%s-tls" (include "custos.core.fullname" .)) .Values.core.tls.existingSecret }}
{{- end }}
{{- define "custos.core.clientSecret" -}}
{{- default (printf "%s-client-tls" (include "custos.core.fullname" .)) .Values.core.encryptionService.clientCertSecret }}
{{- end }}
{{- define "custos.core.databaseSecret" -}}
{{- default (printf "%s-database" (include "custos.core.fullname" .)) .Values.core.database.existingSecret }}
{{- end }}
{{- define "custos.core.secretKeysSecret" -}}
{{- default (printf "%s-secret-keys" (include "custos.core.fullname" .)) .Values.core.secretKeys.existingSecret }}
{{- end }}
{{- define "custos.metricsClientSecret" -}}
{{- default (printf "%s-metrics-client-tls" (include "custos.fullname" .)) .Values.serviceMonitor.clientCertSecret }}
{{- end }}

{{/* The encryption service's in-cluster DNS name, the name its certificate and probe use. */}}
{{- define "custos.es.serverName" -}}
{{- default (include "custos.es.fullname" .) .Values.encryptionService.probe.serverName }}
{{- end }}

{{/* Whether core calls this release's encryption service, through its headless Service. */}}
{{- define "custos.core.usesReleaseES" -}}
{{- if and .Values.core.enabled .Values.encryptionService.enabled (not .Values.core.encryptionService.addr) }}true{{ end }}
{{- end }}

{{/* The headless Service whose DNS name resolves to every ready encryption-service pod. */}}
{{- define "custos.es.replicasName" -}}
{{- printf "%s-replicas" (include "custos.es.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* CORE_ES_ADDR: by default the headless Service, so that core balances its calls over every
     encryption-service pod rather than holding one connection to one pod behind the virtual IP. */}}
{{- define "custos.core.esAddr" -}}
{{- if .Values.core.encryptionService.addr }}
{{- .Values.core.encryptionService.addr }}
{{- else }}
{{- printf "%s:%d" (include "custos.es.replicasName" .) (int .Values.encryptionService.service.grpcPort) }}
{{- end }}
{{- end }}

{{/* CORE_ES_SERVER_NAME: the configured one; else, for this release's service, the name its
     certificate carries (the headless name is only how core finds the pods). */}}
{{- define "custos.core.esServerName" -}}
{{- if .Values.core.encryptionService.serverName }}
{{- .Values.core.encryptionService.serverName }}
{{- else if include "custos.core.usesReleaseES" . }}
{{- include "custos.es.serverName" . }}
{{- end }}
{{- end }}

{{/* The issuerRef of service and client certificates. */}}
{{- define "custos.issuerRef" -}}
{{- if .Values.certManager.createIssuer }}
name: {{ include "custos.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- else }}
name: {{ .Values.certManager.issuerRef.name }}
kind: {{ .Values.certManager.issuerRef.kind }}
group: {{ .Values.certManager.issuerRef.group }}
{{- end }}
{{- end }}

{{/* DNS names of a component's Service: (dict "ctx" $ "name" "custos-core" "extra" list). */}}
{{- define "custos.serviceDNSNames" -}}
- {{ .name }}
- {{ .name }}.{{ .ctx.Release.Namespace }}
- {{ .name }}.{{ .ctx.Release.Namespace }}.svc
- {{ .name }}.{{ .ctx.Release.Namespace }}.svc.{{ .ctx.Values.clusterDomain }}
{{- range .extra }}
- {{ . }}
{{- end }}
{{- end }}

{{/*
GOMEMLIMIT: 90 % of a memory limit given as a plain number of bytes or with a binary (Ki, Mi, Gi,
Ti) or decimal (k, M, G, T) suffix; empty when there is no limit or another form.
*/}}
{{- define "custos.goMemLimit" -}}
{{- $q := toString . }}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "" 1 }}
{{- if regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q }}
{{- $num := regexFind "^[0-9]+" $q }}
{{- $unit := trimPrefix $num $q }}
{{- div (mul (int64 $num) (get $units $unit) 9) 10 }}
{{- end }}
{{- end }}

{{/*
A mounted Secret or ConfigMap volume for a CA bundle override: (dict "name" "client-ca" "src" .clientCA).
*/}}
{{- define "custos.caVolume" -}}
- name: {{ .name }}
{{- if .src.configMap }}
  configMap:
    name: {{ .src.configMap }}
    defaultMode: 0444
    items:
      - key: {{ .src.key }}
        path: ca.crt
{{- else }}
  secret:
    secretName: {{ .src.secret }}
    defaultMode: 0440
    items:
      - key: {{ .src.key }}
        path: ca.crt
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by both components: (dict "ctx" $ "values" .Values.x "component" "core").
*/}}
{{- define "custos.podScheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if .values.topologySpreadConstraints }}
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "custos.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "custos.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: shutdown timeout + preStop sleep + 5 s. */}}
{{- define "custos.terminationGrace" -}}
{{- $d := toString .shutdownTimeout }}
{{- $secs := 20 }}
{{- if regexMatch "^[0-9]+s$" $d }}{{ $secs = int (trimSuffix "s" $d) }}
{{- else if regexMatch "^[0-9]+m$" $d }}{{ $secs = mul (int (trimSuffix "m" $d)) 60 }}
{{- else }}{{ fail (printf "shutdownTimeout %q: write it as whole seconds (20s) or minutes (2m)" $d) }}
{{- end }}
{{- add $secs (int .preStopSleepSeconds) 5 }}
{{- end }}

{{/* Checks on the values; rendered (empty) by templates/validate.yaml. */}}
{{- define "custos.validate" -}}
{{- $es := .Values.encryptionService }}
{{- $core := .Values.core }}
{{- if not (or $es.enabled $core.enabled) }}
{{- fail "nothing to install: enable encryptionService, core, or both" }}
{{- end }}
{{- if and $core.enabled (not $es.enabled) (not $core.encryptionService.addr) }}
{{- fail "core.encryptionService.addr is required when encryptionService.enabled is false: the platform's encryption service address (host:port)" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) }}
{{- fail "prometheusRule.enabled needs serviceMonitor.enabled: the alerts read the series it scrapes" }}
{{- end }}
{{- if and .Values.certManager.enabled (not .Values.certManager.createIssuer) (not .Values.certManager.issuerRef.name) }}
{{- fail "certManager.issuerRef.name is required when certManager.createIssuer is false" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.serviceMonitor.from) }}
{{- fail "serviceMonitor.from is required with serviceMonitor.enabled and networkPolicy.enabled: the NetworkPolicies admit Prometheus to the metrics ports only from these peers, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]" }}
{{- end }}
{{- range $name, $c := dict "encryptionService" $es "core" $core }}
{{- if and $c.enabled $c.autoscaling.enabled (gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas is larger than maxReplicas" $name) }}
{{- end }}
{{- /* A budget no eviction can satisfy blocks every node drain and cluster upgrade. */}}
{{- $pdb := $c.podDisruptionBudget }}
{{- if and $c.enabled $pdb.enabled }}
{{- $replicas := int $c.replicaCount }}
{{- $of := "replicaCount" }}
{{- if $c.autoscaling.enabled }}{{ $replicas = int $c.autoscaling.minReplicas }}{{ $of = "autoscaling.minReplicas" }}{{ end }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- if and (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) $replicas) }}
{{- fail (printf "%s.podDisruptionBudget.minAvailable (%d) must be less than %s.%s (%d): with every replica required up, no node could ever be drained" $name (int $pdb.minAvailable) $name $of $replicas) }}
{{- end }}
{{- if eq (toString $pdb.minAvailable) "100%" }}
{{- fail (printf "%s.podDisruptionBudget.minAvailable 100%% lets no replica be evicted, so no node could ever be drained" $name) }}
{{- end }}
{{- else if or (eq (toString $pdb.maxUnavailable) "0") (eq (toString $pdb.maxUnavailable) "0%") }}
{{- fail (printf "%s.podDisruptionBudget.maxUnavailable 0 lets no replica be evicted, so no node could ever be drained" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $es.enabled $es.tls.clientCA.configMap $es.tls.clientCA.secret }}
{{- fail "encryptionService.tls.clientCA: set configMap or secret, not both" }}
{{- end }}
{{- if and $core.admin.username (not $core.admin.passwordSecret.name) }}
{{- fail "core.admin.passwordSecret.name is required with core.admin.username" }}
{{- end }}
{{- if and $es.admin.tokenHash $es.admin.tokenHashSecret.name }}
{{- fail "encryptionService.admin: set tokenHash or tokenHashSecret, not both" }}
{{- end }}
{{- if and $es.admin.tokenHash (not (regexMatch "^(sha256:)?[0-9a-fA-F]{64}$" $es.admin.tokenHash)) }}
{{- fail "encryptionService.admin.tokenHash: want the SHA-256 of the admin token as 64 hex digits (encryption-service admin-token generate)" }}
{{- end }}
{{- end }}
