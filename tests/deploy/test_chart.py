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
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "Secret"}
ISTIO_KINDS = {"WasmPlugin", "Telemetry"}


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


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="meshtrace", namespace="observability")
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


def test_wasmplugin_directory_matches_the_crd_schemas(crd_schemas, check_config):
    for path in sorted((ROOT / "wasmplugin").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert {d["kind"] for d in docs} == ISTIO_KINDS, f"{path.name}: a WasmPlugin and its Telemetry"
        for doc in docs:
            jsonschema.validate(doc, crd_schemas[(doc["apiVersion"], doc["kind"])])
        plugin = by_kind(docs, "WasmPlugin")[0]
        telemetry = by_kind(docs, "Telemetry")[0]
        assert plugin["spec"]["failStrategy"] == "FAIL_OPEN"
        assert plugin["spec"].get("selector") == telemetry["spec"].get("selector"), \
            f"{path.name}: native span reporting is off for exactly the plugin's workloads"
        assert telemetry["spec"]["tracing"][0]["disableSpanReporting"] is True
        assert_plugin_config_parses(check_config, plugin["spec"]["pluginConfig"])


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
    (service,) = by_kind(docs, "Service")
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    for plugin in plugins:
        exporter = plugin["spec"]["pluginConfig"]["exporter"]
        direction, port, _, host = exporter["cluster"].split("|")
        assert direction == "outbound"
        assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
        assert int(port) in ports, "the export cluster's port is a port of the Service"
        grpc = exporter["protocol"] == "grpc"
        assert ports[int(port)]["name"].startswith("grpc-" if grpc else "http-"), \
            "Istio's cluster for that port speaks the plugin's protocol"
        assert plugin["spec"]["pluginConfig"]["randomSamplingPercentage"] == \
            v["tracing"]["randomSamplingPercentage"]


def test_native_span_reporting_is_off_exactly_where_the_plugin_runs(rendered):
    values, docs = rendered
    v = merged(values)
    plugins = {(p["metadata"]["namespace"], json.dumps(p["spec"].get("selector"))) for p in by_kind(docs, "WasmPlugin")}
    off = {(t["metadata"]["namespace"], json.dumps(t["spec"].get("selector")))
           for t in by_kind(docs, "Telemetry")
           if any(tr.get("disableSpanReporting") for tr in t["spec"]["tracing"])}
    assert plugins == off
    defaults = [t for t in by_kind(docs, "Telemetry") if t["metadata"]["name"] == "mesh-default"]
    if plugins and v["plugin"]["scope"] != "mesh":
        (d,) = defaults
        assert d["metadata"]["namespace"] == v["istioNamespace"]
        assert d["spec"]["tracing"][0]["randomSamplingPercentage"] == v["tracing"]["randomSamplingPercentage"]


def test_collector_config_is_complete_and_checksummed(rendered):
    values, docs = rendered
    if merged(values)["renderIstioInstallConfig"]:
        assert not by_kind(docs, "Deployment")
        return
    (cm,) = by_kind(docs, "ConfigMap")
    (deploy,) = by_kind(docs, "Deployment")
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
    if backend["auth"]["existingSecret"]:
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
    (plugin,) = by_kind(render(plugin_values), "WasmPlugin")
    assert plugin["spec"]["pluginConfig"]["exporter"]["cluster"] == \
        f"outbound|{otel['port']}||{otel['service']}"
