"""plugin.runtime native and Envoy Gateway: what the chart renders for the dynamic module, checked
against Istio's and Envoy Gateway's CRD schemas and against Istio's own rules for which proxy an
EnvoyFilter reaches and where its patch lands:

- reach: pilot/pkg/model/push_context.go `EnvoyFilters` (root namespace, then the proxy's own) and
  pilot/pkg/model/policyattachment.go `ShouldAttachPolicy` (Istio 1.27+: a waypoint takes only
  targetRefs, a pod only selectors); pilot/pkg/model/envoyfilter.go `proxyMatch` (proxyVersion);
- placement: pilot/pkg/networking/core/envoyfilter/listener_patch.go `patchHTTPFilters` applied to
  the filter orders of listener_builder.go `buildHTTPConnectionManager` and listener_waypoint.go
  `buildWaypointHTTPFilters`.

The safety rule behind all of it: Envoy rejects a whole listener whose filter names a module it
cannot load, so an EnvoyFilter must never reach a proxy the module was not delivered to."""
from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from test_chart import (CHART, K8S_VERSION, ROOT, assert_plugin_config_parses, by_kind,  # noqa: F401
                        check_config, crd_schemas, merged, render, render_files, strict,
                        values_of)

IMAGE = "registry.example.com/meshtrace-native@sha256:" + "ab" * 32
NATIVE = {"istioVersion": "1.31", "plugin": {"runtime": "native"}, "native": {"image": IMAGE}}
MODULE_LABEL = {"meshtrace.io/module": "native"}
DYNAMIC_MODULE_TYPE = \
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
ROOT_NS = "istio-system"


def native(**over) -> dict:
    """NATIVE with `over` merged in, key by key one level down."""
    out = copy.deepcopy(NATIVE)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


# ---------------------------------------------------------------------------------------------
# Istio's rules, as small models (each names the function it follows)


def reaches(f: dict, namespace: str, labels: dict, waypoint: bool = False) -> bool:
    """push_context.go EnvoyFilters + policyattachment.go ShouldAttachPolicy (Istio 1.27+)."""
    meta, spec = f["metadata"], f["spec"]
    if meta["namespace"] not in (namespace, ROOT_NS):
        return False
    refs = spec.get("targetRefs", [])
    gateway_name = labels.get("gateway.networking.k8s.io/gateway-name")
    if gateway_name is None:  # a pod: selector only, and a targetRefs policy never
        if refs:
            return False
        wanted = spec.get("workloadSelector", {}).get("labels", {})
        return all(labels.get(k) == v for k, v in wanted.items())
    if not refs:
        return False  # waypoints never take a selector-based policy
    for ref in refs:
        if (meta["namespace"] == ROOT_NS and waypoint and ref["kind"] == "GatewayClass"
                and ref["name"] == "istio-waypoint"):
            return True
        if meta["namespace"] == namespace and ref["kind"] == "Gateway" and ref["name"] == gateway_name:
            return True
    return False


def version_matches(f: dict, istio_version: str) -> bool:
    """envoyfilter.go proxyMatch: every patch's proxyVersion regex against ISTIO_VERSION."""
    patterns = {p["match"]["proxy"]["proxyVersion"] for p in f["spec"]["configPatches"]}
    (pattern,) = patterns
    return bool(istio_version) and re.search(pattern, istio_version) is not None


def apply_patch(chain: list[str], patch: dict) -> list[str]:
    """listener_patch.go patchHTTPFilters for one HTTP_FILTER patch: INSERT_AFTER/BEFORE a filter
    present (nothing when it is absent), INSERT_FIRST at the front."""
    op = patch["patch"]["operation"]
    sub = patch["match"]["listener"]["filterChain"]["filter"].get("subFilter", {}).get("name")
    name = "MESHTRACE"
    if op == "INSERT_FIRST":
        return [name] + chain
    if sub not in chain:
        return chain
    i = chain.index(sub)
    return chain[:i + 1] + [name] + chain[i + 1:] if op == "INSERT_AFTER" else \
        chain[:i] + [name] + chain[i:]


