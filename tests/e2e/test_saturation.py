"""A saturated worker at 100% sampling with a healthy collector drops no span (issue 18, item 2).

The bench's latency round reproduced: one Envoy worker with meshtrace at 100% and the default
exporter settings (batches of 512, queue of 2,048, flush interval 1 s), in front of an Envoy that
answers directly, saturated by wrk (8 connections) while exporting over OTLP/HTTP to rotel. On
this 2-CPU machine the worker serves several thousand requests/s — a span each. Before batches
left as soon as they were full, the tick (every 200 ms) was the only way out: up to 2,000 spans
piled up between two ticks against a queue of 2,048, and the bench's round dropped 1,326 of
61,484 spans (`queue_full`) with a collector that kept up.
"""
import os
import shutil

import pytest

from helpers.harness import wait_until
from helpers.load import direct_response_upstream, meshtrace, pin, start, wrk

SECONDS = float(os.environ.get("MESHTRACE_SATURATION_SECONDS", "6"))
DROP_REASONS = ("queue_full", "export_failed", "too_large", "rejected", "shutdown")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (Debian package wrk) saturates the worker")
def test_a_saturated_worker_at_100_percent_drops_nothing_with_a_healthy_collector(stack):
    upstream = direct_response_upstream(stack)
    envoy, port = start(stack, "saturated", upstream, [meshtrace(100, True, "saturated")])
    mine = os.sched_getaffinity(0)
    cpus = sorted(mine)
    if len(cpus) > 1:  # as the bench: the worker on a CPU of its own, load and collector apart
        pin(envoy.proc.pid, {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        run = wrk(port, SECONDS, 8)
    finally:
        os.sched_setaffinity(0, mine)  # the rest of the session keeps every CPU
    assert run["non2xx"] == 0, "tracing never fails a request"

    # One read of /stats: a span of a request wrk cut off at its end can be counted recorded
    # between two reads, before its batch's answer is counted (a later `spans_recorded` read
    # above an earlier `spans_exported` one). One read lists the names in order (Envoy
    # `stats_request.h`, a btree_map by name): `spans_exported` is read before `spans_recorded`.
    def settled() -> dict[str, int] | None:
        stats = {k.removeprefix("wasmcustom.meshtrace_"): v
                 for k, v in envoy.stats("wasmcustom.meshtrace_").items()}
        recorded = stats.get("spans_recorded", 0)
        outcomes = stats.get("spans_exported", 0) + sum(
            stats.get(f"spans_dropped_{r}", 0) for r in DROP_REASONS)
        return stats if recorded >= run["requests"] and outcomes >= recorded else None
    # Every recorded span reaches an outcome: exported, or dropped and counted.
    stats = wait_until(settled, 20, "every span exported or counted as dropped")
    dropped = {r: stats.get(f"spans_dropped_{r}", 0) for r in DROP_REASONS}
    rate = run["requests"] / SECONDS
    assert rate > 300, f"the load ran ({rate:.0f} requests/s)"
    assert dropped == dict.fromkeys(DROP_REASONS, 0), (
        f"{sum(dropped.values())} of {stats['spans_recorded']} spans dropped at {rate:.0f} "
        f"spans/s with a healthy collector: {dropped}")
    assert stats["spans_exported"] == stats["spans_recorded"]
