"""Fault injection at the ABI: whatever the host answers, the plugin must not trap. A trap kills
the VM, and in Envoy that worker then runs without the plugin (no tracing, or with fail_open
false, no traffic) until the next configuration push.

Every host call the plugin makes is made to return every error status of ABI 0.2.1, during start
(VM start, configuration) and during traffic; then malformed header maps, huge buffers, bytes
that are not UTF-8 and configuration updates mid-traffic.

Cases that trap TODAY are marked `xfail(strict=True)` with the reason: they are bugs to fix (the
SDK's hostcall wrappers panic on a status they did not expect). When a fix lands the case XPASSes,
which fails the run: remove its entry from KNOWN_TRAPS in that change.
"""
import json
import struct

import pytest

from abi_host import Host, MapType, PluginTrap, Status, serialize_pairs
from meter import B3_UNSAMPLED, INBOUND_STREAM, REQUEST, SIDECAR

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONFIG = {"randomSamplingPercentage": 100, "customTags": {"pod": {"environment": {"name": "POD_NAME"}}}}

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
    "proxy_remove_header_map_value",
    "proxy_get_current_time_nanoseconds",
    "proxy_http_call",
    "proxy_set_effective_context",
    "proxy_increment_metric",
    "proxy_record_metric",
]
ERRORS = [s for s in Status if s != Status.OK]

START, TRAFFIC = {"start"}, {"start", "traffic"}  # where the call is made: configure, or both
ALL = set(ERRORS)


def _but(*ok: Status) -> set:
    return ALL - set(ok)


def _sdk(function: str, also: str = "") -> str:
    return (f"proxy-wasm SDK 0.2.5 hostcalls::{function} panics on a status it does not expect "
            f"(`unexpected status`){also}: the raw ABI layer must absorb it")


# Host call → (phases where it traps, statuses that trap, why). Measured on dist/meshtrace.wasm
# at 23fa787. Statuses 5, 6, 9, 11 and 12 are not even variants of the SDK's `Status` enum.
KNOWN_TRAPS: dict[str, tuple[set, set, str]] = {
    "proxy_log": (START, ALL, _sdk("log", "; the panic hook then logs again")),
    "proxy_get_buffer_bytes": (START, _but(Status.NOT_FOUND), _sdk("get_buffer")),
    "proxy_get_property": (TRAFFIC, _but(Status.NOT_FOUND, Status.SERIALIZATION_FAILURE,
                                         Status.INTERNAL_FAILURE), _sdk("get_property")),
    "proxy_define_metric": (START, ALL, _sdk("define_metric")),
    "proxy_set_tick_period_milliseconds": (START, ALL, _sdk("set_tick_period")),
    "proxy_replace_header_map_value": (TRAFFIC, ALL, _sdk("set_map_value")),
    "proxy_remove_header_map_value": (TRAFFIC, ALL, _sdk("set_map_value", " (None: remove)")),
    "proxy_get_current_time_nanoseconds": (TRAFFIC, ALL, _sdk("get_current_time")),
    "proxy_http_call": (TRAFFIC, _but(Status.BAD_ARGUMENT, Status.INTERNAL_FAILURE),
                        _sdk("dispatch_http_call")),
    "proxy_set_effective_context": (
        TRAFFIC, ALL,
        "proxy-wasm SDK 0.2.5 dispatcher on_http_call_response unwraps "
        "hostcalls::set_effective_context: the plugin must own proxy_on_http_call_response"),
    "proxy_increment_metric": (TRAFFIC, _but(Status.NOT_FOUND, Status.BAD_ARGUMENT),
                               _sdk("increment_metric")),
    "proxy_record_metric": (TRAFFIC, _but(Status.NOT_FOUND), _sdk("record_metric")),
}

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
    params = []
    for name in HOST_CALLS:
        for phase in ("start", "traffic"):
            phases, traps, why = KNOWN_TRAPS.get(name, (set(), set(), ""))
            for status in ERRORS:
                marks = [pytest.mark.xfail(strict=True, raises=PluginTrap, reason=why)] \
                    if phase in phases and status in traps else []
                params.append(pytest.param(
                    name, phase, status, marks=marks,
                    id=f"{name.removeprefix('proxy_')}-{phase}-{status.name}"))
    return params


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
