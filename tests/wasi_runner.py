"""cargo's runner for wasm32-wasip1 test binaries: runs one under wasmtime (PyPI) with WASI.

cargo calls it as `wasi_runner.py TEST.wasm [test args...]`. The test binary sees the current
directory preopened and the arguments cargo passes (filters, --nocapture, ...). Imports other than
WASI (a crate with proxy-wasm code imports `env.proxy_*`) are stubbed as traps, so a test that
reached one would fail loudly instead of the binary refusing to load.
"""
import os
import sys

import wasmtime


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: wasi_runner.py TEST.wasm [args...]", file=sys.stderr)
        return 2
    path = sys.argv[1]
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.define_unknown_imports_as_traps(module)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [os.path.basename(path), *sys.argv[2:]]
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.inherit_env()
    wasi.preopen_dir(".", ".")
    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)
    except wasmtime.ExitTrap as e:
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
