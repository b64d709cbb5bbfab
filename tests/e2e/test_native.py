"""The native adapter (issue 23): `dist/libmeshtrace.so`, an Envoy dynamic module, loaded by the
real Envoy 1.40 with the filter contract of docs/native.md. These tests run whatever
MESHTRACE_ADAPTER says; the behaviour files listed in build.sh's NATIVE_E2E run again on the
native adapter in `./build.sh test`."""
from __future__ import annotations

import re
import subprocess
import urllib.request

import pytest

from helpers.harness import (INBOUND, NATIVE_STATS_NAMESPACE, Node, envoy_bin, file_access_log,
                             free_port, http_get, listener, native_filter, native_module_path,
                             static_cluster, wait_until)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
# Span attributes whose values depend on the process (ports, request ids, URLs with ports): their
# keys must match between the adapters, their values cannot.
PER_PROCESS = {"guid:x-request-id", "http.url", "url.full", "network.peer.port", "peer.address",
               "server.port", "upstream_address", "upstream_cluster", "upstream_cluster.name"}


def symbols(path: str, defined: bool) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only" if defined else "--undefined-only", path],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_every_imported_callback_is_exported_by_envoy():
    """`nm -D`: each `envoy_dynamic_module_callback_*` the module needs is defined by the Envoy
    binary the tests run, so the module loads (an unresolved one fails `dlopen`, the listener
    and the proxy with it); and the module exports every hook Envoy's HTTP filter resolves."""
    module = str(native_module_path())
    needed = {s for s in symbols(module, defined=False) if s.startswith("envoy_")}
    assert needed, "the module imports Envoy's callbacks"
    assert all(s.startswith("envoy_dynamic_module_callback_") for s in needed), needed
    missing = needed - symbols(envoy_bin(), defined=True)
    assert not missing, f"callbacks Envoy 1.40 does not export: {sorted(missing)}"
    hooks = {s for s in symbols(module, defined=True) if s.startswith("envoy_dynamic_module_on_")}
    required = {f"envoy_dynamic_module_on_http_filter_{h}" for h in (
        "config_new", "config_destroy", "new", "request_headers", "request_body",
        "request_trailers", "response_headers", "response_body", "response_trailers",
        "stream_complete", "destroy", "http_callout_done", "http_stream_headers",
        "http_stream_data", "http_stream_trailers", "http_stream_complete", "http_stream_reset",
        "scheduled", "config_scheduled", "config_http_callout_done",
        "downstream_above_write_buffer_high_watermark",
        "downstream_below_write_buffer_low_watermark")} | {"envoy_dynamic_module_on_program_init"}
    assert required <= hooks, f"hooks missing: {sorted(required - hooks)}"


def test_the_module_states_its_version_and_abi_when_loaded(stack):
    """At start-up the module logs its version, the ABI it was built for and the Envoy releases
    it runs on (issue 25 item 6); Envoy confirms the ABI matched."""
    car = stack.sidecar({"exporter": {"protocol": "none"}}, adapter="native")
    log = car.envoy.log()
    assert "Dynamic module ABI version v0.2.0 matched" in log
    line = next(l for l in log.splitlines() if "native adapter for Envoy dynamic modules" in l)
    assert re.search(r"meshtrace \d+\.\d+\.\d+ \(\w+\)", line), line
    assert "ABI v0.2.0" in line and "1.40" in line and "1.41" in line, line


def spans_by_kind(spans, trace_id):
    return {s.kind: s for s in spans if s.trace_id == trace_id}


def test_both_adapters_export_the_same_spans_for_the_same_traffic(stack):
    """The same request through a sidecar on each adapter: SERVER and CLIENT spans with the same
    names (ports aside), kinds, attribute keys, attribute values (process-specific ones aside),
    status and resource."""
    config = {"randomSamplingPercentage": 100, "exporter": {"flushInterval": "200ms"}}
    cars = {a: stack.sidecar(config, adapter=a) for a in ("wasm", "native")}
    traces = {"wasm": TRACE, "native": TRACE[::-1]}
    for adapter, car in cars.items():
        status, _ = car.request("/productpage?user=x", {
            "traceparent": f"00-{traces[adapter]}-{PARENT}-01", "user-agent": "parity"})
        assert status == 200
    assert stack.sink is not None
    spans = stack.sink.wait_for_spans(4)
    wasm, native = (spans_by_kind(spans, traces[a]) for a in ("wasm", "native"))
    assert set(wasm) == set(native) == {"SERVER", "CLIENT"}
    unport = re.compile(r":\d+")
    for kind in ("SERVER", "CLIENT"):
        w, n = wasm[kind], native[kind]
        assert unport.sub(":PORT", w.name) == unport.sub(":PORT", n.name), kind
        assert set(w.attributes) == set(n.attributes), \
            f"{kind}: keys only in wasm {set(w.attributes) - set(n.attributes)}, " \
            f"only in native {set(n.attributes) - set(w.attributes)}"
        differing = {k for k in w.attributes
                     if k not in PER_PROCESS and w.attributes[k] != n.attributes[k]}
        assert not differing, {k: (w.attributes[k], n.attributes[k]) for k in differing}
        assert (w.status_code, w.parent_span_id != "") == (n.status_code, n.parent_span_id != "")
        assert w.resource == n.resource, kind
        assert w.scope == n.scope


