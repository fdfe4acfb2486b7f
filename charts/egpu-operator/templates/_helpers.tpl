{{/* Names: the operator is "<fullname>", the node agent "<fullname>-node-agent". */}}
{{- define "egpu-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "egpu-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "egpu-operator.operator.name" -}}
{{- include "egpu-operator.fullname" . }}
{{- end }}

{{- define "egpu-operator.agent.name" -}}
{{- printf "%s-node-agent" (include "egpu-operator.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{/* The node agent's namespace: agent.namespace, or the release namespace when that is empty. */}}
{{- define "egpu-operator.agent.namespace" -}}
{{- .Values.agent.namespace | default .Release.Namespace }}
{{- end }}

{{/* Labels on every object; pass (dict "root" $ "component" "operator"). */}}
{{- define "egpu-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: egpu-operator
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "egpu-operator.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "egpu-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "egpu-operator.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest pins the image, else repository:tag (default: appVersion). */}}
{{- define "egpu-operator.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The user name the API server gives the node agent's ServiceAccount tokens. */}}
{{- define "egpu-operator.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" (include "egpu-operator.agent.namespace" .) (include "egpu-operator.agent.name" .) }}
{{- end }}

{{/* An allow-list of names as admission messages quote it: "a, b", or "none" when it is empty. */}}
{{- define "egpu-operator.allowList" -}}
{{- if . }}{{ join ", " . }}{{ else }}none{{ end }}
{{- end }}

{{/* The environment variables through which the NVIDIA container runtime picks the GPUs a container
sees; the device plugin sets them for the GPU it allocated. A JSON list (include ... | fromJsonArray). */}}
{{- define "egpu-operator.gpuEnv" -}}
["NVIDIA_VISIBLE_DEVICES","NVIDIA_DRIVER_CAPABILITIES","CUDA_VISIBLE_DEVICES","NVIDIA_MIG_CONFIG_DEVICES","NVIDIA_MIG_MONITOR_DEVICES"]
{{- end }}
