{{/* plugin.runtime native: meshtrace as an Envoy dynamic module. Istio has no API for it
(istio/istio#59839), so an EnvoyFilter inserts envoy.filters.http.dynamic_modules. Two rules
shape everything here:
- Envoy rejects a whole listener whose filter names a module it cannot load ("Failed to load
  dynamic module: libmeshtrace.so not found in any search path"): every EnvoyFilter must reach
  only proxies that hold the module. Sidecars and gateways: a workloadSelector on the label the
  injection template sets together with the module; waypoints (which never take a selector,
  pilot/pkg/model/policyattachment.go ShouldAttachPolicy): targetRefs, and the module on every
  waypoint through the istio-waypoint class defaults. Every patch also matches only proxies of
  Istio 1.31+ (the first istio-proxy built with the extension, istio/proxy#6955).
- Istio's tracer must be off exactly where the filter runs (the Telemetry rule): the Telemetry
  selects the same label. */}}

{{- define "meshtrace.native" -}}
{{- ternary "true" "" (eq .Values.plugin.runtime "native") -}}
{{- end }}

{{/* EnvoyFilter match.proxy.proxyVersion: istio-proxy 1.31 and later carry
envoy.filters.http.dynamic_modules (istio/proxy#6955, first in the release-1.31 proxy;
1.29 and 1.30 do not). pilot/pkg/model/envoyfilter.go proxyMatch compares it with the proxy's
ISTIO_VERSION; a proxy that reports none does not match. */}}
{{- define "meshtrace.nativeProxyVersion" -}}
^1\.(3[1-9]|[4-9][0-9])([.-].*)?$
{{- end }}

{{/* The pod label the injection template sets and the EnvoyFilters select, as "key: value". */}}
{{- define "meshtrace.nativeLabel" -}}
{{- toYaml .Values.native.label -}}
{{- end }}

{{/* The HTTP filter: the same JSON pluginConfig as the WasmPlugin, as the filter_config
google.protobuf.StringValue; libmeshtrace.so found through ENVOY_DYNAMIC_MODULES_SEARCH_PATH
(dynamic_module_config.name meshtrace → libmeshtrace.so). metrics_namespace wasmcustom: the
module's counters under the Wasm plugin's names — and alive in Istio, whose proxies keep only the
stats their bootstrap's inclusion prefixes name ("wasm" among them, not the default
"dynamicmodulescustom": istio/istio pkg/bootstrap/config.go
requiredEnvoyStatsMatcherInclusionPrefixes). Input: the pluginConfig (a dict). */}}
{{- define "meshtrace.dynamicModuleFilter" -}}
name: envoy.filters.http.dynamic_modules
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
  dynamic_module_config:
    name: meshtrace
    metrics_namespace: wasmcustom
  filter_name: meshtrace
  filter_config:
    "@type": type.googleapis.com/google.protobuf.StringValue
    value: {{ toJson . | quote }}
{{- end }}

{{/* Where the filter goes in an HTTP connection manager, per plugin.phase, mirroring the
WasmPlugin (pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager: mx,
CUSTOM ext_authz, AUTHN extensions, jwt_authn, AUTHZ extensions, RBAC, STATS extensions, ...,
grpc_stats, ..., router; waypoints, listener_waypoint.go buildWaypointHTTPFilters: no mx,
ext_authz first). EnvoyFilter cannot say "after ext_authz when there is one"
(envoyfilter/listener_patch.go patchHTTPFilters inserts only next to a filter present), so:
- AUTHN: right after istio.metadata_exchange on sidecars and gateways, first on waypoints —
  before authentication and RBAC like the WasmPlugin, and before CUSTOM ext_authz too (its
  denials are traced as well);
- STATS, UNSPECIFIED_PHASE: right before envoy.filters.http.grpc_stats, which Istio puts in
  every connection manager after authentication and RBAC.
Output: the patch fields for one context. Input: dict root, waypoint (bool). */}}
{{- define "meshtrace.nativePlacement" -}}
{{- if eq .root.Values.plugin.phase "AUTHN" -}}
{{- if .waypoint -}}
{"operation": "INSERT_FIRST"}
{{- else -}}
{"operation": "INSERT_AFTER", "subFilter": "istio.metadata_exchange"}
{{- end -}}
{{- else -}}
{"operation": "INSERT_BEFORE", "subFilter": "envoy.filters.http.grpc_stats"}
{{- end -}}
{{- end }}

