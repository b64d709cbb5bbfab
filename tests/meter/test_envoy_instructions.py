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
        f"(measured {budget['measured_ratio']} when it was set)")
