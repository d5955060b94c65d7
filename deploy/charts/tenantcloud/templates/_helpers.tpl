{{/* Name prefix of every object: the release name, trimmed to leave room for suffixes. */}}
{{- define "tenantcloud.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenantcloud.clusterName" -}}
{{- required "clusterName is required" .Values.clusterName -}}
{{- end -}}

{{/* Common labels; pass a dict with root (.) and component. */}}
{{- define "tenantcloud.labels" -}}
app.kubernetes.io/name: tenantcloud
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "tenantcloud.selectorLabels" -}}
app.kubernetes.io/name: tenantcloud
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image: dict root, image (values.images.X). tenantcloud images default to appVersion. */}}
{{- define "tenantcloud.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "tenantcloud.configSecret" -}}
{{- printf "%s-config" (include "tenantcloud.fullname" .) -}}
{{- end -}}

{{- define "tenantcloud.kubeconfigSecret" -}}
{{- default (printf "%s-kubeconfig" (include "tenantcloud.clusterName" .)) .Values.tenantKubeconfig.secretName -}}
{{- end -}}

{{- define "tenantcloud.serverTLSSecret" -}}
{{- default (printf "%s-autoscaler-provider-tls" (include "tenantcloud.fullname" .)) .Values.autoscaler.tls.serverSecretName -}}
{{- end -}}

{{- define "tenantcloud.clientTLSSecret" -}}
{{- default (printf "%s-cluster-autoscaler-tls" (include "tenantcloud.fullname" .)) .Values.autoscaler.tls.clientSecretName -}}
{{- end -}}

{{/* Where the config and the tenant kubeconfig are mounted. */}}
{{- define "tenantcloud.configPath" -}}/etc/tenantcloud/config/config.yaml{{- end -}}
{{- define "tenantcloud.kubeconfigPath" -}}/etc/tenantcloud/tenant/kubeconfig{{- end -}}

{{/* Volumes shared by the tenantcloud pods: the config and the tenant kubeconfig. */}}
{{- define "tenantcloud.commonVolumes" -}}
- name: config
  secret:
    secretName: {{ include "tenantcloud.configSecret" . }}
- name: tenant-kubeconfig
  secret:
    secretName: {{ include "tenantcloud.kubeconfigSecret" . }}
    items:
      - key: {{ .Values.tenantKubeconfig.key }}
        path: kubeconfig
{{- end -}}

{{- define "tenantcloud.commonMounts" -}}
- name: config
  mountPath: /etc/tenantcloud/config
  readOnly: true
- name: tenant-kubeconfig
  mountPath: /etc/tenantcloud/tenant
  readOnly: true
{{- end -}}

{{- define "tenantcloud.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
GOMEMLIMIT for an upstream Go program, which does not read its container's memory limit as
ours do (pkg/cli): 80 % of resources.limits.memory when given in Mi or Gi, nothing otherwise.
The rest of the limit is for what the Go runtime does not count but the cgroup does (the
binary's pages, kernel buffers). Arg: the container's resources.
*/}}
{{- define "tenantcloud.goMemLimit" -}}
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
