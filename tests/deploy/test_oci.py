"""The plugin's OCI image against a real registry on loopback (Debian's docker-registry) with
skopeo: reproducible builds, a push and a pull that keep the digest, a layer holding a
byte-identical plugin.wasm, and a manifest in the form Istio's Wasm image fetcher accepts
(compat variant: one tar+gzip layer with plugin.wasm, the variant annotation)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest

from helpers.harness import free_port, wait_until, wasm_path
from helpers.product import OCI_SH, oci

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} is missing: ./build.sh test installs the Debian package")
    return path


@pytest.fixture(scope="module")
def wasm() -> Path:
    return wasm_path()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A docker-registry serving on a free loopback port; yields host:port."""
    tmp = tmp_path_factory.mktemp("registry")
    port = free_port()
    (tmp / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([tool("docker-registry"), "serve", str(tmp / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "registry.log", "w"))

    def ready():
        if proc.poll() is not None:
            raise RuntimeError("docker-registry exited: " + (tmp / "registry.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False
    wait_until(ready, 20, "the registry to answer /v2/")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def skopeo(*args: str) -> str:
    out = subprocess.run([tool("skopeo"), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_image_is_reproducible(wasm, tmp_path):
    a = oci.build(wasm, tmp_path / "a", "0.1.0")
    b = oci.build(wasm, tmp_path / "b", "0.1.0")
    assert a == b, "the same wasm gives the same digests"
    changed = tmp_path / "changed.wasm"
    changed.write_bytes(wasm.read_bytes() + b"\0")
    assert oci.build(changed, tmp_path / "c", "0.1.0")["manifest"] != a["manifest"]


def test_push_and_pull_keep_the_digest_and_the_plugin(wasm, registry, tmp_path):
    built = oci.build(wasm, tmp_path / "layout", "0.1.0")
    ref = f"docker://{registry}/meshtrace:0.1.0"
    digest_file = tmp_path / "digest"
    skopeo("copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
           f"oci:{tmp_path / 'layout'}:0.1.0", ref)
    assert digest_file.read_text().strip() == built["manifest"], "pushed as built"

    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", ref))
    # What Istio's fetcher accepts as the compat variant.
    assert manifest["mediaType"] == oci.MANIFEST_TYPE
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["config"]["mediaType"] == oci.CONFIG_TYPE

    skopeo("copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{tmp_path / 'pulled'}:0.1.0")
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == built["manifest"], "pulled back unchanged"
    blob = tmp_path / "pulled" / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tar:
        assert tar.getnames() == ["plugin.wasm"], "exactly the plugin in the layer"
        pulled = tar.extractfile("plugin.wasm").read()
    assert pulled == wasm.read_bytes(), "a byte-identical plugin.wasm"


def test_build_sh_push_prints_the_manifest_digest_as_spec_sha256(wasm, registry):
    """For oci:// URLs Istio checks spec.sha256 against the image manifest digest
    (istio/istio pkg/wasm/imagefetcher.go ImageFetcher.PrepareFetch → img.Digest().Hex, compared
    in pkg/wasm/cache.go LocalFileCache.getOrFetch); the wasm's own sha256 there never loads."""
    out = subprocess.run(["bash", str(OCI_SH), "push",
                          f"{registry}/meshtrace/plugin:test", "--insecure"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = {k: v.split()[0] for k, v in
             (line.split(None, 1) for line in out.stdout.splitlines() if line.strip())}
    ref = f"{registry}/meshtrace/plugin"
    # The digest a real client reports for what was pushed.
    reported = skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                      f"docker://{ref}:test").strip()
    assert reported.startswith("sha256:")
    assert lines["pushed"] == f"oci://{ref}:test"
    assert lines["spec.sha256"] == reported.removeprefix("sha256:"), \
        "spec.sha256 is the manifest digest, hex without the sha256: prefix"
    assert lines["spec.url"] == f"oci://{ref}@{reported}", "the pinned reference"
    wasm_sha = hashlib.sha256(wasm.read_bytes()).hexdigest()
    assert lines["wasm"] == "sha256" and wasm_sha in out.stdout
    assert wasm_sha != lines["spec.sha256"], "the module's hash is not the WasmPlugin value"
    # The pinned reference resolves to the same image.
    pinned = skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                    f"docker://{ref}@{reported}").strip()
    assert pinned == reported
