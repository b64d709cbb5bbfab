"""The whole plugin (dist/meshtrace.wasm) on the ABI host, without Envoy: fast checks of what a
user sees — the context sent on, the span exported — in a second. The e2e suite on a real Envoy
stays the final word; these catch a broken build or ABI use before it.
"""
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helpers.abi_host import Host
from helpers.scenarios import INBOUND_STREAM, REQUEST, SIDECAR

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"


def started(config: dict) -> Host:
    host = Host(properties=SIDECAR)
    assert host.start(json.dumps(config)), host.logs
    return host


def flush(host: Host) -> None:
    """Ticks until the exporter's flush interval has passed (the first tick starts it)."""
    for _ in range(8):
        host.tick()
        if host.http_calls:
            return


def decode_export(body: bytes, grpc: bool = False) -> ExportTraceServiceRequest:
    if grpc:
        # gRPC length-prefixed message: compressed flag, 4-byte big-endian length
        # (grpc/doc/PROTOCOL-HTTP2.md, "Length-Prefixed-Message").
        assert body[0] == 0, "uncompressed"
        assert int.from_bytes(body[1:5], "big") == len(body) - 5
        body = body[5:]
    return ExportTraceServiceRequest.FromString(body)


def attrs(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_a_valid_traceparent_continues_the_trace_with_a_new_span_id():
    host = started({})
    stream = host.request(REQUEST + [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01")],
                          properties=INBOUND_STREAM)
    version, trace_id, span_id, flags = stream.request_header("traceparent").split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01"), "same trace, still sampled"
    assert span_id != PARENT_SPAN and len(span_id) == 16, "this proxy's span is the new parent"
    assert stream.request_header("x-request-id") == dict(REQUEST)["x-request-id"], \
        "a well-formed x-request-id is forwarded"


def test_a_request_without_context_starts_a_trace_and_gets_a_request_id():
    host = started({"randomSamplingPercentage": 0})
    stream = host.request([(k, v) for k, v in REQUEST if k != "x-request-id"],
                          properties=INBOUND_STREAM)
    _, trace_id, _, flags = stream.request_header("traceparent").split("-")
    assert trace_id != "0" * 32 and flags == "02", "random trace id, RANDOM flag, not sampled"
    assert len(stream.request_header("x-request-id")) == 36, "a UUID is generated"
    assert not host.http_calls


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_sampled_request_is_exported_as_otlp_to_the_collector_cluster(protocol):
    host = started({"randomSamplingPercentage": 100, "exporter": {"protocol": protocol}})
    host.request(REQUEST + [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01")],
                 properties=INBOUND_STREAM)
    flush(host)
    [call] = host.http_calls
    assert call.cluster == COLLECTOR
    assert call.header(":method") == "POST"
    grpc = protocol == "grpc"
    if grpc:
        assert call.header(":path") == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        assert call.header("content-type") == "application/grpc"
    else:
        assert (call.header(":path"), call.header("content-type")) == \
            ("/v1/traces", "application/x-protobuf")
    export = decode_export(call.body, grpc=grpc)
    [rs] = export.resource_spans
    assert attrs(rs.resource.attributes)["service.name"] == "reviews.default", \
        "Istio's APP_LABEL_AND_NAMESPACE service name"
    [span] = rs.scope_spans[0].spans
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_SPAN
    # spanName `istio` (the default): Istio's tracer names a span `host:port/*`; an inbound
    # authority is qualified with the mesh's DNS domain.
    assert span.name == "reviews.default.svc.cluster.local:9080/*"
    assert span.kind == span.SPAN_KIND_SERVER, "inbound|… cluster: the server side"
    a = attrs(span.attributes)
    assert a["http.request.method"] == "GET" and a["http.response.status_code"] == 200
    assert a["upstream_cluster"] == "inbound|9080||"

    host.respond(call, status=200, **({"trailers": [("grpc-status", "0")]} if grpc else {}))
    host.tick()
    assert host.metric("meshtrace_spans_exported") == 1


def test_a_retryable_collector_answer_retries_after_the_backoff():
    host = started({"randomSamplingPercentage": 100})
    host.request(REQUEST, properties=INBOUND_STREAM)
    flush(host)
    host.respond(host.http_calls[0], status=503)
    host.tick(advance_ms=1000)  # OTLP/HTTP: 503 is retryable; first back-off 1 s
    [retry] = host.http_calls
    host.respond(retry, status=200)
    host.tick()
    assert host.metric("meshtrace_spans_exported") == 1
    assert host.metric("meshtrace_export_failures") == 1


def test_a_bad_configuration_is_refused_naming_the_key():
    host = Host(properties=SIDECAR)
    assert not host.start(json.dumps({"randomSamplingPercentage": 101}))
    errors = [msg for level, msg in host.logs if level >= 4]
    assert len(errors) == 1 and "randomSamplingPercentage" in errors[0], host.logs



def test_ten_thousand_spans_a_second_with_late_ticks_drop_nothing():
    """Issue 18, item 2, without Envoy: one worker at 100% sampling, a span every 100 µs (10,000
    spans/s, a saturated worker), default exporter settings, the tick firing 25% late (a
    saturated worker's timers wait for its event loop) and a collector that answers each export
    within 20 ms. When batches left only on the tick, 2,500 spans arrived between two ticks
    against a queue of 2,048: the bench's saturated round dropped 1,326 of 61,484 spans."""
    host = started({"randomSamplingPercentage": 100})
    late_tick_ns = host.tick_period_ms * 1_000_000 * 5 // 4
    answer_after_ns = 20_000_000
    requests, next_tick, sent_at, most_in_flight = 8_000, host.now_ns + late_tick_ns, {}, 0
    for _ in range(requests):
        host.request(REQUEST, properties=INBOUND_STREAM, advance_ns=100_000)
        for call in list(host.http_calls):
            if host.now_ns - sent_at.setdefault(call.token, host.now_ns) >= answer_after_ns:
                host.respond(call)
        most_in_flight = max(most_in_flight, len(host.http_calls))
        if host.now_ns >= next_tick:
            host.tick(advance_ms=0)
            next_tick = host.now_ns + late_tick_ns
    for _ in range(3):  # what is left: sent within a flush interval (1 s)
        host.tick(advance_ms=1000)
        host.respond_all()
    dropped = {name: n for name, n in host.metrics.items() if "dropped" in name and n}
    assert dropped == {}, f"spans dropped with a collector that keeps up: {dropped}"
    assert host.metric("meshtrace_spans_exported") == requests
    assert most_in_flight <= 4, "export requests out at once stay bounded"
