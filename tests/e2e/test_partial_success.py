"""OTLP "Partial Success" through a real Envoy: a collector that accepts a request (HTTP 200) but
names spans it rejected in the body's `ExportTracePartialSuccess`. Those spans are not exported:
they are counted as dropped (`meshtrace_spans_dropped_rejected`), and the collector's message is
logged once per interval, not once per answer."""
import http.server
import threading

from harness import _QuietServer, free_port, wait_until

MESSAGE = "span attribute count over the tenant limit"


class PartialSuccessCollector:
    """An OTLP/HTTP endpoint that rejects one span of every export request it answers."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        self.port = free_port()
        self.requests: list[int] = []  # spans per export request
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                req = pb.ExportTraceServiceRequest()
                req.ParseFromString(self.rfile.read(int(self.headers.get("content-length") or 0)))
                owner.requests.append(sum(len(ss.spans) for rs in req.resource_spans
                                          for ss in rs.scope_spans))
                answer = pb.ExportTraceServiceResponse()
                answer.partial_success.rejected_spans = 1
                answer.partial_success.error_message = MESSAGE
                body = answer.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