# Istio's HTTP filter orders (listener_builder.go buildHTTPConnectionManager; listener_waypoint.go)
# with the WasmPlugin AUTHN slot marked, for a workload with CUSTOM, JWT and ALLOW/DENY policies.
INBOUND = ["istio.metadata_exchange", "envoy.filters.http.ext_authz", "AUTHN",
           "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.grpc_stats",
           "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats",
           "envoy.filters.http.router"]
OUTBOUND = ["istio.metadata_exchange", "AUTHN", "envoy.filters.http.grpc_stats",
            "istio.alpn", "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats",
            "envoy.filters.http.router"]
WAYPOINT = ["envoy.filters.http.ext_authz", "AUTHN", "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac", "envoy.filters.http.grpc_stats", "envoy.filters.http.fault",
            "envoy.filters.http.cors", "istio.stats", "envoy.filters.http.router"]


def place(chain: list[str], patch: dict) -> list[str]:
    return apply_patch([f for f in chain if f != "AUTHN"], patch)


def envoy_filters(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(f["metadata"]["namespace"], f["metadata"]["name"]): f for f in by_kind(docs, "EnvoyFilter")}


def module_filter(patch: dict) -> dict:
    return patch["patch"]["value"]


# ---------------------------------------------------------------------------------------------
# The switch


def test_native_renders_envoy_filters_and_no_wasmplugin_with_the_same_plugin_config(check_config):
    """plugin.runtime changes only the form: the filter_config is the WasmPlugin's pluginConfig."""
    values = {"plugin": {"scope": "namespaces", "namespaces": ["bookinfo"],
                         "config": {"sampling": {"rules": [
                             {"match": {"path": {"prefix": "/static/"}}, "sample": "never"}]}}},
              "istioVersion": "1.31",
              # The Wasm path's namespace Telemetry reaches waypoints there: none deployed.
              "waypoints": {"noneInPluginNamespaces": True}}
    wasm = render(values)
    nat = render(native(**values))
    assert not by_kind(nat, "WasmPlugin"), "never both for one proxy"
    assert not by_kind(wasm, "EnvoyFilter")
    (plugin,) = by_kind(wasm, "WasmPlugin")
    (f,) = by_kind(nat, "EnvoyFilter")
    contexts = sorted(p["match"]["context"] for p in f["spec"]["configPatches"])
    assert contexts == ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND"], "inbound and outbound listeners"
    for patch in f["spec"]["configPatches"]:
        value = module_filter(patch)
        assert value["name"] == "envoy.filters.http.dynamic_modules"
        typed = value["typed_config"]
        assert typed["@type"] == DYNAMIC_MODULE_TYPE
        assert typed["dynamic_module_config"] == {
            "name": "meshtrace",  # libmeshtrace.so
            # The Wasm plugin's stat names, which Istio's stats inclusion list keeps.
            "metrics_namespace": "wasmcustom"}
        assert typed["filter_name"] == "meshtrace"
        cfg = typed["filter_config"]
        assert cfg["@type"] == "type.googleapis.com/google.protobuf.StringValue"
        assert json.loads(cfg["value"]) == plugin["spec"]["pluginConfig"], "same pluginConfig"
        assert_plugin_config_parses(check_config, json.loads(cfg["value"]))
    # Everything else is the same objects.
    rest = lambda docs: sorted(json.dumps(d, sort_keys=True) for d in docs  # noqa: E731
                               if d["kind"] not in ("WasmPlugin", "EnvoyFilter", "Telemetry"))
    assert rest(wasm) == rest(nat)


