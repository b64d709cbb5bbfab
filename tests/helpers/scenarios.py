"""What the plugin sees in an Istio sidecar and in a waypoint on Envoy 1.40: node properties,
stream properties and requests, for the ABI host (helpers/abi_host.py). Shared by the meter
(tests/meter) and the ABI tests (tests/abi)."""

# An Istio sidecar on Envoy 1.40: node metadata under xds.node (node.go, `NodeMetadata`).
SIDECAR = {
    ("xds", "node", "id"): "sidecar~10.1.2.3~reviews-v1-7d9f8c-x2x.default~default.svc.cluster.local",
    ("xds", "node", "metadata", "NAMESPACE"): "default",
    ("xds", "node", "metadata", "WORKLOAD_NAME"): "reviews-v1",
    ("xds", "node", "metadata", "NAME"): "reviews-v1-7d9f8c-x2x",
    ("xds", "node", "metadata", "CLUSTER_ID"): "Kubernetes",
    ("xds", "node", "metadata", "MESH_ID"): "cluster.local",
    ("xds", "node", "metadata", "LABELS", "app"): "reviews",
    ("xds", "node", "metadata", "LABELS", "version"): "v1",
    ("xds", "node", "metadata", "LABELS", "service.istio.io/canonical-name"): "reviews",
    ("xds", "node", "metadata", "LABELS", "service.istio.io/canonical-revision"): "v1",
}
# What Envoy 1.40 answers about an inbound stream at its end (`proxy_on_log`, `proxy_on_done`), as read on the
# e2e sidecar (tests/e2e `Sidecar`, a GET answered 200 by the app; tests/bench/envoy-probe):
# every attribute below is present, integers as 8 little-endian bytes, `request.time` in Unix
# nanoseconds; only the waypoint's and Istio's peer attributes are absent (NOT_FOUND). Envoy's
# attribute code: `source/extensions/filters/common/expr/context.cc` (RequestWrapper,
# ResponseWrapper, PeerWrapper, UpstreamWrapper) and `source/extensions/common/wasm/context.cc`
# `findValue`. `response.grpc_status` is there for plain HTTP too (Envoy maps the HTTP status:
# 200 -> 2).
INBOUND_STREAM = {
    ("xds", "cluster_name"): "inbound|9080||",
    ("xds", "route_name"): "default",
    ("xds", "listener_direction"): 1,
    ("request", "protocol"): "HTTP/1.1",
    ("request", "size"): 0,
    ("request", "total_size"): 176,
    ("request", "time"): 1_700_000_000_000_000_000,
    ("request", "duration"): 2_455_000,
    ("response", "code"): 200,
    ("response", "code_details"): "via_upstream",
    ("response", "flags"): 0,
    ("response", "grpc_status"): 2,
    ("response", "size"): 176,
    ("response", "total_size"): 305,
    ("source", "address"): "10.1.2.7:45456",
    ("upstream", "address"): "10.1.2.3:9080",
}
# A request as the inbound sidecar sees it after Envoy's connection manager.
REQUEST = [
    (":authority", "reviews:9080"),
    (":path", "/reviews/0"),
    (":method", "GET"),
    (":scheme", "http"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"),
    ("accept", "*/*"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "7c0cbc3e-4c3e-4b4e-9a5e-3f1c2d8a9b10"),
]
# An Istio waypoint (ambient mode): node id `waypoint~`, the waypoint deployment's labels, no app
# (pilot/pkg/networking/core/listener_waypoint.go; tests/helpers/ambient.py).
WAYPOINT = {
    ("xds", "node", "id"): "waypoint~10.1.2.9~waypoint-6c8f9d7b5-q2x8z.default~default.svc.cluster.local",
    ("xds", "node", "metadata", "NAMESPACE"): "default",
    ("xds", "node", "metadata", "WORKLOAD_NAME"): "waypoint",
    ("xds", "node", "metadata", "NAME"): "waypoint-6c8f9d7b5-q2x8z",
    ("xds", "node", "metadata", "CLUSTER_ID"): "Kubernetes",
    ("xds", "node", "metadata", "MESH_ID"): "cluster.local",
    ("xds", "node", "metadata", "LABELS", "service.istio.io/canonical-name"): "waypoint",
    ("xds", "node", "metadata", "LABELS", "service.istio.io/canonical-revision"): "latest",
}
# What a waypoint knows about a stream to reviews at its end: the VIP cluster, the endpoint's
# istio.workload, the source peer (istio-proxy's peer object, Istio >= 1.29).
WAYPOINT_STREAM = {
    ("xds", "cluster_name"): "inbound-vip|9080|http|reviews.default.svc.cluster.local",
    ("xds", "route_name"): "default",
    ("xds", "upstream_host_metadata", "filter_metadata", "istio", "workload"):
        "reviews-v1;default;reviews;v1;Kubernetes",
    ("filter_state", "downstream_peer_obj", "workload"): "productpage-v1",
    ("filter_state", "downstream_peer_obj", "namespace"): "default",
    ("filter_state", "downstream_peer_obj", "service"): "productpage",
    ("filter_state", "downstream_peer_obj", "revision"): "v1",
    ("filter_state", "downstream_peer_obj", "cluster"): "Kubernetes",
    ("filter_state", "io.istio.peer_principal"): "spiffe://cluster.local/ns/default/sa/productpage",
    **{k: v for k, v in INBOUND_STREAM.items() if k[0] != "xds"},
    ("xds", "listener_direction"): 1,
    ("upstream", "address"): "10.1.2.11:9080",
}
TRACEPARENT_UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
B3_UNSAMPLED = [
    ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
    ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ("x-b3-sampled", "0"),
]
