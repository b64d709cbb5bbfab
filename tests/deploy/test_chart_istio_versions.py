"""The chart against each Istio version it supports, read from Istio's own source (issue 26):
what every rendered path needs from istio/istio (tags 1.20.0-1.30.0) and istio/api
(mesh/v1alpha1/config.proto at the same tags). Each table row names the file and function."""
from __future__ import annotations

from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml

from test_chart import ROOT, by_kind, crd_schemas, render, render_files  # noqa: F401 (fixture)

INSTALL = "meshtrace/templates/istio-install.yaml"
ISTIOD = "meshtrace/templates/istiod-values.yaml"
NOTES = "meshtrace/templates/NOTES.txt"

# istio/api mesh/v1alpha1/config.proto: the first minor whose MeshConfig has each field of the
# messages the chart renders for the tracing provider. istioctl 1.20-1.23 reads meshConfig
# strictly (operator/pkg/validate/validate.go validateMeshConfig -> protomarshal.ApplyYAMLStrict):
# a field the proto lacks stops `istioctl install -f` ("unknown field"); istiod's Helm path drops it
# without a word.
# fmt: off
PROVIDER_FIELDS = {
    "OpenTelemetryTracingProvider": {
        "service": 20, "port": 20, "max_tag_length": 20,
        "http": 22,                # HttpService http = 4 (1.22.0)
        "resource_detectors": 22,  # ResourceDetectors resource_detectors = 5 (1.22.0)
        "grpc": 24,                # GrpcService grpc = 7 (1.24.0)
        "service_attribute_enrichment": 30,
    },
    "HttpService": {"path": 22, "timeout": 22, "headers": 22},
    "GrpcService": {"timeout": 24, "initial_metadata": 24},
    "ResourceDetectors": {"environment": 22, "dynatrace": 22},
}
# fmt: on
NESTED = {"http": "HttpService", "grpc": "GrpcService", "resource_detectors": "ResourceDetectors"}


def snake(key: str) -> str:
    """protojson accepts a field's JSON (camelCase) name and its proto name alike."""
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def unknown_fields(message: str, value: dict, minor: int, path: str) -> list[str]:
    out = []
    for key, sub in value.items():
        field = snake(key)
        since = PROVIDER_FIELDS[message].get(field)
        if since is None or since > minor:
            out.append(f"{path}.{key} (istio/api 1.{minor}.0 {message} has no {field})")
        elif field in NESTED and isinstance(sub, dict):
            out += unknown_fields(NESTED[field], sub, minor, f"{path}.{key}")
    return out


def provider_of(files: dict[str, str]) -> dict:
    mesh = yaml.safe_load(files[INSTALL])["spec"]["meshConfig"]
    istiod = yaml.safe_load(yaml.safe_load(files[ISTIOD])["data"]["values.yaml"])["meshConfig"]
    assert mesh == istiod, "one source, two install forms"
    (provider,) = [p for p in mesh["extensionProviders"] if "opentelemetry" in p]
    return provider["opentelemetry"]


# Defect 1: the provider Istio 1.20-1.30 accepts, for both protocols.
CASES = [(minor, protocol) for minor in range(20, 31) for protocol in ("grpc", "http")
         if not (minor < 22 and protocol == "http")]  # http before 1.22: refused (next test)


@pytest.mark.parametrize("minor, protocol", CASES, ids=[f"1.{m}-{p}" for m, p in CASES])
def test_the_extension_provider_has_only_fields_that_istio_version_knows(minor, protocol):
    files = render_files({"istioVersion": f"1.{minor}", "renderIstioInstallConfig": True,
                          "tracing": {"protocol": protocol, "headers": [{"name": "x-tenant", "value": "a"}]}})
    otel = provider_of(files)
    assert unknown_fields("OpenTelemetryTracingProvider", otel, minor, "opentelemetry") == []
    assert otel["port"] == (4317 if protocol == "grpc" else 4318)
    if protocol == "grpc" and minor >= 24:
        assert otel["grpc"] == {"timeout": "5s", "initialMetadata": [{"name": "x-tenant", "value": "a"}]}
    if protocol == "http":
        assert otel["http"]["path"] == "/v1/traces"


