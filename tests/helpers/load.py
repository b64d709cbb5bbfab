"""An Envoy under load, for the bench (tests/bench) and the saturation test
(tests/e2e/test_saturation.py): the Envoy being measured with one listener per configuration, an
upstream Envoy that answers directly, meshtrace exporting to the stack's collector, and wrk."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .harness import INBOUND, Node, Stack, free_port, listener, plugin_filter, static_cluster, wasm_path

COLLECTOR_HTTP = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
COLLECTOR_GRPC = "outbound|4317||opentelemetry-collector.observability.svc.cluster.local"
COLLECTOR_HOST = "opentelemetry-collector.observability.svc.cluster.local"
UPSTREAM = "inbound|8080||"
URL_PATH = "/api/items/42?q=1"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def meshtrace(percentage: float, export: bool, vm_id: str = "meshtrace",
              capture: bool = True, adapter: str | None = None) -> dict:
    """meshtrace's filter; `adapter` None: the one under test (MESHTRACE_ADAPTER)."""
    config = {"randomSamplingPercentage": percentage,
              "exporter": {"cluster": COLLECTOR_HTTP} if export else {"protocol": "none"}}
    if not capture:
        config["sampling"] = {"captureErrors": False}
    return plugin_filter(wasm_path(), config, vm_id=vm_id, adapter=adapter)


def clusters(stack: Stack, upstream_port: int, collector: int | None = None) -> list[dict]:
    """The upstream and the collector's two clusters: the stack's collector, or `collector`,
    one port answering both OTLP/HTTP and OTLP/gRPC."""
    http_port, grpc_port = ((collector, collector) if collector is not None
                            else (stack.collector.http_port, stack.collector.grpc_port))
    return [static_cluster(UPSTREAM, upstream_port),
            static_cluster(COLLECTOR_HTTP, http_port),
            static_cluster(COLLECTOR_GRPC, grpc_port, http2=True)]


def subject(stack: Stack, name: str, upstream_port: int, listeners: dict[str, tuple],
            concurrency: int = 1, collector: int | None = None) -> tuple:
    """An Envoy with one inbound listener per configuration; returns (envoy, {config: port})."""
    ports = {config: free_port() for config in listeners}
    bootstrap = {"node": Node(app="bench").envoy_node(), "static_resources": {
        "listeners": [listener(f"in-{config}", ports[config], INBOUND, UPSTREAM, filters,
                               tracing=tracing)
                      for config, (filters, tracing) in listeners.items()],
        "clusters": clusters(stack, upstream_port, collector)}}
    return stack.envoy(name, bootstrap, log_level="warning", concurrency=concurrency), ports


def start(stack: Stack, name: str, upstream_port: int, filters: list[dict],
          tracing: dict | None = None, concurrency: int = 1) -> tuple:
    """One Envoy with a single listener (the soak and memory runs); returns (envoy, port)."""
    envoy, ports = subject(stack, name, upstream_port, {name: (filters, tracing)}, concurrency)
    return envoy, ports[name]


def direct_response_upstream(stack: Stack) -> int:
    return direct_response_envoy(stack, "upstream", [
        {"match": {"prefix": "/"}, "direct_response": {
            "status": 200, "body": {"inline_string": "ok"}}}])


def prompt_collector(stack: Stack) -> int:
    """A collector that accepts every export at once, from Envoy's direct responses: OTLP/HTTP
    an empty ExportTraceServiceResponse (200, application/x-protobuf), OTLP/gRPC a
    trailers-only OK (grpc-status 0 in the headers, gRPC over HTTP/2 "Responses"). What the
    exporting Envoy does is then the same on every run and machine, with no collector's
    batching, back-pressure or scheduling in it."""
    def answer(prefix: str, content_type: str, extra: dict[str, str]) -> dict:
        headers = {"content-type": content_type, **extra}
        return {"match": {"prefix": prefix}, "direct_response": {"status": 200},
                "response_headers_to_add": [
                    {"header": {"key": k, "value": v},
                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for k, v in headers.items()]}
    return direct_response_envoy(stack, "prompt-collector", [
        answer("/opentelemetry.proto.collector.trace.v1.TraceService/", "application/grpc",
               {"grpc-status": "0"}),
        answer("/", "application/x-protobuf", {})])


def direct_response_envoy(stack: Stack, name: str, routes: list[dict]) -> int:
    """An Envoy answering every request from `routes` (HTTP/1.1 and HTTP/2); returns its port."""
    port = free_port()
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": name,
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                               "routes": routes}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    stack.envoy(name, {"static_resources": {"listeners": [{
        "name": name, "address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]}},
        concurrency=2, log_level="warning")
    return port


def wrk_command(port: int, seconds: float, connections: int) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-H",
            "user-agent: meshtrace-bench", f"http://127.0.0.1:{port}{URL_PATH}"]


def wrk(port: int, seconds: float, connections: int) -> dict:
    out = subprocess.run(wrk_command(port, seconds, connections), capture_output=True, text=True,
                         check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "non2xx": int(errors.group(1)) if errors else 0}
