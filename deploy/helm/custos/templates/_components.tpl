{{/*
Objects both components have, each called with
(dict "ctx" $ "name" <object name> "component" <component label> "values" <the component's values>).
*/}}

{{- define "custos.service" -}}
{{- $v := .values -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "custos.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  {{- if and (eq $v.service.type "LoadBalancer") $v.service.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml $v.service.loadBalancerSourceRanges | nindent 4 }}
  {{- end }}
  {{- if and (has $v.service.type (list "LoadBalancer" "NodePort")) $v.service.externalTrafficPolicy }}
  externalTrafficPolicy: {{ $v.service.externalTrafficPolicy }}
  {{- end }}
  selector:
    {{- include "custos.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  ports:
    # TLS end to end: a proxy in front must pass TLS through, never terminate it.
    - name: https
      port: {{ $v.service.httpsPort }}
      targetPort: https
      protocol: TCP
    - name: grpc
      port: {{ $v.service.grpcPort }}
      targetPort: grpc
      protocol: TCP
    {{- if .ctx.Values.serviceMonitor.enabled }}
    # Prometheus metrics on their own TLS listener (ES_METRICS_ADDR / CORE_METRICS_ADDR).
    - name: metrics
      port: {{ ternary 9445 8445 (eq .component "encryption-service") }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end }}

{{- define "custos.pdb" -}}
{{- $p := .values.podDisruptionBudget -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "custos.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  # Pods that never became ready may always be evicted, so that a broken rollout cannot block drains.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "custos.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}

{{- define "custos.hpa" -}}
{{- $a := .values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "custos.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- if gt (int $a.targetMemoryUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "custos.serviceMonitor" -}}
{{- $sm := .ctx.Values.serviceMonitor -}}
{{- $secret := include "custos.metricsClientSecret" .ctx -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ .name }}
  labels:
    {{- include "custos.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "custos.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .ctx.Release.Namespace }}
  endpoints:
    - port: {{ $sm.port }}
      path: {{ $sm.path }}
      scheme: https
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      tlsConfig:
        serverName: {{ .name }}
        ca:
          secret:
            name: {{ $secret }}
            key: ca.crt
        cert:
          secret:
            name: {{ $secret }}
            key: tls.crt
        keySecret:
          name: {{ $secret }}
          key: tls.key
{{- end }}

{{/*
The migration hook Job: "<binary> migrate" before install and upgrade, with only the database URL.
Extra key: "binary", "envPrefix", "secret" (the database Secret).
*/}}
{{- define "custos.migrateJob" -}}
{{- $v := .values -}}
{{- $j := $v.migrations.job -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .name }}-migrate
  labels:
    {{- include "custos.labels" (dict "ctx" .ctx "component" (printf "%s-migrate" .component)) | nindent 4 }}
  annotations:
    # Runs before the new pods exist; the ServiceAccount and the database Secret must exist already
    # (the ServiceAccount of the hooks is itself a hook, weight -10).
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $j.backoffLimit }}
  activeDeadlineSeconds: {{ $j.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "custos.labels" (dict "ctx" .ctx "component" (printf "%s-migrate" .component)) | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "custos.fullname" .ctx }}-migrate
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with .ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .ctx.Values.podSecurityContext | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: migrate
          image: {{ include "custos.image" (dict "ctx" .ctx "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["migrate"]
          env:
            - name: {{ .envPrefix }}_DATABASE_URL_FILE
              value: /var/run/custos/database/url
            - name: {{ .envPrefix }}_LOG_LEVEL
              value: {{ $v.logLevel | quote }}
            {{- if eq .envPrefix "CORE" }}
            # core's database commands also open its secret keys.
            - name: CORE_SECRET_KEYS_FILE
              value: /var/run/custos/secret-keys/keys
            {{- with $v.secretKeys.activeKeyId }}
            - name: CORE_ACTIVE_SECRET_KEY_ID
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
          resources:
            {{- toYaml $j.resources | nindent 12 }}
          securityContext:
            {{- toYaml .ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: database
              mountPath: /var/run/custos/database
              readOnly: true
            {{- if eq .envPrefix "CORE" }}
            - name: secret-keys
              mountPath: /var/run/custos/secret-keys
              readOnly: true
            {{- end }}
      volumes:
        - name: database
          secret:
            secretName: {{ .secret }}
            defaultMode: 0440
            items:
              - key: {{ $v.database.key }}
                path: url
        {{- if eq .envPrefix "CORE" }}
        - name: secret-keys
          secret:
            secretName: {{ include "custos.core.secretKeysSecret" .ctx }}
            defaultMode: 0440
            items:
              - key: {{ $v.secretKeys.key }}
                path: keys
        {{- end }}
{{- end }}

{{/* Egress every component needs: DNS and PostgreSQL. Called with the root context. */}}
{{- define "custos.egressBase" -}}
- to:
    {{- toYaml .Values.networkPolicy.egress.dns | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
- ports:
    {{- range .Values.networkPolicy.egress.postgresql.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.networkPolicy.egress.postgresql.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