# Defect 3: a root-namespace policy reaches every waypoint through targetRefs GatewayClass
# istio-waypoint from 1.25.0 (pilot/pkg/model/policyattachment.go ShouldAttachPolicy, the
# GatewayClass clause backported in 6ec5ded, release note 54780; pkg/config/validation/validation.go
# allowedTargetRefs lists GatewayClass from 1.25.0), not before.
GATEWAY_CLASS = [{"group": "gateway.networking.k8s.io", "kind": "GatewayClass", "name": "istio-waypoint"}]


@pytest.mark.parametrize("minor", range(25, 31))
def test_every_waypoint_runs_the_plugin_from_istio_1_25(minor):
    docs = render({"istioVersion": f"1.{minor}"})
    (wp,) = [p for p in by_kind(docs, "WasmPlugin") if p["metadata"]["name"] == "meshtrace-waypoint"]
    assert wp["spec"]["targetRefs"] == GATEWAY_CLASS
    assert wp["metadata"]["namespace"] == "istio-system"


@pytest.mark.parametrize("minor", range(22, 25))
def test_gateway_class_attachment_is_refused_before_1_25(minor):
    with pytest.raises(helm.HelmError) as err:
        render({"istioVersion": f"1.{minor}", "waypoints": {"attach": "gatewayClass"}})
    assert "waypoints.attach gatewayClass needs istioVersion 1.25 or later" in str(err.value)


# Defect 2: under scope namespaces the namespace's selector-less Telemetry applies to every proxy
# whose config namespace it is, waypoints deployed there included (pilot/pkg/model/telemetry.go
# applicableTelemetries -> namespaceWideTelemetryConfig(proxy.ConfigNamespace)), while the
# selector-based WasmPlugin never attaches to a waypoint (policyattachment.go ShouldAttachPolicy:
# "waypoints never use selector"): such a waypoint would lose every span.
NAMESPACES = {"scope": "namespaces", "namespaces": ["bookinfo"]}


@pytest.mark.parametrize("mode", ["create", "print"])
def test_waypoints_deployed_in_a_plugin_namespace_are_not_left_without_spans(mode):
    with pytest.raises(helm.HelmError) as err:
        render({"plugin": NAMESPACES, "telemetry": {"mode": mode}})
    assert "waypoints deployed in plugin.namespaces (bookinfo)" in str(err.value), str(err.value)
    assert "waypoints.noneInPluginNamespaces" in str(err.value)


@pytest.mark.parametrize("values, reason", [
    ({"plugin": NAMESPACES, "waypoints": {"noneInPluginNamespaces": True}}, "the user says there is none"),
    ({"plugin": NAMESPACES, "waypoints": {"attach": "gateways",
                                          "gateways": [{"name": "waypoint", "namespace": "bookinfo"}]}},
     "the waypoints are listed: each gets the plugin"),
    ({"plugin": {"scope": "workloads", "namespaces": ["bookinfo"], "selector": {"app": "a"}}},
     "a Telemetry with a selector never reaches a waypoint"),
    ({"plugin": NAMESPACES, "renderIstioInstallConfig": True}, "only Istio's install configuration"),
])
def test_plugin_namespaces_without_waypoint_loss_render(values, reason):
    assert render(values) is not None, reason


