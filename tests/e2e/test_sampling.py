"""Sampling through a real Envoy: the decision shows in the sampled flag the app receives and in
the plugin's counters on Envoy's admin /stats."""
import math
import re

from harness import Node, wait_until

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
