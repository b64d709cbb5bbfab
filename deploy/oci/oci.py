"""Builds the plugin's OCI image without a container engine, in Istio's Wasm image format, the
"compat" variant: exactly one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding
`plugin.wasm`, and the manifest annotation `module.wasm.image/variant=compat`.

The image is reproducible: the tar entry has fixed owner, mode and mtime, gzip has no timestamp
or file name, and JSON is written with sorted keys — the same wasm always gives the same digest.

    python oci.py build WASM LAYOUT_DIR TAG   → prints the manifest digest

The native module (plugin.runtime native) is one layer holding /var/lib/meshtrace/libmeshtrace.so
(the chart's native.path, ENVOY_DYNAMIC_MODULES_SEARCH_PATH), on top of a base image given as an
OCI layout (`skopeo copy docker://IMAGE oci:DIR:TAG`): a base with `cp` (busybox) for the chart's
init-container route, which copies the module into an emptyDir istio-proxy mounts; or Istio's
proxyv2 image (Envoy's, for Envoy Gateway) for the proxyImage route, where the proxy's own image
carries it. Not an image volume: Kubernetes mounts those noexec, and the loader cannot map code
from there. Without a base the image holds the layer alone (for inspection and tests).

    python oci.py build-native SO LAYOUT_DIR TAG [BASE_LAYOUT:BASE_TAG]
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
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


def layer_tar(wasm: bytes, name: str = "plugin.wasm", mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(wasm), mode, 0
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


# Where the module sits in the image: the chart's native.path.
NATIVE_DIR = "var/lib/meshtrace"


def native_layer_tar(module: bytes) -> bytes:
    """The module under NATIVE_DIR, with its parent directories (root-owned, 0755)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = NATIVE_DIR.split("/")
        for i in range(1, len(parts) + 1):
            info = tarfile.TarInfo("/".join(parts[:i]) + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info)
        info = tarfile.TarInfo(f"{NATIVE_DIR}/{NATIVE_MODULE}")
        info.size, info.mode, info.mtime = len(module), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


# ELF e_machine → OCI architecture: the image must match the proxy's (a kubelet pulls the
# platform it runs; dlopen refuses a foreign machine).
ELF_MACHINES = {0x3E: "amd64", 0xB7: "arm64"}
NATIVE_MODULE = "libmeshtrace.so"


def elf_architecture(module: bytes) -> str:
    if module[:4] != b"\x7fELF" or len(module) < 20:
        raise ValueError("not an ELF shared object")
    machine = int.from_bytes(module[18:20], "little" if module[5] == 1 else "big")
    if machine not in ELF_MACHINES:
        raise ValueError(f"ELF machine {machine:#x} is not one a proxy runs on")
    return ELF_MACHINES[machine]


def glibc_floor(module: bytes) -> str | None:
    """The newest GLIBC_x.y symbol version the module asks for: the oldest glibc its proxy
    image may have (a musl or older glibc image cannot dlopen it). None: no glibc symbols."""
    versions = {tuple(int(n) for n in m.split(b".")) for m in re.findall(rb"GLIBC_(\d+\.\d+)", module)}
    return ".".join(str(n) for n in max(versions)) if versions else None


def write_blob(layout: Path, blob: bytes) -> dict:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest(blob).removeprefix("sha256:")).write_bytes(blob)
    return {"digest": digest(blob), "size": len(blob)}


def read_base(base: str) -> tuple[Path, dict, dict]:
    """An OCI layout `DIR:TAG`: its directory, manifest and config."""
    directory, _, tag = base.rpartition(":")
    root = Path(directory)
    blob = lambda d: (root / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()  # noqa: E731
    index = json.loads((root / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads(blob(m["digest"]))
            return root, manifest, json.loads(blob(manifest["config"]["digest"]))
    raise ValueError(f"{directory} has no image tagged {tag}")


def build_native(module_path: Path, layout: Path, tag: str, base: str | None = None) -> dict[str, str]:
    module = module_path.read_bytes()
    arch = elf_architecture(module)
    tar = native_layer_tar(module)
    layer = gzip_reproducible(tar)
    layers, diff_ids, config_body = [], [], {"config": {}}
    if base is not None:
        root, manifest, config_body = read_base(base)
        if config_body.get("architecture") != arch:
            raise ValueError(f"base is {config_body.get('architecture')}, the module {arch}")
        for entry in manifest["layers"]:
            src = root / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
            write_blob(layout, src.read_bytes())
            layers.append(entry)
        diff_ids = list(config_body["rootfs"]["diff_ids"])
        config_body = {k: v for k, v in config_body.items() if k not in ("history", "created")}
    config = canonical_json({**config_body, "architecture": arch, "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids + [digest(tar)]}})
    layers = layers + [{"mediaType": LAYER_TYPE, **write_blob(layout, layer)}]
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, **write_blob(layout, config)},
        "layers": layers,
    })
    write_blob(layout, manifest)
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": digest(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (layout / "index.json").write_bytes(canonical_json(index))
    return {"manifest": digest(manifest), "layer": digest(layer), "architecture": arch,
            "glibc": glibc_floor(module) or "", "module_sha256": hashlib.sha256(module).hexdigest()}


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "build":
        print(json.dumps(build(Path(argv[1]), Path(argv[2]), argv[3])))
        return 0
    if len(argv) in (4, 5) and argv[0] == "build-native":
        print(json.dumps(build_native(Path(argv[1]), Path(argv[2]), argv[3],
                                      argv[4] if len(argv) == 5 else None)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
