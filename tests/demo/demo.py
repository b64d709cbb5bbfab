"""`./build.sh demo`: the seed's Bookinfo walkthrough on 127.0.0.1 with meshtrace in every proxy.

Starts the mesh (see mesh.py), sends requests through the ingress gateway, waits until every
span the proxies recorded has been exported and has reached the OTLP sink behind the rotel
collector, then prints each trace as a tree, a summary with the plugin's counters, and writes a
self-contained HTML waterfall. Everything started is stopped on exit or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import report
from mesh import AmbientMesh, Mesh, Stack, wait_until  # noqa: F401

MODES = ["APP_LABEL_AND_NAMESPACE", "CANONICAL_NAME_ONLY", "CANONICAL_NAME_AND_NAMESPACE"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./build.sh demo", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=30, help="requests sent to the gateway")
    p.add_argument("--sampling", type=float, default=100.0,
                   help="randomSamplingPercentage of every proxy (0-100)")
    p.add_argument("--service-name-mode", choices=MODES, default=MODES[0],
                   help="Istio's tracingServiceName mode")
    p.add_argument("--ambient", action="store_true",
                   help="ambient mode: no sidecars, a waypoint in front of the services")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the mesh up and print the gateway URL until Ctrl-C")
    p.add_argument("--logs", type=Path, help="folder for logs and the HTML page")
    p.add_argument("--json", type=Path, help="also write the traces and counters as JSON")
    args = p.parse_args(argv)
    if not 0 <= args.sampling <= 100:
        p.error("--sampling must be between 0 and 100")
    return args


def settled(mesh: Mesh, requests: int) -> dict[str, int] | None:
    """The summed counters once every proxy has counted every decision and finished its spans,
    and every recorded span is exported (or dropped) and has reached the sink; None before."""
    for envoy, per_request in mesh.decisions_per_request():
        stats = envoy.stats("meshtrace")
        decided = sum(v for k, v in stats.items() if "meshtrace_sampling_" in k)
        # Recorded spans: the sampled ones and those captured (failed or slow, issue 16).
        sampled = sum(v for k, v in stats.items()
                      if "meshtrace_sampling_sampled_" in k or "meshtrace_spans_captured_" in k)
        if decided != requests * per_request:
            return None
        if stats.get("wasmcustom.meshtrace_spans_recorded", 0) != \
                round(sampled * mesh.spans_per_decision(envoy)):
            return None
    c = mesh.counters()
    dropped = sum(v for k, v in c.items() if k.startswith("spans_dropped_"))
    if c.get("spans_exported", 0) + dropped != c.get("spans_recorded", 0):
        return None
    if len(mesh.stack.sink.spans()) < c.get("spans_exported", 0):
        return None
    return c


def run(args: argparse.Namespace) -> int:
    logs = args.logs or Path(tempfile.mkdtemp(prefix="meshtrace-demo-"))
    stack = Stack(workdir=logs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set() or sys.exit(130))
    try:
        t0 = time.monotonic()
        mesh = (AmbientMesh if args.ambient else Mesh)(stack, args.sampling, args.service_name_mode)
        print(f"mesh up in {time.monotonic() - t0:.1f}s: gateway http://127.0.0.1:{mesh.gateway_port}"
              f"/productpage, {len(mesh.envoys)} proxies with meshtrace"
              f"{' (ambient: a waypoint, no sidecars)' if args.ambient else ''}, rotel collector")
        failed = sum(mesh.request() != 200 for _ in range(args.requests))
        counters = wait_until(lambda: settled(mesh, args.requests), 30,
                              "every span to reach the collector")
        trees = report.traces(stack.sink.spans())
        for tree in trees:
            print(report.print_tree(tree))
        sizes = sorted({t["spans"] for t in trees})
        fraction = len(trees) / args.requests if args.requests else 0.0
        dropped = {k: v for k, v in counters.items() if k.startswith("spans_dropped_")}
        summary = (f"{args.requests} requests ({failed} failed), {len(trees)} traces "
                   f"({100 * fraction:.1f}% sampled, configured {args.sampling:g}%), "
                   f"spans per trace {sizes}, service names by {args.service_name_mode}; "
                   f"spans recorded {counters.get('spans_recorded', 0)}, exported "
                   f"{counters.get('spans_exported', 0)}, dropped {sum(dropped.values())}")
        print("\n" + summary)
        page = logs / "traces.html"
        page.write_text(report.html_page(trees, summary))
        if args.json:
            args.json.write_text(json.dumps({
                "requests": args.requests, "failed": failed, "sampling": args.sampling,
                "mode": args.service_name_mode, "counters": counters, "traces": trees,
                "html": str(page), "logs": str(logs)}))
        print(f"logs: {logs}")
        if args.keep_running:
            print(f"mesh running: curl http://127.0.0.1:{mesh.gateway_port}/productpage "
                  "(Ctrl-C stops it)")
            stop.wait()
        print(f"open file://{page}")
        return 1 if failed else 0
    except KeyboardInterrupt:
        return 130
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(run(parse_args(sys.argv[1:])))
