"""`./build.sh demo` end to end: the Bookinfo mesh's traces have the shape of its call graph, the
names their tracingServiceName mode gives, and the HTML page draws them in a real browser."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
DEMO = TESTS / "demo" / "demo.py"

# The call graph: every trace must be exactly this tree (service app, kind, callees).
# The gateway's CLIENT child (Envoy's spawn_upstream_span, as Istio sets it at gateways) is the
# parent productpage sees.
CALL_GRAPH = ("istio-ingressgateway", "SERVER", [("istio-ingressgateway", "CLIENT", [
    ("productpage", "SERVER", [
        ("productpage", "CLIENT", [("details", "SERVER", [])]),
        ("productpage", "CLIENT", [("reviews", "SERVER", [
            ("reviews", "CLIENT", [("ratings", "SERVER", [])])])]),
    ])])])


def run_demo(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(DEMO), "--logs", str(tmp_path / "logs"),
                           "--json", str(out), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(TESTS)})  # as build.sh runs it
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return result


def shape(node: dict, name_of) -> tuple:
    children = sorted((shape(c, name_of) for c in node["children"]), key=repr)
    return (name_of(node["service"]), node["kind"], children)


def expected(tree: tuple) -> tuple:
    app, kind, children = tree
    return (app, kind, sorted((expected(c) for c in children), key=repr))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), "--requests", "4")


def test_every_request_is_one_trace_shaped_like_the_call_graph(default_run):
    r = default_run
    assert r["failed"] == 0
    assert len(r["traces"]) == 4, "100% sampling: one trace per request"
    names = {"istio-ingressgateway": "istio-ingressgateway.istio-system"}
    for trace in r["traces"]:
        assert trace["spans"] == 9 and len(trace["roots"]) == 1, \
            "all spans of a request share one trace id and hang from one root"
        app_of = {v: k for k, v in names.items()}
        got = shape(trace["roots"][0], lambda svc: app_of.get(svc, svc.removesuffix(".default")))
        assert got == expected(CALL_GRAPH), "parent links follow productpage → details, " \
            "productpage → reviews → ratings (across the B3-only reviews app)"
        ids = set()

        def collect(n):
            ids.add(n["request_id"])
            for c in n["children"]:
                collect(c)
        collect(trace["roots"][0])
        assert len(ids) == 1 and "" not in ids, "one x-request-id along the whole request"


def test_names_follow_the_default_mode_and_counters_add_up(default_run):
    r = default_run
    services = {line.split()[0] for line in r["stdout"].splitlines() if line.startswith("  ")}
    assert services == {"istio-ingressgateway.istio-system", "productpage.default",
                        "details.default", "reviews.default", "ratings.default"}
    c = r["counters"]
    assert c["spans_recorded"] == c["spans_exported"] == 36
    assert sum(v for k, v in c.items() if k.startswith("spans_dropped_")) == 0
    assert "open file://" in r["stdout"].splitlines()[-1], "the last line points to the page"


def test_canonical_name_only_mode(tmp_path):
    r = run_demo(tmp_path, "--requests", "2", "--service-name-mode", "CANONICAL_NAME_ONLY")
    services = {line.split()[0] for line in r["stdout"].splitlines() if line.startswith("  ")}
    assert services == {"istio-ingressgateway", "productpage", "details", "reviews", "ratings"}


def test_partial_sampling_is_reported(tmp_path):
    r = run_demo(tmp_path, "--requests", "20", "--sampling", "0")
    assert r["traces"] == [] and r["counters"].get("spans_recorded", 0) == 0
    assert "0.0% sampled, configured 0%" in r["stdout"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    raise RuntimeError("Chromium is missing: ./build.sh test installs the Debian package "
                       "`chromium`; install it to run this test")


def test_html_page_draws_every_span_in_a_browser(default_run, tmp_path):
    page = Path(default_run["html"])
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert re.search(r'data-rendered="36"', html), "the script drew 36 span bars"
    assert len(re.findall(r'class="span-bar ', html)) == 36
    for svc in ("istio-ingressgateway.istio-system", "productpage.default", "details.default",
                "reviews.default", "ratings.default"):
        assert f'data-service="{svc}"' in html, f"{svc} is drawn"


def test_ambient_mode_gives_the_sidecar_demos_trace_tree(tmp_path):
    """`./build.sh demo --ambient`: no sidecars, one waypoint in front of the services; its
    CLIENT/SERVER pairs give the call graph the sidecars give, under the same service names."""
    r = run_demo(tmp_path, "--ambient", "--requests", "3")
    assert r["failed"] == 0
    assert len(r["traces"]) == 3
    for trace in r["traces"]:
        assert trace["spans"] == 9 and len(trace["roots"]) == 1
        (root,) = trace["roots"]
        got = shape(root, lambda s: s.split(".")[0])
        assert got == expected(CALL_GRAPH), got
    assert "ambient: a waypoint, no sidecars" in r["stdout"]