@pytest.mark.parametrize("version, matches", [
    ("1.31.0", True), ("1.31.0-rc.0", True), ("1.32.4", True), ("1.40.0-dev", True),
    ("1.30.3", False),   # its proxy lacks the extension (istio/proxy#6955 is not in release-1.30)
    ("1.29.0", False),
    ("1.3.1", False),    # not 1.3x
    ("1.310.0", False),  # not a minor we know
    ("", False),         # no ISTIO_VERSION: proxyMatch does not match
], ids=lambda x: str(x))
def test_patches_reach_only_proxies_built_with_the_extension(version, matches):
    for f in by_kind(render(native(plugin={"scope": "namespaces", "namespaces": ["a"]})), "EnvoyFilter"):
        assert version_matches(f, version) is matches, version


# ---------------------------------------------------------------------------------------------
# Reach: only pods holding the module, and the Telemetry exactly there


@pytest.mark.parametrize("scope_values, pods", [
    # (values, [(namespace, labels, reached)]) — one row per proxy, with the reason.
    ({"plugin": {"scope": "namespaces", "namespaces": ["bookinfo"]}}, [
        ("bookinfo", {"app": "a", **MODULE_LABEL}, True),   # opted in: module and label
        ("bookinfo", {"app": "a"}, False),                  # no module: never the filter
        ("shop", {"app": "a", **MODULE_LABEL}, False),      # namespace not listed
    ]),
    ({"plugin": {"scope": "workloads", "namespaces": ["shop"], "selector": {"app": "checkout"}}}, [
        ("shop", {"app": "checkout", **MODULE_LABEL}, True),
        ("shop", {"app": "checkout"}, False),
        ("shop", {"app": "cart", **MODULE_LABEL}, False),
    ]),
    ({"plugin": {"scope": "mesh"}, "native": {"injectByDefault": True},
      "waypoints": {"attach": "none", "meshHasNoWaypoints": True}}, [
        ("anywhere", {"app": "a", **MODULE_LABEL}, True),
        ("anywhere", {"app": "a"}, False),  # injected before the template became default
    ]),
], ids=["namespaces", "workloads", "mesh"])
def test_the_filter_reaches_only_pods_with_the_module_and_istio_tracer_is_off_there(scope_values, pods):
    docs = render(native(**scope_values))
    filters = by_kind(docs, "EnvoyFilter")
    for ns, labels, reached in pods:
        got = [f for f in filters if reaches(f, ns, labels)]
        assert len(got) == (1 if reached else 0), (ns, labels)
    # Telemetry: on pods the filter reaches, the one that applies turns reporting off. Under
    # scope mesh the root one does (every injected sidecar holds the module there).
    for t in by_kind(docs, "Telemetry"):
        sel = t["spec"].get("selector", {}).get("matchLabels")
        if sel is None:
            assert t["metadata"]["namespace"] == ROOT_NS and scope_values["plugin"]["scope"] == "mesh"
        else:
            assert MODULE_LABEL.items() <= sel.items(), "a Telemetry never turns the tracer off " \
                "on a pod without the module"


def test_gateways_get_their_own_untrusting_filter_only_with_the_module(check_config):
    docs = render(native(plugin={"scope": "namespaces", "namespaces": ["bookinfo"]},
                         gateways={"enabled": True}))
    gw_labels = {"istio": "ingressgateway"}
    filters = by_kind(docs, "EnvoyFilter")
    (mine,) = [f for f in filters if reaches(f, "istio-ingress", {**gw_labels, **MODULE_LABEL})]
    assert not [f for f in filters if reaches(f, "istio-ingress", gw_labels)], \
        "a gateway not injected with the template gets no filter"
    assert [p["match"]["context"] for p in mine["spec"]["configPatches"]] == ["GATEWAY"]
    config = json.loads(module_filter(mine["spec"]["configPatches"][0])["typed_config"]["filter_config"]["value"])
    assert config["sampling"]["trustIncoming"] is False
    assert config["propagation"]["trustIncomingRequestId"] is False
    assert_plugin_config_parses(check_config, config)
    (t,) = [t for t in by_kind(docs, "Telemetry") if t["metadata"]["name"] == "meshtrace-gateway"]
    assert t["spec"]["selector"]["matchLabels"] == {**gw_labels, **MODULE_LABEL}