# Defect 4: Istio reads a WasmPlugin's imagePullSecret from the WasmPlugin's own namespace
# (pilot/pkg/model/extensions.go toSecretResourceName, 1.20-1.29: "Forcely rewrite secret
# namespace to plugin namespace"; 1.30 convertToTrafficExtensionWrapper does the same). The chart
# spreads WasmPlugins over several namespaces: the secret must exist in each of them.
def test_notes_name_every_namespace_the_pull_secret_must_exist_in():
    values = {"plugin": {"scope": "namespaces", "namespaces": ["bookinfo", "shop"], "imagePullSecret": "regcred"},
              "gateways": {"enabled": True},
              "waypoints": {"attach": "gateways", "gateways": [{"name": "w", "namespace": "ambient-apps"}]}}
    files = render_files(values)
    plugins = by_kind(render(values), "WasmPlugin")
    namespaces = sorted({p["metadata"]["namespace"] for p in plugins})
    assert namespaces == ["ambient-apps", "bookinfo", "istio-ingress", "shop"]
    assert {p["spec"]["imagePullSecret"] for p in plugins} == {"regcred"}
    notes = files[NOTES]
    line = next((ln for ln in notes.splitlines() if "imagePullSecret regcred" in ln), "")
    assert line, notes
    assert f"Secret regcred must exist in each WasmPlugin's namespace: {', '.join(namespaces)}" in \
        " ".join(notes.split()), notes


def test_notes_name_the_root_namespace_for_a_mesh_wide_plugin():
    notes = render_files({"plugin": {"imagePullSecret": "regcred"}})[NOTES]
    assert "Secret regcred must exist in each WasmPlugin's namespace: istio-system" in " ".join(notes.split())


# Defect 9: an all-zero sha256 passes the CRD pattern ((^$|^[a-f0-9]{64}$)) and leaves the plugin
# never loaded (Istio's agent compares it with the image manifest digest: pkg/wasm/cache.go
# getOrFetch; FAIL_OPEN then skips the plugin). The examples must not be applicable as they are.
ZEROS = "0" * 64
DIGEST = "9f2c" + "1" * 60


def wasmplugin_files() -> list[Path]:
    return sorted((ROOT / "wasmplugin").glob("*.yaml"))


@pytest.mark.parametrize("path", wasmplugin_files(), ids=lambda p: p.name)
def test_example_wasmplugins_are_refused_until_the_digest_is_filled_in(path, crd_schemas):
    (plugin,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "WasmPlugin"]
    schema = crd_schemas[(plugin["apiVersion"], "WasmPlugin")]
    assert plugin["spec"]["sha256"] != ZEROS
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(plugin, schema)
    assert list(err.value.absolute_path) == ["spec", "sha256"], "kubectl apply names the field"
    plugin["spec"]["sha256"] = DIGEST
    jsonschema.validate(plugin, schema)


def test_the_chart_refuses_an_all_zero_sha256():
    with pytest.raises(helm.HelmError) as err:
        render({"plugin": {"sha256": ZEROS}})
    assert "sha256" in str(err.value)
    assert render({"plugin": {"sha256": DIGEST}})


# Defect 5: istioctl install builds the whole install from the files it is given, on top of the
# profile they name or else the default profile (operator/pkg/render/manifest.go MergeInputs ->
# readProfile: `if profile == "" { profile = "default" }`); it never reads the running install.
# `istioctl install -f istio-tracing.yaml` alone therefore replaces the user's install (an ambient
# one falls back to the default profile). Every documented command layers the user's own file.
def istioctl_installs(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if "istioctl install" in ln]


def test_notes_layer_the_tracing_overlay_over_the_users_install():
    for values in ({}, {"renderIstioInstallConfig": True}):
        commands = istioctl_installs(render_files(values)[NOTES])
        for command in commands:
            assert "-f your-istio.yaml -f istio-tracing.yaml" in command, command
    assert istioctl_installs(render_files({})[NOTES]), "NOTES says how to install the provider"


def documents() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "wasmplugin" / "README.md"]
    return docs + sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_documented_command_replaces_the_users_install(path):
    for command in istioctl_installs(path.read_text()):
        if "istio-tracing.yaml" in command and "istioctl install" in command.split("#")[0]:
            assert "-f your-istio.yaml -f istio-tracing.yaml" in command, f"{path.name}: {command}"
