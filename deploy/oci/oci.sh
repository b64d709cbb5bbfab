#!/usr/bin/env bash
# The plugin as an OCI image in Istio's Wasm image format (compat variant), without Docker.
#
#   oci.sh image [TAG]                 dist/meshtrace.wasm → OCI layout dist/oci (tag: version)
#   oci.sh push REF [--insecure]       push that layout with skopeo to REF (registry/repo:tag)
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

case "${1:-}" in
  image) shift; image "$@" ;;
  push) shift; push "$@" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
