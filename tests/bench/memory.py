"""Where a Wasm VM's memory goes in Envoy: `./build.sh bench --memory` (a few minutes).

For each module — no filter, the floor (tests/bench/minimal-filter), meshtrace — one fresh Envoy
at `--concurrency 1` and one at `--concurrency 3` (a Wasm filter then runs 2 and 4 VMs: the main
thread's and one per worker), each after the same few hundred requests. Resident memory is
split by kind of mapping, from /proc/<pid>/smaps:

  code     anonymous executable mappings: V8's compiled code (Liftoff/TurboFan output)
  wasm     linear memories: V8 reserves each with its guard regions (8 GiB here) and commits
           the pages in use read-write just below the rest of the reservation
  heap     other anonymous mappings (malloc arenas, V8 isolate heaps and zones, Envoy's objects)
  file     file-backed mappings (the Envoy binary)

Per VM = (figure at 4 VMs - figure at 2 VMs) / 2, over no filter: what one more worker costs
with that module. Envoy's tcmalloc figures (admin `/memory`) tell live bytes (`allocated`) from
memory freed but kept by the allocator (`pageheap_free`, thread caches). The module's own numbers (linear memory's initial and maximum size, code and
data section sizes) are read from the .wasm. Figures for a reader, never assertions.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench import build_minimal  # noqa: E402
from helpers.harness import Stack, plugin_filter, wasm_path  # noqa: E402
from helpers.load import direct_response_upstream, start  # noqa: E402

MIB = 2**20
HUGE = 2**30  # a mapping this large is a linear memory's reservation


def smaps_by_kind(pid: int) -> dict[str, int]:
    """Resident bytes per kind of mapping (see the module's docstring)."""
    maps: list[dict] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            maps.append({"start": start, "end": end, "perms": head[1],
                         "path": head[5] if len(head) > 5 else "", "rss": 0})
        elif head[0] == "Rss:" and maps:
            maps[-1]["rss"] = int(head[1]) * 1024
    out = {"code": 0, "wasm": 0, "heap": 0, "file": 0}
    for i, m in enumerate(maps):
        after = maps[i + 1] if i + 1 < len(maps) else None
        # A linear memory: the committed pages (read-write) right below the rest of its
        # reservation and guard region (inaccessible, gigabytes).
        below_reservation = (after is not None and after["start"] == m["end"]
                             and after["perms"].startswith("---")
                             and after["end"] - after["start"] >= HUGE)
        if m["end"] - m["start"] >= HUGE or (below_reservation and not m["path"]):
            kind = "wasm"
        elif m["path"].startswith("/"):
            kind = "file"
        elif "x" in m["perms"]:
            kind = "code"
        else:
            kind = "heap"
        out[kind] += m["rss"]
    return out


def allocator(admin_port: int) -> dict[str, int]:
    """Envoy's tcmalloc figures (admin `/memory`): live bytes against what it holds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/memory", timeout=5) as r:
        stats = json.loads(r.read())
    return {k: int(stats.get(k, 0)) for k in ("allocated", "heap_size", "pageheap_free",
                                             "total_thread_cache")}


def module_facts(path: Path) -> dict[str, int]:
    """Section sizes and the linear memory's limits (in 64 KiB pages) of a .wasm."""
    data = path.read_bytes()
    pos, facts = 8, {"bytes": len(data)}
    names = {10: "code", 11: "data"}

    def leb(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = data[at]
            value |= (b & 0x7F) << shift
            at += 1
            if not b & 0x80:
                return value, at
            shift += 7

    while pos < len(data):
        section, pos = data[pos], pos + 1
        size, pos = leb(pos)
        if section in names:
            facts[names[section]] = size
        if section == 5:  # memory section: count, then flags, initial[, maximum]
            _, at = leb(pos)
            flags, at = leb(at)
            facts["memory_initial_pages"], at = leb(at)
            if flags & 1:
                facts["memory_max_pages"], _ = leb(at)
        pos += size
    return facts


def measure(stack: Stack, name: str, up: int, filters: list[dict], concurrency: int,
            requests: int) -> dict[str, int]:
    envoy, port = start(stack, f"{name}-c{concurrency}", up, filters, None, concurrency)
    try:
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/items/1", timeout=5) as r:
                r.read()
        return {**smaps_by_kind(envoy.proc.pid), **allocator(envoy.admin_port)}
    finally:
        envoy.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--wasm", action="append", default=[],
                    help="NAME=PATH: another module to compare (e.g. a build variant)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    minimal = build_minimal()
    modules = {"minimal": minimal, "meshtrace": wasm_path()}
    modules.update(dict(w.split("=", 1) for w in args.wasm))
    config = {"minimal": {}, "meshtrace": {"randomSamplingPercentage": 1,
                                           "exporter": {"protocol": "none"}}}
    results: dict[str, dict[int, dict[str, int]]] = {}
    with Stack(collector=True) as stack:
        up = direct_response_upstream(stack)
        for name in ["none", *modules]:
            filters = [] if name == "none" else [plugin_filter(
                Path(modules[name]), config.get(name, config["meshtrace"]), vm_id=name)]
            results[name] = {c: measure(stack, name, up, filters, c, args.requests)
                             for c in (1, 3)}
    kinds = ("code", "wasm", "heap", "file")

    def per_vm(name: str, kind: str) -> float:
        r, n = results[name], results["none"]
        return ((r[3][kind] - r[1][kind]) - (n[3][kind] - n[1][kind])) / 2 / MIB

    if args.json:
        print(json.dumps({"results": results,
                          "per_vm_mib": {n: {k: per_vm(n, k) for k in kinds}
                                         for n in modules},
                          "modules": {n: module_facts(Path(p)) for n, p in modules.items()}},
                         indent=1))
        return 0
    print("resident MiB per kind of mapping (2 VMs at --concurrency 1, 4 at --concurrency 3)")
    print(f"{'config':<12} {'conc':>4} " + " ".join(f"{k:>8}" for k in kinds) + f" {'total':>8}")
    for name, by_c in results.items():
        for c, m in by_c.items():
            print(f"{name:<12} {c:>4} " + " ".join(f"{m[k] / MIB:>8.1f}" for k in kinds)
                  + f" {sum(m[k] for k in kinds) / MIB:>8.1f}")
    print("\ntcmalloc (admin /memory, MiB): live bytes against what the allocator holds")
    print(f"{'config':<12} {'conc':>4} {'allocated':>10} {'heap_size':>10} {'pageheap_free':>14} "
          f"{'thread_cache':>13}")
    for name, by_c in results.items():
        for c, m in by_c.items():
            print(f"{name:<12} {c:>4} {m['allocated'] / MIB:>10.1f} {m['heap_size'] / MIB:>10.1f} "
                  f"{m['pageheap_free'] / MIB:>14.1f} {m['total_thread_cache'] / MIB:>13.1f}")
    print("\nper VM, over no filter (MiB): what one more worker costs")
    print(f"{'module':<12} " + " ".join(f"{k:>8}" for k in kinds) + f" {'total':>8}")
    for name in modules:
        vals = [per_vm(name, k) for k in kinds]
        print(f"{name:<12} " + " ".join(f"{v:>8.2f}" for v in vals) + f" {sum(vals):>8.2f}")
    print("\nmodules")
    for name, path in modules.items():
        f = module_facts(Path(path))
        print(f"{name:<12} {f['bytes']:>8} bytes  code {f.get('code', 0):>7}  data "
              f"{f.get('data', 0):>6}  linear memory {f.get('memory_initial_pages', 0)} pages "
              f"initial ({f.get('memory_initial_pages', 0) * 64} KiB), max "
              f"{f.get('memory_max_pages', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
