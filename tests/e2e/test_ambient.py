"""Ambient mode on real Envoys: a waypoint records what two sidecars would have recorded (a CLIENT
span for the source workload, a SERVER span for the destination service, each under its service's
resource), leaves out the CLIENT span a meshtrace gateway already recorded, names two services
behind one waypoint apart, and records errors Envoy answers itself (503, RBAC denial).
Topology and Istio references: ambient.py."""
from __future__ import annotations

import pytest

from helpers.ambient import GATEWAY_PRINCIPAL, Ambient
from helpers.harness import Stack

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def mesh():
    with Stack() as stack:
        yield stack, Ambient(stack, {"gateway": {"randomSamplingPercentage": 100},
                                     "waypoint": {"randomSamplingPercentage": 100}})


def trace_of(stack: Stack, trace_id: str, n: int):
    return stack.sink.wait_for_spans(n, where=lambda s: s.trace_id == trace_id)


def test_gateway_waypoint_app_waypoint_app_gives_client_server_pairs(mesh):
    stack, ambient = mesh
    status, _ = ambient.request("/productpage")
    assert status == 200
    reviews_tp = ambient.reviews.last().get("traceparent")
    trace_id = reviews_tp.split("-")[1]
    spans = trace_of(stack, trace_id, 5)
    assert len(spans) == 5, spans
    by_id = {s.span_id: s for s in spans}
    chain = [(s.kind, s.service) for s in _path_to_root(by_id, reviews_tp.split("-")[2])]
    assert chain == [
        ("SERVER", "istio-ingressgateway.istio-system"),
        ("CLIENT", "istio-ingressgateway.istio-system"),
        ("SERVER", "productpage.default"),
        ("CLIENT", "productpage.default"),
        ("SERVER", "reviews.default"),
    ], "the sidecar demo's tree: the gateway's CLIENT span is not recorded twice"
    wp = [s for s in spans if s.attributes.get("node_id", "").startswith("waypoint~")]
    assert len(wp) == 3, "the waypoint recorded the productpage SERVER, its CLIENT, reviews' SERVER"
    pp_server, pp_client, rv_server = (
        next(s for s in wp if (s.kind, s.service) == k)
        for k in [("SERVER", "productpage.default"), ("CLIENT", "productpage.default"),
                  ("SERVER", "reviews.default")])
    assert pp_server.attributes["istio.destination_workload"] == "productpage-v1"
    assert pp_server.attributes["istio.source_namespace"] == "istio-system", \
        "the gateway's principal names the source"
    assert pp_server.attributes["istio.source_canonical_service"] == GATEWAY_PRINCIPAL.rsplit("/", 1)[1]
    for s in (pp_client, rv_server):
        assert s.attributes["istio.source_namespace"] == "default"
        assert s.attributes["istio.source_canonical_service"] == "productpage"
        assert s.attributes["istio.destination_workload"] == "reviews-v2"
        assert s.attributes["istio.destination_canonical_service"] == "reviews"
        assert s.attributes["istio.destination_canonical_revision"] == "v2"
        assert s.attributes["istio.destination_cluster_id"] == "Kubernetes"
    assert rv_server.resource.get("service.version") == "v2", "the endpoint's revision"
    assert rv_server.resource.get("k8s.pod.name") is None, "not the waypoint's pod"
    assert pp_client.attributes["peer.service"] == "reviews.default", "the edge productpage → reviews"
    assert rv_server.attributes["upstream_cluster"] == \
        "inbound-vip|9080|http|reviews.default.svc.cluster.local"


def _path_to_root(by_id, span_id):
    path = []
    while span_id in by_id:
        path.append(by_id[span_id])
        span_id = by_id[span_id].parent_span_id
    return list(reversed(path))


def test_two_services_behind_one_waypoint_are_named_apart(mesh):
    stack, ambient = mesh
    names = {}
    for i, service in enumerate(("productpage", "reviews")):
        trace = f"{i + 1:032x}"
        status, _ = ambient.call(service, headers={"traceparent": f"00-{trace}-{PARENT}-01"},
                                 source="sleep")
        assert status == 200
        # productpage calls reviews through the waypoint: its pair follows.
        spans = trace_of(stack, trace, 2 if service == "reviews" else 4)
        client = next(s for s in spans if s.kind == "CLIENT" and s.parent_span_id == PARENT)
        server = next(s for s in spans if s.parent_span_id == client.span_id)
        assert server.kind == "SERVER", "SERVER child of the source's CLIENT"
        assert client.service == "sleep.default", "the caller's service account names it"
        names[service] = server.service
        assert server.attributes["node_id"].startswith("waypoint~")
    assert names == {"productpage": "productpage.default", "reviews": "reviews.default"}


def test_a_503_at_the_waypoint_gives_error_spans(mesh):
    stack, ambient = mesh
    trace = "5" * 32
    status, _ = ambient.call("ratings", headers={"traceparent": f"00-{trace}-{PARENT}-01"})
    assert status == 503
    spans = trace_of(stack, trace, 2)
    server = next(s for s in spans if s.kind == "SERVER")
    client = next(s for s in spans if s.kind == "CLIENT")
    assert (server.service, client.service) == ("ratings.default", "productpage.default")
    for s in (server, client):
        assert s.status_code == 2, f"{s.kind}: a 503 is an error on both sides"
        assert s.attributes["http.response.status_code"] == 503
        assert s.attributes["response_flags"] != "-", "Envoy's reason (no upstream)"


def test_an_rbac_denial_at_the_waypoint_gives_error_spans(mesh):
    stack, ambient = mesh
    trace = "4" * 32
    status, _ = ambient.call("reviews", headers={"traceparent": f"00-{trace}-{PARENT}-01",
                                                 "x-test-deny": "1"})
    assert status == 403
    spans = trace_of(stack, trace, 2)
    server = next(s for s in spans if s.kind == "SERVER")
    client = next(s for s in spans if s.kind == "CLIENT")
    assert client.status_code == 2, "the source was refused: an error for its CLIENT span"
    assert server.status_code == 0, "a 4xx is the client's doing on the SERVER side"
    assert server.attributes["error.type"] == "403", "but the reason is on the span"
    assert server.service == "reviews.default", "named from the VIP: no endpoint was picked"
    assert client.raw.status.message.startswith("rbac_access_denied"), \
        f"Envoy's details say why: {client.raw.status.message!r}"
