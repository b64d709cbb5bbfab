"""The CI gate of the cost meter: every case stays within tests/meter/budget.json.

A failure names the case, the figure and the budget. To accept a cost on purpose, regenerate the
budget (`./build.sh bench --meter --update-budget`) in the same commit and say why in the commit
message and in BENCHMARKS.md ("Cost meter").
"""
import pytest

import meter


@pytest.fixture(scope="module")
def figures():
    return {f.case: f for f in meter.measure_all()}


@pytest.fixture(scope="module")
def budget():
    return meter.load_budget()


def test_the_budget_lists_exactly_the_meter_cases(budget):
    assert sorted(budget) == sorted(c.name for c in meter.CASES), (
        "budget.json and meter.CASES differ: regenerate with ./build.sh bench --meter --update-budget"
    )


@pytest.mark.parametrize("case", [c.name for c in meter.CASES])
def test_case_within_budget(case, figures, budget):
    f, b = figures[case], budget[case]
    calls = ", ".join(f"{k} {v:g}" for k, v in f.per_request_calls().items())
    assert f.host_calls <= b["max_host_calls_per_request"], (
        f"COST REGRESSION in case `{case}`: {f.host_calls:g} host calls per request, budget "
        f"{b['max_host_calls_per_request']:g} ({calls})"
    )
    assert f.fuel <= b["max_fuel_per_request"], (
        f"COST REGRESSION in case `{case}`: {f.fuel:.0f} wasm instructions (fuel) per request, "
        f"budget {b['max_fuel_per_request']} (request path {f.request_fuel:.0f}, ticks "
        f"{f.tick_fuel:.0f})"
    )


def test_the_meter_is_deterministic(figures):
    """Two fresh VMs, same traffic: the same figures to the instruction, or the gate is noise."""
    case = next(c for c in meter.CASES if c.name == "sampled_100_export")
    again = meter.measure(case)
    first = figures[case.name]
    assert (again.fuel, again.per_request_calls()) == (first.fuel, first.per_request_calls())
    assert first.spans_exported == meter.WINDOW, "every span of the window reached the collector"
