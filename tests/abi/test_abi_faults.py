"""Fault injection at the ABI: whatever the host answers, the plugin must not trap. A trap kills
the VM, and in Envoy that worker then runs without the plugin (no tracing, or with fail_open
false, no traffic) until the next configuration push.

Every host call the plugin makes is made to return every error status of ABI 0.2.1, during start
(VM start, configuration) and during traffic; then malformed header maps, huge buffers, bytes
that are not UTF-8 and configuration updates mid-traffic. The plugin's own ABI layer (src/abi.rs)
turns every status into a value the core handles; a trap here is a bug in that layer.
"""
import json
import struct

import pytest

from helpers.abi_host import Host, Status, serialize_pairs
from helpers.scenarios import B3_UNSAMPLED, INBOUND_STREAM, REQUEST, SIDECAR

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# traceResponse: the response callback appends the server-timing trace metric (an add call).
CONFIG = {"randomSamplingPercentage": 100, "customTags": {"pod": {"environment": {"name": "POD_NAME"}}},
          "propagation": {"traceResponse": True}}

# Every host call the plugin makes in `traffic` (test_every_host_call_is_covered keeps it true).
HOST_CALLS = [
    "proxy_log",
    "proxy_get_buffer_bytes",
    "proxy_get_property",
    "proxy_define_metric",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_current_time_nanoseconds",
    "proxy_http_call",
    "proxy_get_log_level",
    "proxy_set_property",
    "proxy_increment_metric",
    "proxy_record_metric",
]
ERRORS = [s for s in Status if s != Status.OK]


def traffic(host: Host) -> None:
    """Requests of every kind, an export, a failed export and its retry, metrics flushes."""
    ctx = [("traceparent", TRACEPARENT)]
    host.request(REQUEST + ctx, properties=INBOUND_STREAM)
    host.request(REQUEST, properties=INBOUND_STREAM)
    host.request(REQUEST + B3_UNSAMPLED, properties=INBOUND_STREAM)
    host.request(REQUEST, response=[(":status", "503")],
                 properties={**INBOUND_STREAM, ("xds", "cluster_name"): "outbound|9080||ratings"})
    for _ in range(7):
        host.tick()
    for call in list(host.http_calls):
        host.respond(call, status=503, headers=[("retry-after", "1")])
    host.request(REQUEST + ctx, properties=INBOUND_STREAM)
    for _ in range(7):
        host.tick()
    host.respond_all(status=200)
    host.tick()


def start(host: Host, config=CONFIG) -> bool:
    return host.start(json.dumps(config) if isinstance(config, dict) else config)


def new_host() -> Host:
    return Host(properties=SIDECAR, env={"POD_NAME": "reviews-v1-7d9f8c-x2x"})


def matrix() -> list:
    return [pytest.param(name, phase, status,
                         id=f"{name.removeprefix('proxy_')}-{phase}-{status.name}")
            for name in HOST_CALLS for phase in ("start", "traffic") for status in ERRORS]


@pytest.mark.parametrize("name,phase,status", matrix())
def test_a_host_call_error_never_traps(name, phase, status):
    host = new_host()
    if phase == "start":
        host.faults[name] = status
        if not start(host):
            return  # a refused configuration: Envoy sends no traffic to this plugin
    else:
        assert start(host)
        host.faults[name] = status
    traffic(host)


def test_every_host_call_is_covered():
    host = new_host()
    assert start(host)
    traffic(host)
    used = {n for n in host.calls if n.startswith("proxy_")}
    assert used <= set(HOST_CALLS), f"add to HOST_CALLS: {sorted(used - set(HOST_CALLS))}"


def _valid_map() -> bytes:
    return serialize_pairs([(k.encode(), v.encode()) for k, v in REQUEST])


def _with_count(blob: bytes, count: int) -> bytes:
    return struct.pack("<I", count) + blob[4:]


def _first_sizes(blob: bytes, key: int, value: int) -> bytes:
    return blob[:4] + struct.pack("<II", key, value) + blob[12:]


MALFORMED_MAPS = [
    pytest.param(b"\x01", id="shorter-than-the-count"),
    pytest.param(_valid_map()[:-7], id="truncated-data"),
    pytest.param(_valid_map()[:30], id="truncated-sizes"),
    pytest.param(_with_count(_valid_map(), len(REQUEST) + 50), id="count-too-large"),
    pytest.param(_with_count(_valid_map(), 0xFFFFFFFF), id="count-u32-max"),
    pytest.param(_with_count(_valid_map(), 0), id="count-zero-with-data"),
    pytest.param(_first_sizes(_valid_map(), 0xFFFFFFF0, 4), id="key-size-huge"),
    pytest.param(_first_sizes(_valid_map(), 10, 0xFFFFFFFF), id="value-size-u32-max"),
    pytest.param(_valid_map().replace(b"\0", b"!"), id="no-nul-terminators"),
    pytest.param(b"\0\0\0\0", id="empty-map"),
    pytest.param(bytes(range(256)) * 64, id="garbage"),
]


