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

{{/*
GOMEMLIMIT for an upstream Go program, which does not read its container's memory limit as
ours do (pkg/cli): 80 % of resources.limits.memory when given in Mi or Gi, nothing otherwise.
The rest of the limit is for what the Go runtime does not count but the cgroup does (the
binary's pages, kernel buffers). Arg: the container's resources.
*/}}
{{- define "tenantcloud-tenant.goMemLimit" -}}
{{- $limit := "" -}}
{{- with .limits }}{{ $limit = toString (.memory | default "") }}{{ end -}}
{{- $mib := 0 -}}
{{- if hasSuffix "Mi" $limit }}{{ $mib = trimSuffix "Mi" $limit | atoi }}
{{- else if hasSuffix "Gi" $limit }}{{ $mib = mul (trimSuffix "Gi" $limit | atoi) 1024 }}{{ end -}}
{{- if gt $mib 0 -}}
- name: GOMEMLIMIT
  value: {{ printf "%dMiB" (div (mul $mib 8) 10) | quote }}
{{- end -}}
{{- end -}}