def test_waypoints_take_the_filter_by_target_refs_and_all_get_the_module(check_config):
    for values, expect in (
        (native(waypoints={"attach": "gatewayClass"}, native={"image": IMAGE, "injectByDefault": True}),
         {(ROOT_NS, "GatewayClass", "istio-waypoint")}),
        (native(plugin={"scope": "namespaces", "namespaces": ["bookinfo"]},
                waypoints={"attach": "gateways", "gateways": [{"name": "waypoint", "namespace": "bookinfo"}]}),
         {("bookinfo", "Gateway", "waypoint")}),
    ):
        docs = render(values)
        (wf,) = [f for f in by_kind(docs, "EnvoyFilter") if f["metadata"]["name"] == "meshtrace-waypoint"]
        assert {(wf["metadata"]["namespace"], r["kind"], r["name"]) for r in wf["spec"]["targetRefs"]} == expect
        assert "workloadSelector" not in wf["spec"], "the CRD's CEL rule: one of the two"
        wp_labels = {"gateway.networking.k8s.io/gateway-name": "waypoint", **MODULE_LABEL}
        assert reaches(wf, "bookinfo", wp_labels, waypoint=True)
        # No sidecar filter reaches a waypoint (selectors never do), so exactly one filter.
        assert [f["metadata"]["name"] for f in by_kind(docs, "EnvoyFilter")
                if reaches(f, "bookinfo", wp_labels, waypoint=True)] == ["meshtrace-waypoint"]
        for patch in wf["spec"]["configPatches"]:
            assert patch["match"]["listener"]["name"] == "main_internal"
            assert patch["match"]["context"] == "SIDECAR_INBOUND"
            assert_plugin_config_parses(check_config, json.loads(
                module_filter(patch)["typed_config"]["filter_config"]["value"]))
        # The module on every waypoint: class defaults in Istio's namespace.
        (cm,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == "meshtrace-waypoint-defaults"]
        assert cm["metadata"]["namespace"] == ROOT_NS
        assert cm["metadata"]["labels"]["gateway.istio.io/defaults-for-class"] == "istio-waypoint"
        overlay = yaml.safe_load(cm["data"]["deployment"])
        assert overlay["spec"]["template"]["metadata"]["labels"] == MODULE_LABEL
        assert_module_on_proxy(overlay["spec"]["template"]["spec"], "containers", merged(values))
        # Merged into a waypoint Deployment as istiod does (strategic merge, lists by name).
        pod = injected_pod(overlay["spec"]["template"], native_sidecar=False)
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "waypoint", "namespace": "bookinfo"},
                      "spec": {"selector": {"matchLabels": {"app": "productpage"}},
                               "template": {"metadata": pod["metadata"], "spec": pod["spec"]}}}
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
        assert_module_on_proxy(pod["spec"], "containers", merged(values))


# ---------------------------------------------------------------------------------------------
# Placement: where Istio's patch application puts the filter


@pytest.mark.parametrize("phase, chain, want_after, want_before", [
    # AUTHN: like the WasmPlugin, before jwt_authn and RBAC — and before CUSTOM ext_authz, which an
    # EnvoyFilter cannot follow only when present.
    ("AUTHN", INBOUND, "istio.metadata_exchange", "envoy.filters.http.ext_authz"),
    ("AUTHN", OUTBOUND, "istio.metadata_exchange", "envoy.filters.http.grpc_stats"),
    ("AUTHN", WAYPOINT, None, "envoy.filters.http.ext_authz"),
    # STATS: after authentication and RBAC, where Istio always has grpc_stats.
    ("STATS", INBOUND, "envoy.filters.http.rbac", "envoy.filters.http.grpc_stats"),
    ("STATS", WAYPOINT, "envoy.filters.http.rbac", "envoy.filters.http.grpc_stats"),
], ids=["authn-inbound", "authn-outbound", "authn-waypoint", "stats-inbound", "stats-waypoint"])
def test_the_filter_lands_where_the_phase_says(phase, chain, want_after, want_before):
    values = native(plugin={"scope": "namespaces", "namespaces": ["bookinfo"], "phase": phase},
                    waypoints={"attach": "gateways", "gateways": [{"name": "w", "namespace": "bookinfo"}]})
    filters = envoy_filters(render(values))
    f = filters[("bookinfo", "meshtrace-waypoint" if chain is WAYPOINT else "meshtrace")]
    context = "SIDECAR_OUTBOUND" if chain is OUTBOUND else "SIDECAR_INBOUND"
    (patch,) = [p for p in f["spec"]["configPatches"] if p["match"]["context"] == context]
    got = place(chain, patch)
    assert got.count("MESHTRACE") == 1, f"applied once: {got}"
    i = got.index("MESHTRACE")
    assert (got[i - 1] if i else None) == want_after, got
    assert got[i + 1] == want_before, got
    if phase == "AUTHN":
        for later in ("envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"):
            if later in got:
                assert got.index(later) > i, f"{later} after meshtrace: its denials are traced"


