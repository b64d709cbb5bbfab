"""Spans exported over OTLP by the plugin in a real Envoy, through the real rotel collector, to a
sink that decodes them with the official opentelemetry-proto bindings."""
import pytest

from helpers.harness import Node, Sidecar, wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def config(**over):
    base = {"randomSamplingPercentage": 100,
            "exporter": {"flushInterval": "50ms", "timeout": "2s"}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


def one_trace(stack, car, path="/details/42?x=1", headers=None):
    status, _ = car.request(path, headers)
    spans = stack.sink.wait_for_spans(2)
    assert len({s.trace_id for s in spans}) == 1, spans
    server = next(s for s in spans if s.kind == "SERVER")
    client = next(s for s in spans if s.kind == "CLIENT")
    return status, server, client


@pytest.mark.parametrize("protocol,cluster_attr", [("http/protobuf", "collector_cluster"),
                                                   ("grpc", "collector_grpc_cluster")])
def test_server_and_client_spans_of_one_trace(stack, protocol, cluster_attr):
    cluster = getattr(Sidecar, cluster_attr)  # the harness's collector clusters (HTTP/1.1, HTTP/2)
    car = stack.sidecar(config(exporter={"protocol": protocol, "cluster": cluster},
                               spanName="templatedPath"),
                        node=Node(app="productpage", version="v1", namespace="default"))
    status, server, client = one_trace(stack, car, headers={
        "traceparent": f"00-{TRACE}-{SPAN}-01", "user-agent": "curl/8.5", "x-request-id": "rid-1"})
    assert status == 200
    assert server.trace_id == TRACE
    assert server.parent_span_id == SPAN, "the SERVER span is a child of the caller's span"
    assert client.parent_span_id == server.span_id, "the CLIENT span is a child of the SERVER span"
    got = car.upstream.last().get("traceparent")
    assert got == f"00-{TRACE}-{client.span_id}-01", "the upstream's parent is the CLIENT span"
    for s in (server, client):
        assert s.name == "GET /details/{id}", "no ids or query strings in span names"
        assert s.service == "productpage.default"
        assert s.attributes["http.request.method"] == "GET"
        assert s.attributes["url.path"] == "/details/42"
        assert s.attributes["http.response.status_code"] == 200
        assert s.attributes["guid:x-request-id"] == "rid-1"
        assert s.attributes["network.protocol.version"] == "1.1"
        assert s.status_code == 0, "2xx leaves the status unset"
        assert s.start <= s.end and s.start > 1_600_000_000 * 10**9
    assert server.attributes["user_agent.original"] == "curl/8.5"
    assert client.attributes["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert server.start <= client.start and client.end <= server.end, "the CLIENT span nests inside"
    res = server.resource
    assert res["service.version"] == "v1"
    assert res["k8s.namespace.name"] == "default"
    assert res["k8s.pod.name"].startswith("productpage-v1-")
    assert res["telemetry.sdk.name"] == "meshtrace"


@pytest.mark.parametrize("mode,labels,expected", [
    ("APP_LABEL_AND_NAMESPACE", {"app": "reviews", "service.istio.io/canonical-name": "reviews-c"},
     "reviews.bookinfo"),
    ("CANONICAL_NAME_ONLY", {"app": "reviews", "service.istio.io/canonical-name": "reviews-c"},
     "reviews-c"),
    ("CANONICAL_NAME_AND_NAMESPACE", {"app": "reviews", "service.istio.io/canonical-name": "reviews-c"},
     "reviews-c.bookinfo"),
    ("APP_LABEL_AND_NAMESPACE", {}, "reviews-v2.bookinfo"),
])
def test_service_name_follows_tracing_service_name(stack, mode, labels, expected):
    car = stack.sidecar(config(tracingServiceName=mode),
                        node=Node(app="reviews", version="v2", namespace="bookinfo", labels=labels))
    _, server, client = one_trace(stack, car, path="/reviews/0")
    assert server.service == expected and client.service == expected


def test_status_is_error_for_server_5xx_and_client_4xx(stack):
    car = stack.sidecar(config(), app_propagates=True)
    # The app forwards /status/404 to the upstream, which answers 404: the CLIENT span (the
    # call failed) is an error, the SERVER span (the client's fault) is not.
    status, server, client = one_trace(stack, car, path="/status/404")
    assert status == 404
    assert client.status_code == 2 and server.status_code == 0
    stack.sink.requests.clear()
    status, server, client = one_trace(stack, car, path="/status/503")
    assert status == 503
    assert client.status_code == 2 and server.status_code == 2


def test_unsampled_requests_record_no_spans(stack):
    car = stack.sidecar(config(randomSamplingPercentage=0))
    for _ in range(10):
        car.request("/", {"traceparent": f"00-{TRACE}-{SPAN}-00"})
    car.request("/", {"traceparent": f"00-{TRACE}-{SPAN}-01"})
    spans = stack.sink.wait_for_spans(2)
    assert {s.trace_id for s in spans} == {TRACE} and len(spans) == 2, \
        "only the sampled request's two spans are exported"


def test_collector_down_never_fails_requests_and_counts_drops(stack):
    car = stack.sidecar(config(exporter={"maxQueueSize": 20, "maxBatchSize": 10, "maxRetries": 1}))
    stack.stop_collector()
    for _ in range(50):
        status, _ = car.request("/productpage")
        assert status == 200, "tracing never fails a request"
    # Every span that cannot be delivered is eventually counted: at most one queue's worth is
    # still waiting once the retries are spent.
    def drops():
        d = sum(car.envoy.stats("meshtrace_spans_dropped").values())
        return d if d >= 80 else None
    wait_until(drops, 20, "at least 80 drops to be counted")
    wait_until(lambda: sum(car.envoy.stats("meshtrace_spans_recorded").values()) == 100, 10,
               "50 requests × (SERVER + CLIENT) spans recorded")
    assert sum(car.envoy.stats("meshtrace_spans_exported").values()) == 0
