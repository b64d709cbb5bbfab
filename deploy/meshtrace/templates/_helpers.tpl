{{/* Labels every object carries. */}}
{{- define "meshtrace.labels" -}}
app.kubernetes.io/name: meshtrace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The collector's namespace: collector.namespace, else the release's. */}}
{{- define "meshtrace.collectorNamespace" -}}
{{ .Values.collector.namespace | default .Release.Namespace }}
{{- end }}

{{/* The collector Service's host name in the cluster domain. */}}
{{- define "meshtrace.collectorHost" -}}
{{ printf "%s.%s.svc.%s" .Values.collector.name (include "meshtrace.collectorNamespace" .) .Values.clusterDomain }}
{{- end }}

{{/* The collector port proxies export to: 4317 for OTLP/gRPC, 4318 for OTLP/HTTP. */}}
{{- define "meshtrace.exportPort" -}}
{{ ternary 4317 4318 (eq .Values.tracing.protocol "grpc") }}
{{- end }}

{{/* The Envoy cluster Istio creates for that Service port: what the plugin exports through. */}}
{{- define "meshtrace.exportCluster" -}}
{{ printf "outbound|%s||%s" (include "meshtrace.exportPort" .) (include "meshtrace.collectorHost" .) }}
{{- end }}

{{/* The minor of istioVersion ("1.22" → 22). */}}
{{- define "meshtrace.istioMinor" -}}
{{ index (splitList "." (toString .Values.istioVersion)) 1 | int }}
{{- end }}

{{/* telemetry.istio.io/v1 is served from Istio 1.22 (v1alpha1 before). */}}
{{- define "meshtrace.telemetryApiVersion" -}}
{{ ternary "telemetry.istio.io/v1" "telemetry.istio.io/v1alpha1" (ge (include "meshtrace.istioMinor" . | int) 22) }}
{{- end }}

{{/* The plugin's configuration for one set of workloads: `.config` (plugin.config, or the
gateways' config over it), with the export target, sampling percentage and naming mode always
taken from the shared values so they cannot drift from the collector and from Istio's tracer. */}}
{{- define "meshtrace.pluginConfig" -}}
{{- $t := .root.Values.tracing -}}
{{- $exporter := dict "protocol" (ternary "grpc" "http/protobuf" (eq $t.protocol "grpc")) "cluster" (include "meshtrace.exportCluster" .root) "timeout" $t.timeout -}}
{{- if ne $t.protocol "grpc" }}{{ $_ := set $exporter "path" $t.path }}{{ end -}}
{{- if $t.headers }}{{ $_ := set $exporter "headers" $t.headers }}{{ end -}}
{{- $generated := dict "randomSamplingPercentage" $t.randomSamplingPercentage "tracingServiceName" $t.tracingServiceName "exporter" $exporter -}}
{{- $config := deepCopy (.config | default dict) -}}
{{- mustMergeOverwrite $config $generated | toJson -}}
{{- end }}

{{/* The WasmPlugin's vmConfig.env: plugin.vmConfig.env, plus `valueFrom: HOST` for every host
variable a customTags.*.environment tag reads — the VM sees no other host variable (Istio
renders HOST entries as Envoy's vm_config.environment_variables.host_env_keys:
pilot/pkg/model/extensions.go buildVMConfig). Input: dict root, config (the pluginConfig). */}}
{{- define "meshtrace.vmEnv" -}}
{{- $env := list -}}
{{- $named := dict -}}
{{- range (.root.Values.plugin.vmConfig | default dict).env | default list -}}
{{- $env = append $env . -}}{{- $_ := set $named .name true -}}
{{- end -}}
{{- /* The gateway block's tags too: the same VM serves the gateways under scope mesh. */ -}}
{{- $tags := merge (deepCopy (.config.customTags | default dict)) (((.config.gateway | default dict).customTags) | default dict) -}}
{{- range $tag := keys $tags | sortAlpha -}}
{{- $source := index $tags $tag -}}
{{- if and (kindIs "map" $source) (hasKey $source "environment") -}}
{{- $var := $source.environment.name -}}
{{- if not (hasKey $named $var) -}}
{{- $env = append $env (dict "name" $var "valueFrom" "HOST") -}}{{- $_ := set $named $var true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $env -}}
{{- end }}

