"""Trace context through a real Envoy: client → inbound listener → app (copies the context as the
seed's Step 3 tells apps to) → outbound listener → upstream. The upstream must receive exactly
what W3C Trace Context Level 2 (and B3 / x-request-id rules) require."""
import re

import pytest

from helpers.harness import Node, Stack, wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def mesh():
    with Stack(collector=False) as stack:
        yield stack.sidecar({"randomSamplingPercentage": 100, "exporter": {"protocol": "none"},
                             "propagation": {"extract": ["tracecontext", "b3", "b3multi", "baggage"],
                                             "inject": ["tracecontext", "baggage"]}},
                            node=Node(app="productpage"))


def send(car, headers):
    """Returns (what the app received, what the upstream received) for one request."""
    before_app, before_up = len(car.app.received), len(car.upstream.received)
    status, _ = car.request("/productpage", headers)
    assert status == 200
    app = car.app.received[before_app]
    up = car.upstream.received[before_up]
    return app, up


def parsed(rec):
    values = rec.get_all("traceparent")
    assert len(values) == 1, f"exactly one traceparent, got {values}"
    m = TP_RE.match(values[0])
    assert m, f"valid version-00 traceparent, got {values[0]!r}"
    return m.groups()


# (incoming headers, trace id kept?, expected upstream flags, reason)
CASES = [
    ([("traceparent", f"00-{TRACE}-{SPAN}-01")], True, "01", "valid, sampled"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-00")], True, "00", "valid, not sampled: still propagated"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-03")], True, "03", "Level 2 random flag carried"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-09")], True, "01", "unknown flag bits are not propagated"),
    ([("traceparent", f"  00-{TRACE}-{SPAN}-01 ")], True, "01", "optional whitespace around the value"),
    ([("traceparent", f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like")], True, "01",
     "future version with extra fields is parsed"),
    ([("traceparent", f"00-{TRACE.upper()}-{SPAN}-01")], False, "03", "uppercase hex is invalid: restart"),
    ([("traceparent", f"ff-{TRACE}-{SPAN}-01")], False, "03", "version ff is invalid: restart"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-01-extra")], False, "03", "version 00 must be exactly 55 chars"),
    ([("traceparent", f"cc-{TRACE}-{SPAN}-01.x")], False, "03", "future version needs '-' after flags"),
    ([("traceparent", f"00-{'0' * 32}-{SPAN}-01")], False, "03", "all-zero trace id: restart"),
    ([("traceparent", f"00-{TRACE}-{'0' * 16}-01")], False, "03", "all-zero parent id: restart"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-01"), ("traceparent", f"00-{'1' * 32}-{SPAN}-01")], False, "03",
     "conflicting duplicated headers: restart"),
    ([("traceparent", f"00-{TRACE}-{SPAN}-01"), ("traceparent", f"00-{TRACE}-{SPAN}-01")], True, "01",
     "identical duplicated headers are one context"),
    ([("b3", f"{TRACE}-{SPAN}-1")], True, "01", "B3 single header joins the W3C trace"),
    ([("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1")], True, "01",
     "B3 multi headers join the W3C trace"),
    ([("b3", f"{TRACE[16:]}-{SPAN}-0")], None, "00", "64-bit B3 trace id, not sampled"),
    ([], False, "03", "no context: a new, sampled, random trace"),
]


@pytest.mark.parametrize("headers,kept,flags,reason", CASES, ids=[c[3] for c in CASES])
def test_upstream_receives_a_valid_context(mesh, headers, kept, flags, reason):
    app, up = send(mesh, headers)
    app_trace, app_span, _ = parsed(app)
    up_trace, up_span, up_flags = parsed(up)
    assert up_trace == app_trace, f"{reason}: one trace id from the app to the upstream"
    if kept is True:
        assert up_trace == TRACE, f"{reason}: trace id kept end to end"
    elif kept is False:
        assert up_trace != TRACE, f"{reason}: the trace restarts with a new id"
    else:
        assert up_trace == "0" * 16 + TRACE[16:], f"{reason}: 64-bit id left-padded"
    assert up_flags == flags, reason
    assert app_span not in (SPAN, up_span), f"{reason}: SERVER and CLIENT spans have own ids"
    for name in ("b3", "x-b3-traceid", "x-b3-spanid"):
        assert up.get(name) is None, f"{reason}: no stale {name} disagreeing with traceparent"


def test_tracestate_is_forwarded_with_a_valid_parent_and_dropped_on_restart(mesh):
    _, up = send(mesh, [("traceparent", f"00-{TRACE}-{SPAN}-01"),
                        ("tracestate", "congo=t61rcWkgMzE"), ("tracestate", "rojo=00f067aa0ba902b7")])
    assert up.get("tracestate") == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", \
        "repeated tracestate headers are combined in order"
    _, up = send(mesh, [("traceparent", f"00-{TRACE.upper()}-{SPAN}-01"),
                        ("tracestate", "congo=t61rcWkgMzE")])
    assert "congo" not in (up.get("tracestate") or ""), "an invalid traceparent drops tracestate"


def test_tracestate_limits(mesh):
    big = [f"key{i}={'x' * 60}" for i in range(12)]  # ~780 characters
    _, up = send(mesh, [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("tracestate", ",".join(big))])
    assert len(up.get("tracestate")) <= 512, "truncated to 512 characters"
    assert up.get("tracestate").split(",")[0].startswith(("key0=", "ot=")), "truncated from the end"


def members(n):
    return ",".join(f"bar{i:02}={i:02}" for i in range(1, n + 1))


# W3C Trace Context Level 2, spec/20-http_request_header_format.md "Key" / "Value" / "list", and
# the processing model: a tracestate that cannot be parsed is discarded WHOLE (the spec's harness,
# test/test.py, reads the MAY that way); the trace continues. (incoming tracestate values, members
# the upstream must see (None: discarded whole), reason)
# fmt: off
TRACESTATE_CASES = [
    (["foo@=1,bar=2"],             ["foo@=1", "bar=2"],             "Key: `@` is a keychar, also last"),
    (["foo@@bar=1,bar=2"],         ["foo@@bar=1", "bar=2"],         "Key: several `@` in a row"),
    (["foo@bar@baz=1,bar=2"],      ["foo@bar@baz=1", "bar=2"],      "Key: the tenant@system form is gone"),
    ([f"{'t' * 242}@v=1,bar=2"],   [f"{'t' * 242}@v=1", "bar=2"],   "Key: no tenant limit of 241"),
    (["foo=1", f"{'z' * 256}=1"],  ["foo=1", f"{'z' * 256}=1"],     "Key: up to 256 characters"),
    (["foo=1,, \t ,bar=2"],        ["foo=1", "bar=2"],              "list: empty and whitespace-only members"),
    ([members(32)],                members(32).split(","),          "list: 32 members kept whole"),
    (["@foo=1,bar=2"],             None,                            "Key: `@` may not begin a key"),
    (["foo=1", f"{'z' * 257}=1"],  None,                            "Key: 257 characters"),
    (["Bad Key=1,ok=2"],           None,                            "Key: uppercase and space"),
    (["foo=bar=baz"],              None,                            "Value: `=` excluded"),
    (["foo=,bar=3"],               None,                            "Value: empty"),
    ([members(33)],                None,                            "list: 33 members cannot be parsed"),
]
# fmt: on


@pytest.mark.parametrize("values,kept,reason", TRACESTATE_CASES, ids=[c[2] for c in TRACESTATE_CASES])
def test_tracestate_is_kept_whole_or_discarded_whole(mesh, values, kept, reason):
    discarded_before = mesh.envoy.stat("wasmcustom.meshtrace_tracestate_discarded")
    _, up = send(mesh, [("traceparent", f"00-{TRACE}-{SPAN}-01")] + [("tracestate", v) for v in values])
    up_trace, _, _ = parsed(up)
    assert up_trace == TRACE, f"{reason}: the trace continues"
    got = [m for m in (up.get("tracestate") or "").split(",") if m and not m.startswith("ot=")]
    if kept is None:
        assert got == [], f"{reason}: discarded whole, only our own entry may be sent"
        wait_until(lambda: mesh.envoy.stat("wasmcustom.meshtrace_tracestate_discarded") > discarded_before,
                   what="meshtrace_tracestate_discarded counted")
    else:
        assert got == kept, reason


def test_x_request_id_is_forwarded_or_generated(mesh):
    app, up = send(mesh, [("x-request-id", "a0b1c2d3-req-42")])
    assert app.get("x-request-id") == "a0b1c2d3-req-42"
    assert up.get("x-request-id") == "a0b1c2d3-req-42", "a well-formed id is forwarded"
    app, up = send(mesh, [])
    assert UUID4_RE.match(app.get("x-request-id")), "a missing id is generated as a UUIDv4"
    assert up.get("x-request-id") == app.get("x-request-id"), "one id along the whole request"
    app, _ = send(mesh, [("x-request-id", "bad id\twith controls")])
    assert UUID4_RE.match(app.get("x-request-id")), "a malformed id is replaced"


def test_baggage_passes_through(mesh):
    _, up = send(mesh, [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("baggage", "userId=alice,tier=gold")])
    assert up.get("baggage") == "userId=alice,tier=gold"
