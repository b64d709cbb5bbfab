"""Tracing never hurts traffic: a real Envoy with the plugin exports through a fault-injecting
front to the real rotel collector. Whatever the collector does, every request succeeds, the queue
stays bounded, undelivered spans are counted by reason, and export resumes when it recovers."""
import pytest

from helpers.harness import Answer, Forward, Late, wait_until

EXPORTER = {"flushInterval": "50ms", "timeout": "2s", "maxBatchSize": 10,
            "maxQueueSize": 50, "maxRetries": 2}


def faulty_sidecar(stack, **exporter):
    """(sidecar at 100% exporting through the faulty front, the front); `exporter` overrides
    keys of EXPORTER."""
    front = stack.faulty_collector()
    car = stack.sidecar({"randomSamplingPercentage": 100, "exporter": {**EXPORTER, **exporter}},
                        collector_http_port=front.port)
    return car, front


@pytest.fixture
def faulty(stack):
    return faulty_sidecar(stack)


def load(car, n, path="/productpage"):
    for _ in range(n):
        status, _ = car.request(path)
        assert status == 200, "tracing never fails a request"


def stat(car, name):
    return car.envoy.stat(f"wasmcustom.meshtrace_{name}")


def dropped(car):
    return sum(stat(car, f"spans_dropped_{r}") for r in ("queue_full", "export_failed", "too_large"))


def test_429_retry_after_is_honoured_then_delivered(stack):
    # One batch: the 10 spans leave together when the 10th is queued (maxBatchSize), never as
    # partial batches on the flush schedule. With 50 ms flushes, requests slower than that (a
    # loaded machine) send a partial batch, and the next one may leave while the first one's
    # 429 is still on its way back (4 requests may be in flight): it reaches the front ~0.05 s
    # after the first attempt, as if Retry-After had been ignored.
    car, front = faulty_sidecar(stack, flushInterval="60s")
    front.fault = Answer(429, {"retry-after": "2"})
    load(car, 5)
    wait_until(lambda: front.attempts, 10, "the first export attempt")
    front.fault = Forward()
    stack.sink.wait_for_spans(10)
    assert [a.spans for a in front.attempts] == [10, 10], "one batch, answered 429, then retried"
    first, second = front.attempts[0].at, front.attempts[1].at
    assert second - first >= 1.9, "nothing is sent before Retry-After (2 s) has passed"
    wait_until(lambda: stat(car, "spans_exported") == 10, 10, "every span to count as exported")
    assert dropped(car) == 0 and stat(car, "export_failures") >= 1


def test_503_is_retried_with_backoff_until_delivered(stack, faulty):
    car, front = faulty
    front.fault = Answer(503)
    load(car, 5)
    wait_until(lambda: len(front.attempts) >= 2, 15, "a retry after the first 503")
    front.fault = Forward()
    spans = stack.sink.wait_for_spans(10)
    assert len({s.span_id for s in spans}) == 10, "each span delivered once"
    wait_until(lambda: stat(car, "spans_exported") == 10, 10, "every span to count as exported")
    assert dropped(car) == 0


def test_400_is_dropped_without_retry(stack, faulty):
    car, front = faulty
    front.fault = Answer(400)
    load(car, 5)
    wait_until(lambda: stat(car, "spans_dropped_export_failed") == 10, 15,
               "the rejected spans to be dropped and counted")
    # Given up at once: a retried batch is sent again (after 1 s and 2 s of back-off) before its
    # spans are counted dropped, so the attempts would carry more than 10 spans by now. (Not a
    # deadline on the count: a loaded machine can take seconds to get the answer back.)
    assert sum(a.spans for a in front.attempts) == 10, "every span was sent exactly once"
    front.fault = Forward()
    load(car, 1)
    stack.sink.wait_for_spans(2)
    # Counted when the collector's answer is back at Envoy, after the sink has the spans.
    wait_until(lambda: stat(car, "spans_exported") >= 2, 5, "later batches to go out and count")


def test_slow_collector_times_out_and_requests_are_unaffected(stack, faulty):
    car, front = faulty
    front.fault = Late(8.0)
    load(car, 20)
    # Three attempts of 2 s (timeout) with 1 s and 2 s back-off between them.
    wait_until(lambda: stat(car, "spans_dropped_export_failed") > 0, 30,
               "timed-out batches to be dropped after their retries")
    front.fault = Forward()
    before = stat(car, "spans_exported")
    load(car, 5)
    wait_until(lambda: stat(car, "spans_exported") >= before + 10, 20, "export to resume")


