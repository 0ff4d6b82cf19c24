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

{{/* The webhook's and eks-auth's image: repository:tag, the tag defaulting to image.tag (so one
value moves the whole product), then appVersion. Called with (list $ $part). */}}
{{- define "pod-identity.partImage" -}}
{{- $top := index . 0 -}}
{{- $image := (index . 1).image -}}
{{- printf "%s:%s" $image.repository (default (default $top.Chart.AppVersion $top.Values.image.tag) $image.tag) -}}
{{- end -}}

{{/* Whether the shared objects (namespace, role policy, associations) are wanted. */}}
{{- define "pod-identity.shared" -}}
{{- if or .Values.webhook.enabled .Values.eksAuth.enabled -}}true{{- end -}}
{{- end -}}

{{/* The agent's eks-auth endpoint: agent.eksAuth.endpoint, else this chart's eks-auth. */}}
{{- define "pod-identity.eksAuthEndpoint" -}}
{{- if .Values.agent.eksAuth.endpoint -}}
{{- .Values.agent.eksAuth.endpoint -}}
{{- else if .Values.eksAuth.enabled -}}
{{- printf "https://eks-auth.%s.svc:8080" .Values.shared.namespace -}}
{{- end -}}
{{- end -}}

{{/* Whether any agent DaemonSet is made (none: e.g. only the webhook). */}}
{{- define "pod-identity.anyAgent" -}}
{{- range $key, $ds := .Values.daemonsets -}}{{- if $ds.create -}}true{{- end -}}{{- end -}}
{{- end -}}