@pytest.mark.parametrize("blob", MALFORMED_MAPS)
def test_a_malformed_request_header_map_never_traps(blob):
    host = new_host()
    assert start(host)
    stream = host.request(blob, properties=INBOUND_STREAM)
    host.request(REQUEST, response=blob, properties=INBOUND_STREAM)
    traffic(host)
    assert stream.actions["request_headers"] == 0, "the request continues"


HUGE = 1 << 20


@pytest.mark.parametrize("what", [
    "header-value", "many-headers", "traceparent", "property", "config", "call-response",
])
def test_huge_buffers_never_trap(what):
    host = new_host()
    config = CONFIG
    if what == "config":
        config = json.dumps({**CONFIG, "serviceName": "s" * HUGE})
    assert start(host, config) or what == "config"
    headers, props = REQUEST, INBOUND_STREAM
    if what == "header-value":
        headers = REQUEST + [("user-agent", "u" * HUGE), ("x-b3-traceid", "a" * HUGE)]
    elif what == "many-headers":
        headers = REQUEST + [(f"x-h{i}", "v" * 20) for i in range(20_000)]
    elif what == "traceparent":
        headers = REQUEST + [("traceparent", "00-" + "a" * HUGE), ("tracestate", "k=v," * HUGE)]
    elif what == "property":
        props = {**INBOUND_STREAM, ("xds", "cluster_name"): "c" * HUGE,
                 ("response", "code_details"): "d" * HUGE}
    host.request(headers, response=[(":status", "5" * HUGE)], properties=props)
    for _ in range(7):
        host.tick()
    for call in list(host.http_calls):
        host.respond(call, status=200, body=b"\0" * (16 * HUGE),
                     headers=[("retry-after", "9" * HUGE)])
    traffic(host)


NOT_UTF8 = b"\xff\xfe\xc3("


def test_bytes_that_are_not_utf8_never_trap():
    host = Host(properties={**{k: NOT_UTF8 + v.encode() for k, v in SIDECAR.items()}},
                env={"POD_NAME": "x"})
    assert start(host)
    bad = [(b":path", b"/r/" + NOT_UTF8), (b"user-agent", NOT_UTF8), (NOT_UTF8, b"v"),
           (b"traceparent", b"00-" + NOT_UTF8), (b"x-request-id", NOT_UTF8),
           (b"baggage", NOT_UTF8), (b"b3", NOT_UTF8)]
    stream = host.request(REQUEST + bad, response=[(":status", NOT_UTF8)],
                          properties={k: NOT_UTF8 for k in INBOUND_STREAM})
    assert stream.request_header("traceparent").startswith("00-"), "a fresh context is sent on"
    for _ in range(7):
        host.tick()
    for call in list(host.http_calls):
        host.respond(call, status=None, headers=[(b":status", NOT_UTF8)],
                     trailers=[(b"grpc-status", NOT_UTF8)])
    traffic(host)
    assert not Host(properties=SIDECAR).start(b'{"serviceName": "' + NOT_UTF8 + b'"}'), \
        "a configuration that is not UTF-8 is refused, not a trap"


def test_a_configuration_update_mid_traffic():
    """Envoy calls proxy_on_configure again on a live root context when only the configuration
    changes; spans in flight and exports outstanding must survive it, and a bad update must
    leave the running configuration in place."""
    host = new_host()
    assert start(host)
    traffic(host)
    host.request(REQUEST, properties=INBOUND_STREAM)
    for _ in range(7):
        host.tick()
    outstanding = list(host.http_calls)
    assert outstanding, "an export is in flight across the update"
    assert host.configure(json.dumps({"randomSamplingPercentage": 0, "exporter": {"protocol": "grpc"}}))
    for call in outstanding:
        host.respond(call, status=200)  # a token the new exporter never issued
    stream = host.request(REQUEST + [("traceparent", TRACEPARENT)], properties=INBOUND_STREAM)
    assert stream.request_header("traceparent").endswith("-01"), "still traced"
    for bad in (b"{", b'{"randomSamplingPercentage": 500}', b'{"nope": 1}', NOT_UTF8):
        assert not host.configure(bad), f"refused: {bad!r}"
        stream = host.request(REQUEST, properties=INBOUND_STREAM)
        assert stream.request_header("traceparent").endswith("-02"), \
            "the 0% configuration still runs after a refused update"
    assert host.configure(b"")
    traffic(host)


def test_an_os_without_randomness_never_traps():
    """WASI random_get fails (errno 52, ENOSYS): the plugin seeds its ids from the clock."""
    host = new_host()
    host.faults["random_get"] = lambda *_: 52
    assert start(host)
    traffic(host)
    assert host.calls["random_get"] >= 1


def test_an_environment_that_cannot_be_read_never_traps():
    """wasi-libc's environment set-up exits the VM when environ_sizes_get fails; the plugin
    reads the environment with WASI's calls itself (src/abi.rs env_var): the tag is absent."""
    host = new_host()
    host.faults["environ_sizes_get"] = lambda *_: 52
    start(host)
    traffic(host)
