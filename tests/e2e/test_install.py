"""What the chart installs, run on a real Envoy: the WasmPlugin's `vmConfig.env` becomes Envoy's
`vm_config.environment_variables.host_env_keys` (istio/istio pilot/pkg/model/extensions.go
`buildVMConfig`: HOST entries → host_env_keys, INLINE → key_values), and only those host
variables reach `customTags.*.environment` inside the VM."""
from __future__ import annotations

from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "meshtrace"


def rendered_wasmplugin(values: dict) -> dict:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="meshtrace", namespace="observability")
    docs = [d for d in yaml.safe_load_all(out["meshtrace/templates/wasmplugin.yaml"]) if d]
    (plugin,) = [d for d in docs if d["kind"] == "WasmPlugin" and d["metadata"]["name"] == "meshtrace"]
    return plugin["spec"]


def host_env_keys(spec: dict) -> tuple[str, ...]:
    """Istio's translation of vmConfig.env (buildVMConfig): HOST entries, in order."""
    return tuple(e["name"] for e in spec.get("vmConfig", {}).get("env", [])
                 if e.get("valueFrom") == "HOST")


TAGS = {"pod": {"environment": {"name": "MESHTRACE_E2E_POD", "defaultValue": "unset"}},
        "node": {"environment": {"name": "MESHTRACE_E2E_NODE", "defaultValue": "unset"}}}
HOST_ENV = {"MESHTRACE_E2E_POD": "productpage-v1-abc12", "MESHTRACE_E2E_NODE": "node-7"}


def test_chart_environment_tags_reach_the_span_through_host_env_keys(stack):
    spec = rendered_wasmplugin({"plugin": {"config": {"customTags": TAGS}}})
    keys = host_env_keys(spec)
    assert set(keys) == set(HOST_ENV), "one HOST entry per environment tag"
    config = dict(spec["pluginConfig"], randomSamplingPercentage=100)
    side = stack.sidecar(config, host_env_keys=keys, env=HOST_ENV)
    status, _ = side.request("/")
    assert status == 200
    (span,) = stack.sink.wait_for_spans(1, where=lambda s: s.kind == "SERVER")
    assert span.attributes["pod"] == HOST_ENV["MESHTRACE_E2E_POD"]
    assert span.attributes["node"] == HOST_ENV["MESHTRACE_E2E_NODE"]


def test_without_host_env_keys_the_vm_sees_no_host_variable(stack):
    """The failure the chart prevents: the variable is in Envoy's environment, the WasmPlugin
    does not list it, the tag silently takes its default."""
    config = {"randomSamplingPercentage": 100, "customTags": TAGS}
    side = stack.sidecar(config, env=HOST_ENV)
    status, _ = side.request("/")
    assert status == 200
    (span,) = stack.sink.wait_for_spans(1, where=lambda s: s.kind == "SERVER")
    assert span.attributes["pod"] == "unset"
    assert span.attributes["node"] == "unset"
