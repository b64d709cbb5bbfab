"""The plugin loads in a real Envoy exactly as Istio configures it, and traffic flows."""
import json
import tomllib

from helpers.harness import ROOT, Node, wait_until


def cargo_version() -> str:
    """The version every crate of the workspace inherits (Cargo.toml `[workspace.package]`)."""
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def test_plugin_loads_from_string_value_config_and_traffic_flows(bare_stack):
    car = bare_stack.sidecar({}, node=Node(app="productpage"))
    status, body = car.request("/productpage")
    assert status == 200
    # The request crossed inbound listener → app → outbound listener → upstream.
    got = car.upstream.last()
    assert got.path == "/productpage"
    log = car.envoy.log()
    assert f"meshtrace {cargo_version()} (" in log, "the version is logged when the VM starts"


def test_bad_configuration_is_rejected_with_a_clear_log_line(bare_stack):
    car = bare_stack.sidecar({"randomSamplingPercentage": 150}, wait_ready=False)
    wait_until(lambda: "randomSamplingPercentage" in car.envoy.log(), 20,
               "the configuration error in Envoy's log")
    line = next(l for l in car.envoy.log().splitlines() if "randomSamplingPercentage" in l)
    assert "invalid meshtrace configuration at `randomSamplingPercentage`" in line
    assert "between 0 and 100" in line


def test_unknown_key_is_named_in_the_error(bare_stack):
    car = bare_stack.sidecar(json.dumps({"exporter": {"protocoll": "grpc"}}), wait_ready=False)
    wait_until(lambda: "exporter.protocoll" in car.envoy.log(), 20,
               "the unknown key in Envoy's log")


def wasm_exports(path) -> set[str]:
    """Names in a Wasm module's export section (section id 7)."""
    data = path.read_bytes()

    def leb(i: int) -> tuple[int, int]:
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return n, i

    names, i = set(), 8
    while i < len(data):
        section, size_at = data[i], i + 1
        size, i = leb(size_at)
        end = i + size
        if section == 7:
            count, j = leb(i)
            for _ in range(count):
                length, j = leb(j)
                names.add(data[j:j + length].decode())
                _, j = leb(j + length + 1)  # kind byte, then index
        i = end
    return names


def test_the_plugin_exports_exactly_the_callbacks_it_implements():
    """Envoy calls every exported callback on every request: the plugin exports only the
    callbacks src/abi.rs implements (`exports`), and the build (build.sh PLUGIN_EXPORTS) keeps
    each of them: a callback implemented but dropped by the build would silently never run."""
    import re

    from helpers.harness import wasm_path

    implemented = set(re.findall(r'pub extern "C" fn (proxy_on_\w+)\(',
                                 (ROOT / "src" / "abi.rs").read_text()))
    exports = wasm_exports(wasm_path())
    callbacks = {e for e in exports if e.startswith("proxy_on_")}
    assert callbacks == implemented, "exactly the implemented callbacks are exported"
    assert {"proxy_on_done", "proxy_on_http_call_response", "proxy_on_request_headers",
            "proxy_on_response_trailers", "proxy_on_memory_allocate"} <= implemented
    # A stream ends in proxy_on_done (Context::onDestroy), one entry into the VM per request
    # for each of these Envoy would otherwise make (issue 24).
    assert not {"proxy_on_log", "proxy_on_delete"} & implemented
    assert {"proxy_abi_version_0_2_1", "memory"} <= exports
