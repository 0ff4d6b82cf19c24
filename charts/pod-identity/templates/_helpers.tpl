{{/* The agent DaemonSet's name: eks-pod-identity-agent, plus -<nameSuffix> for a variant. */}}
{{- define "pod-identity.agentName" -}}
{{- if .nameSuffix -}}
{{- printf "eks-pod-identity-agent-%s" .nameSuffix | trunc 63 | trimSuffix "-" -}}
{{- else -}}
eks-pod-identity-agent
{{- end -}}
{{- end -}}

{{- define "pod-identity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: pod-identity
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The agent image: image.override, else repository:tag (tag defaults to appVersion). */}}
{{- define "pod-identity.agentImage" -}}
{{- if .Values.image.override -}}
{{- .Values.image.override -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
