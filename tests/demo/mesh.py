"""A Bookinfo-shaped mesh on 127.0.0.1: an ingress gateway and four workloads, each an app behind
a sidecar Envoy with Istio-shaped node metadata, inbound and outbound listeners and the meshtrace
plugin on both, exporting to the rotel collector (which forwards to an OTLP sink).

    client → istio-ingressgateway → productpage ─┬→ details
                                                 └→ reviews → ratings

The apps copy `traceparent`, `tracestate`, `x-request-id` and `baggage` onto their outgoing calls,
as the seed's Step 3 tells apps to — except `reviews`, which speaks only B3: its sidecar hands it
`x-b3-*` headers and reads them back, so the trace stays joined across a B3-only app.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.harness import (INBOUND, OUTBOUND, HttpServer, Node, Received, Reply, Stack, free_port,
                             hcm, http_get, listener, plugin_filter, static_cluster, wait_until,
                             wasm_path)
from helpers.ambient import (GATEWAY_PRINCIPAL, PRINCIPAL, peer_principal_filter, vip_cluster,
                             vip_cluster_config, waypoint_node)

NAMESPACE = "default"
PORT = 9080  # Bookinfo's service port
W3C = ("traceparent", "tracestate", "x-request-id", "baggage")
B3_ONLY = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
           "x-request-id")
COLLECTOR_CLUSTER = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"


@dataclass
class Service:
    app: str
    version: str
    path: str
    calls: list[str] = field(default_factory=list)
    propagate: tuple[str, ...] = W3C

    @property
    def workload(self) -> str:
        return f"{self.app}-{self.version}"

    @property
    def host(self) -> str:
        return f"{self.app}.{NAMESPACE}.svc.cluster.local"


SERVICES = [
    Service("productpage", "v1", "/productpage", calls=["details", "reviews"]),
    Service("details", "v1", "/details/0"),
    Service("reviews", "v2", "/reviews/0", calls=["ratings"], propagate=B3_ONLY),
    Service("ratings", "v1", "/ratings/0"),
]
BY_APP = {s.app: s for s in SERVICES}


class App(HttpServer):
    """A Bookinfo app: answers with its name and what its callees answered, calling each callee
    through its sidecar's outbound listener with the headers it was told to propagate."""

    def __init__(self, service: Service, outbound_port: int) -> None:
        self.service = service
        self.outbound_port = outbound_port
        super().__init__()

    def call_headers(self, target: Service) -> dict[str, str]:
        return {"host": f"{target.app}:{PORT}"}

    def respond(self, request: Received) -> Reply:
        forward = {k: v for k, v in request.headers if k in self.service.propagate}
        status, children = 200, []
        for callee in self.service.calls:
            target = BY_APP[callee]
            code, body = http_get(f"http://127.0.0.1:{self.outbound_port}{target.path}",
                                  {**forward, **self.call_headers(target)})
            status = max(status, code)
            children.append(json.loads(body or b"{}"))
        return Reply(status, json.dumps({"service": self.service.app, "calls": children}).encode())


def gateway(stack: Stack, wasm: Path, sampling: float, mode: str, productpage_port: int,
            route: dict | None = None) -> tuple[Any, int]:
    """The ingress gateway sending to productpage at `productpage_port`: Istio marks its
    listeners OUTBOUND; the plugin is the mesh's entry SERVER span, and an internet-facing
    gateway trusts neither client sampling nor request ids. `route` is merged into its virtual
    host. Returns the Envoy and its port."""
    port = free_port()
    gw_config = plugin_config(sampling, mode, sampling={"trustIncoming": False},
                              propagation={"trustIncomingRequestId": False})
    gw_node = Node(app="istio-ingressgateway", version="1.28", namespace="istio-system",
                   gateway=True, workload="istio-ingressgateway",
                   labels={"app": "istio-ingressgateway", "istio": "ingressgateway"})
    pp = BY_APP["productpage"]
    gw_listener = with_virtual_hosts(
        listener("0.0.0.0_8080", port, OUTBOUND, "unused",
                 [plugin_filter(wasm, gw_config)], route_name="http.8080"),
        {"productpage": pp.host})
    vh = hcm(gw_listener)["route_config"]["virtual_hosts"][0]
    vh["domains"] = ["*"]
    for key, value in (route or {}).items():
        if key == "route":
            vh["routes"][0]["route"].update(value)
        else:
            vh[key] = value
    envoy = stack.envoy(
        "istio-ingressgateway",
        {"node": gw_node.envoy_node(), "static_resources": {
            "listeners": [gw_listener],
            "clusters": [static_cluster(f"outbound|{PORT}||{pp.host}", productpage_port),
                         static_cluster(COLLECTOR_CLUSTER, stack.collector.http_port)]}},
        wait_ready=False)
    return envoy, port


