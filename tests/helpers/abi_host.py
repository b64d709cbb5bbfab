"""A proxy-wasm host (ABI 0.2.1) in Python on PyPI `wasmtime`: loads the shipped
`dist/meshtrace.wasm`, plays Envoy's part in the plugin's lifecycle, and meters what the plugin
costs — wasm instructions (wasmtime fuel) and host calls by name. Deterministic: the clock, the
random bytes and the environment come from this host, so a figure moves only when the plugin does.

Envoy's behaviour this host reproduces (proxy-wasm-cpp-host, the ABI implementation Envoy uses):
- data returned to the plugin goes into memory the plugin allocates through its exported
  `proxy_on_memory_allocate`, an empty value as a null pointer and size 0
  (include/proxy-wasm/wasm.h, `WasmBase::copyToPointerSize`; src/exports.cc,
  `get_header_map_pairs`);
- CEL through the foreign functions `expr_create` / `expr_evaluate`
  (source/extensions/common/wasm/foreign.cc), for the one shape of expression the plugin builds:
  a list of attributes, each plain (`response.flags`: a missing one fails the evaluation, status
  INTERNAL_FAILURE) or guarded (`has(upstream.address) ? upstream.address : ''`); the result
  serialized as Envoy does, a list as pairs with empty values (context.cc `serializeValue`).
  `Host(cel=False)` is a proxy without them (NOT_FOUND, as proxy-wasm-cpp-host answers an
  unknown foreign function);
- header maps travel as `u32 count, count × (u32 key size, u32 value size), key\\0 value\\0 …`
  (src/pairs_util.cc, `PairsUtil::marshalPairs`), property paths as segments joined by `\\0`;
- a stream's callbacks come as `proxy_on_context_create`, `proxy_on_request_headers`,
  `proxy_on_response_headers` (when a response was sent), `proxy_on_response_trailers` (when it
  has trailers), `proxy_on_log`, then `proxy_on_done` and `proxy_on_delete` back to back (Envoy's
  `Context::log` and `Context::onDestroy`, source/extensions/common/wasm/context.cc; the order seen
  on Envoy 1.40); only the callbacks the module exports are called, as proxy-wasm-cpp-host skips
  the others (`ContextBase::onLog` returns when `wasm_->on_log_` is null; build.sh,
  PLUGIN_EXPORTS);
- each header map only while Envoy shows it (context.cc): the request's in
  `proxy_on_request_headers`, the response's in `proxy_on_response_headers`, its trailers in
  `proxy_on_response_trailers` (`decodeHeaders`, `encodeHeaders`, `encodeTrailers` forget the
  map when the filter continues), all three read-only in `proxy_on_log` (`getConstMap` in the
  access-log phase); elsewhere — `proxy_on_done` included — a value read or a write answers
  BAD_ARGUMENT (`getHeaderMapValue`, `getMap`) and a pairs read an empty map
  (`headerMapToPairs(nullptr)`);
- `response.code` is the `:status` sent (stream info's response code, absent with no response);
  `response.grpc_status` as Envoy computes it (`Grpc::Common::getGrpcStatus`): the trailers'
  `grpc-status`, else the headers', else the HTTP status mapped (`Grpc::Utility::httpToGrpcStatus`:
  200 is UNKNOWN) — from the maps Envoy still shows in that callback.

Small API (see tests/abi/test_abi_plugin.py for use):

    host = Host(properties=SIDECAR)          # node metadata, per-request attributes
    assert host.start(config=b'{...}')       # _initialize, root context, vm_start, configure
    with host.metered() as cost:             # fuel and host calls of what runs inside
        stream = host.request([(":method", "GET"), ...], response=[(":status", "200")])
    stream.request_header("traceparent")     # headers as the plugin left them
    host.tick(); host.http_calls             # exports the plugin dispatched
    host.faults["proxy_get_property"] = Status.INTERNAL_FAILURE   # fault injection
"""
from __future__ import annotations

import contextlib
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import wasmtime

from . import wasm_path

ROOT_CONTEXT_ID = 1
START_UNIX_NANOS = 1_700_000_000_000_000_000
# Enough for any scenario; what matters is the difference before and after.
FUEL_TANK = 10**15

Pairs = list[tuple[bytes, bytes]]
HeaderInput = Union[Iterable[tuple[Union[str, bytes], Union[str, bytes]]], bytes]


