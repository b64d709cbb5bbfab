"""An ambient-mode mesh of real Envoys for the waypoint tests and `./build.sh demo --ambient`:

    client → istio-ingressgateway → waypoint (productpage VIP) → productpage
                                  → waypoint (reviews VIP)     → reviews

No sidecars: the apps talk to each other through one waypoint, shaped as istiod builds it
(`pilot/pkg/networking/core/listener_waypoint.go` `buildWaypointInternal`, and the waypoint in
`istioctl/pkg/proxyconfig/testdata/config_dump.json`):

- node id `waypoint~IP~POD.NS~NS.svc.cluster.local`; labels: canonical name = the waypoint
  deployment, `gateway.networking.k8s.io/gateway-name`, `gateway-class-name=istio-waypoint`, no `app`;
- the HTTP listener is `main_internal` (`traffic_direction: INBOUND`); istiod makes it an internal
  listener fed by `connect_terminate` (HBONE from ztunnel), with one filter chain per service port.
  Here it is a plain listener with one chain named `inbound-vip|9080|http|…` and one virtual host
  per service (the chain is chosen by the service's VIP in Istio; by `:authority` here);
- the upstream clusters are `inbound-vip|9080|http|HOST`, with cluster metadata
  `istio.services[].host` and endpoint metadata `istio.workload` =
  `workload;namespace;canonical;revision;cluster` (`pilot/pkg/networking/util/util.go`
  `AppendLbEndpointMetadata`), which Envoy exposes as `xds.upstream_host_metadata`;
- the source's identity: istiod's `connect_terminate` sets filter state `io.istio.peer_principal`
  from the peer certificate (`pilot/pkg/xds/filters/filters.go`); here Envoy's
  `set_filter_state` filter copies it from the `x-test-peer-principal` header the caller (the
  gateway's route, the app's call — ztunnel's part) adds. Istio's peer-metadata filter
  (`downstream_peer_obj`) is istio-proxy's own and absent from upstream Envoy;
- an RBAC filter after the plugin (the plugin's AUTHN phase runs before Istio's authorization)
  denies requests carrying `x-test-deny`, as an AuthorizationPolicy DENY would.

`ratings` is a service behind the waypoint with no live endpoint (a 503).
"""
from __future__ import annotations

from typing import Any

from .harness import (OUTBOUND, INBOUND, Node, RefusedPort, Stack, Upstream, free_port, http_get,
                      listener, plugin_filter, static_cluster, wasm_path)

PORT = 9080
COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
PRINCIPAL = "spiffe://cluster.local/ns/{ns}/sa/{sa}"
GATEWAY_PRINCIPAL = PRINCIPAL.format(ns="istio-system", sa="istio-ingressgateway")
# Each app's service account named like its service (the principal names the source when
# istio-proxy's peer object is not there).
SERVICES = {
    "productpage": ("productpage-v1", "v1"),
    "reviews": ("reviews-v2", "v2"),
    "ratings": ("ratings-v1", "v1"),
}


def host_of(service: str) -> str:
    return f"{service}.default.svc.cluster.local"


def vip_cluster(service: str) -> str:
    return f"inbound-vip|{PORT}|http|{host_of(service)}"


def waypoint_node() -> dict[str, Any]:
    node = Node(namespace="default", workload="waypoint", pod="waypoint-6c8f9d7b5-q2x8z",
                labels={"service.istio.io/canonical-name": "waypoint",
                        "service.istio.io/canonical-revision": "latest",
                        "gateway.networking.k8s.io/gateway-name": "waypoint",
                        "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
                        "istio.io/gateway-name": "waypoint"}).envoy_node()
    node["id"] = node["id"].replace("sidecar~", "waypoint~", 1)
    return node


def vip_cluster_config(service: str, port: int, workload: str | None = None,
                       revision: str | None = None) -> dict:
    """`inbound-vip|…` with Istio's cluster and endpoint metadata."""
    if workload is None or revision is None:
        workload, revision = SERVICES[service]
    c = static_cluster(vip_cluster(service), port)
    c["metadata"] = {"filter_metadata": {"istio": {"services": [
        {"host": host_of(service), "name": service, "namespace": "default"}]}}}
    endpoint = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    endpoint["metadata"] = {"filter_metadata": {"istio": {
        "workload": f"{workload};default;{service};{revision};Kubernetes"}}}
    return c


def peer_principal_filter() -> dict:
    return {"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [{
            "object_key": "io.istio.peer_principal", "factory_key": "envoy.string",
            "format_string": {"text_format_source": {
                "inline_string": "%REQ(x-test-peer-principal)%"}}}]}}


