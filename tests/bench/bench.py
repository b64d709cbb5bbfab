"""`./build.sh bench`: what meshtrace costs per request, against Envoy's own tracer.

The same Envoy listener (one worker) in front of an Envoy upstream that answers directly, in six
configurations, each its own Envoy process:

  none      no tracing
  native    Envoy's OpenTelemetry tracer, 100% sampled, exporting over OTLP/gRPC to rotel
  mt-100    meshtrace, 100% sampled, exporting over OTLP/HTTP to rotel
  mt-1      meshtrace, 1% sampled, exporting
  mt-none   meshtrace, 100% sampled, exporter `none` (propagation and sampling only)
  minimal   a Rust proxy-wasm filter that reads two headers and writes one: the V8 floor

wrk (8 connections, one thread) drives each in turn, interleaved over rounds in a shuffled order;
the Envoy's CPU time per request comes from /proc/<pid>/stat. Prints medians, each
configuration's added CPU over `none`, and the ratios the targets are stated in. These are
measurements for a reader, never assertions.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import (INBOUND, Node, Stack, listener, plugin_filter,  # noqa: E402
                     static_cluster, wasm_path)

CLK_TCK = os.sysconf("SC_CLK_TCK")
COLLECTOR_HTTP = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
COLLECTOR_GRPC = "outbound|4317||opentelemetry-collector.observability.svc.cluster.local"
UPSTREAM = "inbound|8080||"
MINIMAL = ROOT / "tests" / "bench" / "minimal-filter"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def build_minimal() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1"],
                   cwd=MINIMAL, check=True)
    return MINIMAL / "target" / "wasm32-wasip1" / "release" / "minimal_filter.wasm"


def meshtrace(percentage: float, export: bool) -> dict:
    config = {"randomSamplingPercentage": percentage,
              "exporter": {"cluster": COLLECTOR_HTTP} if export else {"protocol": "none"}}
    return plugin_filter(wasm_path(), config)


def native_tracing() -> dict:
    return {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR_GRPC}, "timeout": "5s"},
        "service_name": "bench"}},
        "random_sampling": {"value": 100}, "spawn_upstream_span": False}


def start(stack: Stack, name: str, upstream_port: int, filters: list[dict],
          tracing: dict | None = None) -> tuple:
    from harness import free_port

    port = free_port()
    clusters = [static_cluster(UPSTREAM, upstream_port),
                static_cluster(COLLECTOR_HTTP, stack.collector.http_port),
                static_cluster(COLLECTOR_GRPC, stack.collector.grpc_port, http2=True)]
    bootstrap = {"node": Node(app="bench").envoy_node(), "static_resources": {
        "listeners": [listener("virtualInbound", port, INBOUND, UPSTREAM, filters,
                               tracing=tracing)],
        "clusters": clusters}}
    envoy = stack.envoy(name, bootstrap, log_level="warning")
    return envoy, port


def direct_response_upstream(stack: Stack) -> int:
    from harness import free_port

    port = free_port()
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "upstream",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "direct_response": {
                   "status": 200, "body": {"inline_string": "ok"}}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    stack.envoy("upstream", {"static_resources": {"listeners": [{
        "name": "upstream", "address": {"socket_address": {"address": "127.0.0.1",
                                                           "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]}},
        concurrency=2, log_level="warning")
    return port


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port: int, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", "user-agent: meshtrace-bench", f"http://127.0.0.1:{port}/api/items/42?q=1"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0}


def measure(envoy, port: int, seconds: int, connections: int) -> dict:
    pid = envoy.proc.pid
    before = cpu_seconds(pid)
    result = wrk(port, seconds, connections)
    result["cpu_us_per_req"] = (cpu_seconds(pid) - before) * 1e6 / max(result["requests"], 1)
    return result


def main() -> int:
    p = argparse.ArgumentParser(prog="./build.sh bench", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--json", type=Path, help="write every run and the medians as JSON")
    args = p.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (Debian package wrk; ./build.sh bench installs it)")

    stack = Stack()
    try:
        up = direct_response_upstream(stack)
        minimal = plugin_filter(build_minimal(), {}, vm_id="minimal")
        configs = {
            "none": start(stack, "none", up, []),
            "native": start(stack, "native", up, [], tracing=native_tracing()),
            "mt-100": start(stack, "mt-100", up, [meshtrace(100, True)]),
            "mt-1": start(stack, "mt-1", up, [meshtrace(1, True)]),
            "mt-none": start(stack, "mt-none", up, [meshtrace(100, False)]),
            "minimal": start(stack, "minimal", up, [minimal]),
        }
        for name, (envoy, port) in configs.items():  # warm-up, discarded
            wrk(port, 1, args.connections)
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        order = list(configs)
        for r in range(args.rounds):
            random.shuffle(order)
            for name in order:
                envoy, port = configs[name]
                runs[name].append(measure(envoy, port, args.seconds, args.connections))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        med = {name: {k: statistics.median(run[k] for run in rs)
                      for k in ("cpu_us_per_req", "rps", "p50_ms", "p99_ms")}
               for name, rs in runs.items()}
        for name, (envoy, _) in configs.items():
            med[name]["rss_mib"] = rss_bytes(envoy.proc.pid) / 2**20
        base = med["none"]["cpu_us_per_req"]
        added = {name: m["cpu_us_per_req"] - base for name, m in med.items()}
        print(f"\nEnvoy CPU per request, median of {args.rounds} interleaved rounds of "
              f"{args.seconds:g}s (wrk -c{args.connections}, --concurrency 1)\n")
        print(f"{'config':<9} {'CPU µs/req':>10} {'added µs':>9} {'× native':>9} {'× floor':>8}"
              f" {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8}")
        for name, m in med.items():
            vs_native = added[name] / added["native"] if added["native"] > 0 else float("nan")
            vs_floor = added[name] / added["minimal"] if added["minimal"] > 0 else float("nan")
            print(f"{name:<9} {m['cpu_us_per_req']:>10.1f} {added[name]:>9.1f} {vs_native:>9.2f}"
                  f" {vs_floor:>8.2f} {m['rps']:>8.0f} {m['p50_ms']:>7.3f} {m['p99_ms']:>7.3f}"
                  f" {m['rss_mib']:>8.1f}")
        wasm = wasm_path().stat().st_size
        print(f"\ntargets: mt-100 added ≤ 0.6 × native added → {added['mt-100'] / added['native']:.2f};"
              f" mt-1 added ≤ 1.2 × minimal added → {added['mt-1'] / added['minimal']:.2f};"
              f" mt-100 p99 ≤ native p99 → {med['mt-100']['p99_ms']:.3f} vs "
              f"{med['native']['p99_ms']:.3f} ms; wasm {wasm:,} bytes (≤ 250,000)")
        exported = configs["mt-100"][0].stats("meshtrace_spans")
        print(f"mt-100 spans: {exported}")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "medians": med, "added": added,
                                             "wasm_bytes": wasm}, indent=1))
        return 0
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
