{{/* Chart name, overridable. */}}
{{- define "counterstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: the release name, plus the chart name unless it is in it. */}}
{{- define "counterstack.fullname" -}}
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

{{/* Name of the operator's Deployment, ServiceAccount, ClusterRole and binding. */}}
{{- define "counterstack.operatorName" -}}
{{- printf "%s-operator" (include "counterstack.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "counterstack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "counterstack.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one image of operator and web pods. */}}
{{- define "counterstack.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "counterstack.defaultWebImage" -}}
{{- default (include "counterstack.image" .) .Values.operator.defaultWebImage }}
{{- end }}

{{/* Port of the operator's /metrics, /livez and /readyz (its --metrics-addr default). */}}
{{- define "counterstack.metricsPort" -}}
8081
{{- end }}

{{- define "counterstack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "counterstack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "counterstack.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "counterstack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: counterstack
{{- end }}
