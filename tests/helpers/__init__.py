"""What the tests, the demo and the benchmarks share (tests/pytest.ini puts tests/ on the path;
build.sh does the same for the scripts it runs):

- harness.py   a Stack of local Envoys, apps and a rotel collector on 127.0.0.1 (e2e, demo, bench)
- chain.py     a chain of sidecars (gateway -> a -> b -> c) for the capture tests
- ambient.py   an ambient mesh of real Envoys: a waypoint in front of the apps, no sidecars
- load.py      an Envoy under load: direct-response upstream, wrk (bench, saturation test)
- abi_host.py  a proxy-wasm ABI host on wasmtime that meters the plugin (meter, ABI tests)
- scenarios.py what the plugin sees in a sidecar and a waypoint, for the ABI host
- product.py   the product's Python commands under deploy/ (doctor, the OCI image builder)
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class BuildFirst(RuntimeError):
    """The plugin is not built: tests that load it say so instead of failing obscurely."""


def wasm_path() -> Path:
    """The plugin under test: $MESHTRACE_WASM (build.sh sets it), else dist/meshtrace.wasm."""
    p = Path(os.environ.get("MESHTRACE_WASM", ROOT / "dist" / "meshtrace.wasm"))
    if not p.is_file():
        raise BuildFirst(f"{p} is missing: build the plugin first (./build.sh build)")
    return p
