"""What the chart installs for plugin.runtime native, run on a real Envoy: the EnvoyFilter's patch
value (rendered by the chart, unchanged) becomes the HTTP filter of an inbound and an outbound
listener, ENVOY_DYNAMIC_MODULES_SEARCH_PATH points at the module's directory as the injection
template does, and a request is traced through both. Then what happens where the EnvoyFilter
reaches a proxy WITHOUT the module — Envoy rejects the whole listener — and that `doctor` says so.

The module is dist/libmeshtrace.so (MESHTRACE_NATIVE overrides), built by the native crate."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from helpers.harness import (INBOUND, OUTBOUND, Node, free_port, http_get, listener,
                             static_cluster, wait_until)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "meshtrace"
COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
VALUES = {"istioVersion": "1.31", "tracing": {"randomSamplingPercentage": 100},
          "plugin": {"runtime": "native", "scope": "namespaces", "namespaces": ["default"]},
          "native": {"image": "registry.example.com/meshtrace-native@sha256:" + "ab" * 32}}


def native_module() -> Path:
    p = Path(os.environ.get("MESHTRACE_NATIVE", ROOT / "dist" / "libmeshtrace.so"))
    assert p.is_file(), f"{p} is missing: build the native module first (native/)"
    return p


def chart_filters(values: dict) -> dict[str, dict]:
    """The HTTP filter each context's patch inserts, as the chart renders it (one EnvoyFilter)."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="meshtrace", namespace="observability")
    (f,) = [d for d in yaml.safe_load_all(out["meshtrace/templates/native.yaml"])
            if d and d["kind"] == "EnvoyFilter" and d["metadata"]["name"] == "meshtrace"]
    return {p["match"]["context"]: p["patch"]["value"] for p in f["spec"]["configPatches"]}


# What istio-agent's bootstrap keeps of Envoy's stats: an inclusion list (istio/istio
# pkg/bootstrap/config.go requiredEnvoyStatsMatcherInclusionPrefixes and the "reporter=" prefix of
# Istio's own metrics); every other stat is never created.
ISTIO_STATS_CONFIG = {"stats_matcher": {"inclusion_list": {"patterns": [
    {"prefix": p} for p in ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc",
                            "wasm", "reporter=")]}}}


def istio_node() -> dict:
    """A sidecar's node as istio-agent writes it, from an Istio whose proxy has the extension."""
    node = Node().envoy_node()
    node["metadata"]["ISTIO_VERSION"] = "1.31.0"
    return node


