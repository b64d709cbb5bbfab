"""The cost meter: wasm instructions (wasmtime fuel) and host calls per request of the shipped
plugin, per case, on the ABI host of tests/helpers/abi_host.py. `./build.sh bench --meter` prints
the table; tests/meter/test_meter_budget.py fails when a case exceeds tests/meter/budget.json.

The traffic model, identical for every case: one worker at 1,000 requests/s (each request moves
the clock 1 ms) with the plugin's own tick period (200 ms today), so each tick follows the
requests of its period. A window of WINDOW requests runs once to warm up (allocator, queues,
first export), then once more measured; each window ends with one flush interval of quiet so
its own spans are all sent. Per request:
- `request`: the stream's callbacks (context create, request headers, response headers, done),
  averaged over the requests the case is about (`unsampled_1pct` leaves out the ~1% it samples);
- `ticks`: every tick of the window and the collector's answers (batch encoding, dispatch,
  metrics flush), divided by the window's requests: the amortized export cost of a span. A
  batch that fills up (512 spans) leaves with the request that filled it, so at 100% part of the
  export cost is in `request` (one request in 512 frames and dispatches a batch).
- `allocs/req`: buffers the host handed back through the plugin's `proxy_on_memory_allocate`
  (one more entry into the VM each, as in Envoy): what makes a data read dearer than a write.

    ./build.sh bench --meter                    # the table
    ./build.sh bench --meter --update-budget    # rewrite budget.json from this run
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from helpers.abi_host import Cost, Host, Stream
from helpers.scenarios import (B3_UNSAMPLED, INBOUND_STREAM, REQUEST, SIDECAR,
                               TRACEPARENT_UNSAMPLED, WAYPOINT, WAYPOINT_STREAM)

BUDGET = Path(__file__).resolve().parent / "budget.json"
WINDOW = 1000
REQUEST_INTERVAL_NS = 1_000_000
# exporter.flushInterval's default (core/config/src/lib.rs, ExporterConfig); no case changes it.
FLUSH_INTERVAL_MS = 1000
# Fuel may grow this much over the measured figure before the gate fails; host calls not at all.
FUEL_HEADROOM = 0.05


def unsampled(stream: Stream) -> bool:
    flags = (stream.request_header("traceparent") or "-01").rsplit("-", 1)[-1]
    return not int(flags, 16) & 1  # W3C Trace Context §3.2.2.5.1, the sampled flag


@dataclass
class Case:
    name: str
    what: str
    config: dict
    headers: list
    response: list = field(default_factory=lambda: [(":status", "200")])
    # Which requests the `request` figure averages (all by default).
    counts: Callable[[Stream], bool] = lambda stream: True
    # The proxy (node metadata) and what it knows about each stream at its end.
    node: dict = field(default_factory=lambda: SIDECAR)
    stream: dict = field(default_factory=lambda: INBOUND_STREAM)
    # Envoy's CEL foreign functions (every Envoy build but Windows'); off: a proxy without them.
    cel: bool = True


CASES = [
    Case("unsampled_1pct", "new trace, 1% sampling, not sampled", {"randomSamplingPercentage": 1},
         REQUEST, counts=unsampled),
    Case("w3c_parent_unsampled", "traceparent flags 00 (parent-based)", {},
         REQUEST + [("traceparent", TRACEPARENT_UNSAMPLED)]),
    Case("sampled_100_export", "new trace, 100%, span exported (OTLP/HTTP)",
         {"randomSamplingPercentage": 100}, REQUEST),
    # A proxy without CEL: the recorded span's facts read one property at a time.
    Case("sampled_100_no_cel", "as sampled_100_export, proxy without CEL",
         {"randomSamplingPercentage": 100}, REQUEST, cel=False),
    Case("b3_input", "B3 multi-header parent, x-b3-sampled 0", {}, REQUEST + B3_UNSAMPLED),
    # Today simply unsampled; its budget moves when error capture lands (issue 18, item 4).
    Case("error_capture", "503 response at 0% sampling", {"randomSamplingPercentage": 0},
         REQUEST, response=[(":status", "503")]),
    # Ambient mode: an unsampled request costs a waypoint what it costs a sidecar (the peers are
    # read for recorded spans only); a sampled one exports the source's CLIENT and the
    # destination's SERVER span, each under its service's resource.
    Case("waypoint_unsampled", "waypoint, traceparent flags 00", {},
         REQUEST + [("traceparent", TRACEPARENT_UNSAMPLED)], node=WAYPOINT, stream=WAYPOINT_STREAM),
    Case("waypoint_sampled_pair", "waypoint, 100%, CLIENT + SERVER pair exported",
         {"randomSamplingPercentage": 100}, REQUEST, node=WAYPOINT, stream=WAYPOINT_STREAM),
]


@dataclass
class Figures:
    case: str
    requests_counted: int
    request_fuel: float
    tick_fuel: float
    request_calls: Counter
    tick_calls: Counter
    spans_exported: int
    # Buffers the host handed back through `proxy_on_memory_allocate` (each a VM re-entry, as
    # in Envoy): data crossings beside the host calls.
    allocations: float = 0.0

    @property
    def fuel(self) -> float:
        return self.request_fuel + self.tick_fuel

    @property
    def calls(self) -> Counter:
        return self.request_calls + self.tick_calls

    @property
    def host_calls(self) -> float:
        return round(sum(self.calls.values()), 3)

    def per_request_calls(self) -> dict[str, float]:
        return {name: round(n, 3) for name, n in sorted(self.calls.items())}


def _window(host: Host, case: Case) -> tuple[list[Cost], list[Stream], Cost]:
    """WINDOW requests at 1,000/s with the plugin's ticks between them; then the collector
    answers every export with 200."""
    per_tick = max(1, host.tick_period_ms * 1_000_000 // REQUEST_INTERVAL_NS)
    costs, streams, ticks = [], [], Cost()
    for i in range(1, WINDOW + 1):
        with host.metered() as cost:
            streams.append(host.request(case.headers, response=case.response,
                                        properties=case.stream, advance_ns=REQUEST_INTERVAL_NS))
        costs.append(cost)
        if i % per_tick == 0:
            with host.metered() as tick:
                host.tick(advance_ms=0)
                host.respond_all()
            ticks.fuel += tick.fuel
            ticks.calls += tick.calls
            ticks.allocations += tick.allocations
    # The window ends with what is left sent (a flush interval later), so each window pays for
    # exporting exactly its own spans.
    with host.metered() as tick:
        host.tick(advance_ms=FLUSH_INTERVAL_MS)
        host.respond_all()
    ticks.fuel += tick.fuel
    ticks.calls += tick.calls
    ticks.allocations += tick.allocations
    return costs, streams, ticks


def measure(case: Case) -> Figures:
    host = Host(properties=case.node, cel=case.cel)
    if not host.start(json.dumps(case.config)):
        raise RuntimeError(f"case {case.name}: the plugin rejected {case.config}: {host.logs}")
    _window(host, case)  # warm-up
    exported_before = host.metric("meshtrace_spans_exported")
    costs, streams, ticks = _window(host, case)
    counted = [c for c, s in zip(costs, streams) if case.counts(s)]
    if not counted:
        raise RuntimeError(f"case {case.name}: no request matched the case")
    request_calls = sum((c.calls for c in counted), Counter())
    return Figures(
        case=case.name,
        requests_counted=len(counted),
        request_fuel=sum(c.fuel for c in counted) / len(counted),
        tick_fuel=ticks.fuel / WINDOW,
        request_calls=Counter({k: v / len(counted) for k, v in request_calls.items()}),
        tick_calls=Counter({k: v / WINDOW for k, v in ticks.calls.items()}),
        spans_exported=host.metric("meshtrace_spans_exported") - exported_before,
        allocations=(sum(c.allocations for c in counted) / len(counted)
                     + ticks.allocations / WINDOW),
    )


def measure_all() -> list[Figures]:
    return [measure(case) for case in CASES]


def load_budget() -> dict:
    return json.loads(BUDGET.read_text())["cases"]


def budget_from(figures: list[Figures]) -> dict:
    return {
        "_how_to_update": (
            "Regenerated by `./build.sh bench --meter --update-budget` (fuel = measured + "
            f"{FUEL_HEADROOM:.0%}, host calls = measured). Update only for an intended change, "
            "in the same commit, and say in the commit message and BENCHMARKS.md why the cost moved."
        ),
        "cases": {
            f.case: {
                "max_fuel_per_request": int(f.fuel * (1 + FUEL_HEADROOM)) + 1,
                "max_host_calls_per_request": f.host_calls,
                "measured_fuel_per_request": round(f.fuel),
            }
            for f in figures
        },
    }


def table(figures: list[Figures], budget: dict | None) -> str:
    head = (f"{'case':<22} {'fuel/req':>10} {'request':>9} {'ticks':>8} {'calls/req':>10} "
            f"{'allocs/req':>10} {'budget fuel':>12} {'budget calls':>13}  what")
    lines = [head, "-" * len(head)]
    what = {c.name: c.what for c in CASES}
    for f in figures:
        b = (budget or {}).get(f.case, {})
        lines.append(
            f"{f.case:<22} {f.fuel:>10.0f} {f.request_fuel:>9.0f} {f.tick_fuel:>8.0f} "
            f"{f.host_calls:>10.3f} {f.allocations:>10.3f} {b.get('max_fuel_per_request', '-'):>12} "
            f"{b.get('max_host_calls_per_request', '-'):>13}  {what[f.case]}"
        )
    lines.append("")
    lines.append("host calls per request, by name (request path + amortized ticks):")
    for f in figures:
        calls = ", ".join(f"{k.removeprefix('proxy_')} {v:g}" for k, v in f.per_request_calls().items())
        lines.append(f"  {f.case}: {calls}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update-budget", action="store_true", help="rewrite budget.json from this run")
    ap.add_argument("--json", action="store_true", help="figures as JSON")
    args = ap.parse_args()
    figures = measure_all()
    if args.json:
        print(json.dumps({f.case: {"fuel": round(f.fuel), "request_fuel": round(f.request_fuel),
                                   "tick_fuel": round(f.tick_fuel), "host_calls": f.host_calls,
                                   "allocations": round(f.allocations, 3),
                                   "calls": f.per_request_calls()} for f in figures}, indent=2))
        return 0
    budget = load_budget() if BUDGET.exists() and not args.update_budget else None
    if args.update_budget:
        BUDGET.write_text(json.dumps(budget_from(figures), indent=2) + "\n")
        budget = load_budget()
        print(f"wrote {BUDGET}")
    print(f"meshtrace cost meter: {WINDOW} requests at 1,000/s after a warm-up of {WINDOW}; "
          "fuel = wasm instructions (wasmtime)")
    print(table(figures, budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
