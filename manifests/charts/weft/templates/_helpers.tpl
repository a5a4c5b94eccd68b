{{/* The weft image reference. */}}
{{- define "weft.image" -}}
{{ .Values.global.hub }}/{{ .Values.global.image }}:{{ .Values.global.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels every object carries; weft uninstall selects on the instance label. */}}
{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
weft.io/profile: {{ .Values.profile | quote }}
{{- end }}

{{/* A restrictive container security context (uid 1337, read-only root). */}}
{{- define "weft.securityContext" -}}
runAsUser: 1337
runAsGroup: 1337
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