def doctor(tmp_path: Path, dump: dict, stats: str | None = None) -> tuple[int, str]:
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    args = [str(ROOT / "build.sh"), "doctor", str(tmp_path / "dump.json")]
    if stats is not None:
        (tmp_path / "stats.txt").write_text(stats)
        args.append(str(tmp_path / "stats.txt"))
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_the_chart_filter_traces_a_request_through_a_sidecar(stack, tmp_path):
    """inbound (SERVER span) → app → outbound (CLIENT span) → upstream, the module loaded from
    the search path the injection template sets."""
    filters = chart_filters(VALUES)
    modules = tmp_path / "modules"
    modules.mkdir()
    shutil.copy(native_module(), modules / "libmeshtrace.so")
    upstream = stack.upstream()
    inbound, outbound = free_port(), free_port()
    app = stack.upstream(forward_to=f"http://127.0.0.1:{outbound}")
    out_host = "reviews.default.svc.cluster.local"
    bootstrap = {"node": istio_node(), "stats_config": ISTIO_STATS_CONFIG, "static_resources": {
        "listeners": [
            listener("virtualInbound", inbound, INBOUND, f"inbound|{app.port}||",
                     [filters["SIDECAR_INBOUND"]], route_name="inbound|9080||"),
            listener("virtualOutbound", outbound, OUTBOUND, f"outbound|9080||{out_host}",
                     [filters["SIDECAR_OUTBOUND"]], route_name="9080")],
        "clusters": [static_cluster(f"inbound|{app.port}||", app.port),
                     static_cluster(f"outbound|9080||{out_host}", upstream.port),
                     static_cluster(COLLECTOR, stack.collector.http_port)]}}
    envoy = stack.envoy("native-sidecar", bootstrap,
                        env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(modules)})
    status, _ = http_get(f"http://127.0.0.1:{inbound}/productpage")
    assert status == 200
    spans = stack.sink.wait_for_spans(2)
    server = [s for s in spans if s.kind == "SERVER"]
    client = [s for s in spans if s.kind == "CLIENT"]
    assert len(server) == 1 and len(client) == 1, spans
    assert client[0].trace_id == server[0].trace_id, "one trace through the sidecar"
    sent = upstream.last().get("traceparent")
    assert sent is not None and server[0].trace_id in sent, "the module's context went upstream"
    # Under the Wasm plugin's names, which Istio's stats inclusion keeps.
    wait_until(lambda: envoy.stat("wasmcustom.meshtrace_spans_exported"), 15,
               "wasmcustom.meshtrace_spans_exported > 0 with Istio's stats inclusion list")
    code, out = doctor(tmp_path, envoy.config_dump(), envoy.stats_text())
    assert code == 0, out
    assert "meshtrace runs as the Envoy dynamic module" in out and "Envoy 1.40" in out, out
    # The module's own start-up line names the Envoy versions doctor checks against.
    (started,) = [line for line in envoy.log().splitlines()
                  if "dynamic_modules" in line and "ABI" in line and "meshtrace" in line]
    assert "(1.40)" in started and "(1.41)" in started, started
    assert "(1.40 and 1.41)" in out, "doctor and the module agree"


def lds_envoy(stack, tmp_path: Path, http_filter: dict, search_path: Path):
    """A sidecar whose inbound listener comes over LDS (a file, as Istio's come over xDS): a
    rejected listener leaves Envoy running, as in a pod."""
    up = stack.upstream()
    port = free_port()
    lst = listener("virtualInbound", port, INBOUND, f"inbound|{up.port}||", [http_filter])
    lds = tmp_path / "lds.json"
    lds.write_text(json.dumps({"resources": [{"@type": LISTENER_TYPE, **lst}]}))
    bootstrap = {"node": istio_node(),
                 "dynamic_resources": {"lds_config": {"resource_api_version": "V3",
                                                      "path_config_source": {"path": str(lds)}}},
                 "static_resources": {"clusters": [static_cluster(f"inbound|{up.port}||", up.port)]}}
    envoy = stack.envoy("native-lds", bootstrap,
                        env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(search_path)})
    wait_until(lambda: envoy.stat("listener_manager.lds.update_rejected")
               + envoy.stat("listener_manager.total_listeners_active"), 15, "the LDS update")
    return envoy, port


def test_a_proxy_without_the_module_loses_the_whole_listener_and_doctor_says_so(bare_stack, tmp_path):
    """The failure the chart's label gate prevents: the EnvoyFilter reached a pod whose search
    path has no libmeshtrace.so. Not untraced — unreachable."""
    empty = tmp_path / "no-module"
    empty.mkdir()
    envoy, port = lds_envoy(bare_stack, tmp_path, chart_filters(VALUES)["SIDECAR_INBOUND"], empty)
    assert envoy.stat("listener_manager.lds.update_rejected") == 1
    assert envoy.stat("listener_manager.total_listeners_active") == 0
    with pytest.raises(ConnectionRefusedError):
        http_get(f"http://127.0.0.1:{port}/")
    assert "libmeshtrace.so not found in any search path" in envoy.log()
    code, out = doctor(tmp_path, envoy.config_dump(), envoy.stats_text())
    assert code == 1, out
    assert "listener virtualInbound was REJECTED: libmeshtrace.so is not on this proxy" in out, out
    assert "inject.istio.io/templates: sidecar,meshtrace" in out, "what to do about it"
    assert "lds.update_rejected = 1" in out, out
    assert "Traceback" not in out


