"""Turns the spans the OTLP sink received into trace trees: printed for the terminal, and drawn
as a self-contained HTML waterfall (inline CSS and JavaScript, no network)."""
from __future__ import annotations

import html
import json
from typing import Any


def traces(spans: list[Any]) -> list[dict[str, Any]]:
    """Spans grouped by trace, each trace a forest of {span fields, children}, oldest first."""
    by_trace: dict[str, list[Any]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    out = []
    for trace_id, members in by_trace.items():
        nodes = {s.span_id: {
            "span_id": s.span_id, "parent_span_id": s.parent_span_id, "service": s.service,
            "kind": s.kind, "name": s.name, "start": s.start, "end": s.end,
            "status": {0: "UNSET", 1: "OK", 2: "ERROR"}.get(s.status_code, str(s.status_code)),
            "http_status": s.attributes.get("http.response.status_code"),
            "request_id": s.attributes.get("guid:x-request-id", ""),
            "children": []} for s in members}
        roots = []
        for node in sorted(nodes.values(), key=lambda n: (n["start"], n["kind"] != "SERVER")):
            parent = nodes.get(node["parent_span_id"])
            (parent["children"] if parent else roots).append(node)
        start = min(n["start"] for n in nodes.values())
        out.append({"trace_id": trace_id, "start": start, "spans": len(nodes), "roots": roots})
    return sorted(out, key=lambda t: t["start"])


def walk(nodes: list[dict[str, Any]], depth: int = 0):
    for n in nodes:
        yield depth, n
        yield from walk(n["children"], depth + 1)


def print_tree(trace: dict[str, Any]) -> str:
    lines = [f"trace {trace['trace_id']}  ({trace['spans']} spans)"]
    for depth, n in walk(trace["roots"]):
        ms = (n["end"] - n["start"]) / 1e6
        label = f"{'  ' * depth}{n['service']}  {n['kind']:<6}  {n['name']}"
        lines.append(f"  {label:<62} {ms:7.2f} ms  {n['status']:<5} {n['http_status'] or '-'}"
                     f"  {n['request_id']}")
    return "\n".join(lines)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshtrace demo: __TITLE__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 24px; color: #1b1f24; }
 h1 { font-size: 20px; } .meta { color: #57606a; margin-bottom: 16px; }
 .trace { border: 1px solid #d0d7de; border-radius: 6px; margin: 0 0 18px; padding: 10px 12px; }
 .trace h2 { font: 600 13px ui-monospace, monospace; margin: 0 0 8px; }
 .row { display: flex; align-items: center; height: 22px; }
 .label { width: 420px; flex: none; font: 12px ui-monospace, monospace; white-space: nowrap;
          overflow: hidden; text-overflow: ellipsis; }
 .lane { position: relative; flex: 1; height: 14px; background: #f6f8fa; }
 .span-bar { position: absolute; height: 14px; border-radius: 3px; min-width: 2px; }
 .SERVER { background: #2f81f7; } .CLIENT { background: #8957e5; } .ERROR { background: #cf222e; }
 .dur { width: 90px; text-align: right; font: 12px ui-monospace, monospace; color: #57606a; }
</style></head>
<body><h1>meshtrace demo</h1><div class="meta">__SUMMARY__</div><div id="traces"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const traces = JSON.parse(document.getElementById('data').textContent);
const root = document.getElementById('traces');
function rows(nodes, depth, out) {
  for (const n of nodes) { out.push([depth, n]); rows(n.children, depth + 1, out); }
  return out;
}
for (const t of traces) {
  const box = document.createElement('div'); box.className = 'trace';
  const h = document.createElement('h2');
  h.textContent = 'trace ' + t.trace_id + ' · ' + t.spans + ' spans'; box.appendChild(h);
  const all = rows(t.roots, 0, []);
  const t0 = Math.min(...all.map(([, n]) => n.start));
  const t1 = Math.max(...all.map(([, n]) => n.end));
  const width = Math.max(t1 - t0, 1);
  for (const [depth, n] of all) {
    const row = document.createElement('div'); row.className = 'row';
    const label = document.createElement('div'); label.className = 'label';
    label.style.paddingLeft = (depth * 14) + 'px';
    label.textContent = n.service + ' · ' + n.kind + ' · ' + n.name;
    label.title = 'x-request-id ' + n.request_id;
    const lane = document.createElement('div'); lane.className = 'lane';
    const bar = document.createElement('div');
    bar.className = 'span-bar ' + (n.status === 'ERROR' ? 'ERROR' : n.kind);
    bar.dataset.service = n.service; bar.dataset.kind = n.kind;
    bar.style.left = (100 * (n.start - t0) / width) + '%';
    bar.style.width = (100 * (n.end - n.start) / width) + '%';
    lane.appendChild(bar);
    const dur = document.createElement('div'); dur.className = 'dur';
    dur.textContent = ((n.end - n.start) / 1e6).toFixed(2) + ' ms';
    row.append(label, lane, dur); box.appendChild(row);
  }
  root.appendChild(box);
}
document.body.dataset.rendered = String(document.querySelectorAll('.span-bar').length);
</script></body></html>
"""


def html_page(trees: list[dict[str, Any]], summary: str) -> str:
    # `</` cannot close the data block early once escaped.
    data = json.dumps(trees).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", html.escape(f"{len(trees)} traces"))
            .replace("__SUMMARY__", html.escape(summary)).replace("__DATA__", data))