def test_access_log_filter_state_is_the_context_sent_upstream(stack):
    """`%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%` — the access-log recipe of the Wasm
    plugin — prints, for the native adapter, the ids the upstream received in `traceparent`."""
    upstream = stack.upstream()
    port = free_port()
    log_path = stack.workdir / "access-native.log"
    fmt = ("%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)% %FILTER_STATE(wasm.meshtrace.span_id:PLAIN)% "
           "%FILTER_STATE(wasm.meshtrace.sampled:PLAIN)% %REQ(x-test)%")
    lst = listener("virtualInbound", port, INBOUND, "up",
                   [native_filter({"randomSamplingPercentage": 0, "exporter": {"protocol": "none"}})],
                   access_log=[file_access_log(log_path, fmt)])
    envoy = stack.envoy("native-log", {"node": Node().envoy_node(), "static_resources": {
        "listeners": [lst], "clusters": [static_cluster("up", upstream.port)]}})
    for i, tp in enumerate([f"00-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-00", None]):
        headers = {"x-test": f"r{i}", **({"traceparent": tp} if tp else {})}
        status, _ = http_get(f"http://127.0.0.1:{port}/", headers)
        assert status == 200
        sent = upstream.last().get("traceparent")
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", sent or "")
        assert m, sent

        def line():
            return next((l for l in log_path.read_text().splitlines() if l.endswith(f" r{i}")),
                        None) if log_path.exists() else None
        logged = wait_until(line, 10, f"access log line r{i}").split()
        assert logged[:2] == [m.group(1), m.group(2)], (logged, sent)
        sampled = int(m.group(3), 16) & 1
        assert logged[2] == ("true" if sampled else "false"), (logged, sent)
    envoy.close()


def test_stats_carry_the_wasm_plugins_names_under_the_modules_namespace(stack):
    """The counters are the Wasm plugin's (core/src/metrics.rs), under Envoy's namespace for
    dynamic-module stats instead of `wasmcustom` (Envoy `filter_config.h`
    `CustomStatNamespace`); `meshtrace_native_panics` is the adapter's own."""
    car = stack.sidecar({"randomSamplingPercentage": 100, "exporter": {"protocol": "none"}},
                        adapter="native")
    assert car.request("/")[0] == 200
    names = set(car.envoy._stats("meshtrace"))
    assert f"{NATIVE_STATS_NAMESPACE}.meshtrace_sampling_sampled_percentage" in names
    assert f"{NATIVE_STATS_NAMESPACE}.meshtrace_native_panics" in names
    wait_until(lambda: car.envoy._stats("meshtrace_sampling_sampled").get(
        f"{NATIVE_STATS_NAMESPACE}.meshtrace_sampling_sampled_percentage") == 1, 10,
        "the inbound decision counted")
    assert car.envoy._stats("meshtrace_native_panics")[
        f"{NATIVE_STATS_NAMESPACE}.meshtrace_native_panics"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{car.envoy.admin_port}/stats/prometheus") as r:
        prom = r.read().decode()
    assert re.search(r"^envoy_dynamicmodulescustom_meshtrace_sampling_sampled_percentage\{\} 1$",
                     prom, re.M), "Prometheus: envoy_<namespace>_<name>"


def test_envoy_stops_cleanly_with_the_module_loaded(stack):
    """SIGTERM: the tick thread is joined when Envoy destroys the configurations, nothing
    crashes on the way out."""
    car = stack.sidecar({"randomSamplingPercentage": 100, "exporter": {"flushInterval": "200ms"}},
                        adapter="native")
    for _ in range(20):
        assert car.request("/")[0] == 200
    assert stack.sink is not None
    stack.sink.wait_for_spans(40)
    car.envoy.close()
    log = car.envoy.log_path.read_text(errors="replace")
    assert car.envoy.proc.returncode == 0, log[-3000:]
    assert "Caught" not in log, "no signal caught (segfault, abort)"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_the_collector_accepts_are_counted_exported(stack, protocol):
    """OTLP/HTTP goes as a configuration-level callout; OTLP/gRPC as a configuration-level
    stream, whose trailers carry `grpc-status` (a one-shot callout's answer has none, and a 200
    without it would count delivered spans as failed)."""
    from helpers.harness import Sidecar
    cluster = Sidecar.collector_cluster if protocol == "http/protobuf" else \
        Sidecar.collector_grpc_cluster
    car = stack.sidecar({"randomSamplingPercentage": 100, "exporter": {
        "protocol": protocol, "cluster": cluster, "flushInterval": "200ms"}}, adapter="native")
    for _ in range(3):
        assert car.request("/")[0] == 200
    assert stack.sink is not None
    stack.sink.wait_for_spans(6)
    ns = NATIVE_STATS_NAMESPACE

    def counted():
        stats = car.envoy._stats("meshtrace_")
        return stats if stats.get(f"{ns}.meshtrace_spans_exported") == 6 else None
    stats = wait_until(counted, 10, "6 spans counted exported")
    assert stats[f"{ns}.meshtrace_export_failures"] == 0
    assert stats[f"{ns}.meshtrace_spans_dropped_export_failed"] == 0
