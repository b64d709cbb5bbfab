"""`./build.sh doctor` on the configuration dumps and stats of real Envoys: a healthy sidecar,
Envoy's tracer left on (the traceparent overwrite), a missing export cluster, gRPC export over
an HTTP/1.1 cluster, no plugin at all, and the plugin delivered by ECDS as Istio does — loaded,
and replaced by the agent's allow-all RBAC filter after a failed fetch (FAIL_OPEN)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.harness import (INBOUND, free_port, listener, plugin_filter, static_cluster,
                             wait_until, wasm_path)
from helpers.product import DOCTOR

ROOT = Path(__file__).resolve().parents[2]
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
CONFIG = {"randomSamplingPercentage": 100}


def doctor(tmp_path: Path, dump: dict, stats: str | None = None) -> tuple[int, str]:
    """Runs the command a user runs, on files, as `./build.sh doctor` does."""
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    args = [str(ROOT / "build.sh"), "doctor", str(tmp_path / "dump.json")]
    if stats is not None:
        (tmp_path / "stats.txt").write_text(stats)
        args.append(str(tmp_path / "stats.txt"))
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def traffic_until_exported(side) -> None:
    side.request("/")
    wait_until(lambda: sum(v for k, v in side.envoy.stats("meshtrace_spans_exported").items()), 15,
               "meshtrace_spans_exported > 0")


def single_listener_envoy(stack, http_filters: list[dict], tracing: dict | None = None,
                          extra_clusters: list[dict] | None = None):
    """One inbound listener in front of an upstream, with the given HTTP filters."""
    up = stack.upstream()
    port = free_port()
    clusters = [static_cluster(f"inbound|{up.port}||", up.port)] + (extra_clusters or [])
    if stack.collector is not None:
        clusters.append(static_cluster(
            "outbound|4318||opentelemetry-collector.observability.svc.cluster.local",
            stack.collector.http_port))
    bootstrap = {"node": {"id": "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local",
                          "cluster": "app.default"},
                 "static_resources": {
                     "listeners": [listener("virtualInbound", port, INBOUND, f"inbound|{up.port}||",
                                            http_filters, tracing=tracing)],
                     "clusters": clusters}}
    return stack.envoy(f"doctor-{port}", bootstrap), port


def test_healthy_sidecar(stack, tmp_path):
    side = stack.sidecar(CONFIG)
    traffic_until_exported(side)
    code, out = doctor(tmp_path, side.envoy.config_dump(), side.envoy.stats_text())
    assert code == 0, out
    assert "meshtrace's filter is in 2 of 2 HTTP connection managers" in out
    assert "Envoy's own tracer is off" in out
    assert "spans are exported" in out
    assert "No problem found." in out


def test_a_waypoint_with_meshtrace(stack, tmp_path):
    """The e2e waypoint (tests/helpers/ambient.py): recognised, its main_internal listener checked."""
    from helpers.ambient import Ambient
    ambient = Ambient(stack, {"gateway": {"randomSamplingPercentage": 100},
                              "waypoint": {"randomSamplingPercentage": 100}})
    assert ambient.request("/productpage")[0] == 200
    code, out = doctor(tmp_path, ambient.waypoint.config_dump())
    assert "a waypoint (ambient mode)" in out, out
    assert "listeners: main_internal" in out, out
    assert code == 0, out


def test_envoy_tracer_still_on_is_the_overwrite_conflict(stack, tmp_path):
    tracing = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "http_service": {"http_uri": {
            "uri": "http://collector/v1/traces", "timeout": "1s",
            "cluster": "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"}},
        "service_name": "app.default"}}}
    envoy, _ = single_listener_envoy(stack, [plugin_filter(wasm_path(), CONFIG)], tracing=tracing)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1, out
    assert "Envoy's own tracer is still on where meshtrace runs: virtualInbound " \
           "(envoy.tracers.opentelemetry)" in out
    assert "OLDEST selector-less Telemetry" in out


def test_missing_export_cluster(stack, tmp_path):
    wrong = "outbound|4318||opentelemetry-collector.tracing.svc.cluster.local"
    side = stack.sidecar({**CONFIG, "exporter": {"cluster": wrong}})
    side.request("/")
    code, out = doctor(tmp_path, side.envoy.config_dump(), side.envoy.stats_text())
    assert code == 1, out
    assert f"export cluster {wrong} does not exist" in out
    assert "similar clusters: outbound|4317||opentelemetry-collector.observability" in out


def test_grpc_export_over_an_http1_cluster(stack, tmp_path):
    http1 = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
    side = stack.sidecar({**CONFIG, "exporter": {"protocol": "grpc", "cluster": http1}})
    code, out = doctor(tmp_path, side.envoy.config_dump())
    assert code == 1, out
    assert "speaks HTTP/1.1 but exporter.protocol is grpc" in out


def test_two_meshtrace_filters_in_one_chain(stack, tmp_path):
    """A root-namespace plugin plus a gateway/namespace one on the same proxy: WasmPlugins add
    up, so the chain holds two filters and every request gets two spans."""
    filters = [plugin_filter(wasm_path(), CONFIG, vm_id="mesh"),
               plugin_filter(wasm_path(), CONFIG, vm_id="gateway")]
    filters[1]["name"] = "istio.meshtrace-gateway"
    envoy, _ = single_listener_envoy(stack, filters)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1, out
    assert "2 meshtrace filters in one chain" in out


def test_no_plugin(stack, tmp_path):
    envoy, _ = single_listener_envoy(stack, [])
    code, out = doctor(tmp_path, envoy.config_dump(), envoy.stats_text())
    assert code == 1, out
    assert "meshtrace's filter is in none of the 1 HTTP connection managers" in out


def ecds_envoy(stack, tmp_path, typed_config: dict, name: str = "istio-system.meshtrace"):
    """The filter as Istio delivers a WasmPlugin: by ECDS under the name `<ns>.<name>` (here from
    a file instead of istiod's ADS; the dump has the same EcdsConfigDump shape)."""
    path = tmp_path / f"ecds-{free_port()}.json"
    path.write_text(json.dumps({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name, "typed_config": typed_config}]}))
    discovered = {"name": name, "config_discovery": {
        "config_source": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"},
        "type_urls": [WASM_TYPE, RBAC_TYPE]}}
    envoy, port = single_listener_envoy(stack, [discovered])
    wait_until(lambda: "EcdsConfigDump" in json.dumps(envoy.config_dump()), 15, "ECDS applied")
    return envoy, port


