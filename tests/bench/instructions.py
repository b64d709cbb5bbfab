"""`./build.sh bench --instructions`: CPU instructions per request of the real Envoy, per
configuration, counted by valgrind's callgrind — a figure that does not move with the load on
the machine, where the timed side-by-side run (bench.py) needs a quiet one.

Each configuration runs in its own Envoy (`--concurrency 1`, the configurations of bench.py) under
`valgrind --tool=callgrind --instr-atstart=no`: nothing is counted while Envoy starts and V8
compiles the module. After a warm-up of 100 requests (JIT tiers, the upstream's connection),
`callgrind_control -i on` switches counting on for every thread, REQUESTS requests are sent one
after another on one kept-alive connection, and `-i off` switches it off; the Envoy then exits and
callgrind writes the total. Every thread counts: the worker's request path, the main thread's
export at 100% (batches, callouts, the collector's answers), timers.

The collector is an Envoy answering every export at once (helpers/load.py `prompt_collector`):
a real collector's batching, back-pressure and scheduling would decide how many exports, retries
and connections fall in the window — the one thing in it that is not the same on every run and
machine. A configuration that exports every span must see each export answered 2xx, or the
measurement is refused (`export_trouble`): a refused or reset export costs another amount than a
delivered one (Envoy's tracer measured against rotel with the cluster name as gRPC authority had
every export reset). The compiler is pinned (rust-toolchain.toml); CPU features, the CPU count,
another rustc (1.99.1) and pauses in the window each moved the ratios by 1% or less.

What the figure is and is not: instructions executed (`Ir`), not time — cache misses, branch
mispredictions and the VM transitions' memory traffic are not in it, and V8's JIT code is
counted as it runs under valgrind's translation. Repeat runs agree within 1%; the ratios
between configurations have followed the timed run's (mt-1 1.56 × minimal here against 1.79
timed, mtn-100 0.49 × Envoy's tracer against 0.50). Use it to compare builds and decide between
changes; the timed run states the targets.

    ./build.sh bench --instructions                          # every configuration
    ./build.sh bench --instructions --configs none,mt-1,minimal --requests 500
    ./build.sh bench --instructions --update-budget          # rewrite tests/meter/envoy_budget.json
    ./build.sh bench --instructions --configs none,minimal,mtn-0,mtn-0@main,mtn-floor,mtn-calls \
        --module main=OLD/libmeshtrace.so                    # another build of the adapter beside

The CI gate (tests/meter/test_envoy_instructions.py) holds each of meshtrace's configurations to
its ratio over a reference measured in the same run — the minimal Wasm filter for the unsampled
path (0%), Envoy's own tracer at 100% — as tests/meter/envoy_budget.json says: ratios, not
absolute counts, so another CPU (other V8 code, other `memcpy`) moves both sides alike.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import json

import helpers.harness as harness
from helpers.harness import Stack, parse_stats
from helpers.load import (COLLECTOR_GRPC, COLLECTOR_HTTP, direct_response_upstream, meshtrace,
                          prompt_collector, subject)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 (the configurations and the minimal filter's build)

WARM_UP = 100
BUDGET = Path(__file__).resolve().parents[1] / "meter" / "envoy_budget.json"
# Each gated configuration and the reference its added instructions are divided by. The gate
# samples 0% rather than 1%: which 1 in 100 requests is sampled is random, and 3 spans more or
# less in 300 requests move the figure by 2–3%; at 0% every request takes the unsampled path
# that 99% of mt-1's take (error capture on, exporter configured).
GATED = {"mt-0": "minimal", "mt-100": "native", "mtn-0": "minimal", "mtn-100": "native"}
# The gate's configurations beside bench.py's.
OWN_CONFIGS = ("mt-0", "mtn-0")
# The configurations that record and export every request's span (the subject's server span).
EXPORTING = ("native", "mt-100", "mtn-100")


def configuration(name: str, minimal: Path) -> tuple[list[dict], dict | None]:
    if "@" in name:  # mtn-0@NAME: another build of the adapter, loaded as meshtrace_NAME
        base, build = name.split("@", 1)
        filters, tracing = configuration(base, minimal)
        return bench.on_build(filters, build), tracing
    if name == "mt-0":
        return [meshtrace(0, True, "mt-0", adapter="wasm")], None
    if name == "mtn-0":
        return [meshtrace(0, True, adapter="native")], None
    return bench.configuration(name, minimal)


CONFIGS = (*bench.CONFIGS, *OWN_CONFIGS)
# A ratio may grow this much over the measured one before the gate fails. Repeat runs here agree
# within 1%, but the gate's first run on CI's machine read mtn-100 6.3% above this machine's
# ratio at the same commit (0.438 against 0.412; the other three passed within 4%), and what
# differs there could not be reproduced here (see the module's doc). The band covers that
# difference, this machine's spread and a margin; the exact meters (host calls, fuel) stay the
# fine gate on meshtrace's own work.
HEADROOM = 0.10


def callgrind_wrapper(workdir: Path, name: str, envoy: str) -> tuple[Path, Path]:
    """A script that starts Envoy under callgrind, counting nothing until switched on."""
    out = workdir / f"callgrind.{name}"
    script = workdir / f"envoy-{name}-callgrind.sh"
    # --smc-check: V8 writes the code it runs (the JIT), not from a file.
    script.write_text("#!/bin/sh\n"
                      f"exec valgrind --tool=callgrind --smc-check=all-non-file "
                      f"--instr-atstart=no --callgrind-out-file={out} {envoy} \"$@\"\n")
    script.chmod(0o755)
    return script, out


def send(connection: http.client.HTTPConnection, n: int) -> None:
    for _ in range(n):
        connection.request("GET", "/bench", headers={"user-agent": "meshtrace-bench"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the subject answered {response.status}")


def counted(out: Path) -> int:
    match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.M)
    if not match:
        raise RuntimeError(f"callgrind wrote no totals in {out}")
    return int(match.group(1))


def instructions_per_request(stack: Stack, upstream: int, collector: int, name: str,
                             filters: list[dict], tracing: dict | None, requests: int,
                             envoy: str) -> float:
    """Instructions per request of an Envoy whose one listener has `filters` (and `tracing`)."""
    script, out = callgrind_wrapper(stack.workdir, name, envoy)
    real = harness.envoy_bin
    harness.envoy_bin = lambda: str(script)
    try:
        proxy, ports = subject(stack, f"callgrind-{name}", upstream, {name: (filters, tracing)},
                               collector=collector)
    finally:
        harness.envoy_bin = real
    connection = http.client.HTTPConnection("127.0.0.1", ports[name], timeout=120)
    send(connection, WARM_UP)
    control = ["callgrind_control", "-i"]
    subprocess.run([*control, "on", str(proxy.proc.pid)], check=True, capture_output=True)
    send(connection, requests)
    subprocess.run([*control, "off", str(proxy.proc.pid)], check=True, capture_output=True)
    connection.close()
    if name.split("@")[0] in EXPORTING:
        # A refused or reset export costs another amount than a delivered one.
        trouble = export_trouble(parse_stats(proxy.stats_text()))
        if trouble:
            raise RuntimeError(f"{name}: its exports did not all succeed ({trouble}): "
                               "the figure would not be the cost of tracing")
    proxy.close()  # callgrind writes its file as Envoy exits
    return counted(out) / requests


def export_trouble(stats: dict[str, int]) -> str:
    """What went wrong with an Envoy's exports, by its counters: no answered export, or an
    answer other than 2xx, a reset, a failure meshtrace counted; '' when all went through."""
    def total(pattern: str) -> int:
        return sum(v for k, v in stats.items() if re.search(pattern, k))

    collector = rf"^cluster\.({re.escape(COLLECTOR_HTTP)}|{re.escape(COLLECTOR_GRPC)})\."
    wrong = {what: total(collector + pattern) for what, pattern in {
        "non-2xx answers": r"upstream_rq_[345]xx$", "resets": r"upstream_rq_(rx|tx)_reset$",
        "timeouts": r"upstream_rq_timeout$"}.items()}
    wrong["meshtrace_export_failures"] = total(r"meshtrace_export_failures$")
    said = ", ".join(f"{n} {what}" for what, n in wrong.items() if n)
    if said:
        return said
    return "" if total(collector + r"upstream_rq_2xx$") else "no export answered"


def gate_configurations() -> list[str]:
    """What the gate measures: `none`, each gated configuration and its reference."""
    return sorted({"none", *GATED, *GATED.values()}, key=CONFIGS.index)


def measure(names: list[str], requests: int,
            builds: dict[str, Path] | None = None) -> dict[str, float]:
    """Instructions per request by configuration (`none` included), one Envoy each; `builds`:
    other builds of the adapter by name (configurations `mtn-0@NAME`, `mtn-1@NAME`, …)."""
    envoy = harness.envoy_bin()
    stack = Stack(collector=False)
    figures: dict[str, float] = {}
    try:
        upstream = direct_response_upstream(stack)
        collector = prompt_collector(stack)
        minimal = bench.build_minimal()
        bench.use_modules(stack.workdir, builds or {}, names)
        for name in names:
            filters, tracing = configuration(name, minimal)
            figures[name] = instructions_per_request(stack, upstream, collector, name, filters,
                                                     tracing, requests, envoy)
            print(f"{name}: {figures[name]:,.0f} instructions per request", file=sys.stderr)
    finally:
        stack.close()
    return figures


def ratios(figures: dict[str, float]) -> dict[str, float]:
    """Each gated configuration's added instructions over its reference's."""
    base = figures["none"]
    return {name: (figures[name] - base) / (figures[ref] - base) for name, ref in GATED.items()}


def load_budget() -> dict:
    return json.loads(BUDGET.read_text())


def write_budget(figures: dict[str, float], requests: int) -> None:
    base = figures["none"]
    budget = {"_": f"Regenerated by `./build.sh bench --instructions --update-budget` "
                   f"({requests} requests): max_ratio = measured ratio + {HEADROOM:.0%}."}
    for name, ratio in ratios(figures).items():
        budget[name] = {"over": GATED[name], "measured_ratio": round(ratio, 3),
                        "max_ratio": round(ratio * (1 + HEADROOM), 3),
                        "measured_added": round(figures[name] - base),
                        "reference_added": round(figures[GATED[name]] - base)}
    BUDGET.write_text(json.dumps(budget, indent=2) + "\n")
    print(f"wrote {BUDGET}", file=sys.stderr)


def require_valgrind() -> None:
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian package valgrind; ./build.sh bench "
                             "--instructions installs it)")


def main() -> int:
    p = argparse.ArgumentParser(prog="./build.sh bench --instructions",
                                description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(bench.DEFAULT_CONFIGS),
                   help="comma-separated subset of: " + ", ".join(CONFIGS))
    p.add_argument("--requests", type=int, default=300, help="requests counted per configuration")
    p.add_argument("--module", action="append", default=[], metavar="NAME=PATH",
                   help="another build of the native adapter (a libmeshtrace.so), measured as "
                        "mtn-0@NAME, mtn-1@NAME, mtn-100@NAME")
    p.add_argument("--update-budget", action="store_true",
                   help="measure the gated configurations and rewrite " + str(BUDGET.name))
    args = p.parse_args()
    require_valgrind()
    names = [c for c in args.configs.split(",") if c]
    if args.update_budget:
        names = gate_configurations()
    builds = {b: Path(p) for b, p in (m.split("=", 1) for m in args.module)}
    if not all(re.fullmatch(r"[a-z0-9_]+", b) and p.is_file() for b, p in builds.items()):
        raise SystemExit("--module NAME=PATH: NAME in [a-z0-9_], PATH an existing file")
    known = set(CONFIGS) | {f"{c}@{b}" for c in ("mtn-0", "mtn-1", "mtn-100") for b in builds}
    known |= {n for n in names if re.fullmatch(r"mtn-calls-[htfs]+", n)}
    if set(names) - known or "none" not in names:
        raise SystemExit(f"--configs must include none and only name {', '.join(sorted(known))}")
    figures = measure(names, args.requests, builds)
    if args.update_budget:
        write_budget(figures, args.requests)
    base = figures["none"]
    added = {name: figures[name] - base for name in names}
    print(f"\ninstructions per request of Envoy (callgrind, {args.requests} requests, "
          f"--concurrency 1)")
    print(f"{'config':<11}{'per request':>13}{'added':>10}{'× native':>10}{'× minimal':>11}")
    for name in names:
        ratio = {ref: (f"{added[name] / added[ref]:.2f}" if added.get(ref, 0) > 0 else "-")
                 for ref in ("native", "minimal")}
        print(f"{name:<11}{figures[name]:>13,.0f}{added[name]:>10,.0f}{ratio['native']:>10}"
              f"{ratio['minimal']:>11}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
