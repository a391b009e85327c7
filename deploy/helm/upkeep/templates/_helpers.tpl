{{- define "upkeep.labels" -}}
app.kubernetes.io/name: upkeep
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "upkeep.selector" -}}
app.kubernetes.io/name: upkeep
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "upkeep.subject" -}}
- kind: ServiceAccount
  name: upkeep
  namespace: {{ .Release.Namespace }}
{{- end }}
