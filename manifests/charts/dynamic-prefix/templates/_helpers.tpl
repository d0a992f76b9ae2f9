{{- define "dp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dp.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dp.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: clusterd
{{- end -}}

{{- define "dp.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{- define "dp.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default (printf "%s-webhook" (include "dp.fullname" .)) -}}
{{- end -}}

{{- define "dp.mqttSecret" -}}
{{- .Values.mqtt.existingSecret | default (printf "%s-mqtt" (include "dp.fullname" .)) -}}
{{- end -}}

{{- define "dp.leaseName" -}}
{{- include "dp.fullname" . -}}
{{- end -}}