{{/* One WasmPlugin. Input: dict root, name, namespace, selector (or empty), config, and
targetRefs (or empty; never with a selector: Istio ignores the selector then, and a waypoint
takes only targetRefs — pilot/pkg/model/policyattachment.go ShouldAttachPolicy). */}}
{{- define "meshtrace.wasmPlugin" -}}
{{- $p := .root.Values.plugin -}}
{{- $config := include "meshtrace.pluginConfig" (dict "root" .root "config" .config) | fromJson -}}
{{- $env := include "meshtrace.vmEnv" (dict "root" .root "config" $config) | fromJsonArray -}}
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "meshtrace.labels" .root | nindent 4 }}
spec:
  {{- if and .selector .targetRefs }}
  {{- fail (printf "WasmPlugin %s/%s: selector and targetRefs together (Istio would ignore the selector)" .namespace .name) }}
  {{- end }}
  {{- with .selector }}
  selector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
  {{- with .targetRefs }}
  targetRefs:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  url: {{ $p.url }}
  {{- with $p.sha256 }}
  # For oci:// URLs: the image manifest digest (istio/istio pkg/wasm/imagefetcher.go PrepareFetch).
  sha256: {{ . | quote }}
  {{- end }}
  imagePullPolicy: {{ $p.imagePullPolicy }}
  {{- with $p.imagePullSecret }}
  imagePullSecret: {{ . }}
  {{- end }}
  pluginName: meshtrace
  type: HTTP
  phase: {{ $p.phase }}
  priority: {{ $p.priority }}
  # Tracing must never take traffic down.
  failStrategy: FAIL_OPEN
  match:
    - mode: CLIENT_AND_SERVER
  {{- with $env }}
  vmConfig:
    env:
      {{- toYaml . | nindent 6 }}
  {{- end }}
  pluginConfig:
    {{- toYaml $config | nindent 4 }}
{{- end }}

{{/* Where meshtrace runs it owns tracing: Envoy's tracer would start its own span and overwrite
traceparent after every filter, so native span reporting is off for exactly these workloads.
The `tracing:` entry, shared by the Telemetry and the printed stanza. */}}
{{- define "meshtrace.tracingOff" -}}
tracing:
  - providers:
      - name: {{ .Values.tracing.providerName }}
    disableSpanReporting: true
{{- end }}

{{/* How the plugin reaches waypoints: waypoints.attach with auto resolved (gatewayClass under
scope mesh from Istio 1.25, where a root-namespace policy may target GatewayClass
istio-waypoint: pilot/pkg/model/policyattachment.go ShouldAttachPolicy, backported to 1.25.0 in
6ec5ded, release note 54780; the webhook's allowedTargetRefs in
pkg/config/validation/validation.go takes GatewayClass from the same tag; else none). */}}
{{- define "meshtrace.waypointAttach" -}}
{{- $a := .Values.waypoints.attach -}}
{{- if eq $a "auto" -}}
{{- ternary "gatewayClass" "none" (and (eq .Values.plugin.scope "mesh") (ge (include "meshtrace.istioMinor" . | int) 25)) -}}
{{- else -}}
{{ $a }}
{{- end -}}
{{- end }}

{{/* The waypoint Gateways listed, grouped by namespace: {namespace: [targetRef, ...]}. */}}
{{- define "meshtrace.waypointTargets" -}}
{{- $by := dict -}}
{{- range .Values.waypoints.gateways -}}
{{- $ref := dict "group" "gateway.networking.k8s.io" "kind" "Gateway" "name" .name -}}
{{- $_ := set $by .namespace (append (get $by .namespace | default list) $ref) -}}
{{- end -}}
{{- toJson $by -}}
{{- end }}