def test_collector_down_under_load_stays_bounded_and_recovers(stack, faulty):
    car, front = faulty
    load(car, 20)  # 40 spans: within one queue, so none is dropped
    wait_until(lambda: stat(car, "spans_exported") == 40, 20, "the warm-up spans exported")
    rss_before = car.envoy.rss_bytes()
    front.stop()  # connection refused from now on
    for _ in range(10):
        load(car, 100)
        assert stat(car, "queue_depth") <= EXPORTER["maxQueueSize"], "the queue is bounded"
    wait_until(lambda: stat(car, "spans_dropped_queue_full") > 0
               and stat(car, "spans_dropped_export_failed") > 0, 20,
               "drops counted by reason: queue full and export failed")
    growth = car.envoy.rss_bytes() - rss_before
    assert growth < 20 * 2**20, f"2,000 spans with the collector down grew Envoy by {growth} bytes"
    front.start()
    exported = stat(car, "spans_exported")
    load(car, 10)
    wait_until(lambda: stat(car, "spans_exported") >= exported + 20, 20,
               "export to resume when the collector is back")
    wait_until(lambda: stat(car, "spans_recorded") == 2060, 10, "every span counted as recorded")


def test_a_client_cannot_inflate_cost_at_an_untrusting_gateway(stack):
    from helpers.harness import Node

    gateway = {"sampling": {"trustIncoming": False, "forceHeader": "x-force-trace"},
               "limits": {"maxAttributeLength": 64},
               "customTags": {"tenant": {"header": {"name": "x-tenant"}}},
               "exporter": {"flushInterval": "50ms"}}
    car = stack.sidecar({**gateway, "randomSamplingPercentage": 0},
                        node=Node(app="istio-ingressgateway", gateway=True), app_propagates=False)
    hostile = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
               "x-force-trace": "1", "b3": "1", "user-agent": "A" * 8000, "x-tenant": "t" * 8000}
    for _ in range(20):
        status, _ = car.request("/", hostile)
        assert status == 200
    wait_until(lambda: car.envoy.stat("wasmcustom.meshtrace_sampling_not_sampled_percentage") == 20,
               10, "20 local decisions counted")
    assert car.envoy.stat("wasmcustom.meshtrace_spans_recorded") == 0, \
        "neither a sampled parent nor a force header turns tracing on"
    big = stack.sidecar({**gateway, "randomSamplingPercentage": 100},
                        node=Node(app="istio-ingressgateway", gateway=True), app_propagates=False)
    big.request("/", hostile)
    # A gateway records its SERVER span and the CLIENT child it spawns for the upstream.
    span = next(s for s in stack.sink.wait_for_spans(2) if s.kind == "SERVER")
    assert len(span.attributes["user_agent.original"]) == 64, "attribute values are truncated"
    assert len(span.attributes["user_agent"]) == 64, "Istio's duplicate tag too"
    assert len(span.attributes["tenant"]) == 64, "custom tags from headers too"


def test_header_bytes_that_are_not_utf8_neither_fail_the_request_nor_stop_tracing(stack):
    """RFC 9110 lets a header value carry obs-text (bytes 0x80-0xFF), so any client can send
    one. The SDK's header-map read panics on it, which traps the Wasm VM: that request got a 503
    and the worker traced nothing more. meshtrace reads the bytes itself (as U+FFFD)."""
    car = stack.sidecar({"randomSamplingPercentage": 100, "exporter": {"flushInterval": "50ms"}})
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    latin1_tp = f"00-{trace[:-1]}\xe9-00f067aa0ba902b7-01"  # http.client sends it as Latin-1
    for headers in ({"user-agent": "caf\xe9"}, {"traceparent": latin1_tp}, {}):
        status, _ = car.request("/checkout", headers)
        assert status == 200, f"a request with {headers} still succeeds"
    sent_on = car.upstream.received[1].get("traceparent")
    assert sent_on and len(sent_on) == 55 and trace not in sent_on, \
        "a traceparent with a non-UTF-8 byte is invalid: the trace restarts"
    spans = stack.sink.wait_for_spans(6)
    agents = {s.attributes.get("user_agent.original") for s in spans if s.kind == "SERVER"}
    assert "caf\ufffd" in agents, "the byte is recorded as U+FFFD"
    assert car.envoy.stat("wasmcustom.meshtrace_context_restarted") >= 1
    assert "panicked" not in car.envoy.log()
