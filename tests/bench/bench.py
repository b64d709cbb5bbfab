"""`./build.sh bench`: what meshtrace costs per request, against Envoy's own tracer.

Configurations of the same inbound listener, in front of one Envoy upstream that answers
directly:

  none      no tracing
  native    Envoy's OpenTelemetry tracer, 100% sampled, exporting over OTLP/gRPC to rotel
  mt-100    meshtrace, 100% sampled, exporting over OTLP/HTTP to rotel
  mt-1      meshtrace, 1% sampled, exporting (error capture on, the default)
  mt-1-nocap  the same with `sampling.captureErrors: false`: what error capture costs
  mt-none   meshtrace, 100% sampled, exporter `none` (propagation and sampling only)
  mtn-100   meshtrace's native adapter (dist/libmeshtrace.so, an Envoy dynamic module), 100%
            sampled, exporting as mt-100
  mtn-1     the native adapter at 1%, as mt-1
  minimal   a Rust proxy-wasm filter (SDK defaults) that reads two headers and writes one: the
            V8 floor
  mtn-floor a dynamic module whose hooks return at once (tests/bench/floor-module): the floor
            of any dynamic module
  mtn-calls the same module making the native adapter's callbacks for an unsampled request
            (headers read, `traceparent` written, two filter-state writes, `:status` read) with
            fixed values: Envoy's share of mtn-1
  mtn-calls-LETTERS  only some of those callbacks: h the header map, t the `traceparent`
            write, f the two filter-state writes, s the `:status` read (mtn-calls = mtn-calls-htfs)
  mtn-1@NAME, mtn-100@NAME  mtn-1 / mtn-100 on another build of the adapter, given with
            `--module NAME=PATH` (PATH a libmeshtrace.so): before/after pairs in one run

CPU per request. Each round starts one Envoy (one worker) per configuration, all pinned to one
CPU of their own, and saturates them at the same time, each with its own wrk (8 connections).
The Envoys share that CPU over the same seconds, so whatever the machine does meanwhile (other
tenants, frequency, cache) weighs on every configuration alike: a configuration's cost is its
CPU time (/proc/<pid>/stat) per request minus that of `none` in the same round. Runs one after
another differ by ±10% on this kind of machine, which would swamp differences of a few
microseconds; side by side they agree within a few. Medians over rounds, fresh processes each
round (memory layout and JIT placement differ from process to process).

Throughput and latency. One Envoy with one listener per configuration, loaded one listener at a
time: wrk saturates it (requests/s), then hey sends a fixed rate for latency percentiles that
queueing does not distort. Memory: a fresh Envoy per configuration (`--concurrency 2`, so a
Wasm filter runs three VMs) serves 100,000 requests; RSS added over `none`, per VM.

The load generators, the upstream and the collector share the other CPUs. These are
measurements for a reader, never assertions.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from helpers import harness
from helpers.harness import Stack, native_filter, plugin_filter, wasm_path
from helpers.load import (COLLECTOR_GRPC, COLLECTOR_HOST, URL_PATH, direct_response_upstream,
                          meshtrace, parse_wrk, pin, rss_bytes, start, subject, wrk, wrk_command)

ROOT = Path(__file__).resolve().parents[2]

CLK_TCK = os.sysconf("SC_CLK_TCK")
MINIMAL = ROOT / "tests" / "bench" / "minimal-filter"
FLOOR_MODULE = ROOT / "tests" / "bench" / "floor-module"
CONFIGS = ("none", "native", "mt-100", "mt-1", "mt-1-nocap", "mt-none", "minimal", "mtn-100",
           "mtn-1", "mtn-floor", "mtn-calls")
# What a run measures unless --configs says otherwise: not the ablation modules (two Envoys more
# on the shared CPU would change the crowding every earlier run was measured at).
DEFAULT_CONFIGS = CONFIGS[:-2]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def build_minimal() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1"],
                   cwd=MINIMAL, check=True)
    return MINIMAL / "target" / "wasm32-wasip1" / "release" / "minimal_filter.wasm"


def build_floor_module() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "--release"], cwd=FLOOR_MODULE, check=True)
    return FLOOR_MODULE / "target" / "release" / "libmtfloor.so"


def on_build(filters: list[dict], build: str) -> list[dict]:
    """`filters` (a native adapter's) loading another build of the adapter, given as
    `--module NAME=PATH`: `dynamic_module_config.name` meshtrace_NAME."""
    for f in filters:
        f["typed_config"]["dynamic_module_config"]["name"] = f"meshtrace_{build}"
    return filters


def use_modules(workdir: Path, builds: dict[str, Path], names: list[str]) -> None:
    """Envoy's module search path for `names`: the adapter under test, the other builds given
    (`meshtrace_NAME`) and, when an ablation configuration is named, the floor module."""
    modules = {f"meshtrace_{b}": Path(p) for b, p in builds.items()}
    if any(n.startswith(("mtn-floor", "mtn-calls")) for n in names):
        modules["mtfloor"] = build_floor_module()
    if modules:
        harness.NATIVE_DIR = module_search_path(workdir, modules)


def module_search_path(workdir: Path, modules: dict[str, Path]) -> Path:
    """One directory for Envoy's ENVOY_DYNAMIC_MODULES_SEARCH_PATH holding the adapter under
    test (libmeshtrace.so) and each other module by its name (lib{name}.so)."""
    where = workdir / "modules"
    where.mkdir(exist_ok=True)
    for name, path in {"meshtrace": harness.native_module_path(), **modules}.items():
        shutil.copy(path, where / f"lib{name}.so")  # a copy: a rebuild mid-run changes nothing
    return where


def native_tracing() -> dict:
    return {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        # Istio sets the authority to the collector's host (pilot/pkg/networking/core/tracing.go,
        # otelConfig); without it the stream's :authority is the cluster name,
        # whose `|` the collector's HTTP/2 server refuses with a reset: every export failed.
        "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR_GRPC,
                                        "authority": COLLECTOR_HOST},
                         "timeout": "5s"},
        "service_name": "bench"}},
        "random_sampling": {"value": 100}, "spawn_upstream_span": False}


def configuration(name: str, minimal_wasm: Path) -> tuple[list[dict], dict | None]:
    """(HTTP filters, tracing) of one configuration. Each meshtrace listener has a VM of its own,
    as separate plugins would."""
    if name.startswith("mtn-calls-"):
        return [native_filter(name.removeprefix("mtn-calls-"), module="mtfloor")], None
    if "@" in name:  # mtn-1@NAME: the adapter built elsewhere, loaded as meshtrace_NAME
        base, build = name.split("@", 1)
        filters, tracing = configuration(base, minimal_wasm)
        return on_build(filters, build), tracing
    return {
        "none": ([], None),
        "native": ([], native_tracing()),
        "mt-100": ([meshtrace(100, True, "mt-100", adapter="wasm")], None),
        "mt-1": ([meshtrace(1, True, "mt-1", adapter="wasm")], None),
        "mt-1-nocap": ([meshtrace(1, True, "mt-1-nocap", capture=False, adapter="wasm")], None),
        "mt-none": ([meshtrace(100, False, "mt-none", adapter="wasm")], None),
        "minimal": ([plugin_filter(minimal_wasm, {}, vm_id="minimal", adapter="wasm")], None),
        "mtn-100": ([meshtrace(100, True, adapter="native")], None),
        "mtn-1": ([meshtrace(1, True, adapter="native")], None),
        "mtn-floor": ([native_filter("", module="mtfloor")], None),
        "mtn-calls": ([native_filter("calls", module="mtfloor")], None),
    }[name]


def hey(port: int, args: list[str]) -> dict:
    out = subprocess.run(["hey", *args, "-H", "user-agent: meshtrace-bench",
                          f"http://127.0.0.1:{port}{URL_PATH}"],
                         capture_output=True, text=True, check=True).stdout
    pct = {p: float(v) * 1e3 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    return {"p50_ms": pct.get("50"), "p99_ms": pct.get("99"), "ok": ok}


def cpu_side_by_side(stack: Stack, up: int, listeners: dict[str, tuple], seconds: float,
                     connections: int, cpus: set[int] | None, r: int) -> dict[str, float]:
    """One round of the CPU phase: every configuration in its own Envoy, all saturated at once.
    Returns CPU µs per request by configuration."""
    envoys = {}
    for name, (filters, tracing) in listeners.items():
        envoys[name] = start(stack, f"{name}-{r}", up, filters, tracing)
        if cpus:
            pin(envoys[name][0].proc.pid, cpus)
    for envoy, port in envoys.values():  # warm-up (JIT tiers, connection pools), discarded
        wrk(port, 1, connections)
    before = {name: cpu_seconds(envoy.proc.pid) for name, (envoy, _) in envoys.items()}
    loads = {name: subprocess.Popen(wrk_command(port, seconds, connections),
                                    stdout=subprocess.PIPE, text=True)
             for name, (_, port) in envoys.items()}
    out = {}
    for name, load in loads.items():
        requests = parse_wrk(load.communicate()[0])["requests"]
        cpu = cpu_seconds(envoys[name][0].proc.pid) - before[name]
        out[name] = cpu * 1e6 / max(requests, 1)
    for envoy, _ in envoys.values():
        envoy.close()
    return out


# Envoy's workers in the memory runs, as in an Istio sidecar (`--concurrency 2`): with a Wasm
# filter that is three VMs — the main thread's and one per worker.
MEMORY_CONCURRENCY = 2
MEMORY_VMS = MEMORY_CONCURRENCY + 1
MEMORY_CONFIGS = ("none", "native", "minimal", "mt-1", "mt-100", "mtn-1", "mtn-100")


def memory_after(stack: Stack, name: str, up: int, minimal: Path, requests: int,
                 cpus: set[int] | None) -> dict:
    """Resident memory of a fresh Envoy with one configuration, before and after `requests`."""
    filters, tracing = configuration(name, minimal)
    envoy, port = start(stack, f"mem-{name}", up, filters, tracing, MEMORY_CONCURRENCY)
    if cpus:
        pin(envoy.proc.pid, cpus)
    hey(port, ["-n", "1000", "-c", "8"])
    before = rss_bytes(envoy.proc.pid)
    hey(port, ["-n", str(requests), "-c", "8"])
    after = rss_bytes(envoy.proc.pid)
    envoy.close()
    return {"rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20}


def micro() -> None:
    """The core's criterion benchmarks (native), summarised as ns per operation."""
    out = subprocess.run(["cargo", "bench", "--quiet", "-p", "meshtrace-core", "--bench",
                          "hot_path", "--", "--noplot"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    print("\nmicro-benchmarks of the pure core (native, criterion; median estimate):")
    for name, value, unit in re.findall(r"^(\S.*?)\s+time:\s+\[\S+ \S+ ([\d.]+) (\S+)", out,
                                        re.M):
        scale = {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6}.get(unit, float("nan"))
        print(f"  {name:<62} {float(value) * scale:>10.0f} ns")


def main() -> int:
    p = argparse.ArgumentParser(prog="./build.sh bench", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="rounds of the CPU phase")
    p.add_argument("--latency-rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5, help="duration of each load run")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rate", type=int, default=1000, help="requests/s of the latency runs")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help="comma-separated subset of: " + ", ".join(CONFIGS))
    p.add_argument("--memory-requests", type=int, default=100_000,
                   help="requests of the memory runs (0: skip them)")
    p.add_argument("--micro", action="store_true", help="also run the core's micro-benchmarks")
    p.add_argument("--json", type=Path, help="write every run and the summary as JSON")
    p.add_argument("--module", action="append", default=[], metavar="NAME=PATH",
                   help="another build of the native adapter (a libmeshtrace.so), measured as "
                        "the configurations mtn-1@NAME and mtn-100@NAME")
    args = p.parse_args()
    for tool in ("wrk", "hey"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian package {tool}; ./build.sh bench "
                             "installs it)")
    names = [c for c in args.configs.split(",") if c]
    builds = dict(m.split("=", 1) for m in args.module)
    if not all(re.fullmatch(r"[a-z0-9_]+", b) and Path(p).is_file() for b, p in builds.items()):
        raise SystemExit("--module NAME=PATH: NAME in [a-z0-9_], PATH an existing file")
    known = set(CONFIGS) | {f"{c}@{b}" for c in ("mtn-1", "mtn-100") for b in builds}
    known |= {n for n in names if re.fullmatch(r"mtn-calls-[htfs]+", n)}
    if set(names) - known or "none" not in names:
        raise SystemExit(f"--configs must include none and only name {', '.join(sorted(known))}")

    cpus = sorted(os.sched_getaffinity(0))
    subject_cpus = {cpus[-1]} if len(cpus) > 1 else None
    if subject_cpus:
        os.sched_setaffinity(0, set(cpus[:-1]))  # load, upstream, collector: the other CPUs
    stack = Stack()
    cpu_runs: dict[str, list[float]] = {name: [] for name in names}
    seq_runs: dict[str, list[dict]] = {name: [] for name in names}
    memory, spans = {}, {}
    try:
        up = direct_response_upstream(stack)
        minimal = build_minimal()
        use_modules(stack.workdir, builds, names)
        listeners = {name: configuration(name, minimal) for name in names}
        for r in range(args.rounds):
            got = cpu_side_by_side(stack, up, listeners, args.seconds, args.connections,
                                   subject_cpus, r)
            for name, us in got.items():
                cpu_runs[name].append(us)
            print(f"CPU round {r + 1}/{args.rounds}: "
                  + " ".join(f"{n} {us - got['none']:+.1f}" for n, us in got.items()),
                  file=sys.stderr)
        for r in range(args.latency_rounds):
            envoy, ports = subject(stack, f"subject-{r}", up, listeners)
            if subject_cpus:
                pin(envoy.proc.pid, subject_cpus)
            for name in names:
                wrk(ports[name], 1, args.connections)
            for name in random.sample(names, len(names)):
                run = wrk(ports[name], args.seconds, args.connections)
                run.update(hey(ports[name], ["-z", f"{args.seconds:g}s", "-c", "8",
                                             "-q", str(max(args.rate // 8, 1))]))
                seq_runs[name].append(run)
            spans = envoy.stats("meshtrace_spans")
            envoy.close()
            print(f"latency round {r + 1}/{args.latency_rounds}", file=sys.stderr)
        if args.memory_requests:
            for name in MEMORY_CONFIGS:
                if name in names:
                    memory[name] = memory_after(stack, name, up, minimal, args.memory_requests,
                                                subject_cpus)
    finally:
        stack.close()

    # Added CPU: paired with `none` of the same round, then the median over rounds.
    added = {name: statistics.median(a - b for a, b in zip(cpu_runs[name], cpu_runs["none"]))
             for name in names}
    spread = {name: statistics.quantiles([a - b for a, b in zip(cpu_runs[name],
                                                                 cpu_runs["none"])], n=4)
              if len(cpu_runs[name]) > 1 else [added[name]] * 3 for name in names}
    seq = {name: {k: statistics.median(run[k] for run in rs) if rs else float("nan")
                  for k in ("rps", "p50_ms", "p99_ms")} for name, rs in seq_runs.items()}
    ratio = lambda a, b: added[a] / added[b] if b in added and added[b] > 0 else float("nan")  # noqa: E731
    print(f"\nEnvoy CPU per request: {args.rounds} rounds, every configuration saturated side by "
          f"side for {args.seconds:g}s (wrk -c{args.connections}); added = paired with `none`, "
          f"median (interquartile range). Alone: saturated requests/s and latency at "
          f"{args.rate} requests/s (hey), medians of {args.latency_rounds} rounds.\n")
    print(f"{'config':<10} {'CPU µs/req':>10} {'added µs':>9} {'(IQR)':>13} {'× native':>9}"
          f" {'× floor':>8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for name in names:
        lo, _, hi = spread[name]
        print(f"{name:<10} {statistics.median(cpu_runs[name]):>10.1f} {added[name]:>9.1f}"
              f" {f'{lo:.0f}..{hi:.0f}':>13} {ratio(name, 'native'):>9.2f}"
              f" {ratio(name, 'minimal'):>8.2f} {seq[name]['rps']:>8.0f}"
              f" {seq[name]['p50_ms']:>7.2f} {seq[name]['p99_ms']:>7.2f}")
    for name in names:  # another build against this one, round by round
        if "@" in name and name.split("@")[0] in cpu_runs:
            this = name.split("@")[0]
            diffs = [a - b for a, b in zip(cpu_runs[this], cpu_runs[name])]
            print(f"{this} − {name}: median {statistics.median(diffs):+.1f} µs/req, rounds "
                  + " ".join(f"{d:+.1f}" for d in diffs))
    wasm = wasm_path().stat().st_size
    print("\ntargets:")
    if "mt-100" in seq and "native" in seq:
        print(f"  mt-100 added ≤ 0.75 × native added (issue 24): {ratio('mt-100', 'native'):.2f}")
        print(f"  mt-100 p99 ≤ native p99: {seq['mt-100']['p99_ms']:.2f} vs "
              f"{seq['native']['p99_ms']:.2f} ms")
    if "mt-1" in seq and "minimal" in seq:
        print(f"  mt-1 added ≤ 1.2 × minimal added: {ratio('mt-1', 'minimal'):.2f}")
    if "mtn-100" in seq and "native" in seq:
        print(f"  mtn-100 added ≤ 0.5 × native added: {ratio('mtn-100', 'native'):.2f}")
    if "mtn-1" in seq and "minimal" in seq:
        print(f"  mtn-1 added ≤ 0.5 × minimal added: {ratio('mtn-1', 'minimal'):.2f}")
    if "mtn-100" in memory and "native" in memory:
        extra = memory["mtn-100"]["rss_after_mib"] - memory["native"]["rss_after_mib"]
        print(f"  mtn-100 memory ≤ native + 2 MiB: {extra:+.1f} MiB")
    print(f"  .wasm ≤ 250,000 bytes: {wasm:,}")
    if spans:
        print(f"\nmeshtrace span counters of the last latency round: {spans}")
    if memory:
        print(f"\nmemory (RSS, one Envoy per configuration, --concurrency {MEMORY_CONCURRENCY}; "
              f"added = over `none`; a Wasm filter has {MEMORY_VMS} VMs; `/VMs` spreads what is "
              "mostly a one-time cost over them: ./build.sh bench --memory measures a VM's own):")
        print(f"{'config':<10} {'after 1k':>9} {'after':>9} {'added MiB':>10} {'/VMs':>7}"
              f" {'× floor':>8}")
        base = memory.get("none", {}).get("rss_after_mib", 0.0)
        floor = memory.get("minimal", {}).get("rss_after_mib", 0.0) - base
        for name, m in memory.items():
            added = m["rss_after_mib"] - base
            print(f"{name:<10} {m['rss_before_mib']:>9.1f} {m['rss_after_mib']:>9.1f}"
                  f" {added:>10.1f} {added / MEMORY_VMS:>7.1f}"
                  f" {added / floor if floor > 0 else float('nan'):>8.2f}")
    if args.micro:
        micro()
    if args.json:
        args.json.write_text(json.dumps({
            "cpu_us_per_req": cpu_runs, "sequential": seq_runs, "added": added,
            "medians": seq, "memory": memory, "wasm_bytes": wasm}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
