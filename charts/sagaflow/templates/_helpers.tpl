{{/* The operator's name: <release>-sagaflow-operator, at most 63 characters. */}}
{{- define "sagaflow.operator" -}}
{{- printf "%s-sagaflow-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-wide objects carry the namespace too: two releases never share one. */}}
{{- define "sagaflow.clusterName" -}}
{{- printf "%s-%s-sagaflow-operator" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sagaflow.serviceAccount" -}}
{{- default (include "sagaflow.operator" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "sagaflow.selector" -}}
app.kubernetes.io/name: sagaflow-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sagaflow.labels" -}}
{{ include "sagaflow.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The ComplaintSaga the Ingress routes to: ingress.sagaName, else the chart's own saga. */}}
{{- define "sagaflow.ingressSaga" -}}
{{- if .Values.ingress.sagaName -}}
{{- .Values.ingress.sagaName -}}
{{- else if .Values.saga.enabled -}}
{{- .Values.saga.name -}}
{{- else -}}
{{- fail "ingress.enabled routes to a ComplaintSaga's complaint service: set saga.enabled=true (with saga.spec), or ingress.sagaName to the name of a ComplaintSaga you apply yourself" -}}
{{- end -}}
{{- end -}}

{{/* The ServiceMonitor of the services: <release>-sagaflow-services. */}}
{{- define "sagaflow.servicesMonitor" -}}
{{- printf "%s-sagaflow-services" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
