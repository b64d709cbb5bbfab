"""The chart's access-log recipes (issue 15): Istio extension providers whose log lines carry
meshtrace's filter state, and the Telemetry accessLogging stanza. The ci/access-logging-*
values files also go through test_chart.py's render, strict lint, kubernetes-validate and Istio
CRD schema checks."""
from __future__ import annotations

import jsonschema
import pytest
import yaml

from test_chart import CHART, by_kind, crd_schemas, render, render_files, values_of  # noqa: F401 (fixture)

FILTER_STATE = [f"%FILTER_STATE(wasm.meshtrace.{name}:PLAIN)%"
                for name in ("trace_id", "span_id", "parent_span_id", "sampled", "request_id")]

# The provider fields Istio reads (istio pilot/pkg/model/telemetry_logging.go:
# fileAccessLogFromTelemetry reads path, logFormat.text|labels, omitEmptyValues; openTelemetryLog
# reads service, port, logName, logFormat.text and logFormat.labels), as MeshConfig JSON names.
PROVIDER_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "opentelemetry": {"type": "object"},
        "envoyFileAccessLog": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "path": {"type": "string"}, "omitEmptyValues": {"type": "boolean"},
                "logFormat": {"type": "object", "additionalProperties": False,
                              "maxProperties": 1,
                              "properties": {"text": {"type": "string"},
                                             "labels": {"type": "object"}}}}},
        "envoyOtelAls": {
            "type": "object", "additionalProperties": False, "required": ["service", "port"],
            "properties": {
                "service": {"type": "string", "minLength": 1},
                "port": {"type": "integer"}, "logName": {"type": "string"},
                "logFormat": {"type": "object", "additionalProperties": False,
                              "properties": {"text": {"type": "string"},
                                             "labels": {"type": "object"}}}}},
    },
    "minProperties": 2, "maxProperties": 2,
}


def mesh_configs(values: dict) -> list[dict]:
    """meshConfig of both install forms (IstioOperator overlay and istiod values)."""
    docs = render({**values, "renderIstioInstallConfig": True})
    (operator,) = by_kind(docs, "IstioOperator")
    (configmap,) = by_kind(docs, "ConfigMap")
    istiod = yaml.safe_load(configmap["data"]["values.yaml"])
    assert operator["spec"]["meshConfig"] == istiod["meshConfig"], "one source, two forms"
    return [operator["spec"]["meshConfig"], istiod["meshConfig"]]


def providers(values: dict) -> dict[str, dict]:
    mesh = mesh_configs(values)[0]
    for p in mesh["extensionProviders"]:
        jsonschema.validate(p, PROVIDER_SCHEMA)
    return {p["name"]: p for p in mesh["extensionProviders"]}


def root_telemetries(docs: list[dict]) -> list[dict]:
    return [d for d in by_kind(docs, "Telemetry")
            if d["metadata"]["namespace"] == "istio-system" and "selector" not in d["spec"]]


def test_off_by_default_nothing_is_rendered():
    assert set(providers({})) == {"otel-tracing"}
    for t in by_kind(render({}), "Telemetry"):
        assert "accessLogging" not in t["spec"]


@pytest.mark.parametrize("encoding", ["text", "json"])
def test_file_provider_carries_every_published_value(encoding):
    got = providers({"accessLogging": {"enabled": True, "file": {"encoding": encoding}}})
    fmt = got["meshtrace-file"]["envoyFileAccessLog"]["logFormat"]
    assert got["meshtrace-file"]["envoyFileAccessLog"]["path"] == "/dev/stdout"
    if encoding == "text":
        assert set(fmt) == {"text"}
        for op in FILTER_STATE:
            assert op in fmt["text"], op
    else:
        assert set(fmt) == {"labels"}
        assert [fmt["labels"][k] for k in ("trace_id", "span_id", "parent_span_id", "sampled",
                                           "request_id")] == FILTER_STATE
    assert "meshtrace-otel-als" not in got, "the OTLP provider is opt-in"


def test_otel_als_provider_sends_the_ids_as_attributes_to_the_collector():
    got = providers({"accessLogging": {"enabled": True, "otel": {"enabled": True}}})
    als = got["meshtrace-otel-als"]["envoyOtelAls"]
    assert als["service"] == "opentelemetry-collector.observability.svc.cluster.local"
    assert als["port"] == 4317 and als["logName"] == "meshtrace"
    labels = als["logFormat"]["labels"]
    assert labels["trace_id"] == FILTER_STATE[0] and labels["span_id"] == FILTER_STATE[1]
    other = providers({"accessLogging": {"enabled": True, "otel": {
        "enabled": True, "service": "logs.example.svc.cluster.local", "port": 14317}}})
    assert other["meshtrace-otel-als"]["envoyOtelAls"]["service"] == "logs.example.svc.cluster.local"


# (values, telemetry name holding the stanza, why)
STANZA_CASES = [
    ({}, "meshtrace", "scope mesh: the plugin's root Telemetry"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["shop"]}, "telemetry": {"meshDefault": True},
      "waypoints": {"noneInPluginNamespaces": True}},
     "meshtrace-default", "scope namespaces: the root Telemetry of Istio's tracer"),
    ({"plugin": {"scope": "namespaces", "namespaces": ["shop"]}, "waypoints": {"noneInPluginNamespaces": True}},
     "meshtrace-access-logging",
     "scope namespaces without meshDefault: no other root Telemetry, one of its own"),
    ({"plugin": {"enabled": False}}, "meshtrace-access-logging",
     "no other root Telemetry: one of its own"),
]


@pytest.mark.parametrize("extra,holder,why", STANZA_CASES, ids=[c[-1] for c in STANZA_CASES])
def test_one_root_telemetry_holds_the_access_logging_stanza(extra, holder, why, crd_schemas):
    values = {**extra, "accessLogging": {"enabled": True, "providers": ["meshtrace-file"],
                                         "filter": "response.code >= 400"}}
    docs = render(values)
    (root,) = root_telemetries(docs)  # Istio applies one selector-less Telemetry per namespace
    assert root["metadata"]["name"] == holder, why
    assert root["spec"]["accessLogging"] == [{"providers": [{"name": "meshtrace-file"}],
                                              "filter": {"expression": "response.code >= 400"}}]
    jsonschema.validate(root, crd_schemas[(root["apiVersion"], "Telemetry")])


def test_ci_values_enable_both_providers():
    values = values_of(CHART / "ci" / "access-logging-values.yaml")
    assert set(providers(values)) == {"otel-tracing", "meshtrace-file", "meshtrace-otel-als"}
    (root,) = root_telemetries(render(values))
    names = [p["name"] for p in root["spec"]["accessLogging"][0]["providers"]]
    assert names == ["meshtrace-file", "meshtrace-otel-als"]


def test_print_mode_creates_no_telemetry_and_prints_the_access_logging_stanza():
    """telemetry.mode=print (an existing selector-less Telemetry the user keeps): the chart
    creates none, so the access-logging stanza is printed to merge by hand, next to tracing."""
    values = {"telemetry": {"mode": "print"},
              "accessLogging": {"enabled": True, "providers": ["meshtrace-file"]}}
    assert root_telemetries(render(values)) == []
    notes = next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))
    printed = notes[notes.index("(the mesh-wide Telemetry)"):]
    assert "accessLogging:" in printed and "name: meshtrace-file" in printed
