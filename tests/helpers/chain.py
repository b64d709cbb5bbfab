"""A chain of Istio-shaped proxies for the capture and mid-chain sampling tests:

    client → istio-ingressgateway → a → b → c → leaf

Each of a, b and c is an app behind a sidecar Envoy (inbound and outbound listeners, the plugin
on both) that calls the next service through its outbound listener, propagating the W3C headers
and returning the callee's status. The leaf answers `/status/NNN` with NNN and `/delay/MS` after
MS milliseconds (a slow upstream), everything else with 200, and records what it received.
"""
from __future__ import annotations

import time
from typing import Any

from .harness import (INBOUND, OUTBOUND, HttpServer, Node, Received, Reply, Stack, free_port,
                      http_get, listener, plugin_filter, static_cluster, wait_until, wasm_path)

PORT = 9080
COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
SERVICES = ("a", "b", "c")


def host_of(app: str) -> str:
    return f"{app}.default.svc.cluster.local"


class Leaf(HttpServer):
    """The last upstream: a status or a delay chosen by the path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        super().__init__()

    def respond(self, request: Received) -> Reply:
        self.received.append(request)
        parts = request.path.split("/")
        status = 200
        if len(parts) > 2 and parts[1] == "status":
            status = int(parts[2])
        elif len(parts) > 2 and parts[1] == "delay":
            time.sleep(int(parts[2]) / 1000)  # the slowness under test, not a wait
        return Reply(status, b"leaf", content_type="text/plain")


class Chain:
    """Starts the gateway, three sidecars and the leaf. `configs` gives each proxy's plugin
    configuration by name (`gateway`, `a`, `b`, `c`); the exporter points at the stack's
    collector with a short flush interval."""

    def __init__(self, stack: Stack, configs: dict[str, dict[str, Any]]) -> None:
        assert stack.collector is not None
        wasm = wasm_path()
        self.leaf = stack._own(Leaf())
        collector = static_cluster(COLLECTOR, stack.collector.http_port)
        inbound = {s: free_port() for s in SERVICES}
        self.envoys: dict[str, Any] = {}

        def plugin(name: str) -> dict:
            config = {"exporter": {"flushInterval": "200ms"}, **configs[name]}
            return plugin_filter(wasm, config)

        for i, s in enumerate(SERVICES):
            outbound = free_port()
            app = stack.upstream(forward_to=f"http://127.0.0.1:{outbound}")
            nxt = SERVICES[i + 1] if i + 1 < len(SERVICES) else None
            nxt_port = inbound[nxt] if nxt else self.leaf.port
            nxt_cluster = f"outbound|{PORT}||{host_of(nxt or 'leaf')}"
            filters = [plugin(s)]
            self.envoys[s] = stack.envoy(s, {
                "node": Node(app=s, version="v1").envoy_node(),
                "static_resources": {
                    "listeners": [
                        listener("virtualInbound", inbound[s], INBOUND, f"inbound|{app.port}||",
                                 filters, route_name=f"inbound|{PORT}||"),
                        listener("virtualOutbound", outbound, OUTBOUND, nxt_cluster, filters,
                                 route_name=str(PORT)),
                    ],
                    "clusters": [static_cluster(f"inbound|{app.port}||", app.port),
                                 static_cluster(nxt_cluster, nxt_port), collector],
                }}, wait_ready=False)
        # Istio marks a gateway's listeners OUTBOUND; its span is the mesh's entry SERVER span.
        self.gateway_port = free_port()
        a_cluster = f"outbound|{PORT}||{host_of('a')}"
        self.envoys["gateway"] = stack.envoy("istio-ingressgateway", {
            "node": Node(app="istio-ingressgateway", version="1.28", namespace="istio-system",
                         gateway=True, workload="istio-ingressgateway",
                         labels={"app": "istio-ingressgateway"}).envoy_node(),
            "static_resources": {
                "listeners": [listener("0.0.0.0_8080", self.gateway_port, OUTBOUND, a_cluster,
                                       [plugin("gateway")], route_name="http.8080")],
                "clusters": [static_cluster(a_cluster, inbound["a"]), collector],
            }}, wait_ready=False)
        for envoy in self.envoys.values():
            envoy.wait_ready()

    def request(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.gateway_port}{path}")

    def counter(self, name: str) -> int:
        """A plugin counter summed over every proxy."""
        return sum(e.stat(f"wasmcustom.{name}") for e in self.envoys.values())

    def wait_counter(self, name: str, want: int) -> None:
        wait_until(lambda: self.counter(name) == want, 10, f"{name} == {want} on /stats")