def test_plugin_delivered_by_ecds(stack, tmp_path):
    envoy, port = ecds_envoy(stack, tmp_path, plugin_filter(wasm_path(), CONFIG)["typed_config"])
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 0, out
    assert "meshtrace's filter is in 1 of 1" in out


def test_failed_fetch_replaced_by_allow_all(stack, tmp_path):
    """What istio-agent sends in place of a module it could not fetch or verify under
    FAIL_OPEN (istio/istio pkg/wasm/convert.go: RBAC without rules, stat prefix
    wasm-default-allow) — e.g. spec.sha256 set to the wasm's hash instead of the manifest's."""
    allow_all = {"@type": RBAC_TYPE, "rules_stat_prefix": "wasm-default-allow"}
    envoy, _ = ecds_envoy(stack, tmp_path, allow_all)
    agent = 'istio_agent_wasm_remote_fetch_count{result="checksum_mismatched"} 3\n'
    code, out = doctor(tmp_path, envoy.config_dump(), envoy.stats_text() + agent)
    assert code == 1, out
    assert "meshtrace failed to load: Istio's agent put an allow-all filter" in out
    assert "rejected the module 3 time(s) as checksum_mismatched" in out


def test_unreadable_input_is_exit_2(tmp_path):
    (tmp_path / "dump.json").write_text("not json")
    out = subprocess.run([sys.executable, str(DOCTOR), str(tmp_path / "dump.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read" in out.stderr


# Istio's istioctl test dumps are read at test time from a local istio/istio clone
# (MESHTRACE_ISTIO_GIT; never committed here). Without a clone these cases are not collected —
# CI never skips — and `MESHTRACE_ISTIO_GIT=PATH ./build.sh e2e tests/e2e/test_doctor.py` runs them.
ISTIO_GIT = Path(os.environ.get("MESHTRACE_ISTIO_GIT", "/work/.mirror/istio+istio/repo"))
ISTIO_DUMPS = ["istioctl/pkg/proxyconfig/testdata/config_dump.json",
               "istioctl/pkg/writer/compare/testdata/configdump.json",
               "istioctl/pkg/writer/envoy/configdump/testdata/ecds/configdump.json"]


def _istio_dump(path: str) -> str | None:
    if not ISTIO_GIT.exists():
        return None
    out = subprocess.run(["git", f"--git-dir={ISTIO_GIT}", "show", f"HEAD:{path}"],
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


_AVAILABLE = {p: text for p in ISTIO_DUMPS if (text := _istio_dump(p)) is not None}

if _AVAILABLE:
    @pytest.mark.parametrize("path", sorted(_AVAILABLE))
    def test_istios_own_config_dumps(path, tmp_path):
        """Real Istio shapes without meshtrace → one clear problem, no crash."""
        code, out = doctor(tmp_path, json.loads(_AVAILABLE[path]))
        assert code == 1, out
        # The ECDS dump holds another team's Wasm filter only: not mistaken for meshtrace.
        assert "meshtrace's filter is in none of" in out or "no HTTP connection manager" in out
        assert "Traceback" not in out
        if path == "istioctl/pkg/proxyconfig/testdata/config_dump.json":
            # istioctl's waypoint dump (node waypoint~…, main_internal): recognised, and told
            # that a waypoint takes the plugin through targetRefs only.
            assert "a waypoint (ambient mode)" in out, out
            assert "only through targetRefs" in out, out