class Status(IntEnum):
    """proxy-wasm ABI 0.2.1 `proxy_status_t` (spec: abi-versions/v0.2.1/README.md)."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class MapType(IntEnum):
    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3
    GRPC_INITIAL_METADATA = 4
    GRPC_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class PluginTrap(AssertionError):
    """The plugin trapped (a Rust panic, an unreachable, out of bounds): in Envoy the VM is then
    dead and that worker stops running the plugin."""


def _b(s: Union[str, bytes]) -> bytes:
    return s if isinstance(s, bytes) else s.encode()


def serialize_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    pairs = list(pairs)
    sizes = b"".join(struct.pack("<II", len(k), len(v)) for k, v in pairs)
    data = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
    return struct.pack("<I", len(pairs)) + sizes + data


def parse_pairs(blob: bytes) -> Pairs:
    """The plugin's serialized maps (dispatch_http_call headers). Strict: a malformed map from
    the plugin is a bug the test should see."""
    if not blob:
        return []
    (n,) = struct.unpack_from("<I", blob, 0)
    sizes = [struct.unpack_from("<II", blob, 4 + 8 * i) for i in range(n)]
    pos, out = 4 + 8 * n, []
    for klen, vlen in sizes:
        k = blob[pos : pos + klen]
        v = blob[pos + klen + 1 : pos + klen + 1 + vlen]
        if blob[pos + klen] != 0 or blob[pos + klen + 1 + vlen] != 0:
            raise ValueError("map entry not NUL-terminated")
        out.append((k, v))
        pos += klen + vlen + 2
    return out


def _pairs(headers: Iterable[tuple[Union[str, bytes], Union[str, bytes]]]) -> Pairs:
    return [(_b(k), _b(v)) for k, v in headers]


@dataclass
class Cost:
    """What ran inside a `Host.metered()` block."""

    fuel: int = 0
    calls: Counter = field(default_factory=Counter)
    # Buffers the host asked the plugin to allocate (part of `fuel`, not host calls).
    allocations: int = 0

    @property
    def host_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class Stream:
    """One HTTP stream (an HTTP context)."""

    context_id: int
    request: Union[Pairs, bytes]
    response: Union[Pairs, bytes]
    properties: dict
    trailers: Pairs = field(default_factory=list)
    # The callback running: which header maps Envoy shows (see the module's docstring).
    phase: str = "create"
    # Filter callback results, by callback name.
    actions: dict = field(default_factory=dict)

    def request_header(self, name: str) -> str | None:
        return _first(self.request, name)

    def request_headers(self) -> list[tuple[str, str]]:
        assert isinstance(self.request, list), "raw map given: nothing parsed"
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.request]


def _first(pairs: Union[Pairs, bytes], name: str) -> str | None:
    if isinstance(pairs, bytes):
        return None
    key = name.lower().encode()
    return next((v.decode("latin-1") for k, v in pairs if k == key), None)


@dataclass
class HttpCall:
    """A `proxy_http_call` the plugin made and that waits for `Host.respond`."""

    token: int
    cluster: str
    headers: Pairs
    body: bytes
    trailers: Pairs
    timeout_ms: int

    def header(self, name: str) -> str | None:
        return _first(self.headers, name)


Fault = Union[Status, Callable[..., Union[Status, None]]]


class Host:
    """One plugin VM (one Envoy worker) and the Envoy around it."""

    def __init__(
        self,
        wasm: Path | None = None,
        *,
        properties: dict | None = None,
        env: dict[str, str] | None = None,
        seed: int = 0x5EED,
        cel: bool = True,
    ):
        self.properties: dict[tuple[str, ...], bytes] = {
            tuple(k): _property_bytes(v) for k, v in (properties or {}).items()
        }
        self.env = dict(env or {})
        self.now_ns = START_UNIX_NANOS
        self.tick_period_ms = 0
        self.http_calls: list[HttpCall] = []
        self.metrics: dict[str, int] = {}
        self.logs: list[tuple[int, str]] = []
        self.stdout = bytearray()
        # Host call name → status returned instead of doing the call (or a callable that
        # decides from the call's arguments; None means "do the call").
        self.faults: dict[str, Fault] = {}
        self.calls: Counter = Counter()
        self.log_level = 2  # spdlog: trace 0, debug 1, info 2, …, off 6
        self.allocations = 0
        self.done_called = 0
        self._metric_ids: list[str] = []
        self._random = _Xorshift(seed)
        self._next_context = ROOT_CONTEXT_ID + 1
        self._next_token = 1
        self._streams: dict[int, Stream] = {}
        self._effective = ROOT_CONTEXT_ID
        self._call_response: tuple[Pairs, bytes, Pairs] | None = None
        self._plugin_config = b""
        self._vm_config = b""
        self.cel = cel
        self.expressions: list[list[tuple[tuple[str, ...], bool]]] = []

        self._module = _module(wasm or wasm_path())
        self._store = wasmtime.Store(_ENGINE)
        self._store.set_fuel(FUEL_TANK)
        linker = wasmtime.Linker(_ENGINE)
        for imp in self._module.imports:
            handler = getattr(self, "on_" + imp.name, None)  # None: answers Unimplemented
            linker.define_func(
                imp.module, imp.name, imp.type, self._host_call(imp.name, handler), access_caller=True
            )
        self._instance = linker.instantiate(self._store, self._module)
        self._exports = self._instance.exports(self._store)
        self._memory = self._exports["memory"]
        self.exported = {e.name for e in self._module.exports}

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, config: Union[str, bytes] = b"", vm_config: Union[str, bytes] = b"") -> bool:
        """VM start and first configuration, as Envoy does for a new VM. True when both succeed."""
        self._vm_config = _b(vm_config)
        self._call("_initialize")
        self._call("proxy_on_context_create", ROOT_CONTEXT_ID, 0)
        if not self._call("proxy_on_vm_start", ROOT_CONTEXT_ID, len(self._vm_config)):
            return False
        return self.configure(config)

    def configure(self, config: Union[str, bytes]) -> bool:
        """`proxy_on_configure` with a (new) plugin configuration."""
        self._plugin_config = _b(config)
        return bool(self._call("proxy_on_configure", ROOT_CONTEXT_ID, len(self._plugin_config)))

    def request(
        self,
        headers: HeaderInput,
        *,
        response: HeaderInput = ((":status", "200"),),
        trailers: HeaderInput = (),
        properties: dict | None = None,
        advance_ns: int = 1_000_000,
    ) -> Stream:
        """A whole HTTP stream: request headers, response headers (none when `response` is
        empty: no response was sent), trailers, end. `headers` and `response` are pairs, or raw
        bytes handed to the plugin as they are (malformed maps).
        `properties` are this stream's attributes (`xds.cluster_name`, `response.code_details`…),
        over the host's."""
        cid = self._next_context
        self._next_context += 1
        stream = Stream(
            context_id=cid,
            request=headers if isinstance(headers, bytes) else _pairs(headers),
            response=response if isinstance(response, bytes) else _pairs(response),
            properties={tuple(k): _property_bytes(v) for k, v in (properties or {}).items()},
            trailers=_pairs(trailers),
        )
        self._streams[cid] = stream
        self._effective = cid
        try:
            self._call("proxy_on_context_create", cid, ROOT_CONTEXT_ID)
            stream.phase = "request_headers"
            stream.actions["request_headers"] = self._call_if(
                "proxy_on_request_headers", cid, _count(stream.request), 0
            )
            self.now_ns += advance_ns
            if stream.response != []:
                stream.phase = "response_headers"
                stream.actions["response_headers"] = self._call_if(
                    "proxy_on_response_headers", cid, _count(stream.response),
                    int(not stream.trailers)
                )
            if stream.trailers:
                stream.phase = "response_trailers"
                self._call_if("proxy_on_response_trailers", cid, len(stream.trailers))
            stream.phase = "log"
            self._call_if("proxy_on_log", cid)
            stream.phase = "done"
            self._call_if("proxy_on_done", cid)
            self._call_if("proxy_on_delete", cid)
        finally:
            self._effective = ROOT_CONTEXT_ID
            del self._streams[cid]
        return stream

    def tick(self, advance_ms: int | None = None) -> None:
        """The clock moves one tick period (or `advance_ms`), then `proxy_on_tick`."""
        self.now_ns += (self.tick_period_ms if advance_ms is None else advance_ms) * 1_000_000
        self._call("proxy_on_tick", ROOT_CONTEXT_ID)

    def respond(
        self,
        call: HttpCall,
        *,
        status: int | None = 200,
        headers: HeaderInput = (),
        body: bytes = b"",
        trailers: HeaderInput = (),
    ) -> None:
        """The answer to a dispatched call; `status=None` with no headers is a failed call
        (Envoy reports 0 headers on reset / timeout)."""
        self.http_calls.remove(call)
        hdrs = headers if isinstance(headers, bytes) else _pairs(headers)
        if status is not None and isinstance(hdrs, list):
            hdrs = [(b":status", str(status).encode())] + hdrs
        trls = trailers if isinstance(trailers, bytes) else _pairs(trailers)
        self._call_response = (hdrs, body, trls)
        try:
            self._call(
                "proxy_on_http_call_response",
                ROOT_CONTEXT_ID,
                call.token,
                _count(hdrs),
                len(body),
                _count(trls),
            )
        finally:
            self._call_response = None

    def respond_all(self, **kw) -> None:
        for call in list(self.http_calls):
            self.respond(call, **kw)

    @contextlib.contextmanager
    def metered(self) -> Iterator[Cost]:
        cost = Cost()
        fuel, calls, allocs = self._store.get_fuel(), self.calls.copy(), self.allocations
        yield cost
        cost.fuel = fuel - self._store.get_fuel()
        cost.calls = self.calls - calls
        cost.allocations = self.allocations - allocs

    def metric(self, name: str) -> int:
        return self.metrics.get(name, 0)

    # ---- calling the plugin ----------------------------------------------------------------

    def _call(self, name: str, *args):
        try:
            return self._exports[name](self._store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            tail = "\n".join(m for _, m in self.logs[-5:])
            raise PluginTrap(f"plugin trapped in {name}{args}: {e}\nlast log lines:\n{tail}") from e

    def _call_if(self, name: str, *args):
        return self._call(name, *args) if name in self.exported else None

    def _host_call(self, name: str, handler):
        def call(caller, *args):
            self.calls[name] += 1
            fault = self.faults.get(name)
            if callable(fault):
                fault = fault(*args)
            if fault is not None:
                return int(fault)
            if handler is None:
                return int(Status.UNIMPLEMENTED)
            return handler(_Mem(self, caller), *args)

        return call

    # ---- host calls: `on_<import>` implements that import; a test may override one --------
    # ---- contexts, logging, time -----------------------------------------------------------

    def on_proxy_log(self, m, level, ptr, size):
        self.logs.append((level, m.read(ptr, size).decode("utf-8", "replace")))
        return Status.OK

    def on_proxy_get_log_level(self, m, ret):
        # Envoy's default for the `wasm` logger is info (spdlog 2): debug lines stay off, as in
        # a production proxy.
        m.u32(ret, self.log_level)
        return Status.OK

    def on_proxy_set_effective_context(self, m, cid):
        if cid != ROOT_CONTEXT_ID and cid not in self._streams:
            return Status.BAD_ARGUMENT
        self._effective = cid
        return Status.OK

    def on_proxy_done(self, m):
        self.done_called += 1
        return Status.OK

    def on_proxy_get_current_time_nanoseconds(self, m, ret):
        m.u64(ret, self.now_ns)
        return Status.OK

    def on_proxy_set_tick_period_milliseconds(self, m, period):
        self.tick_period_ms = period
        return Status.OK

    # ---- buffers, properties, header maps -------------------------------------------------

    def on_proxy_get_buffer_bytes(self, m, btype, start, max_size, ret_ptr, ret_size):
        data = {
            BufferType.PLUGIN_CONFIGURATION: self._plugin_config,
            BufferType.VM_CONFIGURATION: self._vm_config,
            BufferType.HTTP_CALL_RESPONSE_BODY: self._call_response and self._call_response[1],
        }.get(btype)
        if data is None:
            return Status.NOT_FOUND
        return m.give(data[start : start + max_size], ret_ptr, ret_size)

    def _property(self, path: tuple[str, ...]) -> bytes | None:
        stream = self._streams.get(self._effective)
        if stream and isinstance(stream.response, list) and path in (
                ("response", "code"), ("response", "grpc_status")):
            return _response_fact(stream, path[1])
        value = stream.properties.get(path) if stream else None
        return self.properties.get(path) if value is None else value

    def on_proxy_get_property(self, m, path_ptr, path_size, ret_ptr, ret_size):
        path = tuple(m.read(path_ptr, path_size).decode("utf-8", "replace").split("\0"))
        value = self._property(path)
        if value is None:
            return Status.NOT_FOUND
        return m.give(value, ret_ptr, ret_size)

    def on_proxy_set_property(self, m, path_ptr, path_size, value_ptr, value_size):
        path = tuple(m.read(path_ptr, path_size).decode("utf-8", "replace").split("\0"))
        stream = self._streams.get(self._effective)
        (stream.properties if stream else self.properties)[path] = m.read(value_ptr, value_size)
        return Status.OK

    def _map(self, mtype, write: bool = False) -> Union[Pairs, bytes, None]:
        stream = self._streams.get(self._effective)
        if stream and mtype in _STREAM_MAPS:
            return _stream_map(stream, mtype, write)
        if mtype == MapType.HTTP_CALL_RESPONSE_HEADERS and self._call_response:
            return self._call_response[0]
        if mtype == MapType.HTTP_CALL_RESPONSE_TRAILERS and self._call_response:
            return self._call_response[2]
        return None

    def on_proxy_get_header_map_pairs(self, m, mtype, ret_ptr, ret_size):
        pairs = self._map(mtype)
        if pairs is None and self._streams.get(self._effective) and mtype in _STREAM_MAPS:
            pairs = []  # Envoy: `headerMapToPairs(nullptr)`, an empty map
        if pairs is None:
            return Status.BAD_ARGUMENT
        blob = pairs if isinstance(pairs, bytes) else (serialize_pairs(pairs) if pairs else b"")
        return m.give(blob, ret_ptr, ret_size)

    def on_proxy_get_header_map_value(self, m, mtype, key_ptr, key_size, ret_ptr, ret_size):
        pairs = self._map(mtype)
        if pairs is None:
            return Status.BAD_ARGUMENT
        key = m.read(key_ptr, key_size).lower()
        value = next((v for k, v in pairs if k == key), None) if isinstance(pairs, list) else None
        if value is None:
            return Status.NOT_FOUND
        return m.give(value, ret_ptr, ret_size)

    def _edit_map(self, mtype, edit) -> Status:
        pairs = self._map(mtype, write=True)
        if pairs is None:
            return Status.BAD_ARGUMENT
        if isinstance(pairs, list):
            pairs[:] = edit(pairs)
        # A map given as raw bytes only tests how the plugin reads one: edits succeed unseen.
        return Status.OK

    def on_proxy_replace_header_map_value(self, m, mtype, kp, ks, vp, vs):
        key, value = m.read(kp, ks).lower(), m.read(vp, vs)

        def replace(pairs):
            if not any(k == key for k, _ in pairs):
                return pairs + [(key, value)]
            out, seen = [], False
            for k, v in pairs:
                if k == key:
                    if not seen:
                        out.append((key, value))
                    seen = True
                else:
                    out.append((k, v))
            return out

        return self._edit_map(mtype, replace)

    def on_proxy_add_header_map_value(self, m, mtype, kp, ks, vp, vs):
        key, value = m.read(kp, ks).lower(), m.read(vp, vs)
        return self._edit_map(mtype, lambda pairs: pairs + [(key, value)])

    def on_proxy_remove_header_map_value(self, m, mtype, kp, ks):
        key = m.read(kp, ks).lower()
        return self._edit_map(mtype, lambda pairs: [(k, v) for k, v in pairs if k != key])

    def on_proxy_set_header_map_pairs(self, m, mtype, ptr, size):
        new = parse_pairs(m.read(ptr, size))
        return self._edit_map(mtype, lambda _: new)

    # ---- foreign functions: Envoy's CEL -----------------------------------------------------

    def on_proxy_call_foreign_function(self, m, np_, ns, ap, as_, ret_ptr, ret_size):
        name = m.read(np_, ns).decode("utf-8", "replace")
        arg = m.read(ap, as_)
        if not self.cel or name not in ("expr_create", "expr_evaluate"):
            return Status.NOT_FOUND
        if name == "expr_create":
            items = _parse_cel_list(arg.decode("utf-8", "replace"))
            if items is None:
                return Status.BAD_ARGUMENT
            self.expressions.append(items)
            return m.give(struct.pack("<I", len(self.expressions) - 1), ret_ptr, ret_size)
        if len(arg) != 4:
            return Status.BAD_ARGUMENT
        (token,) = struct.unpack("<I", arg)
        if token >= len(self.expressions):
            return Status.NOT_FOUND
        values = []
        for path, guarded in self.expressions[token]:
            value = self._property(path)
            if value is None and not guarded:
                return Status.INTERNAL_FAILURE
            values.append(value or b"")
        return m.give(serialize_pairs((v, b"") for v in values), ret_ptr, ret_size)

    # ---- outgoing calls ---------------------------------------------------------------------

    def on_proxy_http_call(self, m, up, us, hp, hs, bp, bs, tp, ts, timeout_ms, ret_token):
        call = HttpCall(
            token=self._next_token,
            cluster=m.read(up, us).decode("utf-8", "replace"),
            headers=parse_pairs(m.read(hp, hs)),
            body=m.read(bp, bs),
            trailers=parse_pairs(m.read(tp, ts)),
            timeout_ms=timeout_ms,
        )
        self._next_token += 1
        self.http_calls.append(call)
        m.u32(ret_token, call.token)
        return Status.OK

    # ---- metrics ----------------------------------------------------------------------------

    def on_proxy_define_metric(self, m, mtype, name_ptr, name_size, ret_id):
        name = m.read(name_ptr, name_size).decode("utf-8", "replace")
        if name not in self._metric_ids:
            self._metric_ids.append(name)
            self.metrics[name] = 0
        m.u32(ret_id, self._metric_ids.index(name))
        return Status.OK

    def _metric_name(self, mid) -> str | None:
        return self._metric_ids[mid] if 0 <= mid < len(self._metric_ids) else None

    def on_proxy_increment_metric(self, m, mid, delta):
        name = self._metric_name(mid)
        if name is None:
            return Status.NOT_FOUND
        self.metrics[name] += delta
        return Status.OK

    def on_proxy_record_metric(self, m, mid, value):
        name = self._metric_name(mid)
        if name is None:
            return Status.NOT_FOUND
        self.metrics[name] = value
        return Status.OK

    def on_proxy_get_metric(self, m, mid, ret):
        name = self._metric_name(mid)
        if name is None:
            return Status.NOT_FOUND
        m.u64(ret, self.metrics[name])
        return Status.OK

    # ---- WASI (what a wasm32-wasip1 Rust cdylib imports) ----------------------------------

    def on_random_get(self, m, ptr, size):
        m.write(ptr, self._random.bytes(size))
        return 0

    def on_environ_sizes_get(self, m, count_ptr, size_ptr):
        entries = self._environ()
        m.u32(count_ptr, len(entries))
        m.u32(size_ptr, sum(len(e) for e in entries))
        return 0

    def on_environ_get(self, m, environ_ptr, buf_ptr):
        for i, entry in enumerate(self._environ()):
            m.u32(environ_ptr + 4 * i, buf_ptr)
            m.write(buf_ptr, entry)
            buf_ptr += len(entry)
        return 0

    def _environ(self) -> list[bytes]:
        return [f"{k}={v}".encode() + b"\0" for k, v in sorted(self.env.items())]

    def on_fd_write(self, m, fd, iovs, iovs_len, ret_written):
        total = 0
        for i in range(iovs_len):
            ptr, size = struct.unpack("<II", m.read(iovs + 8 * i, 8))
            self.stdout += m.read(ptr, size)
            total += size
        m.u32(ret_written, total)
        return 0

    def on_proc_exit(self, m, code):
        raise PluginTrap(f"the plugin called proc_exit({code})")


class _Mem:
    """The plugin's linear memory during one host call."""

    def __init__(self, host: Host, caller):
        self.host, self.caller = host, caller

    def read(self, ptr: int, size: int) -> bytes:
        return bytes(self.host._memory.read(self.caller, ptr, ptr + size)) if size else b""

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            self.host._memory.write(self.caller, data, ptr)

    def u32(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<I", value))

    def u64(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<Q", value))

    def give(self, data: bytes, ret_ptr: int, ret_size: int) -> Status:
        """Hands `data` to the plugin in memory it allocates, as Envoy does."""
        ptr = 0
        if data:
            self.host.allocations += 1
            ptr = self.host._exports["proxy_on_memory_allocate"](self.caller, len(data))
            if not ptr:
                return Status.INVALID_MEMORY_ACCESS
            self.write(ptr, data)
        self.u32(ret_ptr, ptr)
        self.u32(ret_size, len(data))
        return Status.OK


class _Xorshift:
    """Deterministic bytes for WASI `random_get` (the plugin's seed)."""

    def __init__(self, seed: int):
        self.state = seed or 1

    def bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            x = self.state
            x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
            x ^= x >> 7
            x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
            self.state = x
            out += x.to_bytes(8, "little")
        return bytes(out[:n])


def _metered_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    return wasmtime.Engine(config)


_ENGINE = _metered_engine()
_MODULES: dict[tuple[str, float], wasmtime.Module] = {}


def _module(path: Path) -> wasmtime.Module:
    # Compiled once per process (compiling takes about a second); a rebuilt file is recompiled.
    key = (str(path), path.stat().st_mtime)
    if key not in _MODULES:
        _MODULES[key] = wasmtime.Module.from_file(_ENGINE, str(path))
    return _MODULES[key]


_GUARDED = re.compile(r"^has\(([a-z_.]+)\) \? ([a-z_.]+) : ''$")
_PLAIN = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")


def _parse_cel_list(expr: str) -> list[tuple[tuple[str, ...], bool]] | None:
    """`[a.b, has(c.d) ? c.d : '']` as (path, guarded) items; None for any other expression."""
    if not (expr.startswith("[") and expr.endswith("]")):
        return None
    items = []
    for item in expr[1:-1].split(", "):
        guarded = _GUARDED.match(item)
        if guarded and guarded.group(1) == guarded.group(2):
            items.append((tuple(guarded.group(1).split(".")), True))
        elif _PLAIN.match(item):
            items.append((tuple(item.split(".")), False))
        else:
            return None
    return items


_STREAM_MAPS = (MapType.REQUEST_HEADERS, MapType.RESPONSE_HEADERS, MapType.RESPONSE_TRAILERS)
# Which of a stream's maps Envoy shows in each callback (context.cc: `getMap` for writes,
# `getConstMap` for reads; the access-log phase shows all three, read-only).
_SHOWN = {
    "request_headers": {MapType.REQUEST_HEADERS},
    "response_headers": {MapType.RESPONSE_HEADERS},
    "response_trailers": {MapType.RESPONSE_TRAILERS},
}
_LOG_SHOWN = set(_STREAM_MAPS)


def _stream_map(stream: Stream, mtype, write: bool) -> Union[Pairs, bytes, None]:
    shown = _SHOWN.get(stream.phase, set() if write or stream.phase != "log" else _LOG_SHOWN)
    if mtype not in shown:
        return None
    return {MapType.REQUEST_HEADERS: stream.request, MapType.RESPONSE_HEADERS: stream.response,
            MapType.RESPONSE_TRAILERS: stream.trailers}[mtype]


def _http_to_grpc(code: int) -> int:
    """Envoy's `Grpc::Utility::httpToGrpcStatus` (source/common/grpc/status.cc)."""
    return {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}.get(code, 2)


def _response_fact(stream: Stream, name: str) -> bytes | None:
    """`response.code` and `response.grpc_status` as Envoy answers them for this stream now."""
    status = _first(stream.response, ":status")
    code = int(status) if status and status.isdigit() and len(status) <= 3 else None
    if name == "code":
        return None if code is None else struct.pack("<q", code)
    for mtype in (MapType.RESPONSE_TRAILERS, MapType.RESPONSE_HEADERS):
        pairs = _stream_map(stream, mtype, write=False)
        grpc = _first(pairs, "grpc-status") if isinstance(pairs, list) else None
        if grpc is not None:
            # Not a known code (0..=16): Envoy's InvalidCode, -1.
            known = grpc.strip().isdigit() and len(grpc.strip()) <= 2 and int(grpc) <= 16
            return struct.pack("<q", int(grpc) if known else -1)
    return None if code is None else struct.pack("<q", _http_to_grpc(code))


def _count(m: Union[Pairs, bytes]) -> int:
    if isinstance(m, bytes):
        return struct.unpack_from("<I", m)[0] if len(m) >= 4 else 0
    return len(m)


def _property_bytes(v) -> bytes:
    if isinstance(v, int):
        return struct.pack("<q", v)  # Envoy gives integer attributes as little-endian int64
    return _b(v)
