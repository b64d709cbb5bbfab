"""`./build.sh` is the project's one entry point: its usage is what a newcomer reads first."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_SH = ROOT / "build.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    # Nothing here reaches a subcommand, so nothing is built or installed.
    return subprocess.run([str(BUILD_SH), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def listed_subcommands(usage: str) -> set[str]:
    """The names in the usage's two-column list (`  name  [ARGS]   what it does`)."""
    return set(re.findall(r"^  ([a-z][a-z0-9-]*)\b", usage, re.M))


@pytest.mark.parametrize("args", [("help",), ("--help",), ("-h",), ()],
                         ids=["help", "--help", "-h", "no arguments"])
def test_help_prints_the_usage_and_succeeds(args):
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: ./build.sh SUBCOMMAND"), r.stdout
    assert "set -euo pipefail" not in r.stdout, "no line of the script leaks into the usage"
    assert "unknown subcommand" not in r.stdout + r.stderr
    for sub in ("build", "test", "unit", "e2e", "demo"):
        assert sub in listed_subcommands(r.stdout), f"`{sub}` is listed"
    assert "./build.sh unit" in r.stdout and "./build.sh e2e -k" in r.stdout, \
        "the fast inner loop is shown"


def test_an_unknown_subcommand_fails_with_the_usage_on_stderr():
    r = run("frobnicate", "x")
    assert r.returncode != 0
    assert r.stdout == "", "nothing on stdout: scripts reading it see nothing"
    assert "unknown subcommand: frobnicate" in r.stderr
    assert "Usage: ./build.sh SUBCOMMAND" in r.stderr


def test_every_listed_subcommand_exists_and_every_subcommand_is_listed():
    """Subcommands are the script's `cmd_NAME` functions; the usage must list exactly those."""
    defined = set(re.findall(r"^cmd_([a-z][a-z0-9_]*)\(\)", BUILD_SH.read_text(), re.M))
    listed = listed_subcommands(run("help").stdout) - {"help"}
    assert listed == defined, f"listed only: {listed - defined}, not listed: {defined - listed}"


def test_the_native_adapter_is_built_with_its_own_unwinding_profile():
    """The native adapter catches a panic at every hook (native/src/exports.rs), which only
    `panic = "unwind"` allows: the workspace's release profile aborts. `./build.sh build` builds
    the `native` profile and ships it under the name Envoy loads (`libmeshtrace.so`)."""
    import tomllib
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert cargo["profile"]["release"]["panic"] == "abort", "the Wasm plugin's profile"
    native = cargo["profile"]["native"]
    assert native["inherits"] == "release" and native["panic"] == "unwind", native
    script = BUILD_SH.read_text()
    assert "--profile native -p meshtrace-native" in script
    assert 'target/native/libmeshtrace_native.so "$DIST/libmeshtrace.so"' in script
