"""Logs and traces joined (issue 15), on the real Envoy: the plugin publishes every request's
trace context as filter state, and Envoy's file access log — configured as the chart's
`accessLogging` recipe renders it (text and JSON) — prints it. For a sampled request, an unsampled
one, a 404 no-route and a 503 no-healthy-upstream local reply, the log line's ids equal those the
upstream received in `traceparent`, those of the exported span when one is recorded, and the W3C
trace context metric (`server-timing: trace;desc=…`) the client received."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from helpers.harness import (INBOUND, ROOT, HttpServer, Node, Reply, Stack, file_access_log,
                             free_port, http_get, listener, plugin_filter, static_cluster,
                             wait_until, wasm_path)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# w3c/trace-context spec/21-http_response_header_format.md (since #560): metric `trace`, its
# description `00-{trace-id}-{span-id}-{flags}`, e.g. `trace;desc=00-0af7…-b7ad…-01`.
TRACE_METRIC_RE = re.compile(r"^trace;desc=(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})$")
COLLECTOR = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
UP = "outbound|9080||reviews.default.svc.cluster.local"
DOWN = "outbound|9080||down.default.svc.cluster.local"


def recipe() -> dict:
    """The chart's access-log recipe (deploy/meshtrace/values.yaml `accessLogging.file`): the text
    line and the JSON labels docs/configuration.md tells users to configure."""
    values = yaml.safe_load((ROOT / "deploy" / "meshtrace" / "values.yaml").read_text())
    return values["accessLogging"]["file"]


class Gateway:
    """One listener with the plugin and both access logs: `/ok` reaches the upstream, `/down` a
    cluster without endpoints (503 UH), anything else matches no route (404 NR)."""

    def __init__(self, stack: Stack, plugin_config: dict, envoy_args: list[str] | None = None,
                 upstream=None):
        self.upstream = upstream or stack.upstream()
        self.port = free_port()
        self.text_log = stack.workdir / f"access-text-{self.port}.log"
        self.json_log = stack.workdir / f"access-json-{self.port}.log"
        file = recipe()
        routes = [
            {"name": "ok", "match": {"prefix": "/ok"}, "route": {"cluster": UP, "timeout": "10s"}},
            {"name": "down", "match": {"prefix": "/down"},
             "route": {"cluster": DOWN, "timeout": "10s"}},
        ]
        assert stack.collector is not None
        clusters = [
            static_cluster(UP, self.upstream.port),
            {"name": DOWN, "type": "STATIC", "connect_timeout": "1s",
             "load_assignment": {"cluster_name": DOWN, "endpoints": []}},
            static_cluster(COLLECTOR, stack.collector.http_port),
        ]
        bootstrap = {
            "node": Node(app="productpage").envoy_node(),
            "static_resources": {
                "listeners": [listener(
                    "virtualInbound", self.port, INBOUND, UP,
                    [plugin_filter(wasm_path(), plugin_config)], route_name="inbound|9080||",
                    routes=routes,
                    access_log=[file_access_log(self.text_log, text=file["text"]),
                                file_access_log(self.json_log, labels=file["labels"])])],
                "clusters": clusters,
            },
        }
        self.envoy = stack.envoy(f"gw-{self.port}", bootstrap, extra_args=[
            "--file-flush-interval-msec", "20", *(envoy_args or [])])

    def request(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Status and response headers, repeated field lines joined with ", " (RFC 9110 §5.3);
        the request's x-request-id marks its log lines."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            joined: dict[str, str] = {}
            for k, v in resp.getheaders():
                joined[k.lower()] = f"{joined[k.lower()]}, {v}" if k.lower() in joined else v
            return resp.status, joined
        finally:
            conn.close()

    def log_lines(self, request_id: str) -> tuple[dict[str, str], dict]:
        """The text line (its key=value fields) and the JSON object logged for one request."""
        def find():
            text = [l for l in self.text_log.read_text().splitlines()
                    if f"request_id={request_id}" in l] if self.text_log.exists() else []
            objs = [json.loads(l) for l in self.json_log.read_text().splitlines()
                    ] if self.json_log.exists() else []
            objs = [o for o in objs if o.get("request_id") == request_id]
            return (text[0], objs[0]) if text and objs else None
        line, obj = wait_until(find, 10, f"access log lines of request {request_id}")
        fields = dict(kv.split("=", 1) for kv in line.split() if re.match(r"^[a-z_]+=", kv))
        return fields, obj


def trace_metric(resp: dict[str, str]) -> str | None:
    """The description of the `trace` metric in the response's server-timing, checked against the
    spec's syntax."""
    metrics = [m.strip() for m in resp.get("server-timing", "").split(",") if m.strip()]
    found = [m for m in metrics if m.split(";")[0] == "trace"]
    if not found:
        return None
    assert len(found) == 1, f"one trace metric: {metrics}"
    m = TRACE_METRIC_RE.match(found[0])
    assert m, f"the W3C syntax: {found[0]!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def gateway(request):
    stack = Stack()
    gw = Gateway(stack, {"randomSamplingPercentage": 1,
                         "propagation": {"traceResponse": True, "responseRequestId": True}},
                 envoy_args=["--component-log-level", "wasm:debug"])
    yield stack, gw
    if request.session.testsfailed:
        print(stack.logs())
    stack.close()


