{{/* The release's base name, at most 63 characters (a DNS label). */}}
{{- define "sluice.fullname" -}}
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

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The leader-election Lease: one per release, named so the Role can grant only it. */}}
{{- define "sluice.leaseName" -}}
{{- printf "%s-leader" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.metricsServiceName" -}}
{{- printf "%s-metrics" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when a container port is privileged (below 1024). */}}
{{- define "sluice.lowPorts" -}}
{{- $ports := list .Values.containerPorts.http .Values.containerPorts.metrics -}}
{{- if .Values.controller.https.enabled -}}{{- $ports = append $ports .Values.containerPorts.https -}}{{- end -}}
{{- $low := false -}}
{{- range $ports -}}{{- if lt (int .) 1024 -}}{{- $low = true -}}{{- end -}}{{- end -}}
{{- if $low -}}true{{- end -}}
{{- end -}}

{{/* The lowest container port, for net.ipv4.ip_unprivileged_port_start. */}}
{{- define "sluice.lowestPort" -}}
{{- $lowest := int .Values.containerPorts.http -}}
{{- if lt (int .Values.containerPorts.metrics) $lowest -}}{{- $lowest = int .Values.containerPorts.metrics -}}{{- end -}}
{{- if and .Values.controller.https.enabled (lt (int .Values.containerPorts.https) $lowest) -}}{{- $lowest = int .Values.containerPorts.https -}}{{- end -}}
{{- $lowest -}}
{{- end -}}

{{/* More than one replica can exist at once, so a PodDisruptionBudget makes sense. */}}
{{- define "sluice.manyReplicas" -}}
{{- if or (eq .Values.kind "DaemonSet") .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}
