"""Sampling through a real Envoy: the decision shows in the sampled flag the app receives and in
the plugin's counters on Envoy's admin /stats."""
import math
import re

import pytest

from helpers.harness import (INBOUND, Node, Stack, free_port, hcm, http_get, listener,
                             plugin_filter, static_cluster, wait_until, wasm_path)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def flags_seen(car, n, path="/", headers=None):
    """Sends n requests; returns the sampled flag of each traceparent the app received."""
    start = len(car.app.received)
    for _ in range(n):
        status, _ = car.request(path, headers)
        assert status == 200
    out = []
    for rec in car.app.received[start:]:
        tp = rec.get("traceparent")
        assert tp and re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", tp), tp
        out.append(int(tp[-2:], 16) & 1)
    return out


def test_percentage_is_honoured_within_tolerance(bare_stack):
    car = bare_stack.sidecar({"randomSamplingPercentage": 10, "exporter": {"protocol": "none"}},
                             app_propagates=False)
    n, p = 2000, 0.10
    sampled = sum(flags_seen(car, n))
    tolerance = 5 * math.sqrt(n * p * (1 - p))  # five standard deviations of the binomial
    assert abs(sampled - n * p) <= tolerance, f"{sampled} of {n} sampled at 10%"
    # Counters reach Envoy's /stats on the plugin's next tick.
    def decided():
        stats = car.envoy.stats("meshtrace_sampling")
        yes = stats.get("wasmcustom.meshtrace_sampling_sampled_percentage", 0)
        no = stats.get("wasmcustom.meshtrace_sampling_not_sampled_percentage", 0)
        return (yes, no) if yes + no == n else None
    yes, _ = wait_until(decided, 10, f"{n} decisions counted on /stats")
    assert yes == sampled, "the sampled counter matches the flags the app saw"
    assert car.envoy.stat("wasmcustom.meshtrace_spans_recorded") == 0, \
        "with exporter.protocol none the sampled requests are propagated, not recorded"


def test_sampled_parent_is_honoured_unless_untrusted(bare_stack):
    # Envoy strips x-envoy-* headers from requests it does not consider internal (as here, from a
    # client without X-Forwarded-For), so a configured force header is used end to end.
    force = {"forceHeader": "x-force-trace"}
    trusting = bare_stack.sidecar({"randomSamplingPercentage": 0, "sampling": force,
                                   "exporter": {"protocol": "none"}},
                                  app_propagates=False)
    assert flags_seen(trusting, 20, headers={"traceparent": f"00-{TRACE}-{SPAN}-01"}) == [1] * 20
    assert flags_seen(trusting, 20, headers={"x-force-trace": "1"}) == [1] * 20, \
        "the force header samples when trusted"
    edge = bare_stack.sidecar({"randomSamplingPercentage": 0,
                               "sampling": {**force, "trustIncoming": False},
                               "exporter": {"protocol": "none"}},
                              node=Node(app="istio-ingressgateway", gateway=True),
                              app_propagates=False)
    assert flags_seen(edge, 20, headers={"traceparent": f"00-{TRACE}-{SPAN}-01"}) == [0] * 20, \
        "a client cannot turn sampling on at an untrusting gateway"
    assert edge.app.received[-1].get("traceparent").split("-")[1] == TRACE, \
        "the untrusting gateway keeps the trace id while deciding locally"
    assert flags_seen(edge, 20, headers={"x-force-trace": "1"}) == [0] * 20, "nor force it"


def test_one_mesh_wide_configuration_is_untrusting_at_gateways_only(bare_stack):
    """A root-namespace WasmPlugin reaches gateways too (Istio cannot exclude them): its
    `gateway` block applies where the node id says `router~`, and nowhere else."""
    mesh_wide = {"randomSamplingPercentage": 0, "exporter": {"protocol": "none"},
                 "gateway": {"sampling": {"trustIncoming": False}}}
    parent = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    sidecar = bare_stack.sidecar(mesh_wide, app_propagates=False)
    gateway = bare_stack.sidecar(mesh_wide, node=Node(app="istio-ingressgateway", gateway=True),
                                 app_propagates=False)
    assert flags_seen(sidecar, 10, headers=parent) == [1] * 10, "a sidecar follows its caller"
    assert flags_seen(gateway, 10, headers=parent) == [0] * 10, \
        "the gateway applies its block: a client cannot turn sampling on"