# ---------------------------------------------------------------------------------------------
# The module on the proxy: injection template, install configuration


# The template's variable lines, as the test expects them (any change is reviewed here).
TEMPLATE_VARIABLES = [
    '{{- $templates := list }}{{ range splitList "," (index .ObjectMeta.Annotations '
    '"inject.istio.io/templates" | default "") }}{{ $templates = append $templates (trim .) }}'
    '{{ end }}',
    '{{- $native := and (not (has "gateway" $templates)) (ne (index .ObjectMeta.Annotations '
    '"sidecar.istio.io/nativeSidecar" | default (printf "%t" .NativeSidecars)) "false") }}',
]


def run_injection_template(text: str, native_sidecar: bool, gateway: bool = False) -> dict:
    """The template's own Go-template lines, resolved as istiod would for one pod (the test
    substitutes the `$native` branch, computed as the variable lines say: native sidecars on,
    and not a gateway; everything else is plain YAML)."""
    native_sidecar = native_sidecar and not gateway
    lines = []
    keep = [True]
    variables = [line.strip() for line in text.splitlines() if line.strip().startswith("{{- $")]
    assert variables == TEMPLATE_VARIABLES
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("{{- $"):
            continue
        if s.startswith("{{- if $native }}{{ fail"):
            if native_sidecar:
                raise RuntimeError("injection refused: " + s)
            continue
        if s == "{{- if $native }}":
            keep.append(native_sidecar)
            continue
        if s == "{{- else }}":
            keep[-1] = not keep[-1]
            continue
        if s == "{{- end }}":
            keep.pop()
            continue
        assert "{{" not in s, f"unexpected template line: {s}"
        if all(keep):
            lines.append(line)
    return yaml.safe_load("\n".join(lines))


def assert_module_on_proxy(pod_spec: dict, proxy_list: str, v: dict) -> None:
    """istio-proxy finds libmeshtrace.so on ENVOY_DYNAMIC_MODULES_SEARCH_PATH: in its own image
    (proxyImage), or in the emptyDir the init container filled from the image (initContainer).
    Never from an image volume (mounted noexec: the loader cannot map the module's code)."""
    (proxy,) = [c for c in pod_spec[proxy_list] if c["name"] == "istio-proxy"]
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] == v["native"]["path"]
    assert not [vol for vol in pod_spec.get("volumes", []) if "image" in vol], "no image volume"
    if v["native"]["delivery"] == "proxyImage":
        assert proxy["image"] == v["native"]["image"], "the proxy image carrying the module"
        assert not [m for m in proxy.get("volumeMounts", []) if m["name"] == "meshtrace-module"]
        return
    (mount,) = [m for m in proxy["volumeMounts"] if m["name"] == "meshtrace-module"]
    assert mount["mountPath"] == v["native"]["path"] and mount.get("readOnly") is True
    (volume,) = [vol for vol in pod_spec["volumes"] if vol["name"] == mount["name"]]
    assert volume == {"name": mount["name"], "emptyDir": {}}
    (copier,) = [c for c in pod_spec["initContainers"] if c["name"] == "meshtrace-module"]
    assert copier["image"] == v["native"]["image"], "pinned by digest"
    (target,) = copier["volumeMounts"]
    assert target["name"] == mount["name"]
    assert copier["command"] == ["cp", v["native"]["path"] + "/libmeshtrace.so",
                                 target["mountPath"] + "/libmeshtrace.so"]


