"""The product's own Python commands under deploy/, for their tests: `doctor` (./build.sh doctor)
and the OCI image builder (./build.sh image). deploy/ is not a Python package — each command runs
with a bare python3 — so they are loaded from their paths."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCTOR = ROOT / "deploy" / "doctor" / "doctor.py"
OCI = ROOT / "deploy" / "oci" / "oci.py"
OCI_SH = ROOT / "deploy" / "oci" / "oci.sh"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oci = _load("oci", OCI)
