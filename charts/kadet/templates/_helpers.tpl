{{/* Name of the chart's objects: the release name, unless it already says "kadet". */}}
{{- define "kadet.fullname" -}}
{{- if contains "kadet" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kadet" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kadet.selectorLabels" -}}
app.kubernetes.io/name: kadet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kadet.labels" -}}
{{ include "kadet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kadet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kadet.serviceAccountName" -}}
{{ include "kadet.fullname" . }}
{{- end -}}

{{- define "kadet.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "kadet.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) -}}
{{- end -}}

{{/* The namespaced rules the operator needs wherever it manages AgentJobs (why each one:
docs/security-pods.md). Secrets and NetworkPolicies: create only, for each job's key Secret
and policy; the garbage collector deletes them with the job, and the operator never reads
a job's Secret back. */}}
{{- define "kadet.jobRules" -}}
- apiGroups: [kadet.io]
  resources: [agentjobs]
  verbs: [get, list, watch, update, patch, delete]
- apiGroups: [kadet.io]
  resources: [agentjobs/status, agentjobs/scale]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
{{- if .Values.security.networkPolicy.enabled }}
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create]
{{- end }}
{{- end -}}
