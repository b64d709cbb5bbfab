"""`./build.sh soak MINUTES`: sustained load through a proxy with meshtrace at 100% sampling,
exporting to the rotel collector. Every interval it samples the Envoy's resident memory, the
plugin's queue depth and its span counters, prints them as a table, and ends with the memory
slope over the second half of the run (after warm-up) and the largest queue depth seen."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from helpers.harness import Stack, wait_until
from helpers.load import COLLECTOR_HTTP, direct_response_upstream, meshtrace, rss_bytes, start

ROOT = Path(__file__).resolve().parents[2]


def slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(m for _, m in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (m - my) for t, m in points) / var if var else 0.0


def main() -> int:
    p = argparse.ArgumentParser(prog="./build.sh soak", description=__doc__.splitlines()[0])
    p.add_argument("minutes", type=float, nargs="?", default=10.0)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args()
    assert COLLECTOR_HTTP  # the plugin exports through the harness's collector cluster
    stack = Stack()
    try:
        up = direct_response_upstream(stack)
        envoy, port = start(stack, "soak", up, [meshtrace(100, True)])
        duration = int(args.minutes * 60)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{duration + 5}s",
             f"http://127.0.0.1:{port}/api/items/42"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = envoy.proc.pid
        print(f"{'t (s)':>6} {'RSS MiB':>8} {'queue':>6} {'recorded':>10} {'exported':>10}"
              f" {'dropped':>8} {'spans/s':>8}")
        start_t = time.monotonic()
        samples: list[tuple[float, float]] = []
        max_queue, last_exported, last_t = 0, 0, start_t
        next_at = start_t
        while True:
            next_at += args.interval
            # Waits for the next sampling time (a schedule, not a synchronization).
            wait_until(lambda: time.monotonic() >= next_at or load.poll() is not None,
                       args.interval + 5, "the next sample")
            now = time.monotonic()
            stats = envoy.stats("meshtrace")
            get = lambda k: stats.get(f"wasmcustom.meshtrace_{k}", 0)  # noqa: E731
            dropped = sum(v for k, v in stats.items() if "spans_dropped_" in k)
            rss = rss_bytes(pid) / 2**20
            queue = get("queue_depth")
            max_queue = max(max_queue, queue)
            rate = (get("spans_exported") - last_exported) / (now - last_t)
            last_exported, last_t = get("spans_exported"), now
            t = now - start_t
            samples.append((t, rss))
            print(f"{t:6.0f} {rss:8.1f} {queue:6d} {get('spans_recorded'):10d}"
                  f" {get('spans_exported'):10d} {dropped:8d} {rate:8.0f}", flush=True)
            if t >= duration or load.poll() is not None:
                break
        load.terminate()
        second_half = [s for s in samples if s[0] >= duration / 2]
        slope = slope_mib_per_min(second_half)
        print(f"\nRSS {samples[0][1]:.1f} → {samples[-1][1]:.1f} MiB; slope over the second half "
              f"{slope:+.3f} MiB/min; largest queue depth {max_queue} "
              f"(bound: exporter.maxQueueSize 2048)")
        reasons = {k.removeprefix("wasmcustom.meshtrace_spans_dropped_"): v
                   for k, v in envoy.stats("meshtrace_spans_dropped").items()}
        print(f"dropped by reason: {reasons}")
        print("verdict:", "flat" if abs(slope) < 0.5 and max_queue <= 2048 else "NOT flat")
        return 0
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