{{/* The waypoints' pluginConfig: plugin.config with waypoints.config over it. */}}
{{- define "meshtrace.waypointConfig" -}}
{{- mustMergeOverwrite (deepCopy (.Values.plugin.config | default dict)) (deepCopy (.Values.waypoints.config | default dict)) | toJson -}}
{{- end }}

{{/* The gateways' pluginConfig: plugin.config with gateways.config over it. */}}
{{- define "meshtrace.gatewayConfig" -}}
{{- mustMergeOverwrite (deepCopy (.Values.plugin.config | default dict)) (deepCopy (.Values.gateways.config | default dict)) | toJson -}}
{{- end }}

{{/* Istio's OpenTelemetry extension provider, shared by both install forms. Each field only from
the Istio whose MeshConfig has it (istio/api mesh/v1alpha1/config.proto
OpenTelemetryTracingProvider): `http` and `resource_detectors` from 1.22 (before, protocol http
is refused by meshtrace.validate), `grpc` (timeout, initialMetadata) from 1.24. istioctl
1.20-1.23 rejects an unknown field (operator/pkg/validate/validate.go validateMeshConfig ->
protomarshal.ApplyYAMLStrict); before 1.24 Istio's own tracer takes neither a gRPC timeout nor
headers, the plugin still sends them. */}}
{{- define "meshtrace.extensionProvider" -}}
- name: {{ .Values.tracing.providerName }}
  opentelemetry:
    service: {{ include "meshtrace.collectorHost" . }}
    port: {{ include "meshtrace.exportPort" . }}
    {{- if eq .Values.tracing.protocol "grpc" }}
    {{- if ge (include "meshtrace.istioMinor" . | int) 24 }}
    grpc:
      timeout: {{ .Values.tracing.timeout }}
      {{- with .Values.tracing.headers }}
      initialMetadata:
        {{- toYaml . | nindent 8 }}
      {{- end }}
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
    {{- if and .Values.tracing.resourceDetectors.environment (ge (include "meshtrace.istioMinor" . | int) 22) }}
    resource_detectors:
      environment: {}
    {{- end }}
{{- end }}

{{/* meshConfig for either install form. defaultProviders.tracing gives Istio's tracer to every
workload no Telemetry names a provider for (pilot/pkg/model/telemetry.go Telemetries.Tracing),
sampling at defaultConfig.tracing.sampling (tracing.go configureTracingFromTelemetry). */}}
{{- define "meshtrace.meshConfig" -}}
enableTracing: true
defaultConfig:
  tracingServiceName: {{ .Values.tracing.tracingServiceName }}
  tracing:
    sampling: {{ .Values.tracing.randomSamplingPercentage }}
defaultProviders:
  tracing:
    - {{ .Values.tracing.providerName }}
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

