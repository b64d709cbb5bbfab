{{/* Labels every object carries. */}}
{{- define "meshtrace.labels" -}}
app.kubernetes.io/name: meshtrace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The collector Service's cluster-local host name. */}}
{{- define "meshtrace.collectorHost" -}}
{{ printf "%s.%s.svc.cluster.local" .Values.collector.name .Values.collector.namespace }}
{{- end }}

{{/* The collector port proxies export to: 4317 for OTLP/gRPC, 4318 for OTLP/HTTP. */}}
{{- define "meshtrace.exportPort" -}}
{{ ternary 4317 4318 (eq .Values.tracing.protocol "grpc") }}
{{- end }}

{{/* The Envoy cluster Istio creates for that Service port: what the plugin exports through. */}}
{{- define "meshtrace.exportCluster" -}}
{{ printf "outbound|%s||%s" (include "meshtrace.exportPort" .) (include "meshtrace.collectorHost" .) }}
{{- end }}

{{/* The plugin's configuration: plugin.config, with the export target, sampling percentage and
naming mode always taken from the shared values so they cannot drift from the collector and
from Istio's own tracer. */}}
{{- define "meshtrace.pluginConfig" -}}
{{- $t := .Values.tracing -}}
{{- $exporter := dict "protocol" (ternary "grpc" "http/protobuf" (eq $t.protocol "grpc")) "cluster" (include "meshtrace.exportCluster" .) "timeout" $t.timeout -}}
{{- if ne $t.protocol "grpc" }}{{ $_ := set $exporter "path" $t.path }}{{ end -}}
{{- if $t.headers }}{{ $_ := set $exporter "headers" $t.headers }}{{ end -}}
{{- $generated := dict "randomSamplingPercentage" $t.randomSamplingPercentage "tracingServiceName" $t.tracingServiceName "exporter" $exporter -}}
{{- $config := deepCopy (.Values.plugin.config | default dict) -}}
{{- mustMergeOverwrite $config $generated | toJson -}}
{{- end }}

{{/* Istio's OpenTelemetry extension provider, shared by both install forms. */}}
{{- define "meshtrace.extensionProvider" -}}
- name: {{ .Values.tracing.providerName }}
  opentelemetry:
    service: {{ include "meshtrace.collectorHost" . }}
    port: {{ include "meshtrace.exportPort" . }}
    {{- if eq .Values.tracing.protocol "grpc" }}
    grpc:
      timeout: {{ .Values.tracing.timeout }}
      {{- with .Values.tracing.headers }}
      initialMetadata:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- else }}
    http:
      path: {{ .Values.tracing.path }}
      timeout: {{ .Values.tracing.timeout }}
      {{- with .Values.tracing.headers }}
      headers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- if .Values.tracing.resourceDetectors.environment }}
    resource_detectors:
      environment: {}
    {{- end }}
{{- end }}

{{/* meshConfig for either install form. */}}
{{- define "meshtrace.meshConfig" -}}
enableTracing: true
defaultConfig:
  tracingServiceName: {{ .Values.tracing.tracingServiceName }}
extensionProviders:
{{ include "meshtrace.extensionProvider" . }}
{{- include "meshtrace.accessLogProviders" . }}
{{- end }}

{{/* Namespaces holding one WasmPlugin/Telemetry pair each. */}}
{{- define "meshtrace.pluginNamespaces" -}}
{{- if eq .Values.plugin.scope "mesh" -}}
{{ list .Values.istioNamespace | toJson }}
{{- else -}}
{{ .Values.plugin.namespaces | toJson }}
{{- end -}}
{{- end }}
