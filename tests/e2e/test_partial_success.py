"""OTLP "Partial Success" through a real Envoy: a collector that accepts a request (HTTP 200) but
names spans it rejected in the body's `ExportTracePartialSuccess`. Those spans are not exported:
they are counted as dropped (`meshtrace_spans_dropped_rejected`), and the collector's message is
logged once per interval, not once per answer."""
from helpers.harness import HttpServer, Received, Reply, wait_until

MESSAGE = "span attribute count over the tenant limit"


class PartialSuccessCollector(HttpServer):
    """An OTLP/HTTP endpoint that rejects one span of every export request it answers."""

    def __init__(self) -> None:
        self.requests: list[int] = []  # spans per export request
        super().__init__()

    def respond(self, request: Received) -> Reply:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        req = pb.ExportTraceServiceRequest.FromString(request.body)
        self.requests.append(sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans))
        answer = pb.ExportTraceServiceResponse()
        answer.partial_success.rejected_spans = 1
        answer.partial_success.error_message = MESSAGE
        return Reply(200, answer.SerializeToString(), content_type="application/x-protobuf")


def test_rejected_spans_are_dropped_and_logged_once(bare_stack):
    collector = bare_stack._own(PartialSuccessCollector())
    car = bare_stack.sidecar({"randomSamplingPercentage": 100,
                              "exporter": {"flushInterval": "50ms", "maxBatchSize": 2}},
                             collector_http_port=collector.port)
    for _ in range(10):
        status, _ = car.request("/productpage")
        assert status == 200

    def stat(name):
        return car.envoy.stat(f"wasmcustom.meshtrace_{name}")

    # Two spans per request (inbound SERVER, outbound CLIENT).
    wait_until(lambda: stat("spans_exported") + stat("spans_dropped_rejected") == 20, 15,
               "every span to be counted as exported or rejected")
    sent = len(collector.requests)
    assert sum(collector.requests) == 20, "every span was sent once"
    assert stat("spans_dropped_rejected") == sent, "one rejected span per answer is dropped"
    assert stat("spans_exported") == 20 - sent, "exported = sent - rejected"
    assert stat("spans_dropped_export_failed") == 0, "a partial success is not a failure"
    logged = [line for line in car.envoy.log().splitlines() if MESSAGE in line]
    assert sent >= 2 and len(logged) == 1, \
        f"the collector's message once per interval, not per answer ({sent} answers): {logged}"