# (path, incoming traceparent flags or None for a new trace, status, response flags, why)
CASES = [
    ("/ok", "01", 200, "-", "sampled request reaching the upstream"),
    ("/ok", "00", 200, "-", "unsampled request (the parent's decision)"),
    ("/ok", None, 200, "-", "new trace at 1%: sampled or not, the log says what was sent"),
    ("/nowhere", "01", 404, "NR", "404 no route: a local reply after the plugin"),
    ("/down", "01", 503, "UH", "503 no healthy upstream: a local reply after the plugin"),
    ("/nowhere", "00", 404, "NR", "404 for an unsampled request: no span, still logged"),
]


@pytest.mark.parametrize("path,flags,status,response_flags,why", CASES,
                         ids=[c[-1] for c in CASES])
def test_access_log_line_carries_the_context_sent_upstream(gateway, path, flags, status,
                                                           response_flags, why):
    stack, gw = gateway
    request_id = f"req-{path.strip('/')}-{flags}-{status}"
    headers = {"x-request-id": request_id}
    if flags is not None:
        headers["traceparent"] = f"00-{TRACE}-{SPAN}-{flags}"
    before = len(gw.upstream.received)
    got_status, resp = gw.request(path, headers)
    assert got_status == status, why

    fields, obj = gw.log_lines(request_id)
    # The trace metric the client got is the context of the log line (a sidecar: its own span
    # is the one sent upstream).
    metric = trace_metric(resp)
    assert metric, f"{why}: a W3C trace metric, got server-timing {resp.get('server-timing')!r}"
    trace_id, span_id, resp_flags = TP_RE.match(metric).groups()
    assert "traceresponse" not in resp, f"{why}: the replaced draft header is not sent"
    assert resp.get("x-request-id") == request_id, f"{why}: the request id is returned"
    # An operator with no value prints "-" in text and null in JSON.
    for source, absent in ((fields, "-"), (obj, None)):
        assert source["trace_id"] == trace_id, f"{why}: {source}"
        assert source["span_id"] == span_id, f"{why}: {source}"
        assert source["sampled"] == ("true" if int(resp_flags, 16) & 1 else "false"), why
        assert source["request_id"] == request_id, why
        if flags is None:
            assert source["parent_span_id"] == absent, f"{why}: no parent, none logged"
        else:
            assert source["parent_span_id"] == SPAN, why
            assert source["trace_id"] == TRACE, why
    assert obj["response_flags"] == response_flags, f"{why}: {obj}"

    if status == 200:
        up = gw.upstream.received[before]
        assert up.get("traceparent") == metric, \
            f"{why}: the upstream received exactly the logged context"
    else:
        assert len(gw.upstream.received) == before, f"{why}: a local reply reaches no upstream"

    if resp_flags in ("01", "03"):
        assert stack.sink is not None
        spans = stack.sink.wait_for_spans(1, where=lambda s: s.span_id == span_id)
        assert spans[0].trace_id == trace_id, why
        assert spans[0].attributes.get("http.response.status_code") == status, why
        assert spans[0].parent_span_id == (SPAN if flags else ""), why

    # The plugin's own debug line (Envoy's wasm logger at debug) names the same request.
    wait_until(lambda: f"trace_id={trace_id} span_id={span_id}" in gw.envoy.log(), 10,
               "the plugin's debug line with the request's ids")


