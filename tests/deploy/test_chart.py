"""The Helm chart and the ready-to-apply resources: rendered with the Helm SDK for every ci/ values
file, linted strictly, core objects validated with kubernetes-validate --strict, Istio objects
against Istio's CRD schemas (unknown fields rejected, as the API server's strict field
validation does), cross-references checked, and every pluginConfig parsed by the plugin's own
parser."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "meshtrace"
VALUE_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
K8S_VERSION = "1.31.0"
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "Secret", "ServiceAccount",
              "HorizontalPodAutoscaler", "PodDisruptionBudget"}
ISTIO_KINDS = {"WasmPlugin", "Telemetry", "DestinationRule", "EnvoyFilter"}
# Envoy Gateway's, validated in test_chart_native.py against tests/deploy/envoy-gateway-crds.yaml.
ENVOY_GATEWAY_KINDS = {"EnvoyExtensionPolicy", "EnvoyProxy"}


def strict(schema: dict) -> dict:
    """Rejects unknown fields wherever the CRD lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return schema


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for crd in yaml.safe_load_all((ROOT / "tests" / "deploy" / "istio-crds.yaml").read_text()):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = strict(v["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server itself, not by the CRD schema.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            schema["properties"]["apiVersion"] = {"const": f"{group}/{v['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            out[(f"{group}/{v['name']}", kind)] = schema
    return out


@pytest.fixture(scope="session")
def check_config() -> Path:
    """The plugin's own configuration parser, as a command."""
    subprocess.run(["cargo", "build", "--quiet", "-p", "meshtrace-core", "--example",
                    "check_config"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "examples" / "check_config"


def render_files(values: dict, namespace: str = "observability") -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name="meshtrace", namespace=namespace)


def render(values: dict, namespace: str = "observability") -> list[dict]:
    manifests = render_files(values, namespace)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.fixture(scope="session", params=VALUE_FILES, ids=[p.stem for p in VALUE_FILES])
def rendered(request) -> tuple[dict, list[dict]]:
    values = values_of(request.param)
    return values, render(values)


def merged(values: dict) -> dict:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(values)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def test_lint_is_clean_in_strict_mode():
    for values in [{}] + [values_of(p) for p in VALUE_FILES]:
        report = helm.lint(str(CHART), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


def test_values_schema_rejects_unknown_keys_and_bad_enums():
    bad = [
        ({"plugin": {"scoop": "mesh"}}, "unknown key"),
        ({"tracing": {"protocol": "thrift"}}, "unknown protocol"),
        ({"tracing": {"tracingServiceName": "APP_LABEL"}}, "unknown naming mode"),
        ({"tracing": {"randomSamplingPercentage": 150}}, "percentage out of range"),
        ({"plugin": {"sha256": "abc"}}, "sha256 must be 64 hex digits"),
    ]
    for values, reason in bad:
        with pytest.raises(helm.HelmError):
            render(values)
            pytest.fail(reason)


def test_core_objects_are_valid_kubernetes(rendered):
    _, docs = rendered
    for doc in docs:
        if doc.get("kind") in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_istio_objects_match_the_crd_schemas(rendered, crd_schemas):
    _, docs = rendered
    for doc in docs:
        if doc.get("kind") in ISTIO_KINDS:
            jsonschema.validate(doc, crd_schemas[(doc["apiVersion"], doc["kind"])])


def test_every_kind_rendered_is_validated(rendered):
    _, docs = rendered
    assert {d["kind"] for d in docs} <= CORE_KINDS | ISTIO_KINDS | ENVOY_GATEWAY_KINDS | {"IstioOperator"}


def test_wasmplugin_directory_matches_the_crd_schemas(crd_schemas, check_config):
    for path in sorted((ROOT / "wasmplugin").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert {d["kind"] for d in docs} == {"WasmPlugin", "Telemetry"}, \
            f"{path.name}: a WasmPlugin and its Telemetry"
        plugin = by_kind(docs, "WasmPlugin")[0]
        # The placeholder fails the CRD on purpose (test_chart_istio_versions.py); a real digest.
        plugin["spec"]["sha256"] = "9f2c" + "1" * 60
        for doc in docs:
            jsonschema.validate(doc, crd_schemas[(doc["apiVersion"], doc["kind"])])
        telemetry = by_kind(docs, "Telemetry")[0]
        assert plugin["spec"]["failStrategy"] == "FAIL_OPEN"
        assert plugin["spec"].get("selector") == telemetry["spec"].get("selector"), \
            f"{path.name}: native span reporting is off for exactly the plugin's workloads"
        assert telemetry["spec"]["tracing"][0]["disableSpanReporting"] is True
        assert_plugin_config_parses(check_config, plugin["spec"]["pluginConfig"])
        host = {e["name"] for e in plugin["spec"].get("vmConfig", {}).get("env", [])
                if e.get("valueFrom") == "HOST"}
        for tag, source in plugin["spec"]["pluginConfig"].get("customTags", {}).items():
            if "environment" in source:
                assert source["environment"]["name"] in host, \
                    f"{path.name}: customTags.{tag} reads a host variable vmConfig.env lists"


def assert_plugin_config_parses(check_config: Path, config: dict) -> None:
    out = subprocess.run([str(check_config)], input=json.dumps(config), capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


def test_every_plugin_config_is_accepted_by_the_plugin(rendered, check_config):
    _, docs = rendered
    for plugin in by_kind(docs, "WasmPlugin"):
        assert_plugin_config_parses(check_config, plugin["spec"]["pluginConfig"])


def test_plugin_exports_to_the_collector_service(rendered):
    values, docs = rendered
    v = merged(values)
    plugins = by_kind(docs, "WasmPlugin")
    if v["renderIstioInstallConfig"] or not v["plugin"]["enabled"]:
        assert not plugins
        return
    # The proxies' export Service (a second collector tier has a headless one of its own).
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == v["collector"]["name"]]
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    for plugin in plugins:
        exporter = plugin["spec"]["pluginConfig"]["exporter"]
        direction, port, _, host = exporter["cluster"].split("|")
        assert direction == "outbound"
        assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.{v['clusterDomain']}"
        assert int(port) in ports, "the export cluster's port is a port of the Service"
        grpc = exporter["protocol"] == "grpc"
        assert ports[int(port)]["name"].startswith("grpc-" if grpc else "http-"), \
            "Istio's cluster for that port speaks the plugin's protocol"
        assert plugin["spec"]["pluginConfig"]["randomSamplingPercentage"] == \
            v["tracing"]["randomSamplingPercentage"]


def test_native_span_reporting_is_off_exactly_where_the_plugin_runs(rendered):
    values, docs = rendered
    v = merged(values)
    def reach(spec: dict, namespace: str) -> tuple:
        # A root-namespace plugin targeting every waypoint is covered by the root Telemetry: Istio
        # applies that selector-less Telemetry to waypoints too (telemetry.go applicableTelemetries).
        refs = spec.get("targetRefs")
        if refs == [{"group": "gateway.networking.k8s.io", "kind": "GatewayClass", "name": "istio-waypoint"}]:
            refs = None
        return namespace, json.dumps(spec.get("selector")), json.dumps(refs)

    def envoy_filter_reach(f: dict) -> tuple:
        # plugin.runtime native: the EnvoyFilter's workloadSelector is the Telemetry's selector;
        # under scope mesh every injected sidecar holds the module (native.injectByDefault), and
        # the root Telemetry is selector-less.
        labels = f["spec"].get("workloadSelector", {}).get("labels")
        if f["metadata"]["namespace"] == v["istioNamespace"] and labels == v["native"]["label"]:
            labels = None
        spec = {"targetRefs": f["spec"]["targetRefs"]} if "targetRefs" in f["spec"] else \
            {"selector": {"matchLabels": labels}} if labels else {}
        return reach(spec, f["metadata"]["namespace"])
    plugins = {reach(p["spec"], p["metadata"]["namespace"]) for p in by_kind(docs, "WasmPlugin")}
    plugins |= {envoy_filter_reach(f) for f in by_kind(docs, "EnvoyFilter")}
    off = {reach(t["spec"], t["metadata"]["namespace"])
           for t in by_kind(docs, "Telemetry")
           if any(tr.get("disableSpanReporting") for tr in t["spec"]["tracing"])}
    if v["telemetry"]["mode"] == "print":
        assert not by_kind(docs, "Telemetry"), "print mode creates no Telemetry"
        return
    assert plugins == off
    defaults = [t for t in by_kind(docs, "Telemetry") if t["metadata"]["name"] == "meshtrace-default"]
    if v["telemetry"]["meshDefault"] and v["plugin"]["scope"] != "mesh" and not v["renderIstioInstallConfig"]:
        (d,) = defaults
        assert d["metadata"]["namespace"] == v["istioNamespace"]
        assert d["spec"]["tracing"][0]["randomSamplingPercentage"] == v["tracing"]["randomSamplingPercentage"]
    else:
        assert not defaults


def test_at_most_one_selector_less_telemetry_per_namespace(rendered):
    """Istio applies only the first selector-less Telemetry of a namespace (istio/istio
    pilot/pkg/model/telemetry.go namespaceWideTelemetryConfig); a second one is ignored."""
    _, docs = rendered
    namespaces = [t["metadata"]["namespace"] for t in by_kind(docs, "Telemetry")
                  if not t["spec"].get("selector", {}).get("matchLabels")
                  and not t["spec"].get("targetRefs")]
    assert len(namespaces) == len(set(namespaces)), namespaces
    assert "mesh-default" not in {t["metadata"]["name"] for t in by_kind(docs, "Telemetry")}, \
        "the name Istio's docs use for a user's own mesh default"


def istio_attaches(plugin: dict, namespace: str, labels: dict, root: str) -> bool:
    """Istio's rule for a WasmPlugin reaching a proxy: in the proxy's namespace or the root
    namespace (pilot/pkg/model/push_context.go WasmPluginsByListenerInfo), selector labels a
    subset of the proxy's (pilot/pkg/model/policyattachment.go isSelected), and a match mode
    covering a gateway's listeners, which are CLIENT (pilot/pkg/model/extensions.go
    workloadModeForListenerClass)."""
    meta, spec = plugin["metadata"], plugin["spec"]
    if meta["namespace"] not in (namespace, root):
        return False
    if spec.get("targetRefs") or spec.get("targetRef"):
        # A policy with targetRefs reaches only the Gateways (or class) it names — waypoints
        # here — never a pod by its labels (policyattachment.go: targetRefs before selectors).
        return False
    wanted = spec.get("selector", {}).get("matchLabels", {})
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    modes = [m.get("mode", "CLIENT_AND_SERVER") for m in spec.get("match", [])] or ["CLIENT_AND_SERVER"]
    return any(m in ("CLIENT_AND_SERVER", "UNDEFINED", "CLIENT") for m in modes)


def test_a_gateway_runs_exactly_one_meshtrace_plugin(rendered):
    values, docs = rendered
    v = merged(values)
    if not v["gateways"]["enabled"]:
        return
    gw = v["gateways"]
    (mine,) = [p for p in by_kind(docs, "WasmPlugin")
               if istio_attaches(p, gw["namespace"], gw["selector"], v["istioNamespace"])]
    if v["plugin"]["scope"] == "mesh":
        # The root plugin reaches the gateway; its `gateway` block applies there only.
        assert mine["metadata"]["name"] == "meshtrace"
        config = gateway_view(mine["spec"]["pluginConfig"])
    else:
        assert mine["metadata"]["name"] == "meshtrace-gateway"
        config = mine["spec"]["pluginConfig"]
        (telemetry,) = [t for t in by_kind(docs, "Telemetry")
                        if t["metadata"]["namespace"] == gw["namespace"]]
        assert telemetry["spec"]["selector"]["matchLabels"] == gw["selector"]
    assert config["sampling"]["trustIncoming"] is False, "clients do not decide sampling"
    assert config["propagation"]["trustIncomingRequestId"] is False
    # An app pod elsewhere runs the app plugin only.
    for ns in v["plugin"]["namespaces"]:
        (app,) = [p for p in by_kind(docs, "WasmPlugin")
                  if istio_attaches(p, ns, {"app": "productpage"}, v["istioNamespace"])]
        assert app["metadata"]["name"] == "meshtrace"


def gateway_view(config: dict) -> dict:
    """The configuration a gateway applies: the `gateway` block merged over the rest, objects
    key by key (meshtrace-core `Config::parse_for`)."""
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    rest = {k: v for k, v in config.items() if k != "gateway"}
    return merge(rest, config.get("gateway", {}))


def test_environment_tags_get_their_host_variables(rendered):
    """customTags.*.environment reads a host variable only if vmConfig.env lists it as HOST
    (Envoy's host_env_keys; pilot/pkg/model/extensions.go buildVMConfig)."""
    values, docs = rendered
    v = merged(values)
    for plugin in by_kind(docs, "WasmPlugin"):
        spec = plugin["spec"]
        env = {e["name"]: e for e in spec.get("vmConfig", {}).get("env", [])}
        # A gateway applies its block's tags (scope mesh): the same VM needs their variables.
        tags = {**spec["pluginConfig"].get("customTags", {}),
                **gateway_view(spec["pluginConfig"]).get("customTags", {})}
        for tag, source in tags.items():
            if "environment" in source:
                name = source["environment"]["name"]
                assert name in env, f"{tag}: {name} reaches the VM"
        for declared in v["plugin"]["vmConfig"]["env"]:
            assert env[declared["name"]] == declared, "plugin.vmConfig.env kept as given"


def test_collector_config_is_complete_and_checksummed(rendered):
    values, docs = rendered
    if merged(values)["renderIstioInstallConfig"]:
        assert not by_kind(docs, "Deployment")
        return
    name = merged(values)["collector"]["name"]  # the first tier (test_chart_collector_tiers.py: both)
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == name]
    (deploy,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == name]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "batch"]
    assert "health_check" in config["extensions"]
    for exporter in config["service"]["pipelines"]["traces"]["exporters"]:
        assert exporter in config["exporters"]
    pod = deploy["spec"]["template"]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    backend = merged(values)["collector"]["backend"]
    if backend["auth"]["existingSecret"] and not merged(values)["collector"]["tailSampling"]["enabled"]:
        env = {e["name"]: e for e in container["env"]}
        assert env["BACKEND_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == backend["auth"]["existingSecret"]


def test_both_install_forms_of_the_extension_provider_agree():
    values = values_of(CHART / "ci" / "istio-install-values.yaml")
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="meshtrace", namespace="observability")
    operator = yaml.safe_load(out["meshtrace/templates/istio-install.yaml"])
    istiod = yaml.safe_load(yaml.safe_load(out["meshtrace/templates/istiod-values.yaml"])["data"]["values.yaml"])
    assert operator["kind"] == "IstioOperator"
    assert operator["spec"]["meshConfig"] == istiod["meshConfig"], "one source, two forms"
    (provider,) = istiod["meshConfig"]["extensionProviders"]
    otel = provider["opentelemetry"]
    assert otel["service"] == "opentelemetry-collector.observability.svc.cluster.local"
    assert otel["port"] == 4317 and "grpc" in otel
    assert istiod["meshConfig"]["defaultConfig"]["tracingServiceName"] == "APP_LABEL_AND_NAMESPACE"
    # The same values without the switch install the plugin pointed at the same place.
    plugin_values = {k: v for k, v in values.items() if k != "renderIstioInstallConfig"}
    (plugin,) = [p for p in by_kind(render(plugin_values), "WasmPlugin")
                 if p["metadata"]["name"] == "meshtrace"]
    assert plugin["spec"]["pluginConfig"]["exporter"]["cluster"] == \
        f"outbound|{otel['port']}||{otel['service']}"


@pytest.mark.parametrize("values, key", [
    ({"istioVersion": "1.19"}, "istioVersion 1.19"),
    ({"istioVersion": "1.21"}, "tracing.protocol http"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["bookinfo", "istio-system"]}},
     "plugin.namespaces must not list istioNamespace"),
    ({"plugin": {"scope": "workloads", "namespaces": ["istio-system"], "selector": {"app": "a"}}},
     "plugin.namespaces must not list istioNamespace"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["istio-ingress"]}, "gateways": {"enabled": True},
      "waypoints": {"noneInPluginNamespaces": True}},
     "gateways.namespace istio-ingress is also in plugin.namespaces"),
], ids=["istio-1.19", "http-before-1.22", "root-namespace-listed", "root-namespace-workloads",
        "gateway-namespace-twice"])
def test_the_chart_refuses_what_istio_would_silently_mishandle(values, key):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert key in str(err.value), str(err.value)


@pytest.mark.parametrize("values, reason", [
    ({"plugin": {"scope": "workloads", "namespaces": ["shop"]}},
     "scope workloads without a selector would be a namespace-wide Telemetry"),
    ({"plugin": {"scope": "workloads", "namespaces": ["shop"], "selector": {}}}, "empty selector"),
    ({"plugin": {"scope": "namespaces"}}, "scope namespaces without namespaces"),
    ({"plugin": {"vmConfig": {"env": [{"name": "X", "valueFrom": "HOST", "value": "v"}]}}},
     "a HOST variable has no inline value"),
    ({"plugin": {"vmConfig": {"env": [{"name": "X", "valueFrom": "ENV"}]}}}, "unknown valueFrom"),
    ({"telemetry": {"mode": "merge"}}, "unknown telemetry mode"),
    ({"istioVersion": "1.22.3"}, "istioVersion is a minor version"),
    # Helm merges an empty map over the default selector: null removes its key.
    ({"gateways": {"enabled": True, "selector": {"istio": None}}}, "gateways need a selector"),
    ({"collector": {"autoscaling": {"enabled": True, "minReplicas": 0}}}, "at least one replica"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_values_schema_refuses(values, reason):
    with pytest.raises(helm.HelmError):
        render(values)
        pytest.fail(reason)


def test_telemetry_api_and_provider_follow_the_istio_version():
    """telemetry.istio.io/v1 is served from Istio 1.22; the provider's http and
    resource_detectors are read from 1.22 (pilot/pkg/networking/core/tracing.go otelConfig)."""
    old = render({"istioVersion": "1.21", "tracing": {"protocol": "grpc"},
                  "waypoints": {"meshHasNoWaypoints": True}})
    assert {t["apiVersion"] for t in by_kind(old, "Telemetry")} == {"telemetry.istio.io/v1alpha1"}
    new = render({})
    assert {t["apiVersion"] for t in by_kind(new, "Telemetry")} == {"telemetry.istio.io/v1"}
    for version, detectors in (("1.21", False), ("1.22", True)):
        files = render_files({"istioVersion": version, "tracing": {"protocol": "grpc"},
                              "renderIstioInstallConfig": True})
        (provider,) = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]["meshConfig"]["extensionProviders"]
        assert ("resource_detectors" in provider["opentelemetry"]) is detectors


def test_mesh_config_names_the_default_tracing_provider():
    """Without a Telemetry naming a provider, Istio's tracer uses defaultProviders.tracing
    (pilot/pkg/model/telemetry.go Telemetries.Tracing); sampling falls back to
    defaultConfig.tracing.sampling (tracing.go configureTracingFromTelemetry)."""
    files = render_files({"renderIstioInstallConfig": True, "tracing": {"randomSamplingPercentage": 7}})
    mesh = yaml.safe_load(files["meshtrace/templates/istio-install.yaml"])["spec"]["meshConfig"]
    assert mesh["defaultProviders"]["tracing"] == ["otel-tracing"]
    assert mesh["defaultConfig"]["tracing"]["sampling"] == 7
    notes = files["meshtrace/templates/NOTES.txt"]
    assert "REPLACE" in notes and "extensionProviders" in notes, "the list-merge warning"


def test_print_mode_creates_no_telemetry_and_prints_the_stanza():
    values = {"telemetry": {"mode": "print"}, "plugin": {"scope": "namespaces", "namespaces": ["bookinfo"]},
              "waypoints": {"noneInPluginNamespaces": True}}
    files = render_files(values)
    assert not by_kind(render(values), "Telemetry")
    notes = files["meshtrace/templates/NOTES.txt"]
    stanza = notes[notes.index("# namespace bookinfo"):].split("\n\n")[0]
    parsed = yaml.safe_load(stanza)
    assert parsed == {"tracing": [{"providers": [{"name": "otel-tracing"}], "disableSpanReporting": True}]}


def test_collector_matches_the_upstream_chart_conventions():
    docs = render(values_of(CHART / "ci" / "scale-values.yaml"))
    v = merged(values_of(CHART / "ci" / "scale-values.yaml"))
    (deploy,) = by_kind(docs, "Deployment")
    (cm,) = by_kind(docs, "ConfigMap")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["GOMEMLIMIT"]["value"] == "1638MiB", "80% of 2Gi"
    assert env["MY_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    config = yaml.safe_load(cm["data"]["config.yaml"])
    for proto, port in (("grpc", 4317), ("http", 4318)):
        assert config["receivers"]["otlp"]["protocols"][proto]["endpoint"] == f"${{env:MY_POD_IP}}:{port}"
    assert config["exporters"]["debug"]["verbosity"] == "detailed", "debugExporter prints spans"
    assert pod["securityContext"] == v["collector"]["podSecurityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == v["collector"][key]
    (sa,) = by_kind(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] in CORE_KINDS} == {"telemetry"}
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    (dr,) = by_kind(docs, "DestinationRule")
    assert dr["spec"]["host"] == "opentelemetry-collector.telemetry.svc.corp.internal"
    assert dr["spec"]["trafficPolicy"]["tls"]["mode"] == "DISABLE"
    # Without a backend the debug exporter only counts; the namespace is the release's.
    default = render({}, namespace="tracing")
    (cm,) = by_kind(default, "ConfigMap")
    assert yaml.safe_load(cm["data"]["config.yaml"])["exporters"]["debug"]["verbosity"] == "basic"
    assert {d["metadata"]["namespace"] for d in default if d["kind"] in CORE_KINDS} == {"tracing"}


# Ambient mode (issue 17): waypoints take only targetRefs (pilot/pkg/model/policyattachment.go),
# and the root namespace's selector-less Telemetry reaches them too (telemetry.go).


def test_under_scope_mesh_every_waypoint_runs_the_plugin(check_config):
    docs = render({"waypoints": {"config": {"waypoint": {"spans": "proxy"}}}})
    (wp,) = [p for p in by_kind(docs, "WasmPlugin") if p["metadata"]["name"] == "meshtrace-waypoint"]
    assert wp["metadata"]["namespace"] == "istio-system", "a root-namespace policy"
    assert wp["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "GatewayClass", "name": "istio-waypoint"}]
    assert "selector" not in wp["spec"], "waypoints never take a selector"
    assert wp["spec"]["pluginConfig"]["waypoint"] == {"spans": "proxy"}, "waypoints.config merged"
    assert_plugin_config_parses(check_config, wp["spec"]["pluginConfig"])
    (root,) = [t for t in by_kind(docs, "Telemetry") if t["metadata"]["namespace"] == "istio-system"]
    assert "selector" not in root["spec"] and "targetRefs" not in root["spec"], \
        "the mesh-wide Telemetry turns native spans off on the waypoints the plugin now reaches"


def test_listed_waypoints_get_the_plugin_and_lose_native_spans_exactly_there(check_config):
    docs = render(values_of(CHART / "ci" / "waypoints-values.yaml"))
    plugins = {p["metadata"]["namespace"]: p for p in by_kind(docs, "WasmPlugin")
               if p["metadata"]["name"] == "meshtrace-waypoint"}
    offs = {t["metadata"]["namespace"]: t for t in by_kind(docs, "Telemetry")
            if t["metadata"]["name"] == "meshtrace-waypoint"}
    assert set(plugins) == set(offs) == {"bookinfo", "shop"}
    for ns, plugin in plugins.items():
        refs = plugin["spec"]["targetRefs"]
        assert all(r["kind"] == "Gateway" and r["group"] == "gateway.networking.k8s.io" for r in refs)
        assert offs[ns]["spec"]["targetRefs"] == refs, f"{ns}: span reporting off for exactly these"
        assert offs[ns]["spec"]["tracing"][0]["disableSpanReporting"] is True
        assert "selector" not in plugin["spec"] and "selector" not in offs[ns]["spec"]
        assert_plugin_config_parses(check_config, plugin["spec"]["pluginConfig"])
    assert [r["name"] for r in plugins["shop"]["spec"]["targetRefs"]] == ["reviews-waypoint"]


@pytest.mark.parametrize("values, key", [
    ({"istioVersion": "1.24"}, "no waypoint runs the plugin"),
    ({"waypoints": {"attach": "none"}}, "no waypoint runs the plugin"),
    ({"istioVersion": "1.24", "waypoints": {"attach": "gatewayClass"}},
     "waypoints.attach gatewayClass needs istioVersion 1.25"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["bookinfo"]},
      "waypoints": {"attach": "gatewayClass"}}, "waypoints.attach gatewayClass needs plugin.scope mesh"),
    ({"waypoints": {"attach": "gateways", "gateways": [{"name": "w", "namespace": "a"}]}},
     "waypoints not listed would lose every span"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["bookinfo"]},
      "waypoints": {"attach": "gateways"}}, "waypoints.attach gateways needs waypoints.gateways"),
], ids=["mesh-before-1.25", "mesh-none", "gatewayclass-before-1.25", "gatewayclass-not-mesh",
        "mesh-with-a-list", "empty-list"])
def test_the_chart_refuses_to_lose_waypoint_spans(values, key):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert key in str(err.value), str(err.value)


def test_a_mesh_without_waypoints_says_so():
    docs = render({"istioVersion": "1.24", "waypoints": {"meshHasNoWaypoints": True}})
    assert [p["metadata"]["name"] for p in by_kind(docs, "WasmPlugin")] == ["meshtrace"]


@pytest.mark.parametrize("values, reason", [
    ({"waypoints": {"attach": "gatewayClass", "selector": {"app": "waypoint"}}},
     "a selector never reaches a waypoint: refused next to targetRefs"),
    ({"waypoints": {"attach": "everywhere"}}, "unknown attachment form"),
    ({"waypoints": {"attach": "gateways", "gateways": [{"name": "w"}]}}, "a Gateway needs its namespace"),
])
def test_values_schema_refuses_waypoint_selectors_and_bad_forms(values, reason):
    with pytest.raises(helm.HelmError):
        render(values)
        pytest.fail(reason)
