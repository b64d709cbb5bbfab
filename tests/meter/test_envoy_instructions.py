"""The CI gate on the real Envoy: instructions per request under callgrind
(tests/bench/instructions.py), each meshtrace configuration as a ratio over its reference in the
same run — the minimal Wasm filter at 0% (the unsampled path), Envoy's own tracer at 100% — within
tests/meter/envoy_budget.json. Where the ABI meter (test_meter_budget.py) counts what happens
inside the VM, this counts what Envoy and V8 do for each crossing too.

To accept a cost on purpose: `./build.sh bench --instructions --update-budget` in the same commit,
saying why in the commit message and BENCHMARKS.md.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import instructions  # noqa: E402
from helpers.harness import parse_stats  # noqa: E402
from helpers.load import COLLECTOR_GRPC, COLLECTOR_HTTP  # noqa: E402

REQUESTS = 200


@pytest.fixture(scope="module")
def figures():
    instructions.require_valgrind()  # fails loudly: build.sh test installs valgrind
    return instructions.measure(instructions.gate_configurations(), REQUESTS)


def test_the_budget_gates_exactly_these_configurations():
    budget = instructions.load_budget()
    assert sorted(k for k in budget if k != "_") == sorted(instructions.GATED), (
        "envoy_budget.json and instructions.GATED differ: regenerate with "
        "./build.sh bench --instructions --update-budget")


@pytest.mark.parametrize("config", sorted(instructions.GATED))
def test_configuration_within_budget(config, figures):
    budget = instructions.load_budget()[config]
    ratio = instructions.ratios(figures)[config]
    base = figures["none"]
    assert ratio <= budget["max_ratio"], (
        f"COST REGRESSION on the real Envoy: {config} adds {figures[config] - base:,.0f} "
        f"instructions per request, {ratio:.3f} × {budget['over']}'s "
        f"{figures[budget['over']] - base:,.0f}; budget {budget['max_ratio']} "
        f"(measured {budget['measured_ratio']} when it was set); this run, instructions per "
        f"request: " + ", ".join(f"{name} {value:,.0f}" for name, value in figures.items()))


COLLECTOR = f"cluster.{COLLECTOR_HTTP}."
GRPC_COLLECTOR = f"cluster.{COLLECTOR_GRPC}."


@pytest.mark.parametrize("stats,trouble", [
    # every export answered 200: the figure is the cost of tracing
    (f"{COLLECTOR}upstream_rq_2xx: 4\n{COLLECTOR}upstream_rq_5xx: 0\n", ""),
    # Envoy's tracer over gRPC, answered
    (f"{GRPC_COLLECTOR}upstream_rq_2xx: 40\n", ""),
    # the collector reset the stream (what an invalid :authority got from rotel)
    (f"{GRPC_COLLECTOR}upstream_rq_2xx: 0\n{GRPC_COLLECTOR}upstream_rq_rx_reset: 2\n", "2 resets"),
    # refused: retried exports would be counted as tracing's cost
    (f"{COLLECTOR}upstream_rq_2xx: 3\n{COLLECTOR}upstream_rq_5xx: 1\n", "1 non-2xx answers"),
    # meshtrace counted a failure the cluster did not (a gRPC status in a 200)
    (f"{COLLECTOR}upstream_rq_2xx: 3\nwasmcustom.meshtrace_export_failures: 1\n",
     "1 meshtrace_export_failures"),
    # no export answered: the collector never saw the spans
    (f"{COLLECTOR}upstream_rq_2xx: 0\n", "no export answered"),
])
def test_a_measurement_whose_exports_failed_is_refused(stats, trouble):
    assert instructions.export_trouble(parse_stats(stats)) == trouble
