#!/usr/bin/env bash
# The plugin as an OCI image in Istio's Wasm image format (compat variant), without Docker.
#
#   oci.sh image [TAG]                 dist/meshtrace.wasm → OCI layout dist/oci (tag: version)
#   oci.sh push REF [--insecure]       push that layout with skopeo to REF (registry/repo:tag)
#   oci.sh image-native [TAG] [--base LAYOUT:TAG]
#                                      dist/libmeshtrace.so → OCI layout dist/oci-native: one layer
#                                      with /libmeshtrace.so (an image volume), on top of BASE (an
#                                      image with cp) for the init-container route
#   oci.sh push-native REF [--insecure] [--base LAYOUT:TAG]
#                                      push it; prints the digest-pinned native.image value
#
# Prints what a WasmPlugin needs. For `oci://` URLs Istio compares `spec.sha256` with the image
# MANIFEST digest, not with the module's bytes: istio/istio pkg/wasm/imagefetcher.go
# `ImageFetcher.PrepareFetch` returns `img.Digest().Hex`, and pkg/wasm/cache.go
# `LocalFileCache.getOrFetch` rejects a mismatch (agent counter
# wasm_remote_fetch_count{result="checksum_mismatched"}); only http(s):// URLs hash the module.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAYOUT="$ROOT/dist/oci"
WASM="$ROOT/dist/meshtrace.wasm"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)

die() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

image() {
  local tag=${1:-$VERSION}
  [ -f "$WASM" ] || die "$WASM is missing: run ./build.sh build"
  rm -rf "$LAYOUT"
  local out
  out=$(python3 "$ROOT/deploy/oci/oci.py" build "$WASM" "$LAYOUT" "$tag")
  echo "OCI layout  $LAYOUT (tag $tag)"
  python3 - "$out" <<'EOF'
import json, sys
o = json.loads(sys.argv[1])
print(f"spec.sha256 {o['manifest'].removeprefix('sha256:')}   (manifest digest: the WasmPlugin value for oci:// URLs)\n"
      f"wasm sha256 {o['wasm_sha256']}   (only for https:// URLs serving plugin.wasm itself)")
EOF
}

push() {
  local ref=${1:-} tls=true
  [ -n "$ref" ] || die "usage: ./build.sh push REGISTRY/REPOSITORY:TAG [--insecure]"
  [ "${2:-}" = "--insecure" ] && tls=false
  # The tag is what follows the last ':' after the last '/' (a registry port is not a tag).
  local tag=latest
  case "${ref##*/}" in *:*) tag=${ref##*:} ;; esac
  # Always from the current dist/meshtrace.wasm: the build is reproducible, so this is cheap
  # and never pushes a stale layout.
  image "$tag" >/dev/null
  local digest_file
  digest_file=$(mktemp)
  skopeo copy --quiet --dest-tls-verify="$tls" --digestfile "$digest_file" \
    "oci:$LAYOUT:$tag" "docker://$ref" || die "skopeo copy to $ref failed"
  local digest hex
  digest=$(cat "$digest_file")
  rm -f "$digest_file"
  hex=${digest#sha256:}
  echo "pushed      oci://$ref"
  echo "spec.url    oci://${ref%:"$tag"}@$digest   (pinned to this image)"
  echo "spec.sha256 $hex   (manifest digest: the WasmPlugin value for oci:// URLs)"
  echo "wasm sha256 $(sha256sum "$WASM" | cut -d' ' -f1)   (only for https:// URLs serving plugin.wasm itself)"
}

NATIVE="${MESHTRACE_NATIVE:-$ROOT/dist/libmeshtrace.so}"
NATIVE_LAYOUT="$ROOT/dist/oci-native"

image_native() {
  local tag=$VERSION base=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --base) [ -n "${2:-}" ] || die "--base needs an OCI layout DIR:TAG"; base=("$2"); shift 2 ;;
      *) tag=$1; shift ;;
    esac
  done
  [ -f "$NATIVE" ] || die "$NATIVE is missing: build the native module first"
  rm -rf "$NATIVE_LAYOUT"
  local out
  out=$(python3 "$ROOT/deploy/oci/oci.py" build-native "$NATIVE" "$NATIVE_LAYOUT" "$tag" "${base[@]}") \
    || die "could not build the native image"
  echo "OCI layout  $NATIVE_LAYOUT (tag $tag)"
  python3 - "$out" <<'EOF'
import json, sys
o = json.loads(sys.argv[1])
print(f"digest      {o['manifest']}   ({o['architecture']}; pin native.image to it)\n"
      f"module      sha256:{o['module_sha256']}   (libmeshtrace.so)\n"
      f"glibc       {o['glibc'] or 'none'}   (the oldest glibc the proxy image may have)")
EOF
}

push_native() {
  local ref="" tls=true rest=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --insecure) tls=false; shift ;;
      --base) rest+=(--base "${2:-}"); shift 2 ;;
      *) ref=$1; shift ;;
    esac
  done
  [ -n "$ref" ] || die "usage: ./build.sh push --native REGISTRY/REPOSITORY:TAG [--insecure] [--base LAYOUT:TAG]"
  local tag=latest
  case "${ref##*/}" in *:*) tag=${ref##*:} ;; esac
  image_native "$tag" "${rest[@]}" >/dev/null
  local digest_file digest
  digest_file=$(mktemp)
  skopeo copy --quiet --dest-tls-verify="$tls" --digestfile "$digest_file" \
    "oci:$NATIVE_LAYOUT:$tag" "docker://$ref" || die "skopeo copy to $ref failed"
  digest=$(cat "$digest_file")
  rm -f "$digest_file"
  echo "pushed       $ref"
  echo "native.image ${ref%:"$tag"}@$digest   (pinned: the chart value)"
  echo "module       sha256:$(sha256sum "$NATIVE" | cut -d' ' -f1)   (libmeshtrace.so)"
}

case "${1:-}" in
  image) shift; image "$@" ;;
  push) shift; push "$@" ;;
  image-native) shift; image_native "$@" ;;
  push-native) shift; push_native "$@" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