def injected_pod(overlay: dict, native_sidecar: bool) -> dict:
    """A pod as istiod leaves it after `sidecar` and our template: the overlay merged by name
    (pkg/kube/inject/inject.go applyOverlayYAML is a strategic merge)."""
    proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.31.0",
             "env": [{"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}],
             "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "productpage", "namespace": "bookinfo", "labels": {"app": "productpage"}},
           "spec": {"containers": [{"name": "app", "image": "bookinfo/productpage:1"}],
                    "initContainers": [], "volumes": [{"name": "istio-envoy", "emptyDir": {}}]}}
    (pod["spec"]["initContainers"] if native_sidecar else pod["spec"]["containers"]).append(proxy)

    def merge_named(base: list, extra: list) -> list:
        out = [copy.deepcopy(x) for x in base]
        for item in extra:
            same = [x for x in out if x.get("name") == item.get("name")]
            if same:
                for k, val in item.items():
                    if isinstance(val, list):
                        same[0][k] = merge_named(same[0].get(k, []), val)
                    else:
                        same[0][k] = val
            else:
                out.append(item)
        return out
    pod["metadata"]["labels"].update(overlay["metadata"]["labels"])
    for key, val in overlay["spec"].items():
        pod["spec"][key] = merge_named(pod["spec"].get(key, []), val)
    return pod


@pytest.mark.parametrize("delivery, native_sidecar", [
    ("proxyImage", False), ("proxyImage", True), ("initContainer", False),
], ids=["proxy-image", "proxy-image-native-sidecar", "init-container"])
def test_the_injection_template_delivers_module_label_and_search_path(delivery, native_sidecar):
    values = native(plugin={"scope": "namespaces", "namespaces": ["bookinfo"]},
                    native={"image": IMAGE, "delivery": delivery}, renderIstioInstallConfig=True)
    files = render_files(values)
    operator = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])
    istiod = yaml.safe_load(yaml.safe_load(files["meshtrace/templates/istiod-values.yaml"])["data"]["values.yaml"])
    webhook = operator["spec"]["values"]["sidecarInjectorWebhook"]
    assert istiod["sidecarInjectorWebhook"] == webhook, "both install forms agree"
    assert "defaultTemplates" not in webhook, "opt-in per pod outside scope mesh"
    overlay = run_injection_template(webhook["templates"]["meshtrace"], native_sidecar)
    assert overlay["metadata"]["labels"] == MODULE_LABEL, "the label the EnvoyFilters select"
    v = merged(values)
    proxies = "initContainers" if native_sidecar else "containers"
    assert_module_on_proxy(overlay["spec"], proxies, v)
    pod = injected_pod(overlay, native_sidecar)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert_module_on_proxy(pod["spec"], proxies, v)
    # The label comes with the module, so an EnvoyFilter reaches this pod only now.
    (f,) = by_kind(render({k: val for k, val in values.items() if k != "renderIstioInstallConfig"}),
                   "EnvoyFilter")
    assert reaches(f, "bookinfo", pod["metadata"]["labels"])