def plugin_config(percentage: float, mode: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "randomSamplingPercentage": percentage,
        "tracingServiceName": mode,
        "exporter": {"cluster": COLLECTOR_CLUSTER, "flushInterval": "200ms"},
    }
    config.update(extra)
    return config


def with_virtual_hosts(lst: dict, hosts: dict[str, str]) -> dict:
    """Routes an outbound listener by Host, as Istio's per-port route tables do."""
    hcm(lst)["route_config"]["virtual_hosts"] = [
        {"name": f"{host}:{PORT}", "domains": [host, f"{host}:{PORT}", app, f"{app}:{PORT}"],
         "routes": [{"name": "default", "match": {"prefix": "/"},
                     "route": {"cluster": f"outbound|{PORT}||{host}", "timeout": "10s"}}]}
        for app, host in hosts.items()]
    return lst


class Mesh:
    """Starts everything; `close()` stops everything."""

    def __init__(self, stack: Stack, sampling: float, mode: str) -> None:
        self.stack = stack
        wasm = wasm_path()
        inbound_ports = {s.app: free_port() for s in SERVICES}
        collector = static_cluster(COLLECTOR_CLUSTER, stack.collector.http_port)
        self.apps: list[App] = []
        self.sidecars = {}
        for s in SERVICES:
            outbound_port = free_port()
            app = App(s, outbound_port)
            stack._own(app)
            self.apps.append(app)
            extra: dict[str, Any] = {}
            if s.propagate is B3_ONLY:
                # Hand the B3-only app B3 headers as well as W3C ones; read B3 back.
                extra["propagation"] = {"inject": ["tracecontext", "b3multi", "baggage"]}
            filters = [plugin_filter(wasm, plugin_config(sampling, mode, **extra))]
            callees = {c: BY_APP[c].host for c in s.calls}
            clusters = [static_cluster(f"inbound|{PORT}||", app.port), collector]
            clusters += [static_cluster(f"outbound|{PORT}||{BY_APP[c].host}", inbound_ports[c])
                         for c in s.calls]
            listeners = [listener("virtualInbound", inbound_ports[s.app], INBOUND,
                                  f"inbound|{PORT}||", filters, route_name=f"inbound|{PORT}||")]
            if callees:
                listeners.append(with_virtual_hosts(
                    listener("virtualOutbound", outbound_port, OUTBOUND, "unused", filters,
                             route_name=str(PORT)), callees))
            node = Node(app=s.app, version=s.version, namespace=NAMESPACE)
            self.sidecars[s.app] = stack.envoy(
                s.workload, {"node": node.envoy_node(),
                             "static_resources": {"listeners": listeners, "clusters": clusters}},
                wait_ready=False)
        self.gateway, self.gateway_port = gateway(stack, wasm, sampling, mode,
                                                  inbound_ports["productpage"])
        for envoy in [*self.sidecars.values(), self.gateway]:
            envoy.wait_ready()

    @property
    def envoys(self) -> list:
        return [self.gateway, *self.sidecars.values()]

    def spans_per_decision(self, envoy: object) -> float:
        """A gateway records two spans per sampled request: SERVER and the CLIENT child it
        spawns; a sidecar one per listener."""
        return 2 if envoy is self.gateway else 1

    def decisions_per_request(self) -> list[tuple[object, int]]:
        """Each proxy with the sampling decisions one request makes there: one per listener
        it crosses (inbound, plus outbound once per call)."""
        return [(self.gateway, 1)] + [(self.sidecars[s.app], 1 + len(s.calls)) for s in SERVICES]

    def request(self) -> int:
        status, _ = http_get(f"http://127.0.0.1:{self.gateway_port}/productpage",
                             {"user-agent": "meshtrace-demo"})
        return status

    def counters(self) -> dict[str, int]:
        """The plugin's counters summed over every proxy."""
        total: dict[str, int] = {}
        for envoy in self.envoys:
            for k, v in envoy.stats("meshtrace").items():
                if k.startswith("wasmcustom."):
                    name = k.removeprefix("wasmcustom.meshtrace_")
                    total[name] = total.get(name, 0) + v
        return total


