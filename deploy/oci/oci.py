"""Builds the plugin's OCI image without a container engine, in Istio's Wasm image format, the
"compat" variant: exactly one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding
`plugin.wasm`, and the manifest annotation `module.wasm.image/variant=compat`.

The image is reproducible: the tar entry has fixed owner, mode and mtime, gzip has no timestamp
or file name, and JSON is written with sorted keys — the same wasm always gives the same digest.

    python oci.py build WASM LAYOUT_DIR TAG   → prints the manifest digest
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
VARIANT = {"module.wasm.image/variant": "compat"}


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o644, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_reproducible(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm_path: Path, layout: Path, tag: str) -> dict[str, str]:
    wasm = wasm_path.read_bytes()
    tar = layer_tar(wasm)
    layer = gzip_reproducible(tar)
    config = canonical_json({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest(layer), "size": len(layer)}],
        "annotations": VARIANT,
    })
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / digest(blob).removeprefix("sha256:")).write_bytes(blob)
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": digest(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (layout / "index.json").write_bytes(canonical_json(index))
    return {"manifest": digest(manifest), "layer": digest(layer),
            "wasm_sha256": hashlib.sha256(wasm).hexdigest()}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    out = build(Path(argv[1]), Path(argv[2]), argv[3])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
