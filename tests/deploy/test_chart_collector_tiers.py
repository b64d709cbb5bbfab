"""The collector scaled out in two tiers (issue 26), rendered rather than described: behind
`collector.tailSampling.enabled`, the chart's collector becomes the standard first tier of the
OpenTelemetry Collector's scaling pattern — the `loadbalancing` exporter keyed by trace id, so every
span of a trace reaches the same second-tier collector — in front of a headless Service and a
tail-sampling tier that exports to the backend. The plugin's own capture and sampling rules stay
the first decision, before either tier. Every object is validated as test_chart.py does
(kubernetes-validate --strict for core kinds, Istio CRD schemas)."""
from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml

from test_chart import (CHART, CORE_KINDS, ISTIO_KINDS, K8S_VERSION, by_kind, crd_schemas,  # noqa: F401
                        merged, render, values_of)

VALUES = values_of(CHART / "ci" / "two-tier-values.yaml")


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def config_of(docs: list[dict], name: str) -> dict:
    return yaml.safe_load(named(docs, "ConfigMap", name)["data"]["config.yaml"])


@pytest.fixture(scope="module")
def tiers() -> list[dict]:
    return render(VALUES)


def test_every_object_of_both_tiers_is_valid(tiers, crd_schemas):
    kinds = {d["kind"] for d in tiers}
    assert kinds <= CORE_KINDS | ISTIO_KINDS
    for doc in tiers:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        elif doc["kind"] in ISTIO_KINDS:
            jsonschema.validate(doc, crd_schemas[(doc["apiVersion"], doc["kind"])])


def test_the_first_tier_routes_every_span_of_a_trace_to_one_sampler(tiers):
    v = merged(VALUES)
    c = v["collector"]
    ns = "observability"
    first = config_of(tiers, c["name"])
    lb = first["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID", "every span of a trace to the same second-tier collector"
    assert lb["protocol"]["otlp"]["tls"]["insecure"] is True, "the second tier has no sidecar: plain text"
    headless = named(tiers, "Service", f"{c['name']}-sampling")
    assert headless["spec"]["clusterIP"] == "None", "DNS answers with every pod, not one virtual IP"
    resolver = lb["resolver"]["dns"]
    assert resolver["hostname"] == f"{headless['metadata']['name']}.{ns}.svc.{v['clusterDomain']}"
    (port,) = headless["spec"]["ports"]
    assert int(resolver["port"]) == port["port"] == 4317
    pipeline = first["service"]["pipelines"]["traces"]
    assert pipeline["exporters"] == ["loadbalancing"], "the backend is the second tier's job"
    assert "tail_sampling" not in first.get("processors", {}), "the first tier stays stateless"
    env = {e["name"] for e in named(tiers, "Deployment", c["name"])["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "BACKEND_AUTH" not in env, "the backend token only where the backend is called"


def test_the_second_tier_samples_whole_traces_and_exports_to_the_backend(tiers):
    c = merged(VALUES)["collector"]
    name = f"{c['name']}-sampling"
    second = config_of(tiers, name)
    pipeline = second["service"]["pipelines"]["traces"]
    assert pipeline["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    tail = second["processors"]["tail_sampling"]
    assert tail["decision_wait"] == c["tailSampling"]["decisionWait"]
    assert tail["policies"] == c["tailSampling"]["policies"]
    assert pipeline["exporters"] == ["otlp/backend"]
    assert second["exporters"]["otlp/backend"]["endpoint"] == c["backend"]["endpoint"]
    assert set(second["receivers"]["otlp"]["protocols"]) == {"grpc"}
    deploy = named(tiers, "Deployment", name)
    pod = deploy["spec"]["template"]
    headless = named(tiers, "Service", name)
    assert headless["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert set(headless["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    assert deploy["spec"]["replicas"] == c["tailSampling"]["replicas"]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["BACKEND_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == c["backend"]["auth"]["existingSecret"]
    assert env["GOMEMLIMIT"]["value"] == "819MiB", "80% of the tier's own 1Gi limit"


def test_each_tier_has_its_disruption_budget(tiers):
    c = merged(VALUES)["collector"]
    for name in (c["name"], f"{c['name']}-sampling"):
        pdb = named(tiers, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"] == \
            named(tiers, "Deployment", name)["spec"]["selector"]["matchLabels"], name


def test_the_tiers_never_select_each_others_pods(tiers):
    c = merged(VALUES)["collector"]
    first = named(tiers, "Service", c["name"])["spec"]["selector"]
    second_pods = named(tiers, "Deployment", f"{c['name']}-sampling")["spec"]["template"]["metadata"]["labels"]
    assert not set(first.items()) <= set(second_pods.items()), \
        "the proxies' export Service must not send spans straight to the samplers"


def test_the_plugin_still_exports_to_the_first_tier(tiers):
    c = merged(VALUES)["collector"]
    for plugin in by_kind(tiers, "WasmPlugin"):
        cluster = plugin["spec"]["pluginConfig"]["exporter"]["cluster"]
        assert cluster.split("|")[3].startswith(f"{c['name']}.observability.svc"), cluster


def test_one_tier_by_default():
    docs = render({})
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == ["opentelemetry-collector"]
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    assert "loadbalancing" not in config["exporters"]


@pytest.mark.parametrize("values, reason", [
    ({"collector": {"tailSampling": {"enabled": True, "replicas": 0}}}, "a tier of at least one"),
    ({"collector": {"tailSampling": {"enabled": True, "policies": []}}}, "no policy would sample nothing"),
    ({"collector": {"tailSampling": {"enabled": True, "decisionWait": "ten"}}}, "a duration"),
    ({"collector": {"tailSampling": {"enable": True}}}, "unknown key"),
])
def test_values_schema_refuses_bad_tiers(values, reason):
    import helm_python as helm
    with pytest.raises(helm.HelmError):
        render(values)
        pytest.fail(reason)