class AmbientApp(App):
    """A Bookinfo app in ambient mode: no sidecar; it calls each callee's service through the
    waypoint (ztunnel's part: the waypoint learns the caller's identity, here the header the
    waypoint's `set_filter_state` turns into `io.istio.peer_principal`; see tests/helpers/ambient.py)."""

    def call_headers(self, target: Service) -> dict[str, str]:
        return {"host": f"{target.host}:{PORT}",
                "x-test-peer-principal": PRINCIPAL.format(ns=NAMESPACE, sa=self.service.app)}


class AmbientMesh:
    """`./build.sh demo --ambient`: the same Bookinfo apps with no sidecars, one waypoint in
    front of the four services (shaped as tests/helpers/ambient.py describes: node `waypoint~`,
    `main_internal`, `inbound-vip|9080|http|HOST` clusters with `istio.workload` endpoint
    metadata) and the ingress gateway sending to productpage through it. The waypoint records
    each hop's CLIENT (the caller) and SERVER (the callee) span, so the trace tree is the sidecar
    demo's."""

    def __init__(self, stack: Stack, sampling: float, mode: str) -> None:
        self.stack = stack
        wasm = wasm_path()
        collector = static_cluster(COLLECTOR_CLUSTER, stack.collector.http_port)
        self.waypoint_port = free_port()
        self.apps = [stack._own(AmbientApp(s, self.waypoint_port)) for s in SERVICES]
        ports = {a.service.app: a.port for a in self.apps}
        # One configuration for every service: B3 is handed to reviews (a B3-only app) too.
        wp_config = plugin_config(sampling, mode, propagation={
            "inject": ["tracecontext", "b3multi", "baggage"]})
        main_internal = listener("main_internal", self.waypoint_port, INBOUND, "unused",
                                 [peer_principal_filter(), plugin_filter(wasm, wp_config)],
                                 route_name=vip_cluster("productpage"))
        hcm(main_internal)["route_config"]["virtual_hosts"] = [
            {"name": f"{s.host}:{PORT}", "domains": [s.host, f"{s.host}:{PORT}"],
             "routes": [{"name": "default", "match": {"prefix": "/"},
                         "decorator": {"operation": f"{s.host}:{PORT}/*"},
                         "route": {"cluster": vip_cluster(s.app), "timeout": "10s"}}]}
            for s in SERVICES]
        main_internal["filter_chains"][0]["name"] = vip_cluster("productpage")
        clusters = [vip_cluster_config(s.app, ports[s.app], s.workload, s.version)
                    for s in SERVICES]
        self.waypoint = stack.envoy("waypoint", {
            "node": waypoint_node(), "static_resources": {
                "listeners": [main_internal], "clusters": clusters + [collector]}},
            wait_ready=False)
        # The gateway sends to productpage through the waypoint (ingress-use-waypoint).
        pp = BY_APP["productpage"]
        self.gateway, self.gateway_port = gateway(stack, wasm, sampling, mode, self.waypoint_port, {
            "route": {"host_rewrite_literal": f"{pp.host}:{PORT}"},
            "request_headers_to_add": [{"header": {"key": "x-test-peer-principal",
                                                   "value": GATEWAY_PRINCIPAL}}]})
        for envoy in (self.waypoint, self.gateway):
            envoy.wait_ready()

    @property
    def envoys(self) -> list:
        return [self.gateway, self.waypoint]

    def decisions_per_request(self) -> list[tuple[object, int]]:
        """The gateway decides once; the waypoint once per hop it serves."""
        return [(self.gateway, 1), (self.waypoint, len(SERVICES))]

    def spans_per_decision(self, envoy: object) -> float:
        """The gateway records SERVER + CLIENT; the waypoint a CLIENT + SERVER pair per hop,
        except the one from the gateway (whose CLIENT span the gateway recorded)."""
        if envoy is self.gateway:
            return 2
        return (2 * len(SERVICES) - 1) / len(SERVICES)

    request = Mesh.request
    counters = Mesh.counters
