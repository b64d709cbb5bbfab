"""Configuration pushes lose no span silently. Every ECDS push starts fresh VMs; the old VM lives
on while a stream still holds it (Envoy `context.cc`: each stream's context keeps a
`PluginHandle`), then its root context gets `proxy_on_done`. meshtrace answers it by sending its
whole queue and waiting for the collector's answers before `proxy_done`. Every recorded span must
reach the collector or be counted as dropped — under load across pushes, and for a request that
is in flight while the push happens."""
import json
import threading

import pytest

from helpers.harness import HttpServer, Received, Reply, http_get, static_cluster, wait_until
from test_configuration import EcdsProxy

COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
DROP_REASONS = ("queue_full", "export_failed", "too_large", "rejected", "shutdown")


def config(generation: int) -> dict:
    # A long flush interval keeps spans queued at the moment of a push: the case that lost them.
    return {"randomSamplingPercentage": 100,
            "exporter": {"cluster": COLLECTOR, "flushInterval": "5s", "maxBatchSize": 512},
            "resourceAttributes": {"meshtrace.test.generation": str(generation)}}


class SlowUpstream(HttpServer):
    """The app: answers at once, except `/slow`, held until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.slow_arrived = threading.Event()
        self.slow_traceparent = ""
        super().__init__()

    def respond(self, request: Received) -> Reply:
        if request.path == "/slow":
            self.slow_traceparent = request.get("traceparent") or ""
            self.slow_arrived.set()
            self.release.wait(30)  # held by the test, released at teardown at the latest
        return Reply(200)

    def close(self) -> None:
        self.release.set()
        super().close()


class PushedProxy(EcdsProxy):
    """The ECDS-delivered plugin of test_configuration, exporting straight to the stack's OTLP
    sink, in front of the slow app."""

    def __init__(self, stack) -> None:
        self.app = stack._own(SlowUpstream())
        self.generation = 1
        super().__init__(stack, upstream_port=self.app.port,
                         clusters=[static_cluster(COLLECTOR, stack.sink.port)], name="pushed")
        wait_until(lambda: self.reloads() >= 1, 20, "the first extension config")

    def initial_config(self) -> str:
        return json.dumps(config(self.generation))

    def push_and_wait(self) -> None:
        """A new configuration generation, then waits until Envoy applied it."""
        before = self.reloads()
        self.generation += 1
        self.set_config(json.dumps(config(self.generation)))
        wait_until(lambda: self.reloads() > before, 20, "the pushed extension config")

    def reloads(self) -> int:
        return self.ecds("config_reload")

    def stat(self, name: str) -> int:
        return self.envoy.stat(f"wasmcustom.meshtrace_{name}")

    def dropped(self) -> dict[str, int]:
        return {r: self.stat(f"spans_dropped_{r}") for r in DROP_REASONS}

    def get(self, path: str) -> int:
        status, _ = http_get(f"http://127.0.0.1:{self.port}{path}")
        return status


@pytest.fixture
def proxy(stack):
    return PushedProxy(stack)


def accounted(proxy, sink, sent: int) -> bool:
    return len(sink.spans()) + sum(proxy.dropped().values()) >= sent


def test_pushes_under_load_lose_no_span_silently(stack, proxy):
    stop = threading.Event()
    sent = [0, 0]

    def load(i: int) -> None:
        while not stop.is_set():
            assert proxy.get("/productpage") == 200, "traffic flows across pushes"
            sent[i] += 1

    workers = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: sum(sent) >= 200, 30, "load before the first push")
        for _ in range(5):
            proxy.push_and_wait()
            before = sum(sent)
            wait_until(lambda: sum(sent) >= before + 200, 30, "load between pushes")
    finally:
        stop.set()
        for w in workers:
            w.join()
    total = sum(sent)
    # Spans of the current VM leave within its 5 s flush interval; retired VMs' at once.
    wait_until(lambda: accounted(proxy, stack.sink, total), 20,
               f"each of {total} spans exported or counted "
               f"(sink {len(stack.sink.spans())}, dropped {proxy.dropped()})")
    assert proxy.stat("spans_recorded") == total, "one span recorded per request"
    ids = {s.span_id for s in stack.sink.spans()}
    assert len(ids) == len(stack.sink.spans()), "no span exported twice"
    lost = sum(proxy.dropped().values())
    print(f"{total} requests over 5 pushes: {len(ids)} spans exported, dropped {proxy.dropped()}")
    assert lost == 0, f"nothing lost with a reachable collector: {proxy.dropped()}"


def test_a_request_in_flight_across_a_push_is_exported(stack, proxy):
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault("status", proxy.get("/slow")))
    slow.start()
    assert proxy.app.slow_arrived.wait(10), "the long request reached the app"
    trace_id = proxy.app.slow_traceparent.split("-")[1]
    proxy.push_and_wait()
    assert proxy.get("/productpage") == 200, "the new configuration serves"
    proxy.app.release.set()
    slow.join(15)
    assert result.get("status") == 200, "the long request completes"
    spans = stack.sink.wait_for_spans(1, 15, where=lambda s: s.trace_id == trace_id)
    assert spans[0].resource.get("meshtrace.test.generation") == "1", \
        "recorded by the VM it started in (the old configuration), and exported"
