{{/* The collector in two tiers (collector.tailSampling.enabled), the OpenTelemetry Collector's
own scaling pattern for tail sampling: every span of a trace must reach the same collector, so
the first tier (the chart's collector, the proxies' export target, stateless) routes by trace id
with the `loadbalancing` exporter to the pods of a headless Service, the second tier, which holds
each trace for `decisionWait`, applies the `tail_sampling` policies and exports to the backend.
The plugin's own sampling and capture rules decide first, in the proxies. */}}

{{/* The second tier's name: its Deployment, ConfigMap and headless Service. */}}
{{- define "meshtrace.samplerName" -}}
{{ printf "%s-sampling" .Values.collector.name }}
{{- end }}

{{/* The headless Service's host name: DNS answers with every ready pod's address. */}}
{{- define "meshtrace.samplerHost" -}}
{{ printf "%s.%s.svc.%s" (include "meshtrace.samplerName" .) (include "meshtrace.collectorNamespace" .) .Values.clusterDomain }}
{{- end }}

{{- define "meshtrace.samplerSelector" -}}
app.kubernetes.io/name: meshtrace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: collector-sampling
{{- end }}

{{/* First tier: one OTLP/gRPC exporter per second-tier pod, chosen by trace id, the pods found
by re-resolving the headless Service (resolver dns; no API access needed). Plain text: the
second tier has no sidecar either. Input: dict c (collector values), samplers (host). */}}
{{- define "meshtrace.loadbalancingExporter" -}}
loadbalancing:
  routing_key: traceID
  protocol:
    otlp:
      tls:
        insecure: true
  resolver:
    dns:
      hostname: {{ .samplers }}
      port: "4317"  # a string in the resolver's config
{{- end }}

{{/* The backend exporter (OTLP/gRPC or OTLP/HTTP), its auth header from BACKEND_AUTH. */}}
{{- define "meshtrace.backendExporter" -}}
{{ ternary "otlp/backend" "otlphttp/backend" (eq .backend.protocol "grpc") }}:
  endpoint: {{ .backend.endpoint | quote }}
  {{- if .backend.auth.existingSecret }}
  headers:
    {{ .backend.auth.header }}: ${env:BACKEND_AUTH}
  {{- end }}
{{- end }}

{{/* Second tier's configuration: OTLP/gRPC from the first tier only, memory_limiter,
tail_sampling, batch, then the backend (or the debug exporter). Input: the collector values. */}}
{{- define "meshtrace.samplerConfig" -}}
{{- $t := .tailSampling -}}
extensions:
  health_check:
    endpoint: ${env:MY_POD_IP}:13133
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:MY_POD_IP}:4317
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: {{ .memoryLimitPercentage }}
    spike_limit_percentage: {{ div .memoryLimitPercentage 4 }}
  tail_sampling:
    decision_wait: {{ $t.decisionWait }}
    num_traces: {{ $t.numTraces }}
    policies:
      {{- toYaml $t.policies | nindent 6 }}
  batch: {}
exporters:
  {{- if .backend.endpoint }}
  {{- include "meshtrace.backendExporter" . | nindent 2 }}
  {{- end }}
  {{- if or .debugExporter (not .backend.endpoint) }}
  debug:
    verbosity: {{ ternary "detailed" "basic" (and .debugExporter true) }}
  {{- end }}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, tail_sampling, batch]
      exporters:
        {{- if .backend.endpoint }}
        - {{ ternary "otlp/backend" "otlphttp/backend" (eq .backend.protocol "grpc") }}
        {{- end }}
        {{- if or .debugExporter (not .backend.endpoint) }}
        - debug
        {{- end }}
{{- end }}
