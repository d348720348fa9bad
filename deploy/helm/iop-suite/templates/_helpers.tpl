{{- define "iop.name" -}}{{ .Release.Name }}-iop{{- end -}}

{{- define "iop.labels" -}}
app.kubernetes.io/part-of: iop-suite
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "iop.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .service }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "iop.secretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-secrets" (include "iop.name" .)) -}}
{{- end -}}

{{/* The containers' environment: the ConfigMap, then the Secret (databases, HS256 secret). */}}
{{- define "iop.envFrom" -}}
- configMapRef:
    name: {{ include "iop.name" . }}-config
- secretRef:
    name: {{ include "iop.secretName" . }}
{{- end -}}

{{- define "iop.pod" -}}
serviceAccountName: {{ include "iop.name" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
volumes:
  - name: var
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- end -}}