{{/* One EnvoyFilter. Input: dict root, name, namespace, config (pluginConfig dict), contexts
(list), and either selector (labels, the module label added here) or targetRefs (waypoints:
listener main_internal, pilot/pkg/networking/core/listener_waypoint.go buildWaypointInternal;
connect_terminate only ends HBONE tunnels; context SIDECAR_INBOUND, as listener.go
patchListeners patches a waypoint's listeners — the WAYPOINT context is not read by pilot). */}}
{{- define "meshtrace.envoyFilter" -}}
{{- $waypoint := not (empty .targetRefs) -}}
{{- $place := include "meshtrace.nativePlacement" (dict "root" .root "waypoint" $waypoint) | fromJson -}}
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "meshtrace.labels" .root | nindent 4 }}
spec:
  {{- if $waypoint }}
  targetRefs:
    {{- toYaml .targetRefs | nindent 4 }}
  {{- else }}
  # Only pods the injection template gave the module (and this label).
  workloadSelector:
    labels:
      {{- merge (deepCopy (.selector | default dict)) .root.Values.native.label | toYaml | nindent 6 }}
  {{- end }}
  configPatches:
    {{- range $context := .contexts }}
    - applyTo: HTTP_FILTER
      match:
        context: {{ $context }}
        proxy:
          proxyVersion: {{ include "meshtrace.nativeProxyVersion" $.root | squote }}
        listener:
          {{- if $waypoint }}
          name: main_internal
          {{- end }}
          filterChain:
            filter:
              name: envoy.filters.network.http_connection_manager
              {{- with $place.subFilter }}
              subFilter:
                name: {{ . }}
              {{- end }}
      patch:
        operation: {{ $place.operation }}
        value:
          {{- include "meshtrace.dynamicModuleFilter" $.config | nindent 10 }}
    {{- end }}
{{- end }}

{{/* The istio-proxy container's share of the module: the search path, and either the emptyDir
the init container filled (initContainer) or the image that carries the module (proxyImage).
Never a Kubernetes image volume: those are mounted noexec (KEP-4639, "The volume is mounted as
read-only (ro) and non-executable files (noexec)"), and the dynamic loader cannot map a shared
object's code from a noexec mount. */}}
{{- define "meshtrace.nativeProxyContainer" -}}
name: istio-proxy
{{- if eq .Values.native.delivery "proxyImage" }}
image: {{ .Values.native.image }}
{{- end }}
env:
  - name: ENVOY_DYNAMIC_MODULES_SEARCH_PATH
    value: {{ .Values.native.path }}
{{- if eq .Values.native.delivery "initContainer" }}
volumeMounts:
  - name: meshtrace-module
    mountPath: {{ .Values.native.path }}
    readOnly: true
{{- end }}
{{- end }}

{{/* delivery initContainer: the emptyDir, and the container that fills it from native.image
(the module at native.path on a base with `cp`: ./build.sh image --native --base). */}}
{{- define "meshtrace.nativeVolume" -}}
- name: meshtrace-module
  emptyDir: {}
{{- end }}

{{- define "meshtrace.nativeCopier" -}}
name: meshtrace-module
image: {{ .Values.native.image }}
imagePullPolicy: {{ .Values.native.imagePullPolicy }}
command: ["cp", "{{ .Values.native.path }}/libmeshtrace.so", "/meshtrace-module/libmeshtrace.so"]
volumeMounts:
  - name: meshtrace-module
    mountPath: /meshtrace-module
securityContext:
  runAsNonRoot: true
  runAsUser: 1337
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end }}

{{/* The sidecar injection template (sidecarInjectorWebhook.templates.<native.template>), an
overlay istiod applies after `sidecar` or `gateway` (pkg/kube/inject/inject.go RunTemplate:
each template listed in inject.istio.io/templates is a strategic-merge overlay of the pod,
labels included). It is itself a Go template run by istiod: with native sidecars the
istio-proxy container is an init container (the same test as Istio's injection-template.yaml),
except in a gateway, whose `gateway` template always makes it a container — and RunTemplate
would MOVE a gateway's proxy into initContainers if our overlay put it there. */}}
{{- define "meshtrace.injectionTemplate" -}}
{{ `{{- $templates := list }}{{ range splitList "," (index .ObjectMeta.Annotations "inject.istio.io/templates" | default "") }}{{ $templates = append $templates (trim .) }}{{ end }}` }}
{{ `{{- $native := and (not (has "gateway" $templates)) (ne (index .ObjectMeta.Annotations "sidecar.istio.io/nativeSidecar" | default (printf "%t" .NativeSidecars)) "false") }}` }}
{{- if eq .Values.native.delivery "initContainer" }}
{{ `{{- if $native }}{{ fail "meshtrace: native.delivery initContainer cannot run before a native-sidecar istio-proxy (istiod starts it first); use native.delivery proxyImage" }}{{ end }}` }}
{{- end }}
metadata:
  labels:
    {{- include "meshtrace.nativeLabel" . | nindent 4 }}