def test_probe_paths_are_never_sampled(bare_stack):
    car = bare_stack.sidecar({"randomSamplingPercentage": 100, "exporter": {"protocol": "none"}},
                             app_propagates=False)
    for path in ["/healthz", "/ready", "/metrics", "/app-health/reviews/livez", "/healthz?full=1"]:
        assert flags_seen(car, 5, path=path) == [0] * 5, path
    assert flags_seen(car, 5, path="/productpage") == [1] * 5
    wait_until(lambda: sum(car.envoy.stats("meshtrace_sampling_not_sampled_probe").values()) == 25,
               10, "25 probe decisions counted on /stats")


def test_rules_choose_per_route(bare_stack):
    car = bare_stack.sidecar({
        "randomSamplingPercentage": 0,
        "sampling": {"rules": [
            {"match": {"path": {"prefix": "/api/"}, "method": "GET"}, "sample": "always"},
            {"match": {"headers": [{"name": "x-debug", "value": "1"}]}, "sample": 100},
        ]},
        "exporter": {"protocol": "none"}}, app_propagates=False)
    assert flags_seen(car, 5, path="/api/orders") == [1] * 5
    assert flags_seen(car, 5, path="/other") == [0] * 5
    assert flags_seen(car, 5, path="/other", headers={"x-debug": "1"}) == [1] * 5
    wait_until(lambda: sum(car.envoy.stats("meshtrace_sampling_sampled_rule").values()) == 10,
               10, "10 rule decisions counted on /stats")


# Envoy removes `x-envoy-force-trace` from every request it does not consider internal, before
# any HTTP filter runs (source/common/http/conn_manager_utility.cc:
# ConnectionManagerUtility::mutateRequestHeaders → cleanInternalHeaders). A request is internal
# only when the address Envoy trusts for the client lies in the connection manager's
# `internal_address_config`, which since Envoy 1.33 is empty unless configured.
INTERNAL_LOOPBACK = {"use_remote_address": True, "internal_address_config": {
    "cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]}}

# (listener, its connection manager's options, force header configured, request headers,
#  sampled?, reason)
FORCE_CASES = [
    ("plain", {}, None, {"x-envoy-force-trace": "1"}, False,
     "a sidecar's listener: Envoy strips the default header, the plugin never sees it"),
    ("custom", {}, "x-force-trace", {"x-force-trace": "1"}, True,
     "a header of our own is not Envoy's to strip: it works on any listener"),
    ("internal", INTERNAL_LOOPBACK, None, {"x-envoy-force-trace": "1"}, True,
     "a client inside internal_address_config keeps the default header"),
    ("internal", INTERNAL_LOOPBACK, None,
     {"x-envoy-force-trace": "1", "x-forwarded-for": "127.0.0.1"}, False,
     "with use_remote_address a request already carrying X-Forwarded-For is not internal"),
]


@pytest.fixture(scope="module")
def force_proxy():
    """One Envoy, a listener per connection-manager setup, each with the plugin at 0%."""
    with Stack(collector=False) as stack:
        upstream = stack.upstream()
        ports, listeners = {}, []
        for name, options, force_header, *_ in FORCE_CASES:
            if name in ports:
                continue
            config = {"randomSamplingPercentage": 0, "exporter": {"protocol": "none"}}
            if force_header:
                config["sampling"] = {"forceHeader": force_header}
            ports[name] = free_port()
            lst = listener(name, ports[name], INBOUND, "inbound|9080||",
                           [plugin_filter(wasm_path(), config, vm_id=name)])
            hcm(lst).update(options)
            listeners.append(lst)
        stack.envoy("force", {"node": Node().envoy_node(), "static_resources": {
            "listeners": listeners, "clusters": [static_cluster("inbound|9080||", upstream.port)]}})
        yield ports, upstream


@pytest.mark.parametrize("name,options,force_header,headers,sampled,reason", FORCE_CASES,
                         ids=[c[-1] for c in FORCE_CASES])
def test_the_force_header_works_where_envoy_lets_it_through(
        force_proxy, name, options, force_header, headers, sampled, reason):
    ports, upstream = force_proxy
    before = len(upstream.received)
    status, _ = http_get(f"http://127.0.0.1:{ports[name]}/checkout", headers)
    assert status == 200
    got = upstream.received[before]
    assert int(got.get("traceparent")[-2:], 16) & 1 == sampled, reason
    if force_header is None:
        assert (got.get("x-envoy-force-trace") is not None) == sampled, \
            f"{reason}: the header reaches the upstream exactly when it reached the plugin"
