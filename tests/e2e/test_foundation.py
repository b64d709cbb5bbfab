"""The plugin loads in a real Envoy exactly as Istio configures it, and traffic flows."""
import json

from harness import Node, wait_until


def test_plugin_loads_from_string_value_config_and_traffic_flows(bare_stack):
    car = bare_stack.sidecar({}, node=Node(app="productpage"))
    status, body = car.request("/productpage")
    assert status == 200
    # The request crossed inbound listener → app → outbound listener → upstream.
    got = car.upstream.last()
    assert got.path == "/productpage"
    log = car.envoy.log()
    assert "meshtrace 0.1.0" in log, "the version is logged when the VM starts"


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