@pytest.mark.parametrize("delivery", ["proxyImage", "initContainer"])
def test_a_gateway_keeps_its_proxy_a_container_even_with_native_sidecars(delivery):
    """The `gateway` template always makes istio-proxy a container; were our overlay to name it
    under initContainers, istiod's RunTemplate would move the gateway's proxy there."""
    files = render_files(native(plugin={"scope": "namespaces", "namespaces": ["b"]},
                                native={"image": IMAGE, "delivery": delivery},
                                gateways={"enabled": True}, renderIstioInstallConfig=True))
    template = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]["values"][
        "sidecarInjectorWebhook"]["templates"]["meshtrace"]
    overlay = run_injection_template(template, native_sidecar=True, gateway=True)
    assert [c["name"] for c in overlay["spec"].get("initContainers", [])] == \
        (["meshtrace-module"] if delivery == "initContainer" else [])
    pod = injected_pod(overlay, native_sidecar=False)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert_module_on_proxy(pod["spec"], "containers", merged({"native": {"delivery": delivery, "image": IMAGE}}))


def test_the_init_container_route_refuses_native_sidecars():
    """With native sidecars istio-proxy is an init container that starts before init containers
    appended after it: Envoy could load its listeners before the copy. Injection fails loudly."""
    files = render_files(native(plugin={"scope": "namespaces", "namespaces": ["b"]},
                                native={"image": IMAGE, "delivery": "initContainer"},
                                renderIstioInstallConfig=True))
    template = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]["values"][
        "sidecarInjectorWebhook"]["templates"]["meshtrace"]
    with pytest.raises(RuntimeError, match="native.delivery initContainer"):
        run_injection_template(template, native_sidecar=True)


def test_scope_mesh_makes_the_template_a_default_one():
    files = render_files(native(native={"image": IMAGE, "injectByDefault": True},
                                renderIstioInstallConfig=True))
    webhook = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]["values"]["sidecarInjectorWebhook"]
    assert webhook["defaultTemplates"] == ["sidecar", "meshtrace"]


def test_the_wasm_runtime_renders_no_injection_template():
    files = render_files({"renderIstioInstallConfig": True})
    assert "values" not in yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("values, key", [
    (native(istioVersion="1.30"), "plugin.runtime native needs istioVersion 1.31"),
    (native(native={"image": ""}), "plugin.runtime native needs native.image"),
    (native(plugin={"scope": "namespaces", "namespaces": ["a"], "phase": "AUTHZ"}),
     "plugin.phase AUTHZ cannot be expressed"),
    (native(), "needs native.injectByDefault=true"),
    (native(plugin={"scope": "namespaces", "namespaces": ["a"]}, telemetry={"mode": "print"}),
     "telemetry.mode print with plugin.runtime native"),
    ({"envoyGateway": {"enabled": True, "gateways": ["eg"]}}, "envoyGateway.enabled needs native.image"),
], ids=["istio-1.30", "no-image", "authz", "mesh-without-default-injection", "print", "eg-no-image"])
def test_the_chart_refuses_native_layouts_that_would_break_or_lose_spans(values, key):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert key in str(err.value), str(err.value)


