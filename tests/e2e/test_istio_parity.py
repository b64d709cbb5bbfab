"""Drop-in for Istio's tracer, on the real Envoy: the tags Istio's tracer sets (Istio's
`pilot/pkg/networking/core/tracing.go` `buildServiceTags`, Envoy's `source/common/tracing/`),
gRPC status through a real gRPC server and client, the spans of what Envoy rejects itself, the
gateway's SERVER → CLIENT → SERVER chain, and Kiali's way of reading spans."""
from __future__ import annotations

import socket
import threading
from concurrent import futures

import grpc
import pytest

from helpers.harness import (INBOUND, OUTBOUND, Node, RefusedPort, Sidecar, free_port, http_get,
                             listener, plugin_filter, routed_listener, static_cluster,
                             wait_for_port, wasm_path)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
ALL = {"randomSamplingPercentage": 100, "exporter": {"flushInterval": "0.05s"}}


def collector_clusters(stack) -> list[dict]:
    return [static_cluster(Sidecar.collector_cluster, stack.collector.http_port)]


def router() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


# ---------------------------------------------------------------------------------------------
# 1. Istio's and Envoy's tags on a sidecar's SERVER and CLIENT spans.

def test_sidecar_spans_carry_every_tag_of_istios_tracer(stack):
    car = stack.sidecar(ALL, node=Node(app="productpage", version="v1", namespace="default"))
    status, _ = car.request("/details/42?user=jason", headers={
        "traceparent": f"00-{TRACE}-{SPAN}-01", "user-agent": "curl/8.5", "x-request-id": "rid-1"})
    assert status == 200
    spans = stack.sink.wait_for_spans(2, where=lambda s: s.trace_id == TRACE)
    server = next(s for s in spans if s.kind == "SERVER")
    client = next(s for s in spans if s.kind == "CLIENT")
    node_id = "sidecar~127.0.0.1~productpage-v1-5d8c7b9f4-x7k2p.default~default.svc.cluster.local"
    for s in (server, client):
        a = s.attributes
        # Istio's service tags (buildServiceTags) and Envoy's local tags (TracerImpl::startSpan).
        assert a["istio.canonical_service"] == "productpage"
        assert a["istio.canonical_revision"] == "v1"
        assert a["istio.cluster_id"] == "Kubernetes"
        assert a["istio.mesh_id"] == "cluster.local"
        assert a["istio.namespace"] == "default"
        assert a["node_id"] == node_id
        assert a["zone"] == ""
        assert a["component"] == "proxy"
        # Envoy's request and response tags, all strings as Envoy's OTel tracer writes them.
        assert a["http.method"] == "GET"
        assert a["http.status_code"] == "200"
        assert a["http.protocol"] == "HTTP/1.1"
        assert a["http.url"].endswith("/details/42?user=REDACTED"), a["http.url"]
        assert a["http.url"].startswith("http://127.0.0.1:")
        assert a["response_flags"] == "-"
        assert "error" not in a, "no error tag on a 200"
        assert a["guid:x-request-id"] == "rid-1"
        assert a["downstream_cluster"] == "-"
        assert a["peer.address"].startswith("127.0.0.1:")
        assert a["upstream_address"].startswith("127.0.0.1:")
        assert a["upstream_cluster"] == a["upstream_cluster.name"]
        assert a["request_size"] == "0"
        assert int(a["response_size"]) > 0
        # Semantic conventions beside them.
        assert a["url.query"] == "user=REDACTED"
        assert a["network.peer.address"] == "127.0.0.1"
    assert server.attributes["user_agent"] == "curl/8.5"
    assert client.attributes["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert client.attributes["peer.service"] == "reviews.default"
    assert client.attributes["url.full"].endswith("/details/42?user=REDACTED")
    assert server.attributes["client.address"] == "127.0.0.1"
    # Istio's operation names (route decorators), which Kiali's operationSpanFilter matches.
    assert client.name == "reviews.default.svc.cluster.local:9080/*"
    # The client called the sidecar at an IP: Istio names inbound routes after the service and
    # the inbound cluster's port, never the address (one name per pod IP otherwise).
    inbound_port = server.attributes["upstream_cluster"].split("|")[1]
    assert server.name == f"productpage.default.svc.cluster.local:{inbound_port}/*"


def test_istio_compat_off_drops_only_the_duplicates(stack):
    car = stack.sidecar({**ALL, "attributes": {"istioCompat": False, "urlQuery": "omit"}})
    car.request("/x?secret=1", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
    spans = stack.sink.wait_for_spans(2, where=lambda s: s.trace_id == TRACE)
    for s in spans:
        for dup in ("http.method", "http.status_code", "http.url", "peer.address", "request_size"):
            assert dup not in s.attributes, dup
        for kept in ("node_id", "istio.cluster_id", "response_flags", "http.request.method"):
            assert kept in s.attributes, kept
        assert "url.query" not in s.attributes


# ---------------------------------------------------------------------------------------------
# 2. gRPC through two sidecars: client app → client sidecar (CLIENT) → server sidecar (SERVER)
#    → gRPC server. Raw-bytes methods: no generated code needed.

def _grpc_server() -> tuple[grpc.Server, int]:
    def add(request, context):
        return b"ok"

    def fail_in_trailers(request, context):
        context.send_initial_metadata(())  # headers first: the status comes in the trailers
        context.abort(grpc.StatusCode.UNAVAILABLE, "backend down")

    def fail_trailers_only(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such cart")

    def list_items(request, context):
        for i in range(3):
            yield bytes([i])

    handler = grpc.method_handlers_generic_handler("shop.Cart", {
        "Add": grpc.unary_unary_rpc_method_handler(add),
        "Fail": grpc.unary_unary_rpc_method_handler(fail_in_trailers),
        "Missing": grpc.unary_unary_rpc_method_handler(fail_trailers_only),
        "List": grpc.unary_stream_rpc_method_handler(list_items),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def grpc_mesh(stack):
    server, grpc_port = _grpc_server()
    wasm = wasm_path()
    filt = [plugin_filter(wasm, ALL)]
    server_in = free_port()
    stack.envoy("cart", {
        "node": Node(app="cart", version="v1").envoy_node(),
        "static_resources": {
            "listeners": [listener("virtualInbound", server_in, INBOUND, f"inbound|{grpc_port}||",
                                   filt, route_name="inbound|9090||")],
            "clusters": [static_cluster(f"inbound|{grpc_port}||", grpc_port, http2=True),
                         *collector_clusters(stack)]}})
    client_out = free_port()
    stack.envoy("frontend", {
        "node": Node(app="frontend", version="v1").envoy_node(),
        "static_resources": {
            "listeners": [listener("virtualOutbound", client_out, OUTBOUND,
                                   "outbound|9090||cart.default.svc.cluster.local", filt,
                                   route_name="9090")],
            "clusters": [static_cluster("outbound|9090||cart.default.svc.cluster.local",
                                        server_in, http2=True), *collector_clusters(stack)]}})
    channel = grpc.insecure_channel(f"127.0.0.1:{client_out}")
    yield channel
    channel.close()
    server.stop(0)


def _call(stack, channel, method: str, trace: str, stream: bool = False):
    md = (("traceparent", f"00-{trace}-{SPAN}-01"),)
    path = f"/shop.Cart/{method}"
    code = grpc.StatusCode.OK
    try:
        if stream:
            assert len(list(channel.unary_stream(path)(b"x", metadata=md, timeout=10))) == 3
        else:
            channel.unary_unary(path)(b"x", metadata=md, timeout=10)
    except grpc.RpcError as e:
        code = e.code()
    spans = stack.sink.wait_for_spans(2, where=lambda s: s.trace_id == trace)
    return code, next(s for s in spans if s.kind == "CLIENT"), next(s for s in spans if s.kind == "SERVER")


@pytest.mark.parametrize("method,stream,code,client_error,server_error", [
    ("Add", False, 0, False, False),
    ("Fail", False, 14, True, True),        # UNAVAILABLE in the trailers: an error on both sides
    ("Missing", False, 5, True, False),     # trailers-only NOT_FOUND: the caller's fault
    ("List", True, 0, False, False),        # server streaming
])
def test_grpc_status_reaches_both_sides(stack, grpc_mesh, method, stream, code, client_error,
                                        server_error):
    trace = f"{TRACE[:-2]}{code:02x}" if method != "List" else f"{TRACE[:-2]}ff"
    got, client, server = _call(stack, grpc_mesh, method, trace, stream)
    assert got.value[0] == code
    for s, error in ((client, client_error), (server, server_error)):
        a = s.attributes
        assert s.name == f"shop.Cart/{method}", "gRPC spans are named package.Service/Method"
        assert a["rpc.system"] == "grpc"
        assert a["rpc.service"] == "shop.Cart" and a["rpc.method"] == method
        assert a["rpc.grpc.status_code"] == code
        assert a["grpc.status_code"] == str(code)
        assert a["http.response.status_code"] == 200, "gRPC errors ride on HTTP 200"
        assert a["grpc.path"] == f"/shop.Cart/{method}"
        assert (s.status_code == 2) == error, f"{s.kind} {method}: error {error}"
        assert ("error.type" in a) == error
    if code == 14:
        assert client.attributes["grpc.message"] == "backend down"
        assert client.attributes["error.type"] == "UNAVAILABLE"
        assert client.attributes["error"] == "true"


# ---------------------------------------------------------------------------------------------
# 3. What Envoy rejects itself: each gives a span with status, response_flags and error.type.

class Hanging:
    """A TCP server that accepts and reads but never answers, until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def rejecting(stack):
    app = stack.upstream()
    hanging = Hanging()
    stack._own(hanging)
    closed_port = stack._own(RefusedPort()).port  # connection refused
    filt = plugin_filter(wasm_path(), ALL)
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {"deny-admin": {
            "permissions": [{"url_path": {"path": {"prefix": "/denied"}}}],
            "principals": [{"any": True}]}}}}}
    ratelimit = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "3600s"},
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}}}
    inbound = f"inbound|{app.port}||"

    def route(prefix: str, cluster: str, timeout: str = "10s") -> dict:
        return {"name": prefix.strip("/"), "match": {"prefix": prefix},
                "route": {"cluster": cluster, "timeout": timeout}}

    ports = {k: free_port() for k in ("in", "rl", "out")}
    ext = "outbound|9080||{}.default.svc.cluster.local"
    stack.envoy("rejecting", {
        "node": Node(app="shop", version="v1").envoy_node(),
        "static_resources": {
            "listeners": [
                routed_listener("in", ports["in"], INBOUND,
                                [route("/ok", inbound), route("/denied", inbound)],
                                [filt, rbac]),
                routed_listener("rl", ports["rl"], INBOUND, [route("/", inbound)],
                                [filt, ratelimit]),
                routed_listener("out", ports["out"], OUTBOUND, [
                    route("/uh", ext.format("empty")),
                    route("/uf", ext.format("refused")),
                    route("/ut", ext.format("hanging"), timeout="0.3s"),
                    route("/dc", ext.format("hanging")),
                ], [filt]),
            ],
            "clusters": [
                static_cluster(inbound, app.port),
                {"name": ext.format("empty"), "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": ext.format("empty"), "endpoints": []}},
                static_cluster(ext.format("refused"), closed_port),
                static_cluster(ext.format("hanging"), hanging.port),
                *collector_clusters(stack),
            ]}})
    return ports


def _span_of(stack, trace: str):
    return stack.sink.wait_for_spans(1, where=lambda s: s.trace_id == trace)[0]


@pytest.mark.parametrize("listener_key,path,status,flags,kind,error", [
    ("in", "/nowhere/9f8e7d6c", 404, "NR", "SERVER", False),
    ("in", "/denied", 403, "-", "SERVER", False),
    ("out", "/uh", 503, "UH", "CLIENT", True),
    ("out", "/uf", 503, "UF", "CLIENT", True),
    ("out", "/ut", 504, "UT", "CLIENT", True),
])
def test_envoys_own_replies_give_spans_with_their_reason(stack, rejecting, listener_key, path,
                                                         status, flags, kind, error):
    trace = TRACE[:-4] + f"{status:04d}"
    got, _ = http_get(f"http://127.0.0.1:{rejecting[listener_key]}{path}",
                      {"traceparent": f"00-{trace}-{SPAN}-01"})
    assert got == status
    s = _span_of(stack, trace)
    a = s.attributes
    assert s.kind == kind
    assert a["http.response.status_code"] == status
    assert a["http.status_code"] == str(status)
    assert a["response_flags"] == flags
    assert a["error.type"] == str(status), "the reason is on the span"
    assert (s.status_code == 2) == error
    if flags == "NR":
        assert "nowhere" not in s.name and "9f8e7d6c" not in s.name, "NR never names the path"
    if error:
        assert s.raw.status.message, "Envoy's response code details as the status message"


def test_rate_limited_reply_gives_a_span(stack, rejecting):
    url = f"http://127.0.0.1:{rejecting['rl']}/x"
    assert http_get(url)[0] == 200
    trace = TRACE[:-3] + "429"
    assert http_get(url, {"traceparent": f"00-{trace}-{SPAN}-01"})[0] == 429
    a = _span_of(stack, trace).attributes
    assert a["response_flags"] == "RL" and a["error.type"] == "429"


def test_a_client_gone_before_the_answer_gives_a_span(stack, rejecting):
    trace = TRACE[:-2] + "dc"
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{rejecting['out']}/dc",
                 {"traceparent": f"00-{trace}-{SPAN}-01"}, timeout=0.3)
    s = _span_of(stack, trace)
    assert "DC" in s.attributes["response_flags"].split(",")
    assert s.attributes["http.status_code"] == "0"
    assert s.status_code == 2 and s.attributes["error"] == "true"
    assert "http.response.status_code" not in s.attributes, "no response was sent"


# ---------------------------------------------------------------------------------------------
# 4. A gateway emits SERVER + CLIENT; the upstream's parent is the CLIENT span.

def test_gateway_server_client_server_chain(stack):
    car = stack.sidecar(ALL, node=Node(app="productpage"), app_propagates=False)
    gw_port = free_port()
    host = "productpage.default.svc.cluster.local"
    stack.envoy("gateway", {
        "node": Node(app="istio-ingressgateway", namespace="istio-system", gateway=True).envoy_node(),
        "static_resources": {
            "listeners": [listener("0.0.0.0_8080", gw_port, OUTBOUND, f"outbound|9080||{host}",
                                   [plugin_filter(wasm_path(), ALL)], route_name="http.8080")],
            "clusters": [static_cluster(f"outbound|9080||{host}", car.inbound_port),
                         *collector_clusters(stack)]}})
    status, _ = http_get(f"http://127.0.0.1:{gw_port}/productpage",
                         {"traceparent": f"00-{TRACE}-{SPAN}-01"})
    assert status == 200
    spans = stack.sink.wait_for_spans(3, where=lambda s: s.trace_id == TRACE)
    gw = [s for s in spans if s.service.startswith("istio-ingressgateway")]
    gw_server = next(s for s in gw if s.kind == "SERVER")
    gw_client = next(s for s in gw if s.kind == "CLIENT")
    app_server = next(s for s in spans if s.service == "productpage.default" and s.kind == "SERVER")
    assert gw_server.parent_span_id == SPAN
    assert gw_client.parent_span_id == gw_server.span_id, "CLIENT is the SERVER span's child"
    assert app_server.parent_span_id == gw_client.span_id, "SERVER → CLIENT → SERVER"
    assert car.app.last().get("traceparent") == f"00-{TRACE}-{app_server.span_id}-01"
    assert gw_client.attributes["upstream_cluster"] == f"outbound|9080||{host}"
    assert gw_client.attributes["peer.address"] == gw_client.attributes["upstream_address"]
    assert gw_client.attributes["peer.service"] == "productpage.default"
    assert gw_server.name == gw_client.name == f"{host}:9080/*"


# ---------------------------------------------------------------------------------------------
# 5. Kiali reads our spans: written from kiali/kiali `handlers/queryparams/tracing.go` (every
#    query filters on the tag `istio.cluster_id`), `business/tracing.go` `tracingServiceName`
#    (service `app.namespace` with the default namespace selector) and `spanMatchesWorkload`
#    (node_id `~`-part 3 starts with the workload, ends with the namespace), and
#    `tracing/tempo/grpc_client.go` (Tempo queries require `.node_id`).

def kiali_matches(span, cluster: str, app: str, namespace: str, workload: str) -> bool:
    tags = span.attributes
    if tags.get("istio.cluster_id") != cluster or "node_id" not in tags:
        return False
    if span.service != f"{app}.{namespace}":
        return False
    parts = tags["node_id"].split("~")
    return len(parts) >= 3 and parts[2].startswith(workload) and parts[2].endswith(namespace)


def test_kiali_finds_every_span_of_its_workload(stack, grpc_mesh):
    car = stack.sidecar(ALL, node=Node(app="reviews", version="v2", namespace="default"))
    car.request("/reviews/1", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
    _call(stack, grpc_mesh, "Add", TRACE[:-2] + "ab")
    spans = stack.sink.wait_for_spans(4)
    workloads = {"reviews.default": ("reviews", "reviews-v2"), "cart.default": ("cart", "cart-v1"),
                 "frontend.default": ("frontend", "frontend-v1")}
    for s in spans:
        app, workload = workloads[s.service]
        assert kiali_matches(s, "Kubernetes", app, "default", workload), s
        assert not kiali_matches(s, "other-cluster", app, "default", workload)


# ---------------------------------------------------------------------------------------------
# 6. One service, one name: the namespace is never counted twice, and an app's OTel SDK set up
#    as docs/spans.md says names the same service.

@pytest.mark.parametrize("mode,name,namespace", [
    ("APP_LABEL_AND_NAMESPACE", "reviews.default", None),
    ("CANONICAL_NAME_ONLY", "reviews", "default"),
])
def test_resource_names_the_service_once(stack, mode, name, namespace):
    car = stack.sidecar({**ALL, "tracingServiceName": mode}, node=Node(app="reviews"))
    car.request("/", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
    for s in stack.sink.wait_for_spans(2, where=lambda s: s.trace_id == TRACE):
        assert s.resource["service.name"] == name
        assert s.resource.get("service.namespace") == namespace
        assert s.resource["k8s.namespace.name"] == "default"
        qualified = "/".join(p for p in (s.resource.get("service.namespace"), name) if p)
        assert qualified.count("default") == 1, "a backend qualifying by namespace: once"