def deny_filter() -> dict:
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {"ns[default]-policy[deny-test]-rule[0]": {
            "permissions": [{"header": {"name": "x-test-deny", "present_match": True}}],
            "principals": [{"any": True}]}}}}}


class Ambient:
    """Starts the gateway, the waypoint and the apps; `configs` gives the plugin configuration of
    `gateway` and `waypoint` (the exporter points at the stack's collector, flushed often)."""

    def __init__(self, stack: Stack, configs: dict[str, dict[str, Any]]) -> None:
        assert stack.collector is not None
        wasm = wasm_path()
        collector = static_cluster(COLLECTOR, stack.collector.http_port)

        def plugin(name: str) -> dict:
            config = {"exporter": {"flushInterval": "200ms"}, **configs.get(name, {})}
            return plugin_filter(wasm, config)

        self.waypoint_port = free_port()
        through_waypoint = f"http://127.0.0.1:{self.waypoint_port}"
        self.reviews = stack.upstream()
        self.productpage = stack.upstream(forward_to=through_waypoint, headers={
            "host": f"{host_of('reviews')}:{PORT}",
            "x-test-peer-principal": PRINCIPAL.format(ns="default", sa="productpage")})
        dead = stack._own(RefusedPort()).port  # ratings: connection refused
        vhosts = [{"name": f"{host_of(s)}:{PORT}",
                   "domains": [host_of(s), f"{host_of(s)}:{PORT}", s, f"{s}:{PORT}"],
                   "routes": [{"name": "default", "match": {"prefix": "/"},
                               "decorator": {"operation": f"{host_of(s)}:{PORT}/*"},
                               "route": {"cluster": vip_cluster(s), "timeout": "10s"}}]}
                  for s in SERVICES]
        main_internal = listener("main_internal", self.waypoint_port, INBOUND,
                                 vip_cluster("productpage"),
                                 [peer_principal_filter(), plugin("waypoint"), deny_filter()],
                                 route_name=vip_cluster("productpage"))
        hcm = main_internal["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"] = vhosts
        main_internal["filter_chains"][0]["name"] = vip_cluster("productpage")
        self.waypoint = stack.envoy("waypoint", {
            "node": waypoint_node(),
            "static_resources": {
                "listeners": [main_internal],
                "clusters": [vip_cluster_config("productpage", self.productpage.port),
                             vip_cluster_config("reviews", self.reviews.port),
                             vip_cluster_config("ratings", dead), collector],
            }}, wait_ready=False)

        # The ingress gateway sends to the productpage service, which the waypoint serves
        # (`istio.io/ingress-use-waypoint`); its route says who it is, as ztunnel's mTLS would.
        self.gateway_port = free_port()
        pp_cluster = f"outbound|{PORT}||{host_of('productpage')}"
        gw_listener = listener("0.0.0.0_8080", self.gateway_port, OUTBOUND, pp_cluster,
                               [plugin("gateway")], route_name="http.8080")
        route = gw_listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        vh = route["virtual_hosts"][0]
        vh["routes"][0]["route"]["host_rewrite_literal"] = f"{host_of('productpage')}:{PORT}"
        vh["request_headers_to_add"] = [{"header": {"key": "x-test-peer-principal",
                                                    "value": GATEWAY_PRINCIPAL}}]
        self.gateway = stack.envoy("istio-ingressgateway", {
            "node": Node(app="istio-ingressgateway", version="1.29", namespace="istio-system",
                         gateway=True, workload="istio-ingressgateway",
                         labels={"app": "istio-ingressgateway"}).envoy_node(),
            "static_resources": {
                "listeners": [gw_listener],
                "clusters": [static_cluster(pp_cluster, self.waypoint_port), collector],
            }}, wait_ready=False)
        for envoy in (self.waypoint, self.gateway):
            envoy.wait_ready()

    def request(self, path: str = "/productpage",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Through the ingress gateway."""
        return http_get(f"http://127.0.0.1:{self.gateway_port}{path}", headers)

    def call(self, service: str, path: str = "/", headers: dict[str, str] | None = None,
             source: str = "productpage") -> tuple[int, bytes]:
        """Straight into the waypoint, as an app of `source`'s service account via ztunnel."""
        h = {"host": f"{host_of(service)}:{PORT}",
             "x-test-peer-principal": PRINCIPAL.format(ns="default", sa=source), **(headers or {})}
        return http_get(f"http://127.0.0.1:{self.waypoint_port}{path}", h)