@pytest.mark.parametrize("values, reason", [
    (native(native={"image": "registry.example.com/meshtrace-native:0.1.0"}), "a tag, not a digest"),
    (native(native={"image": IMAGE, "delivery": "hostPath"}), "unknown delivery"),
    (native(native={"image": IMAGE, "path": "relative/dir"}), "the search path is absolute"),
    (native(plugin={"runtime": "v8"}), "unknown runtime"),
    ({"envoyGateway": {"enabled": True}}, "Envoy Gateway needs at least one Gateway"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_values_schema_refuses_native_values(values, reason):
    with pytest.raises(helm.HelmError):
        render(values)
        pytest.fail(reason)


# ---------------------------------------------------------------------------------------------
# Envoy Gateway


@pytest.fixture(scope="session")
def eg_schemas() -> dict[str, dict]:
    out = {}
    for crd in yaml.safe_load_all((ROOT / "tests" / "deploy" / "envoy-gateway-crds.yaml").read_text()):
        (v,) = crd["spec"]["versions"]
        schema = strict(v["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {})["metadata"] = {"type": "object"}
        schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{v['name']}"}
        schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
        out[crd["spec"]["names"]["kind"]] = schema
    return out


@pytest.mark.parametrize("delivery", ["proxyImage", "initContainer"])
def test_envoy_gateway_resources_match_the_crds_and_allow_list_the_module(delivery, eg_schemas, check_config):
    values = values_of(CHART / "ci" / "envoy-gateway-values.yaml")
    values["native"] = {**values["native"], "delivery": delivery}
    docs = render(values)
    (policy,) = by_kind(docs, "EnvoyExtensionPolicy")
    (proxy,) = by_kind(docs, "EnvoyProxy")
    for doc in (policy, proxy):
        jsonschema.validate(doc, eg_schemas[doc["kind"]])
    # What the CRDs' CEL rules say (not run by jsonschema).
    refs = policy["spec"]["targetRefs"]
    assert [r["name"] for r in refs] == ["eg", "eg-internal"]
    assert all(r["group"] == "gateway.networking.k8s.io" and r["kind"] == "Gateway" for r in refs)
    (dm,) = policy["spec"]["dynamicModule"]
    allowed = {m["name"]: m for m in proxy["spec"]["dynamicModules"]}
    assert dm["name"] in allowed, "Envoy Gateway rejects a policy naming a module not allow-listed"
    source = allowed[dm["name"]]["source"]
    assert source["type"] == "Local" and "local" in source and "remote" not in source
    assert dm["filterName"] == "meshtrace"
    assert_plugin_config_parses(check_config, dm["config"])
    # The module's file is where the volume is mounted; the export cluster exists.
    dep = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    v = merged(values)
    pod_spec = {"containers": [{"name": "istio-proxy", **dep["container"],
                                "env": [{"name": "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
                                         "value": v["native"]["path"]}]}],
                "volumes": dep.get("pod", {}).get("volumes", []),
                "initContainers": dep.get("initContainers", [])}
    assert_module_on_proxy(pod_spec, "containers", v)
    assert source["local"]["path"] == v["native"]["path"] + "/libmeshtrace.so"
    bootstrap = yaml.safe_load(proxy["spec"]["bootstrap"]["value"])
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert dm["config"]["exporter"]["cluster"] in clusters
    assert proxy["spec"]["bootstrap"]["type"] == "Merge", "Envoy Gateway's own bootstrap is kept"


NATIVE_VARIANTS = [
    native(plugin={"scope": "namespaces", "namespaces": ["bookinfo"]}, gateways={"enabled": True},
           waypoints={"attach": "gateways", "gateways": [{"name": "waypoint", "namespace": "bookinfo"}]}),
    native(native={"image": IMAGE, "injectByDefault": True}, gateways={"enabled": True}),
    native(plugin={"scope": "workloads", "namespaces": ["shop"], "selector": {"app": "checkout"},
                   "phase": "STATS"}),
] + [values_of(p) for p in sorted((CHART / "ci").glob("native-*-values.yaml"))]


@pytest.mark.parametrize("values", NATIVE_VARIANTS, ids=lambda v: json.dumps(v["plugin"].get("scope", "mesh")))
def test_every_native_envoy_filter_is_safe_and_valid(values, crd_schemas, check_config):
    """For every variant: the CRD schema and its CEL rule (targetRefs or workloadSelector, never
    both), the version match on every patch, a selector that always includes the module label,
    and a filter_config the module's parser accepts."""
    docs = render(values)
    filters = by_kind(docs, "EnvoyFilter")
    assert filters and not by_kind(docs, "WasmPlugin")
    for f in filters:
        jsonschema.validate(f, crd_schemas[(f["apiVersion"], "EnvoyFilter")])
        spec = f["spec"]
        assert ("targetRefs" in spec) != ("workloadSelector" in spec), f["metadata"]
        if "workloadSelector" in spec:
            assert MODULE_LABEL.items() <= spec["workloadSelector"]["labels"].items()
        for patch in spec["configPatches"]:
            assert version_matches(f, "1.31.0") and not version_matches(f, "1.30.9")
            assert patch["applyTo"] == "HTTP_FILTER"
            assert_plugin_config_parses(check_config, json.loads(
                module_filter(patch)["typed_config"]["filter_config"]["value"]))
