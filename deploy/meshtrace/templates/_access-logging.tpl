{{/* Access logs joined to traces (issue 15): the extension providers whose log lines carry the
filter state meshtrace publishes (wasm.meshtrace.*), appended to meshConfig.extensionProviders.
Fields as Istio's MeshConfig.ExtensionProvider defines them (istio/api mesh/v1alpha1/config.proto:
EnvoyFileAccessLogProvider, EnvoyOpenTelemetryLogProvider); rendered into Envoy's access log
config by istio pilot/pkg/model/telemetry_logging.go (fileAccessLogFromTelemetry, openTelemetryLog). */}}
{{- define "meshtrace.accessLogProviders" -}}
{{- $a := .Values.accessLogging -}}
{{- if $a.enabled }}
- name: {{ $a.file.name }}
  envoyFileAccessLog:
    path: {{ $a.file.path }}
    logFormat:
      {{- if eq $a.file.encoding "json" }}
      labels:
        {{- toYaml $a.file.labels | nindent 8 }}
      {{- else }}
      text: {{ $a.file.text | quote }}
      {{- end }}
{{- if $a.otel.enabled }}
- name: {{ $a.otel.name }}
  envoyOtelAls:
    service: {{ $a.otel.service | default (include "meshtrace.collectorHost" .) }}
    port: {{ $a.otel.port }}
    logName: {{ $a.otel.logName }}
    logFormat:
      text: {{ $a.otel.text | quote }}
      labels:
        {{- toYaml $a.otel.attributes | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Telemetry accessLogging stanza, for the root namespace's Telemetry (Istio applies one
selector-less Telemetry per namespace, so this joins the one the chart already renders there). */}}
{{- define "meshtrace.accessLoggingStanza" -}}
{{- $a := .Values.accessLogging -}}
{{- if $a.enabled }}
accessLogging:
  - providers:
      {{- range $a.providers }}
      - name: {{ . }}
      {{- end }}
    {{- with $a.filter }}
    filter:
      expression: {{ . | quote }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Whether telemetry.yaml renders a selector-less Telemetry in the root namespace: the
plugin's own under scope mesh, or meshtrace-default (telemetry.meshDefault) under the other
scopes. */}}
{{- define "meshtrace.rootTelemetryRendered" -}}
{{- $p := .Values.plugin }}
{{- if eq .Values.telemetry.mode "create" }}
{{- if or (and $p.enabled (eq $p.scope "mesh")) (and .Values.telemetry.meshDefault (ne $p.scope "mesh")) }}true{{ end -}}
{{- end }}
{{- end }}
