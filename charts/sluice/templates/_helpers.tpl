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
app.kubernetes.io/name: {{ include "sluice.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
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

{{/* Cluster-scoped names carry the namespace: one release name may exist in two namespaces. */}}
{{- define "sluice.clusterRoleName" -}}
{{- printf "%s-%s" (include "sluice.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The pod's labels: the user's, then the selector's (which must win, or the workload
     would not select its own pods). */}}
{{- define "sluice.podLabels" -}}
{{- $selector := dict "app.kubernetes.io/name" (include "sluice.name" .) "app.kubernetes.io/instance" .Release.Name -}}
{{- $labels := merge $selector (deepCopy .Values.podLabels) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* The PromQL label matcher of Sluice's series in the alerts. */}}
{{- define "sluice.alertSelector" -}}
{{- default (printf "job=%q" (include "sluice.metricsServiceName" .)) .Values.prometheusRule.selector -}}
{{- end -}}

{{/* The port HTTP->HTTPS redirects name: the one clients reach the HTTPS listener on. */}}
{{- define "sluice.httpsRedirectPort" -}}
{{- if .Values.hostNetwork -}}
{{- .Values.containerPorts.https -}}
{{- else if .Values.hostPorts.enabled -}}
{{- .Values.hostPorts.https -}}
{{- else if and (eq .Values.service.type "NodePort") .Values.service.nodePorts.https -}}
{{- .Values.service.nodePorts.https -}}
{{- else -}}
{{- .Values.service.ports.https -}}
{{- end -}}
{{- end -}}

{{/* Values that render but would not work: refused with a clear message. */}}
{{- define "sluice.validate" -}}
{{- if and .Values.hostNetwork .Values.hostPorts.enabled -}}
{{- fail "hostNetwork and hostPorts.enabled together: with hostNetwork the container ports are the node's ports already; turn hostPorts off" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.kind "DaemonSet") -}}
{{- fail "autoscaling.enabled with kind DaemonSet: a DaemonSet runs one pod per node and cannot be autoscaled" -}}
{{- end -}}
{{- if and (not .Values.controller.leaderElection.enabled) (include "sluice.manyReplicas" .) -}}
{{- fail "controller.leaderElection.enabled=false with more than one replica: every replica would write status and Events" -}}
{{- end -}}
{{- $delay := trimSuffix "s" .Values.controller.shutdownDelay | int -}}
{{- $drain := trimSuffix "s" .Values.controller.drainTimeout | int -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $delay $drain) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than controller.shutdownDelay + controller.drainTimeout (%ds): Kubernetes would kill draining requests" (int .Values.terminationGracePeriodSeconds) (add $delay $drain)) -}}
{{- end -}}
{{- $managed := list "--ingress-class" "--http-addr" "--https-addr" "--https-redirect-port" "--default-ssl-certificate" "--admin-addr" "--log-format" "--access-log" "--leader-elect" "--lease-name" "--lease-duration" "--lease-namespace" "--publish-service" "--trusted-proxies" "--shutdown-delay" "--drain-timeout" "--identity" "--redis-url" "--cache-purge-token-file" "--max-connections" "--memory-limit" -}}
{{- range .Values.controller.extraArgs -}}
{{- $flag := regexReplaceAll "=.*" . "" -}}
{{- if has $flag $managed -}}
{{- fail (printf "controller.extraArgs: %s is set by the chart (see values.yaml); use the chart's value instead" $flag) -}}
{{- end -}}
{{- if and $.Values.controller.publishService (eq $flag "--publish-address") -}}
{{- fail "controller.extraArgs: --publish-address with controller.publishService=true; turn publishService off to publish other addresses" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.prometheusRule.enabled (not .Values.prometheusRule.selector) (not .Values.metricsService.enabled) -}}
{{- fail "prometheusRule.enabled without metricsService: set prometheusRule.selector to the labels your scrape configuration gives Sluice's series" -}}
{{- end -}}
{{- end -}}