{{/* Refusals: combinations Istio would accept and then mishandle without a word. Each message
names the key and the reason. */}}
{{- define "meshtrace.validate" -}}
{{- $v := .Values -}}
{{- $minor := include "meshtrace.istioMinor" . | int -}}
{{- if lt $minor 20 -}}
{{- fail (printf "istioVersion %s: meshtrace needs Istio 1.20 or later (WasmPlugin spec.type)" (toString $v.istioVersion)) -}}
{{- end -}}
{{- if and (lt $minor 22) (eq $v.tracing.protocol "http") -}}
{{- fail (printf "tracing.protocol http needs istioVersion 1.22 or later: Istio %s ignores the extension provider's http settings and would send OTLP/gRPC to port 4318; use tracing.protocol grpc" (toString $v.istioVersion)) -}}
{{- end -}}
{{- if and (ne $v.plugin.scope "mesh") (has $v.istioNamespace $v.plugin.namespaces) -}}
{{- fail (printf "plugin.namespaces must not list istioNamespace %s: resources in Istio's root namespace apply to the whole mesh (use plugin.scope mesh), and a root-namespace Telemetry with a selector only reaches workloads of %s itself" $v.istioNamespace $v.istioNamespace) -}}
{{- end -}}
{{- $attach := include "meshtrace.waypointAttach" . -}}
{{- if eq $attach "gatewayClass" -}}
{{- if lt $minor 25 -}}
{{- fail (printf "waypoints.attach gatewayClass needs istioVersion 1.25 or later: Istio %s does not attach a root-namespace policy to GatewayClass istio-waypoint (pilot/pkg/model/policyattachment.go); list the waypoints (waypoints.attach gateways)" (toString $v.istioVersion)) -}}
{{- end -}}
{{- if ne $v.plugin.scope "mesh" -}}
{{- fail "waypoints.attach gatewayClass needs plugin.scope mesh: only the root namespace's selector-less Telemetry reaches every waypoint (pilot/pkg/model/telemetry.go applicableTelemetries), so other waypoints would run the plugin and Istio's tracer together; list the waypoints (waypoints.attach gateways)" -}}
{{- end -}}
{{- end -}}
{{- if eq $attach "gateways" -}}
{{- if lt $minor 22 -}}
{{- fail (printf "waypoints.attach gateways needs istioVersion 1.22 or later (WasmPlugin and Telemetry targetRefs)") -}}
{{- end -}}
{{- if not $v.waypoints.gateways -}}
{{- fail "waypoints.attach gateways needs waypoints.gateways: the waypoint Gateways to attach to ({name, namespace})" -}}
{{- end -}}
{{- if eq $v.plugin.scope "mesh" -}}
{{- fail "waypoints.attach gateways with plugin.scope mesh: the root Telemetry turns span reporting off on every waypoint, so waypoints not listed would lose every span; use waypoints.attach gatewayClass (Istio 1.25+)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $attach "none") (eq $v.plugin.scope "mesh") $v.plugin.enabled (eq $v.telemetry.mode "create") (not $v.renderIstioInstallConfig) (not $v.waypoints.meshHasNoWaypoints) -}}
{{- fail (printf "plugin.scope mesh turns native span reporting off on every proxy, waypoints included, but no waypoint runs the plugin (waypoints.attach %s, istioVersion %s): an ambient mesh would lose every waypoint span. Use waypoints.attach gatewayClass (istioVersion 1.25+), or set waypoints.meshHasNoWaypoints=true if the mesh has none" $v.waypoints.attach (toString $v.istioVersion)) -}}
{{- end -}}
{{- /* A namespace's selector-less Telemetry reaches every proxy of that config namespace,
waypoints deployed there included (pilot/pkg/model/telemetry.go applicableTelemetries ->
namespaceWideTelemetryConfig), but a selector-based WasmPlugin never reaches a waypoint
(pilot/pkg/model/policyattachment.go ShouldAttachPolicy). The printed stanza, merged into the
namespace's own Telemetry, does the same. */ -}}
{{- /* Not under plugin.runtime native: its Telemetries select the module label, and a selector never reaches a waypoint. */ -}}
{{- if and (eq $attach "none") (eq $v.plugin.scope "namespaces") $v.plugin.enabled (not $v.renderIstioInstallConfig) (not $v.waypoints.noneInPluginNamespaces) (ne $v.plugin.runtime "native") -}}
{{- fail (printf "plugin.scope namespaces turns native span reporting off on every proxy of %s, waypoints deployed in plugin.namespaces (%s) included, but a selector-based WasmPlugin never reaches a waypoint: they would lose every span. List them (waypoints.attach gateways, waypoints.gateways), or set waypoints.noneInPluginNamespaces=true if none is deployed there" (join ", " $v.plugin.namespaces) (join ", " $v.plugin.namespaces)) -}}
{{- end -}}
{{- if $v.gateways.enabled -}}
{{- if has $v.gateways.namespace $v.plugin.namespaces -}}
{{- fail (printf "gateways.namespace %s is also in plugin.namespaces: its gateways would run two meshtrace filters (two spans per request)" $v.gateways.namespace) -}}
{{- end -}}
{{- end -}}
{{- end }}
