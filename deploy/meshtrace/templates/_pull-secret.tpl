{{/* Namespaces of every WasmPlugin the chart renders (wasmplugin.yaml): the plugin's, the
root namespace for waypoints through GatewayClass, the listed waypoints', the gateways' own. */}}
{{- define "meshtrace.wasmPluginNamespaces" -}}
{{- $out := list -}}
{{- $p := .Values.plugin -}}
{{- if and $p.enabled (not .Values.renderIstioInstallConfig) -}}
{{- $out = concat $out (include "meshtrace.pluginNamespaces" . | fromJsonArray) -}}
{{- $attach := include "meshtrace.waypointAttach" . -}}
{{- if eq $attach "gatewayClass" }}{{ $out = append $out .Values.istioNamespace }}{{ end -}}
{{- if eq $attach "gateways" }}{{ $out = concat $out (keys (include "meshtrace.waypointTargets" . | fromJson)) }}{{ end -}}
{{- if and .Values.gateways.enabled (ne $p.scope "mesh") }}{{ $out = append $out .Values.gateways.namespace }}{{ end -}}
{{- end -}}
{{- $out | uniq | sortAlpha | toJson -}}
{{- end }}

{{/* Istio reads a WasmPlugin's imagePullSecret from the WasmPlugin's own namespace, whatever
namespace the name says (pilot/pkg/model/extensions.go toSecretResourceName, Istio 1.20-1.29;
convertToTrafficExtensionWrapper from 1.30). A missing secret means failed pulls, the plugin
skipped under FAIL_OPEN while the Telemetry has already turned Istio's tracer off: no traces.
At helm install/upgrade, refuse a namespace that exists without the secret (lookup is empty
under helm template, and for a namespace not created yet). */}}
{{- define "meshtrace.checkPullSecret" -}}
{{- with .Values.plugin.imagePullSecret -}}
{{- $secret := . -}}
{{- range $ns := include "meshtrace.wasmPluginNamespaces" $ | fromJsonArray -}}
{{- if and (lookup "v1" "Namespace" "" $ns) (not (lookup "v1" "Secret" $ns $secret)) -}}
{{- fail (printf "plugin.imagePullSecret %s: no Secret %s in namespace %s. Istio reads a WasmPlugin's pull secret from the WasmPlugin's own namespace (pilot/pkg/model/extensions.go toSecretResourceName); create it in each of: %s" $secret $secret $ns (join ", " (include "meshtrace.wasmPluginNamespaces" $ | fromJsonArray))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
