#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz for SECONDS each (default 60). Needs the nightly
# toolchain (rustup) and cargo-fuzz (installed from crates.io when missing). Fails loudly on a
# crash, leaving the reproducer under tests/fuzz/artifacts/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_EACH="${1:-60}"
FUZZ_DIR="$ROOT/tests/fuzz"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal \
  || { echo "ERROR: could not install the nightly toolchain cargo-fuzz needs" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz \
  || { echo "ERROR: could not install cargo-fuzz" >&2; exit 1; }

cd "$ROOT"
targets=$(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
for t in $targets; do
  echo "==> fuzzing $t for ${SECONDS_EACH}s"
  mkdir -p "$FUZZ_DIR/corpus/$t"
  cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$FUZZ_DIR/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -max_len=4096 -rss_limit_mb=1024 2>&1 | tail -n 3
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "ERROR: $t found a failure (see $FUZZ_DIR/artifacts/$t)" >&2; exit 1; }
done
echo "==> all fuzz targets ran ${SECONDS_EACH}s each without a failure"
