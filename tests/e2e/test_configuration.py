"""Bad configuration never takes traffic down. The plugin is delivered the way Istio delivers a
WasmPlugin — an extension config (ECDS) — here from a watched file, so a configuration can be
replaced while Envoy runs. Each bad configuration must log one error line naming the key, be
rejected, and leave Envoy serving with the last good configuration still tracing."""
import json
import os
import re

import pytest

from helpers.harness import (INBOUND, Node, Stack, http_get, free_port, listener, plugin_filter,
                             static_cluster, wait_until, wasm_path)

FILTER = "istio.meshtrace"
TP = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$")

GOOD = {"randomSamplingPercentage": 100, "exporter": {"protocol": "none"}}

# (raw pluginConfig, text the error line must contain, reason)
BAD = [
    ('{"randomSamplingPercentage": "ten"}', "randomSamplingPercentage", "wrong type"),
    ('{"randomSamplingPercentage": 150}', "randomSamplingPercentage", "percentage out of range"),
    ('{"sampling": {"rules": [{"sample": 101}]}}', "sampling.rules[0].sample", "rule percentage out of range"),
    ('{"tracingServiceName": "APP_LABEL"}', "tracingServiceName", "unknown naming mode"),
    ('{"exporter": {"protocol": "thrift"}}', "exporter.protocol", "unknown protocol"),
    ('{"exporter": {"protocoll": "grpc"}}', "exporter.protocoll", "unknown key, typo"),
    ('{"exporter": {"cluster": ""}}', "exporter.cluster", "empty cluster"),
    ('{"exporter": {"timeout": "soon"}}', "exporter.timeout", "not a duration"),
    ('{"sampling": {"forceHeader": "X-Force"}}', "sampling.forceHeader", "header names are lowercase"),
    ('{"propagation": {"inject": ["jaeger"]}}', "propagation.inject", "unknown propagator"),
    ('{"randomSamplingPercentage": 10,', "invalid meshtrace configuration", "malformed JSON"),
    ('[1, 2]', "must be a JSON object", "not an object"),
]


class EcdsProxy:
    """An Envoy whose single listener gets the plugin from a watched ECDS file. `upstream_port`
    and `clusters` replace the default app and add clusters (e.g. a collector)."""

    def __init__(self, stack: Stack, upstream_port: int | None = None,
                 clusters: list[dict] = (), name: str = "ecds") -> None:
        self.upstream = None if upstream_port else stack.upstream()
        upstream_port = upstream_port or self.upstream.port
        self.dir = stack.workdir / "ecds"
        self.dir.mkdir()
        self.path = self.dir / "meshtrace.json"
        self.version = 0
        self.set_config(self.initial_config())
        self.port = free_port()
        hcm_filter = {"name": FILTER, "config_discovery": {
            "config_source": {"path_config_source": {"path": str(self.path),
                                                     "watched_directory": {"path": str(self.dir)}},
                              "resource_api_version": "V3"},
            "type_urls": [plugin_filter(wasm_path(), GOOD)["typed_config"]["@type"]]}}
        bootstrap = {
            "node": Node(app="productpage").envoy_node(),
            "static_resources": {
                "listeners": [listener("virtualInbound", self.port, INBOUND, "inbound|9080||",
                                       [hcm_filter])],
                "clusters": [static_cluster("inbound|9080||", upstream_port), *clusters],
            },
        }
        self.envoy = stack.envoy(name, bootstrap)

    def initial_config(self) -> str:
        return json.dumps(GOOD)

    def set_config(self, raw: str) -> None:
        """Replaces the extension config the way a control plane would: atomically."""
        self.version += 1
        wasm = plugin_filter(wasm_path(), raw)["typed_config"]
        response = {"version_info": str(self.version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": FILTER, "typed_config": wasm}]}
        tmp = self.dir / f".tmp-{self.version}"
        tmp.write_text(json.dumps(response))
        os.replace(tmp, self.path)

    def ecds(self, what: str) -> int:
        return self.envoy.stats("extension_config_discovery").get(
            f"extension_config_discovery.http_filter.{FILTER}.{what}", 0)

    def traced_request(self) -> str:
        """Sends a request without context; returns the traceparent the upstream received."""
        before = len(self.upstream.received)
        status, _ = http_get(f"http://127.0.0.1:{self.port}/productpage")
        assert status == 200, "traffic keeps flowing"
        return self.upstream.received[before].get("traceparent") or ""


@pytest.fixture(scope="module")
def proxy():
    with Stack(collector=False) as stack:
        p = EcdsProxy(stack)
        wait_until(lambda: p.ecds("config_reload") >= 1, 20, "the first extension config")
        yield p


def test_good_configuration_is_applied(proxy):
    assert TP.match(proxy.traced_request()), "the plugin writes a traceparent"
    assert proxy.traced_request().endswith("-03"), "sampled at 100%, random flag"


@pytest.mark.parametrize("raw,key,reason", BAD, ids=[b[2] for b in BAD])
def test_bad_configuration_is_rejected_and_the_last_good_one_kept(proxy, raw, key, reason):
    failures = proxy.ecds("config_fail")
    log_before = len(proxy.envoy.log())
    proxy.set_config(raw)
    wait_until(lambda: proxy.ecds("config_fail") > failures, 20, f"{reason}: the update rejected")
    new_log = proxy.envoy.log()[log_before:]
    errors = [line for line in new_log.splitlines()
              if "invalid meshtrace configuration" in line or "must be a JSON object" in line]
    assert len(errors) == 1, f"{reason}: exactly one error line from the plugin, got {errors}"
    assert key in errors[0], f"{reason}: the line names `{key}`: {errors[0]}"
    assert proxy.traced_request().endswith("-03"), \
        f"{reason}: Envoy still serves, traced by the last good configuration"


def test_unknown_export_cluster_is_named_once_and_traffic_flows(stack):
    car = stack.sidecar({"randomSamplingPercentage": 100,
                         "exporter": {"cluster": "outbound|4318||no-such-collector.ns.svc.cluster.local",
                                      "flushInterval": "50ms"}})
    for _ in range(20):
        status, _ = car.request("/productpage")
        assert status == 200, "a wrong cluster never fails a request"
    wait_until(lambda: car.envoy.stat("wasmcustom.meshtrace_spans_dropped_export_failed") == 40, 10,
               "every span dropped and counted")
    lines = [line for line in car.envoy.log().splitlines() if "exporter.cluster" in line]
    assert len(lines) == 1, f"one warning, not one per batch: {lines}"
    assert "no-such-collector" in lines[0]