def test_nothing_leaks_and_nothing_is_logged_at_debug_by_default(stack):
    """Defaults: the context is published (access logs need no plugin setting), but no
    trace metric, traceresponse or x-request-id goes back to the client, and at Envoy's default log level the
    plugin writes no per-request line."""
    gw = Gateway(stack, {"randomSamplingPercentage": 100})
    status, resp = gw.request("/ok", {"x-request-id": "req-default",
                                      "traceparent": f"00-{TRACE}-{SPAN}-01"})
    assert status == 200
    assert "traceresponse" not in resp, "traceresponse is off by default"
    assert "server-timing" not in resp, "no trace metric by default"
    assert "x-request-id" not in resp, "the request id is not returned by default"
    fields, obj = gw.log_lines("req-default")
    up = gw.upstream.last()
    assert f"00-{fields['trace_id']}-{fields['span_id']}-01" == up.get("traceparent")
    assert "request trace_id=" not in gw.envoy.log(), "no debug line at info level"


def test_publish_context_empty_publishes_nothing(stack):
    gw = Gateway(stack, {"propagation": {"publishContext": []}})
    status, _ = gw.request("/ok", {"x-request-id": "req-none"})
    assert status == 200
    lines = wait_until(lambda: gw.json_log.exists() and gw.json_log.read_text().splitlines(), 10,
                       "the JSON access log line")
    obj = json.loads(lines[-1])
    assert obj["trace_id"] is None and obj["request_id"] is None, \
        f"nothing published, the log shows no value: {obj}"


class TimedApp(HttpServer):
    """An app that reports its own Server-Timing metrics (and records what it received)."""

    METRICS = "db;dur=53, cache;desc=hit"

    def __init__(self) -> None:
        self.received: list = []
        super().__init__()

    def respond(self, request):
        self.received.append(request)
        return Reply(200, b"{}", headers={"server-timing": self.METRICS})


@pytest.mark.parametrize("config, legacy, why", [
    ({"traceResponse": True}, False, "the W3C metric only"),
    ({"traceResponse": True, "traceResponseHeader": True}, True, "and the replaced header, for old clients"),
], ids=["metric", "metric-and-legacy-header"])
def test_the_trace_metric_joins_the_apps_server_timing(stack, config, legacy, why):
    """propagation.traceResponse on a real Envoy: the app's Server-Timing metrics reach the client
    untouched and the trace metric follows them (its own field line, which Envoy appends); the
    recorded span is the one it names."""
    app = stack._own(TimedApp())
    gw = Gateway(stack, {"randomSamplingPercentage": 100, "propagation": config}, upstream=app)
    status, resp = gw.request("/ok", {"x-request-id": "req-timing", "traceparent": f"00-{TRACE}-{SPAN}-01"})
    assert status == 200
    assert resp["server-timing"].startswith(TimedApp.METRICS + ", trace;desc="), resp["server-timing"]
    metric = trace_metric(resp)
    assert metric == app.received[-1].get("traceparent"), f"{why}: this sidecar's span, sent on"
    trace_id, span_id, flags = TP_RE.match(metric).groups()
    assert (trace_id, flags) == (TRACE, "01")
    assert stack.sink is not None
    (span,) = stack.sink.wait_for_spans(1, where=lambda s: s.span_id == span_id)
    assert span.trace_id == TRACE and span.parent_span_id == SPAN
    assert resp.get("traceresponse") == (metric if legacy else None), why
