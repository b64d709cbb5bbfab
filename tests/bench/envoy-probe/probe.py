"""Runs the probe module (tests/bench/envoy-probe) in the e2e sidecar on the real Envoy and prints
what it logged. Two modes:

    python tests/bench/envoy-probe/probe.py answers   # what Envoy answers at the end of a stream
    python tests/bench/envoy-probe/probe.py timing    # host calls timed from inside the VM
    python tests/bench/envoy-probe/probe.py instructions   # each host call's instructions

`instructions` counts, under callgrind (tests/bench/instructions.py), the real Envoy's
instructions per request with the probe making each kind of host call CALLS times per request,
silent otherwise, against the probe making none: what one crossing costs Envoy and V8 in
instructions, load-independent (the µs of `timing` move with the machine).

`answers` lists each property of meshtrace's end-of-stream facts (and a few more) and CEL
expressions, guarded and not, in `proxy_on_log` and in `proxy_on_done`; `timing` reads the
seven properties a default sidecar span needs one by one against meshtrace's CEL expression
(src/proxy_host.rs CEL_FACTS, as a default sidecar compiles it), 2,000 rounds each, and times set_property, the header
map read, a header write and the clock. Figures for a reader; this machine's noise applies.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))

PROPERTIES = ["xds.cluster_name", "xds.route_name", "xds.listener_direction",
              "request.protocol", "request.size", "request.total_size", "request.time",
              "request.duration", "response.code", "response.code_details", "response.flags",
              "response.grpc_status", "response.size", "response.total_size", "source.address",
              "upstream.address", "xds.upstream_host_metadata.filter_metadata.istio.workload",
              "filter_state.io@istio@peer_principal", "filter_state.downstream_peer_obj.workload"]
EXPRESSIONS = [
    "[xds.cluster_name, request.protocol, response.flags, source.address, upstream.address]",
    "[has(upstream.address) ? upstream.address : '', has(response.code_details) ? "
    "response.code_details : '']",
    "[request.headers['content-length']]",
    "[has(request.headers['content-type']) ? 'y' : 'n']",
    "['content-type' in request.headers ? request.headers['content-type'] : '']",
    "[has(xds.upstream_host_metadata.filter_metadata.istio) ? 'y' : 'n']",
    "{'a': request.size, 'b': response.size}",
]
SPAN_PROPERTIES = ["xds.cluster_name", "request.protocol", "response.flags", "source.address",
                   "upstream.address", "request.size", "response.size"]


def facts_expression() -> str:
    """meshtrace's CEL list for a default sidecar span (src/proxy_host.rs `CEL_FACTS`, in table
    order, without the route name, the listener direction and the gRPC status)."""
    text = (ROOT / "src" / "proxy_host.rs").read_text()
    table = re.findall(r'\(\s*StreamFact::(\w+),\s*"([\w.]+)",\s*(true|false),?\s*\)', text)
    assert table, "CEL_FACTS not found in src/proxy_host.rs"
    left_out = {"RouteName", "ListenerDirection", "GrpcStatus"}
    items = [f"has({attr}) ? {attr} : ''" if guarded == "true" else attr
             for fact, attr, guarded in table if fact not in left_out]
    return "[" + ", ".join(items) + "]"


def path(p: str) -> str:
    # '.' separates segments; '@' stands for a dot inside one (filter state names).
    return "/".join(p.split(".")).replace("@", ".")


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "answers"
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1"],
                   cwd=HERE, check=True)
    os.environ["MESHTRACE_WASM"] = str(HERE / "target" / "wasm32-wasip1" / "release"
                                       / "envoy_probe.wasm")
    from helpers.harness import Node, Sidecar, Stack

    if mode == "instructions":
        return instructions()
    if mode == "timing":
        lines = ["T 2000", "E " + facts_expression()] + [f"P {path(p)}" for p in SPAN_PROPERTIES]
    else:
        lines = [f"P {path(p)}" for p in PROPERTIES] + [f"E {e}" for e in EXPRESSIONS]
    with Stack(collector=False) as stack:
        car = Sidecar(stack, "\n".join(lines), node=Node())
        for _ in range(3 if mode == "timing" else 1):
            car.request("/items/1?q=1", headers={"user-agent": "probe"})
        if mode != "timing":  # an error from the upstream, answered through the app
            car.request("/status/503", headers={"user-agent": "probe"})
        log = car.envoy.log()
    for line in log.splitlines():
        if "PROBE" in line or "expr_create" in line:
            print(re.sub(r"^.*?PROBE", "PROBE", line)[:400])
    return 0


# (probe configuration line, what it measures): request-path calls in request headers, the
# end-of-stream ones in proxy_on_log.
CROSSINGS = [
    ("C set_property", "proxy_set_property (a new filter-state value)"),
    ("C header_map_pairs", "proxy_get_header_map_pairs (the request map, 6 headers)"),
    ("C header_present", "proxy_get_header_map_value, present (:path)"),
    ("C header_absent", "proxy_get_header_map_value, absent"),
    ("C replace_header", "proxy_replace_header_map_value (traceparent)"),
    ("C clock", "proxy_get_current_time_nanoseconds"),
    ("L status_header", "proxy_get_header_map_value :status in proxy_on_log"),
    ("L property", "proxy_get_property response.code in proxy_on_log"),
    ("L expression", "expr_evaluate of a default span's facts in proxy_on_log"),
]
CALLS = 10


def instructions() -> int:
    sys.path.insert(0, str(HERE.parent))
    import instructions as meter
    from helpers.harness import Stack, plugin_filter
    from helpers.load import direct_response_upstream

    meter.require_valgrind()
    wasm = HERE / "target" / "wasm32-wasip1" / "release" / "envoy_probe.wasm"
    envoy = meter.harness.envoy_bin()
    requests = 200

    def count(name: str, lines: list[str]) -> float:
        config = "\n".join(["Q", "E " + facts_expression(), *lines])
        return meter.instructions_per_request(stack, up, name, [plugin_filter(
            wasm, config, vm_id=name, adapter="wasm")], None, requests, envoy)

    with Stack() as stack:  # the listener's Envoy has the collector's clusters, unused here
        up = direct_response_upstream(stack)
        none = meter.instructions_per_request(stack, up, "none", [], None, requests, envoy)
        base = count("probe", [])
        print(f"Envoy without a filter: {none:,.0f} instructions per request; the silent probe "
              f"(5 callbacks, no host call): +{base - none:,.0f}")
        print(f"{'per host call':>14}  crossing")
        for line, what in CROSSINGS:
            figure = count(line.split()[1], [f"{line} {CALLS}"])
            print(f"{(figure - base) / CALLS:>14,.0f}  {what}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
