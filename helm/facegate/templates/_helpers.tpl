{{/* Names, labels and the shared pod/container settings of every facegate workload. */}}

{{- define "facegate.fullname" -}}
{{- if contains "facegate" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-facegate" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "facegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: facegate
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: facegate
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" $ "component" "admin"). */}}
{{- define "facegate.selectorLabels" -}}
app.kubernetes.io/name: facegate
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "facegate.serveImage" -}}
{{ .Values.image.serve.repository }}:{{ .Values.image.serve.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "facegate.pipelineImage" -}}
{{ .Values.image.pipeline.repository }}:{{ .Values.image.pipeline.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod-level hardening: the uid/gid the facegate images run as (also used for PostgreSQL and MinIO, whose
images run as any uid), high enough not to map to a host account. */}}
{{- define "facegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level hardening: nothing to escalate to, no capabilities, an immutable root filesystem. */}}
{{- define "facegate.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "facegate.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{ .Values.s3.endpoint }}
{{- else if .Values.minio.enabled -}}
http://{{ include "facegate.fullname" . }}-minio:9000
{{- end -}}
{{- end -}}

{{/* S3 credentials and endpoint, for boto3 (MLflow, facegate) and the KServe storage initializer alike. */}}
{{- define "facegate.s3Env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.s3.existingSecret }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.s3.existingSecret }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- with (include "facegate.s3Endpoint" .) }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
- name: S3_ENDPOINT
  value: {{ . | trimPrefix "https://" | trimPrefix "http://" | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: S3_USE_HTTPS
  value: {{ ternary "1" "0" .Values.s3.useHttps | quote }}
{{- end -}}

{{/* What `facegate serve` needs in the cluster: the gallery, its keys, an optional bootstrap admin key, metrics. */}}
{{- define "facegate.serveEnv" -}}
- name: FACEGATE_HOME
  value: /var/lib/facegate
- name: FACEGATE_SERVE__GALLERY_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.gallery.existingSecret }}
      key: {{ .Values.secrets.gallery.urlKey }}
- name: FACEGATE_GALLERY_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.galleryKeys.existingSecret }}
      key: {{ .Values.secrets.galleryKeys.key }}
{{- with .Values.secrets.adminKey.existingSecret }}
- name: FACEGATE_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.adminKey.key }}
      optional: true
{{- end }}
- name: FACEGATE_SERVE__METRICS_HOST
  value: 0.0.0.0
- name: FACEGATE_SERVE__METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end -}}

{{/* The bundle download for pods KServe does not manage (admin API, re-index): KServe's own initializer. */}}
{{- define "facegate.storageInitializer" -}}
- name: storage-initializer
  image: {{ .Values.image.storageInitializer }}
  imagePullPolicy: IfNotPresent
  args:
    - {{ .Values.model.storageUri | quote }}
    - /mnt/models
  env:
    {{- include "facegate.s3Env" . | nindent 4 }}
  securityContext:
    {{- include "facegate.containerSecurityContext" . | nindent 4 }}
  resources:
    requests:
      cpu: 100m
      memory: 256Mi
    limits:
      cpu: "1"
      memory: 1Gi
  volumeMounts:
    - name: model
      mountPath: /mnt/models
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* model.version as a label value, as facegate.rollout.kserve.model_version_label makes it: characters outside
[A-Za-z0-9._-] become "-", a version over 63 characters keeps 54 plus "-" and 8 hex digits of its SHA-256, and the
ends are trimmed to alphanumerics. Prometheus tells model versions apart by this label (ServiceMonitor relabeling). */}}
{{- define "facegate.modelVersionLabel" -}}
{{- $v := .Values.model.version | toString -}}
{{- $text := regexReplaceAll "[^A-Za-z0-9._-]" $v "-" -}}
{{- if gt (len $text) 63 -}}
{{- $text = printf "%s-%s" (substr 0 54 $text) (sha256sum $v | trunc 8) -}}
{{- end -}}
{{- regexReplaceAll "^[^A-Za-z0-9]+|[^A-Za-z0-9]+$" $text "" | default "unknown" -}}
{{- end -}}

{{- /*
KServe's deployment mode annotation. KServe v0.16 renamed Serverless to Knative; v0.20 (the pinned release) still
takes Serverless as a deprecated alias, which a later release may drop, so a user's Serverless is written as Knative
(NOTES.txt says so) instead of being passed on.
*/}}
{{- define "facegate.deploymentMode" -}}
{{- $mode := .Values.verifier.deploymentMode | default "Knative" -}}
{{- if eq $mode "Serverless" -}}Knative{{- else -}}{{ $mode }}{{- end -}}
{{- end }}
