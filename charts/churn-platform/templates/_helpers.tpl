{{/* Names ----------------------------------------------------------------------------------- */}}
{{- define "churn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "churn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A resource name with a suffix, e.g. include "churn.nameWith" (list . "api") */}}
{{- define "churn.nameWith" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "churn.fullname" $root | trunc 40 | trimSuffix "-") (index . 1) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "churn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "churn.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "churn.configMapName" -}}
{{- include "churn.nameWith" (list . "config") -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------- */}}
{{- define "churn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "churn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "churn.labels" -}}
{{ include "churn.selectorLabels" . }}
app.kubernetes.io/part-of: churn-platform
app.kubernetes.io/version: {{ include "churn.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------- */}}
{{- define "churn.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | toString -}}
{{- end -}}

{{/* include "churn.image" (list . "api"): <prefix>/<name>@<digest> when image.digests.<key> is set,
else <prefix>/<name>:<tag>. A digest is what CI tested and cannot be re-pointed; a tag is only a
fallback for local installs, and a changed digest is also what makes Argo CD roll the pods. */}}
{{- define "churn.image" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $repo := printf "%s/%s" (trimSuffix "/" $root.Values.image.repositoryPrefix) (index $root.Values.image $key) -}}
{{- $digest := index ($root.Values.image.digests | default dict) $key | default "" -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (include "churn.imageTag" $root) -}}
{{- end -}}
{{- end -}}

{{/* Redis URL when the vendored subchart is enabled (no password: reachable only in-release). */}}
{{- define "churn.inClusterRedisUrl" -}}
{{- printf "redis://%s-redis:%v/0" .Release.Name (.Values.redis.port | default 6379) -}}
{{- end -}}

{{/* Object storage ---------------------------------------------------------------------------- */}}
{{/* CHURN_DATA_DIR: s3://<storage.bucket>[/<storage.prefix>] - the one medium every pod shares. */}}
{{- define "churn.dataDir" -}}
{{- $bucket := required "storage.bucket is required (the S3 bucket holding CHURN_DATA_DIR)" .Values.storage.bucket -}}
{{- $prefix := trimAll "/" (.Values.storage.prefix | default "") -}}
{{- if $prefix -}}
{{- printf "s3://%s/%s" $bucket $prefix -}}
{{- else -}}
{{- printf "s3://%s" $bucket -}}
{{- end -}}
{{- end -}}

{{/* CHURN_S3_ENDPOINT_URL: storage.endpointUrl, else the in-chart MinIO when enabled, else "" (AWS). */}}
{{- define "churn.s3EndpointUrl" -}}
{{- if .Values.storage.endpointUrl -}}
{{- .Values.storage.endpointUrl -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s:%v" (include "churn.nameWith" (list . "minio")) .Values.minio.port -}}
{{- end -}}
{{- end -}}

{{/* CHURN_PUSHGATEWAY_URL: metrics.pushgateway.url, else the in-chart Pushgateway when enabled, else "". */}}
{{- define "churn.pushgatewayUrl" -}}
{{- if .Values.metrics.pushgateway.url -}}
{{- .Values.metrics.pushgateway.url -}}
{{- else if .Values.metrics.pushgateway.enabled -}}
{{- printf "http://%s:%v" (include "churn.nameWith" (list . "pushgateway")) .Values.metrics.pushgateway.port -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every churn container -------------------------------------------- */}}
{{- define "churn.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "churn.configMapName" . }}
env:
  {{- /* The daily run groups its pushed metrics by namespace (docs/cluster.md, Alerts). */}}
  - name: CHURN_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  - name: CHURN_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ required "existingSecret is required (a Secret with CHURN_REDIS_URL, CHURN_ADMIN_TOKEN)" .Values.existingSecret }}
        key: CHURN_REDIS_URL
        {{- /* with the vendored Redis the ConfigMap carries the URL; the Secret may override it */}}
        optional: {{ .Values.redis.enabled }}
  - name: CHURN_ADMIN_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: CHURN_ADMIN_TOKEN
        optional: true
  {{- /* The operator console's token (config CHURN_CONSOLE "on"): without it the console asks none. */}}
  - name: CHURN_CONSOLE_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: CHURN_CONSOLE_TOKEN
        optional: true
  - name: CHURN_FEAST_REGISTRY_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: CHURN_FEAST_REGISTRY_URL
        optional: true
  {{- /* The interventions webhook (config CHURN_INTERVENTION_SINKS with webhook): the settings
  refuse to start without both, so a sink configured without them fails loudly, not silently. */}}
  - name: CHURN_INTERVENTION_WEBHOOK_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: CHURN_INTERVENTION_WEBHOOK_URL
        optional: true
  - name: CHURN_INTERVENTION_WEBHOOK_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: CHURN_INTERVENTION_WEBHOOK_SECRET
        optional: true
  {{- /* Static S3 credentials; absent with workload identity (IRSA / GKE annotations on the
  ServiceAccount), where the AWS SDK finds its credentials on its own. */}}
  - name: AWS_ACCESS_KEY_ID
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: AWS_ACCESS_KEY_ID
        optional: true
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.existingSecret }}
        key: AWS_SECRET_ACCESS_KEY
        optional: true
{{- end -}}

{{/* No shared volume anywhere: /tmp (HOME, caches) and the node-local scratch at CHURN_LOCAL_DIR
(Feast's repo files and registry, staging) are per-pod emptyDirs; the data lives in the bucket. */}}
{{- define "churn.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: scratch
  mountPath: {{ .Values.scratch.mountPath }}
{{- end -}}

{{- define "churn.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
- name: scratch
  emptyDir:
    sizeLimit: {{ .Values.scratch.sizeLimit }}
{{- end -}}

{{/*
A batch pod spec running a list of steps in order: every step but the last is an init container
(init containers run one after another and a failing step stops the chain), the last step is the
main container. Each step names its image (a key of .Values.image) and command:
(dict "name" "score" "image" "ml" "command" (list "churn") "args" (list "score"))
include "churn.jobPodSpec" (dict "root" . "steps" (list ...))
*/}}
{{- define "churn.jobPodSpec" -}}
{{- $root := .root -}}
{{- $steps := .steps -}}
{{- $n := len $steps -}}
{{- $submits := false -}}
{{- range $steps }}{{ if .app }}{{ $submits = true }}{{ end }}{{ end -}}
serviceAccountName: {{ ternary (include "churn.nameWith" (list $root "spark-submit")) (include "churn.serviceAccountName" $root) $submits }}
automountServiceAccountToken: false
restartPolicy: Never
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- if gt $n 1 }}
initContainers:
{{- range $i, $step := $steps }}
{{- if lt (add1 $i) $n }}
  - name: {{ $step.name }}
    {{- if $step.app }}
    {{- include "churn.sparkSubmitContainer" (dict "root" $root "step" $step) | nindent 4 }}
    {{- else }}
    {{- include "churn.jobContainer" (dict "root" $root "step" $step) | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}
containers:
  {{- $main := last $steps }}
  - name: {{ $main.name }}
    {{- if $main.app }}
    {{- include "churn.sparkSubmitContainer" (dict "root" $root "step" $main) | nindent 4 }}
    {{- else }}
    {{- include "churn.jobContainer" (dict "root" $root "step" $main) | nindent 4 }}
    {{- end }}
volumes:
  {{- include "churn.volumes" $root | nindent 2 }}
  {{- if $submits }}
  {{- include "churn.sparkVolumes" $root | nindent 2 }}
  {{- end }}
{{- with $root.Values.jobs.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.jobs.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.jobs.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "churn.jobContainer" -}}
{{- $root := .root -}}
{{- $step := .step -}}
image: {{ include "churn.image" (list $root $step.image) }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
command:
  {{- toYaml $step.command | nindent 2 }}
args:
  {{- toYaml $step.args | nindent 2 }}
{{- include "churn.env" $root | nindent 0 }}
resources:
  {{- toYaml $root.Values.jobs.resources | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  {{- include "churn.volumeMounts" $root | nindent 2 }}
{{- end -}}

{{/* NetworkPolicy egress shared by the API and the jobs: DNS, Redis, the object store, for the
jobs ("pushgateway" true) the Pushgateway and the interventions webhook when it is a sink, extraEgress. */}}
{{- define "churn.egressRules" -}}
# DNS
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# Redis online store
- ports:
    - port: {{ .root.Values.networkPolicy.redisPort }}
      protocol: TCP
  {{- with .redisTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if .root.Values.minio.enabled }}
# Object storage: the in-chart MinIO
- ports:
    - port: {{ .root.Values.minio.port }}
      protocol: TCP
  to:
    - podSelector:
        matchLabels:
          {{- include "churn.selectorLabels" .root | nindent 10 }}
          app.kubernetes.io/component: minio
{{- else }}
# Object storage (S3 API; with IRSA also STS): networkPolicy.objectStorage, no `to` = anywhere
- ports:
    {{- range .root.Values.networkPolicy.objectStorage.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .root.Values.networkPolicy.objectStorage.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .pushgateway }}
{{- $p := .root.Values.metrics.pushgateway }}
{{- if $p.url }}
# The Pushgateway the daily run pushes to (metrics.pushgateway.url): networkPolicy.pushgateway
- ports:
    - port: {{ .root.Values.networkPolicy.pushgateway.port }}
      protocol: TCP
  {{- with .root.Values.networkPolicy.pushgateway.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- else if $p.enabled }}
# The in-chart Pushgateway the daily run pushes to
- ports:
    - port: {{ $p.port }}
      protocol: TCP
  to:
    - podSelector:
        matchLabels:
          {{- include "churn.selectorLabels" .root | nindent 10 }}
          app.kubernetes.io/component: pushgateway
{{- end }}
{{- if contains "webhook" (toString (index .root.Values.config "CHURN_INTERVENTION_SINKS" | default "")) }}
# The interventions webhook receiver the daily run delivers to: networkPolicy.interventionsWebhook
- ports:
    - port: {{ .root.Values.networkPolicy.interventionsWebhook.port }}
      protocol: TCP
  {{- with .root.Values.networkPolicy.interventionsWebhook.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- with .root.Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Spark (values "spark") -------------------------------------------------------------------- */}}
{{/* The image a SparkApplication's driver and executors run: spark.image (the ml code with Spark). */}}
{{- define "churn.sparkImage" -}}
{{- $repo := .Values.spark.image.repository -}}
{{- if not $repo -}}
{{- include "churn.image" (list . "spark") -}}
{{- else if .Values.spark.image.digest -}}
{{- printf "%s@%s" $repo .Values.spark.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default (include "churn.imageTag" .) .Values.spark.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* What a SparkApplication's driver and executors share with the churn containers: the settings
(CHURN_ENGINE=spark on top), the non-root user, no privilege escalation, and the per-pod /tmp and
scratch emptyDirs (volumes in the application's spec.volumes). */}}
{{- define "churn.sparkPod" -}}
labels:
  {{- include "churn.selectorLabels" . | nindent 2 }}
  app.kubernetes.io/component: spark
{{ include "churn.env" . }}
  - name: CHURN_ENGINE
    value: spark
podSecurityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
volumeMounts:
  {{- include "churn.volumeMounts" . | nindent 2 }}
{{- end -}}

{{/* A daily step that submits one of the chart's SparkApplications and waits for it to finish
(templates/spark.yaml, files/spark-submit.sh); only this container sees an API token. */}}
{{- define "churn.sparkSubmitContainer" -}}
{{- $root := .root -}}
image: {{ $root.Values.spark.submitter.image }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
command: ["sh", "/spark/submit.sh"]
args: [{{ .step.app | quote }}]
env:
  - name: HOME  # kubectl's cache; the root filesystem is read-only
    value: /tmp
  - name: JOB_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.labels['batch.kubernetes.io/job-name']
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_UID
    valueFrom:
      fieldRef:
        fieldPath: metadata.uid
  - name: SPARK_TIMEOUT_SECONDS
    value: {{ $root.Values.spark.timeoutSeconds | quote }}
  - name: SPARK_POLL_SECONDS
    value: {{ $root.Values.spark.pollSeconds | quote }}
resources:
  {{- toYaml $root.Values.spark.submitter.resources | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: spark-apps
    mountPath: /spark
    readOnly: true
  - name: spark-submit-token
    mountPath: /var/run/secrets/kubernetes.io/serviceaccount
    readOnly: true
{{- end -}}

{{/* The submitter's volumes: the manifests and script, and the API token kubectl finds in-cluster. */}}
{{- define "churn.sparkVolumes" -}}
- name: spark-apps
  configMap:
    name: {{ include "churn.nameWith" (list . "spark") }}
- name: spark-submit-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3600
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end -}}

{{/* Egress to the kube-apiserver (spark.apiServer): the submitter and the Spark drivers. */}}
{{- define "churn.apiServerEgress" -}}
# The Kubernetes API (spark.apiServer)
- ports:
    {{- range .Values.spark.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .Values.spark.apiServer.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
