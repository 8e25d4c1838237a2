{{/* The release's base name (at most 63 characters). */}}
{{- define "warden.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "warden.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "warden.labels" -}}
{{ include "warden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "warden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "warden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The host of a URL: https://warden.example.com:8443/x -> warden.example.com */}}
{{- define "warden.urlHost" -}}
{{- $u := urlParse . -}}
{{- (split ":" $u.host)._0 -}}
{{- end -}}

{{/* The gateway's TLS Secret: the given one, or the one cert-manager fills. */}}
{{- define "warden.gatewayTlsSecret" -}}
{{- if .Values.gateway.tls.existingSecret -}}
{{- .Values.gateway.tls.existingSecret -}}
{{- else if .Values.gateway.tls.certManager.enabled -}}
{{- printf "%s-gateway-tls" (include "warden.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Checks that fail the render with a message instead of producing a broken release. */}}
{{- define "warden.validate" -}}
{{- $public := required "publicUrl is required: the URL browsers and agents use (https://warden.example.com)" .Values.publicUrl -}}
{{- if not (or (hasPrefix "https://" $public) (hasPrefix "http://" $public)) -}}
{{- fail "publicUrl must start with https:// (or http:// for a test installation)" -}}
{{- end -}}
{{- $gw := required "gateway.publicUrl is required: the URL kubectl uses (https://kube.warden.example.com)" .Values.gateway.publicUrl -}}
{{- if not (hasPrefix "https://" $gw) -}}
{{- fail "gateway.publicUrl must start with https:// (the gateway always speaks TLS)" -}}
{{- end -}}
{{- $_ := required "database.existingSecret is required: a Secret with the PostgreSQL URL" .Values.database.existingSecret -}}
{{- $_ := required "masterKey.existingSecret is required: a Secret with the master key every replica shares" .Values.masterKey.existingSecret -}}
{{- if and .Values.gateway.tls.existingSecret .Values.gateway.tls.certManager.enabled -}}
{{- fail "gateway.tls: set existingSecret or certManager.enabled, not both" -}}
{{- end -}}
{{- if and .Values.gateway.tls.certManager.enabled (not .Values.gateway.tls.certManager.issuerRef.name) -}}
{{- fail "gateway.tls.certManager.issuerRef.name is required when cert-manager issues the gateway's certificate" -}}
{{- end -}}
{{- if and .Values.console.ingress.enabled (not .Values.trustedProxies) -}}
{{- fail "trustedProxies is required with console.ingress.enabled: the ingress controller's addresses or range (e.g. 10.42.0.0/16, the pod network). Behind a proxy Warden does not believe, every client shares one sign-in rate limit and one lockout network, and the audit log records the proxy. Set it to none to believe no proxy" -}}
{{- end -}}
{{- if lt (int .Values.replicaCount) 1 -}}
{{- fail "replicaCount must be at least 1" -}}
{{- end -}}
{{- end -}}

{{/*
The Secret holding the first administrator's password: the operator's, or the one the chart
makes (kept across upgrades and uninstalls).
*/}}
{{- define "warden.adminSecret" -}}
{{- .Values.admin.existingSecret | default (printf "%s-admin" (include "warden.fullname" .)) -}}
{{- end }}