def test_doctor_checks_the_envoy_and_istio_versions_the_module_supports(bare_stack, tmp_path):
    """The same real dump with the versions a proxy reports changed: Envoy writes its own into
    node.user_agent_build_version, istio-agent ISTIO_VERSION into node.metadata."""
    empty = tmp_path / "no-module"
    empty.mkdir()
    envoy, _ = lds_envoy(bare_stack, tmp_path, chart_filters(VALUES)["SIDECAR_INBOUND"], empty)
    dump = envoy.config_dump()
    code, out = doctor(tmp_path, dump)
    assert "Envoy 1.40: one meshtrace's native module supports (1.40 and 1.41)" in out, out

    def with_versions(envoy_minor: int, istio: str) -> dict:
        d = json.loads(json.dumps(dump))
        for c in d["configs"]:
            if c["@type"].endswith("BootstrapConfigDump"):
                node = c["bootstrap"]["node"]
                node["user_agent_build_version"]["version"]["minor_number"] = envoy_minor
                node["metadata"]["ISTIO_VERSION"] = istio
        return d
    code, out = doctor(tmp_path, with_versions(38, "1.31.0"))
    assert code == 1 and "Envoy 1.38 is not one meshtrace's native module supports" in out, out
    code, out = doctor(tmp_path, with_versions(41, "1.30.2"))
    assert "Envoy 1.41: one meshtrace's native module supports" in out, out
    assert "istio-proxy 1.30 has no dynamic-modules extension" in out, out


@pytest.mark.parametrize("labels, hint", [
    ({"app": "productpage"}, "inject.istio.io/templates: sidecar,meshtrace"),  # not opted in
    ({"app": "productpage", "meshtrace.io/module": "native"}, "this pod has the module"),
], ids=["not-opted-in", "opted-in-no-filter"])
def test_doctor_on_a_pod_without_the_native_filter_says_what_to_check(bare_stack, tmp_path, labels, hint):
    """A sidecar no EnvoyFilter reached: doctor tells the opt-in apart from a filter that did
    not arrive, from the pod labels istio-agent puts in the node."""
    up = bare_stack.upstream()
    node = istio_node()
    node["metadata"]["LABELS"] = labels
    bootstrap = {"node": node, "static_resources": {
        "listeners": [listener("virtualInbound", free_port(), INBOUND, f"inbound|{up.port}||", [])],
        "clusters": [static_cluster(f"inbound|{up.port}||", up.port)]}}
    envoy = bare_stack.envoy("no-filter", bootstrap)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1 and "meshtrace's filter is in none of the 1 HTTP" in out, out
    assert hint in out, out


# What Envoy 1.40 says when libmeshtrace.so is on a noexec mount (recorded with a noexec tmpfs as
# the search path; a Kubernetes image volume is mounted noexec, KEP-4639).
NOEXEC = ("Failed to load dynamic module: Failed to load dynamic module: {dir}/libmeshtrace.so : "
          "{dir}/libmeshtrace.so: failed to map segment from shared object")


def test_doctor_tells_a_noexec_mount_from_a_missing_module(bare_stack, tmp_path):
    """The same rejected listener, with the reason Envoy gives when the file is there but on a
    noexec mount: doctor points at the delivery, not at the opt-in."""
    empty = tmp_path / "no-module"
    empty.mkdir()
    envoy, _ = lds_envoy(bare_stack, tmp_path, chart_filters(VALUES)["SIDECAR_INBOUND"], empty)
    dump = envoy.config_dump()
    for c in dump["configs"]:
        for lst in c.get("dynamic_listeners", []):
            if "error_state" in lst:
                lst["error_state"]["details"] = NOEXEC.format(dir="/var/lib/meshtrace")
    code, out = doctor(tmp_path, dump)
    assert code == 1, out
    assert "is there but on a noexec mount" in out and "native.delivery initContainer" in out, out
    assert "inject.istio.io/templates" not in out, "not the opt-in's fault"