spec:
  {{- if eq .Values.native.delivery "initContainer" }}
  volumes:
    {{- include "meshtrace.nativeVolume" . | nindent 4 }}
  initContainers:
    - {{- include "meshtrace.nativeCopier" . | nindent 6 }}
  {{- end }}
{{ `{{- if $native }}` }}
  initContainers:
{{ `{{- else }}` }}
  containers:
{{ `{{- end }}` }}
    - {{- include "meshtrace.nativeProxyContainer" . | nindent 6 }}
{{- end }}

{{/* The Deployment overlay for every waypoint (ConfigMap data.deployment, labelled
gateway.istio.io/defaults-for-class: istio-waypoint in Istio's system namespace:
pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go render applies the OLDEST such
ConfigMap, then a Gateway's infrastructure.parametersRef, as strategic-merge patches). */}}
{{- define "meshtrace.waypointOverlay" -}}
spec:
  template:
    metadata:
      labels:
        {{- include "meshtrace.nativeLabel" . | nindent 8 }}
    spec:
      {{- if eq .Values.native.delivery "initContainer" }}
      volumes:
        {{- include "meshtrace.nativeVolume" . | nindent 8 }}
      initContainers:
        - {{- include "meshtrace.nativeCopier" . | nindent 10 }}
      {{- end }}
      containers:
        - {{- include "meshtrace.nativeProxyContainer" . | nindent 10 }}
{{- end }}

{{/* Refusals specific to the native runtime; each names the key and the reason. */}}
{{- define "meshtrace.validateNative" -}}
{{- $v := .Values -}}
{{- if and (include "meshtrace.native" .) $v.plugin.enabled -}}
{{- $minor := include "meshtrace.istioMinor" . | int -}}
{{- if lt $minor 31 -}}
{{- fail (printf "plugin.runtime native needs istioVersion 1.31 or later: older istio-proxy builds lack envoy.filters.http.dynamic_modules (added by istio/proxy#6955), and a listener naming it is rejected whole (istioVersion %s)" (toString $v.istioVersion)) -}}
{{- end -}}
{{- if not $v.native.image -}}
{{- fail "plugin.runtime native needs native.image: the module image pushed by ./build.sh push --native, pinned by digest (REPO@sha256:...)" -}}
{{- end -}}
{{- if eq $v.plugin.phase "AUTHZ" -}}
{{- fail "plugin.phase AUTHZ cannot be expressed by an EnvoyFilter (between jwt_authn and RBAC, both optional filters); with plugin.runtime native use AUTHN (before authentication and RBAC) or STATS (after them)" -}}
{{- end -}}
{{- if and (eq $v.plugin.scope "mesh") (not $v.native.injectByDefault) (eq $v.telemetry.mode "create") -}}
{{- fail "plugin.runtime native with plugin.scope mesh needs native.injectByDefault=true: the root Telemetry turns Istio's tracer off on every proxy, but the filter reaches only pods holding the module; injectByDefault makes the module part of every injected sidecar (install configuration: sidecarInjectorWebhook.defaultTemplates). Or list namespaces (plugin.scope namespaces)" -}}
{{- end -}}
{{- if eq $v.telemetry.mode "print" -}}
{{- if ne $v.plugin.scope "mesh" -}}
{{- fail "telemetry.mode print with plugin.runtime native: the Telemetry must select the module label (native.label), which a namespace's selector-less Telemetry cannot; use telemetry.mode create (its Telemetries have selectors and never shadow yours)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* A Telemetry's selector labels (JSON): the given selector, plus under the native runtime the
module label, so Istio's tracer goes off exactly where the EnvoyFilter puts the filter. Scope
mesh keeps its selector-less root Telemetry (every injected sidecar has the module there:
native.injectByDefault). Input: dict root, selector. */}}
{{- define "meshtrace.telemetrySelector" -}}
{{- $s := deepCopy (.selector | default dict) -}}
{{- if and (include "meshtrace.native" .root) (ne .root.Values.plugin.scope "mesh") -}}
{{- $s = merge $s .root.Values.native.label -}}
{{- end -}}
{{- toJson $s -}}
{{- end }}

{{/* Istio install values for the native runtime: the injection template (and, under
native.injectByDefault, the default template list: Istio's istiod chart renders
sidecarInjectorWebhook.defaultTemplates into the injector ConfigMap, else [sidecar]). Empty
for the wasm runtime. */}}
{{- define "meshtrace.injectorValues" -}}
{{- if and (include "meshtrace.native" .) .Values.plugin.enabled -}}
sidecarInjectorWebhook:
  templates:
    {{ .Values.native.template }}: |
      {{- include "meshtrace.injectionTemplate" . | nindent 6 }}
  {{- if .Values.native.injectByDefault }}
  defaultTemplates: [sidecar, {{ .Values.native.template }}]
  {{- end }}
{{- end -}}
{{- end }}
