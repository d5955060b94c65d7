{{- define "tenantcloud-tenant.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenantcloud-tenant.labels" -}}
app.kubernetes.io/name: tenantcloud
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "tenantcloud-tenant.selectorLabels" -}}
app.kubernetes.io/name: tenantcloud
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Cluster-scoped names are prefixed with the release namespace to stay unique. */}}
{{- define "tenantcloud-tenant.clusterName" -}}
{{- printf "tenantcloud-%s-%s-%s" .root.Release.Namespace (include "tenantcloud-tenant.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}
