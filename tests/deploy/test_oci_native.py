"""The native module's OCI image (plugin.runtime native, Envoy Gateway) against a real registry on
loopback with skopeo: reproducible, pushed and pulled by digest, one layer holding a byte-identical
/var/lib/meshtrace/libmeshtrace.so (the chart's native.path) on top of a base image (one with cp
for the init-container route, the proxy's own for proxyImage), the architecture read from the
module, and the pinned reference `./build.sh push --native` prints is one the chart accepts.

The module is dist/libmeshtrace.so (MESHTRACE_NATIVE overrides), built by ./build.sh build; the
refusals use stand-ins with hand-made ELF headers."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers.product import OCI_SH, oci
from test_chart import by_kind, render
from test_oci import registry, skopeo  # noqa: F401 (the registry fixture)

ROOT = Path(__file__).resolve().parents[2]
# The module layer's entries: the chart's native.path and the module.
MODULE_LAYER = ["var", "var/lib", "var/lib/meshtrace", "var/lib/meshtrace/libmeshtrace.so"]


def stand_in(machine: int = 0x3E) -> bytes:
    """64-bit little-endian ELF header (ET_DYN) for `machine`, then filler."""
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (3).to_bytes(2, "little") + machine.to_bytes(2, "little")
    return header + b"\0" * 44 + b"meshtrace stand-in module" * 40


@pytest.fixture(scope="module")
def module() -> Path:
    p = Path(os.environ.get("MESHTRACE_NATIVE", ROOT / "dist" / "libmeshtrace.so"))
    assert p.is_file(), f"{p} is missing: ./build.sh build"
    return p


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def image_of(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    return manifest, json.loads(blob(layout, manifest["config"]["digest"]))


def files_in(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_native_image_is_reproducible_and_follows_the_module(module, tmp_path):
    a = oci.build_native(module, tmp_path / "a", "0.1.0")
    assert a == oci.build_native(module, tmp_path / "b", "0.1.0"), "same module, same digests"
    changed = tmp_path / "changed.so"
    changed.write_bytes(module.read_bytes() + b"\0")
    assert oci.build_native(changed, tmp_path / "c", "0.1.0")["manifest"] != a["manifest"]


@pytest.mark.parametrize("content, error", [
    (b"#!/bin/sh\n", "not an ELF shared object"),           # a script is not a module
    (stand_in(machine=0x28), "is not one a proxy runs on"),  # 32-bit ARM
], ids=["not-elf", "foreign-machine"])
def test_what_no_proxy_can_load_is_refused(content, error, tmp_path):
    p = tmp_path / "libmeshtrace.so"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=error):
        oci.build_native(p, tmp_path / "layout", "0.1.0")


def test_the_glibc_the_module_needs_is_reported(tmp_path):
    p = tmp_path / "libmeshtrace.so"
    p.write_bytes(stand_in() + b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.9\0")
    assert oci.build_native(p, tmp_path / "layout", "0.1.0")["glibc"] == "2.34", \
        "the newest version asked for, compared as numbers"


def test_the_real_module_is_packaged_for_its_machine_and_glibc(module, tmp_path):
    built = oci.build_native(module, tmp_path / "layout", "0.1.0")
    assert built["architecture"] in ("amd64", "arm64")
    assert built["glibc"], "a glibc build asks for versioned glibc symbols"


def test_push_and_pull_keep_the_digest_and_the_module(module, registry, tmp_path):
    built = oci.build_native(module, tmp_path / "layout", "0.1.0")
    ref = f"docker://{registry}/meshtrace-native:0.1.0"
    digest_file = tmp_path / "digest"
    skopeo("copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
           f"oci:{tmp_path / 'layout'}:0.1.0", ref)
    assert digest_file.read_text().strip() == built["manifest"], "pushed as built"
    skopeo("copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{tmp_path / 'pulled'}:0.1.0")
    manifest, config = image_of(tmp_path / "pulled")
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == oci.LAYER_TYPE, "a plain image layer"
    assert config["architecture"] == built["architecture"] and config["os"] == "linux"
    members = files_in(blob(tmp_path / "pulled", layer["digest"]))
    assert list(members) == MODULE_LAYER, "the module at native.path, with its directories"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(tmp_path / "pulled", layer["digest"])))) as tar:
        assert tar.extractfile(MODULE_LAYER[-1]).read() == module.read_bytes(), "byte-identical"


def test_the_init_container_image_is_the_base_plus_the_module_layer(module, registry, tmp_path):
    """The init container runs the base image's `cp`; the proxyImage route stacks the same layer
    on the proxy's image."""
    base = tmp_path / "base"  # a stand-in base image: one layer with bin/cp
    cp_tar = oci.layer_tar(b"#!/bin/sh\n# stand-in for a base image's cp\n", "bin/cp", 0o755)
    cp_layer = oci.gzip_reproducible(cp_tar)
    config = oci.canonical_json({"architecture": "amd64", "os": "linux",
                                 "config": {"Env": ["PATH=/bin"]},
                                 "rootfs": {"type": "layers", "diff_ids": [oci.digest(cp_tar)]},
                                 "history": [{"created_by": "base"}]})
    manifest = oci.canonical_json({
        "schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE,
        "config": {"mediaType": oci.CONFIG_TYPE, **oci.write_blob(base, config)},
        "layers": [{"mediaType": oci.LAYER_TYPE, **oci.write_blob(base, cp_layer)}]})
    oci.write_blob(base, manifest)
    (base / "index.json").write_bytes(oci.canonical_json({"schemaVersion": 2, "manifests": [{
        "mediaType": oci.MANIFEST_TYPE, "digest": oci.digest(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]}))

    built = oci.build_native(module, tmp_path / "init", "0.1.0", base=f"{base}:1.0")
    skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{tmp_path / 'init'}:0.1.0",
           f"docker://{registry}/meshtrace-native-init:0.1.0")
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{registry}/meshtrace-native-init:0.1.0",
           f"oci:{tmp_path / 'pulled'}:0.1.0")
    manifest, config = image_of(tmp_path / "pulled")
    names = [list(files_in(blob(tmp_path / "pulled", layer["digest"]))) for layer in manifest["layers"]]
    assert names == [["bin/cp"], MODULE_LAYER], "the base's layers, then the module's"
    assert config["config"] == {"Env": ["PATH=/bin"]}, "the base's settings kept (cp on PATH)"
    diff_ids = [oci.digest(gzip.decompress(blob(tmp_path / "pulled", layer["digest"])))
                for layer in manifest["layers"]]
    assert config["rootfs"]["diff_ids"] == diff_ids, "one diff_id per layer, in order"
    assert built["layer"] == manifest["layers"][-1]["digest"], "the same module layer as the plain image"
    assert oci.build_native(module, tmp_path / "plain", "0.1.0")["layer"] == built["layer"]


def test_build_sh_push_native_prints_a_pinned_reference_the_chart_accepts(module, registry):
    out = subprocess.run(["bash", str(OCI_SH), "push-native",
                          f"{registry}/meshtrace/native:test", "--insecure"],
                         capture_output=True, text=True, env={**os.environ, "MESHTRACE_NATIVE": str(module)})
    assert out.returncode == 0, out.stderr
    lines = {k: v.split()[0] for k, v in
             (line.split(None, 1) for line in out.stdout.splitlines() if line.strip())}
    reported = skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                      f"docker://{registry}/meshtrace/native:test").strip()
    assert lines["native.image"] == f"{registry}/meshtrace/native@{reported}", "pinned by digest"
    assert lines["module"] == "sha256:" + hashlib.sha256(module.read_bytes()).hexdigest()
    pinned = skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                    f"docker://{lines['native.image']}").strip()
    assert pinned == reported, "the pinned reference resolves to the same image"
    docs = render({"istioVersion": "1.31", "native": {"image": lines["native.image"]},
                   "plugin": {"runtime": "native", "scope": "namespaces", "namespaces": ["a"]},
                   "renderIstioInstallConfig": False})
    assert by_kind(docs, "EnvoyFilter"), "values.schema.json takes the printed value"
