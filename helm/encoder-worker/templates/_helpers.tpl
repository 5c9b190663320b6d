{{/* Names and labels. */}}

{{- define "encoder-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "encoder-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "encoder-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "encoder-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "encoder-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "encoder-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "encoder-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "encoder-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The worker image: digest wins over tag; the default tag follows the CPU/GPU profile. */}}
{{- define "encoder-worker.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- $tag := $image.tag | default (printf "%s-%s" .Chart.AppVersion (ternary "cuda" "cpu" .Values.gpu.enabled)) }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/* Paths inside the pod. Secrets are mounted as files under /etc/encoder-worker. */}}
{{- define "encoder-worker.configDir" -}}/etc/encoder-worker/config{{- end }}
{{- define "encoder-worker.saslDir" -}}/etc/encoder-worker/kafka-sasl{{- end }}
{{- define "encoder-worker.caDir" -}}/etc/encoder-worker/kafka-ca{{- end }}
{{- define "encoder-worker.clientCertDir" -}}/etc/encoder-worker/kafka-client{{- end }}
{{- define "encoder-worker.homeDir" -}}/home/worker{{- end }}
{{- define "encoder-worker.labelsDir" -}}/etc/encoder-worker/labels{{- end }}

{{/* Where the labels file from `labels` is mounted; empty when `labels` sets none. */}}
{{- define "encoder-worker.labelsFile" -}}
{{- if .Values.labels.existingConfigMap }}{{ include "encoder-worker.labelsDir" . }}/{{ .Values.labels.key }}
{{- else if .Values.labels.content }}{{ include "encoder-worker.configDir" . }}/labels.yaml
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "encoder-worker.validate" -}}
{{- $sasl := .Values.kafkaAuth.sasl }}
{{- if and $sasl.mechanism (not $sasl.existingSecret) }}
{{- fail "kafkaAuth.sasl.existingSecret: name the Secret holding the SASL user name and password (credentials are never set in values)" }}
{{- end }}
{{- $tls := .Values.kafkaAuth.tls }}
{{- if and (not $tls.enabled) (or $tls.caSecret $tls.clientSecret) }}
{{- fail "kafkaAuth.tls: caSecret or clientSecret is set but tls.enabled is false" }}
{{- end }}
{{- if and $tls.keyPasswordKey (not $tls.clientSecret) }}
{{- fail "kafkaAuth.tls.keyPasswordKey needs kafkaAuth.tls.clientSecret" }}
{{- end }}
{{- if and (eq .Values.model.source "pvc") (not .Values.model.pvc.claimName) }}
{{- fail "model.pvc.claimName: name the PersistentVolumeClaim holding the model (model.source is pvc)" }}
{{- end }}
{{- $init := .Values.model.initContainer }}
{{- if and (eq .Values.model.source "initContainer") (not $init.repo) (not $init.command) }}
{{- fail "model.initContainer: set repo (a Hugging Face repository) or command (model.source is initContainer)" }}
{{- end }}
{{- if and (include "encoder-worker.labelsFile" .) .Values.worker.model.labels_file }}
{{- fail "worker.model.labels_file: leave it null when labels.content or labels.existingConfigMap is set (the chart points it at the mounted file)" }}
{{- end }}
{{- $drain := .Values.worker.delivery.drain_timeout_s | float64 }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf $drain 15) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed worker.delivery.drain_timeout_s (%v) by 15 s or more, or the kubelet kills a drain half-way" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- $as := .Values.autoscaling }}
{{- if ne $as.mode "none" }}
{{- $max := include "encoder-worker.maxReplicas" . | int }}
{{- if gt $max (int $as.inputPartitions) }}
{{- fail (printf "autoscaling.maxReplicas (%d) is above autoscaling.inputPartitions (%d): the extra replicas would sit idle" $max (int $as.inputPartitions)) }}
{{- end }}
{{- if gt (int $as.minReplicas) $max }}
{{- fail (printf "autoscaling.minReplicas (%d) is above the maximum (%d)" (int $as.minReplicas) $max) }}
{{- end }}
{{- if and (eq $as.mode "hpa") (lt (int $as.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas: a plain HPA cannot scale to zero; use autoscaling.mode keda" }}
{{- end }}
{{- if and (eq $as.mode "hpa") (not $as.hpa.targetCPUUtilizationPercentage) (not $as.hpa.metrics) }}
{{- fail "autoscaling.hpa: set targetCPUUtilizationPercentage or metrics" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "encoder-worker.maxReplicas" -}}
{{- .Values.autoscaling.maxReplicas | default .Values.autoscaling.inputPartitions }}
{{- end }}

{{/* security.protocol follows from kafkaAuth, so worker and KEDA always agree. */}}
{{- define "encoder-worker.securityProtocol" -}}
{{- $sasl := .Values.kafkaAuth.sasl.mechanism }}
{{- $tls := .Values.kafkaAuth.tls.enabled }}
{{- if and $sasl $tls }}SASL_SSL
{{- else if $sasl }}SASL_PLAINTEXT
{{- else if $tls }}SSL
{{- end }}
{{- end }}

{{/*
The worker's config.yaml: `worker` values plus what the chart derives (credentials as mounted
file paths, the model mount, the labels file's path; not its content, so that editing the labels
changes no checksum and rolls no pod). Secret values themselves never appear here.
*/}}
{{- define "encoder-worker.workerConfig" -}}
{{- $config := deepCopy .Values.worker }}
{{- $kafka := $config.kafka }}
{{- $auth := .Values.kafkaAuth }}
{{- $protocol := include "encoder-worker.securityProtocol" . }}
{{- if $protocol }}
{{- $_ := set $kafka "security_protocol" $protocol }}
{{- end }}
{{- if $auth.sasl.mechanism }}
{{- $_ := set $kafka "sasl_mechanism" $auth.sasl.mechanism }}
{{- $_ := set $kafka "sasl_password_file" (printf "%s/password" (include "encoder-worker.saslDir" .)) }}
{{- end }}
{{- if $auth.tls.caSecret }}
{{- $_ := set $kafka "ssl_ca_location" (printf "%s/ca.crt" (include "encoder-worker.caDir" .)) }}
{{- end }}
{{- if $auth.tls.clientSecret }}
{{- $_ := set $kafka "ssl_certificate_location" (printf "%s/tls.crt" (include "encoder-worker.clientCertDir" .)) }}
{{- $_ := set $kafka "ssl_key_location" (printf "%s/tls.key" (include "encoder-worker.clientCertDir" .)) }}
{{- end }}
{{- if and (ne .Values.model.source "image") (not $config.model.path) }}
{{- $_ := set $config.model "path" .Values.model.mountPath }}
{{- end }}
{{- with include "encoder-worker.labelsFile" . }}
{{- $_ := set $config.model "labels_file" . }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* KEDA's offsetResetPolicy mirrors the worker's auto.offset.reset (the worker's default is earliest). */}}
{{- define "encoder-worker.offsetResetPolicy" -}}
{{- $kafka := .Values.worker.kafka }}
{{- $reset := get $kafka.consumer_config "auto.offset.reset" | default (get $kafka.config "auto.offset.reset") | default "earliest" | toString }}
{{- if has $reset (list "latest" "largest" "end") }}latest{{ else }}earliest{{ end }}
{{- end }}

{{/* An HTTP probe on the worker's `http` port from a `probes.*` value. */}}
{{- define "encoder-worker.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end }}
