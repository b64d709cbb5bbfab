"""meshtrace doctor: reads one proxy's Envoy configuration dump (and optionally its stats) and
says, in plain words, whether meshtrace can trace there. Exit status 0 when it finds nothing
wrong, 1 when it finds a problem, 2 when the input cannot be read. It knows both runtimes: the
Wasm plugin and the Envoy dynamic module (plugin.runtime native: the filter, a listener Envoy
rejected for a missing module, the Envoy versions the module supports; "The native runtime"
below).

    python3 doctor.py CONFIG_DUMP.json [STATS.txt]        (./build.sh doctor ...)

Getting the inputs from a pod with a sidecar:

    kubectl exec POD -c istio-proxy -- pilot-agent request GET config_dump > dump.json
    kubectl exec POD -c istio-proxy -- pilot-agent request GET stats > stats.txt
    # or: istioctl proxy-config all POD -o json > dump.json

Only the Python standard library: copy this one file next to kubectl and run it anywhere.

What it checks, and where Istio decides it:
- meshtrace's HTTP filter in every HTTP connection manager, inline or delivered by ECDS as Istio
  does for a WasmPlugin (pilot/pkg/model/extensions.go; ECDS name
  `extensions.istio.io/wasmplugin/<ns>.<name>`, from Istio 1.30 the TrafficExtension it becomes,
  `extensions.istio.io/trafficextension/<ns>.<name>~istio-translated-wasmplugin`:
  pilot/pkg/config/kube/extensions/translate.go translateWasmPlugin). Listeners still warming
  count too: Istio's ECDS has InitialFetchTimeout 0 (pilot/pkg/networking/core/extension/
  wasmplugin.go), so a listener waiting for its module stays in warming_state.
- an ECDS filter holding RBAC instead of Wasm is what Istio's agent puts in place of a module it
  could not load (pkg/wasm/convert.go createHTTPDefaultFilter): under FAIL_OPEN an RBAC without
  rules that allows everything (bare up to Istio 1.27, rules_stat_prefix `wasm-default-allow`
  from 1.28), under FAIL_CLOSE (1.25+) one with empty rules that denies everything. Most often
  `spec.sha256` is not the image manifest digest (pkg/wasm/cache.go LocalFileCache.getOrFetch).
- where it sits among Istio's filters: CUSTOM authorization (ext_authz) is placed before every
  AUTHN extension (pilot/pkg/networking/core/listener_builder.go), so its denials are not traced;
  the RBAC filter a CUSTOM policy puts before its ext_authz holds shadow rules only
  (pilot/pkg/security/authz/builder/builder.go buildHTTP) and enforces nothing. An RBAC filter
  with rules before meshtrace is ALLOW/DENY authorization: phase AUTHZ or later.
- Envoy's own tracer still configured on those connection managers (a Telemetry with
  disableSpanReporting that does not apply, pilot/pkg/networking/core/tracing.go
  configureTracingFromTelemetry): it overwrites meshtrace's traceparent. HCM `tracing` without a
  provider is the legacy form (no Telemetry, meshConfig.enableTracing): Envoy uses the
  bootstrap's tracer (Istio's bootstrap template sets one from ProxyConfig.tracing).
- the export cluster from meshtrace's pluginConfig: present, HTTP/2 for gRPC, not TLS to a
  collector without a sidecar, with endpoints.
- from the stats: spans recorded, exported, dropped by reason, export failures, and Istio
  agent's wasm fetch failures (wasm_remote_fetch_count).
- a waypoint (ambient mode; node id `waypoint~`, pkg/model/proxy.go): HTTP runs in the internal
  listener `main_internal` (pilot/pkg/networking/core/listener_waypoint.go
  buildWaypointInternal); `connect_terminate` only terminates HBONE tunnels and is not expected
  to carry the filter. A waypoint takes a WasmPlugin only through targetRefs
  (pilot/pkg/model/policyattachment.go), never a selector. It has outbound clusters only for
  routed hosts and meshConfig extensionProviders services (pilot/pkg/networking/core/waypoint.go
  filterWaypointOutboundServices, pilot/pkg/model/push_context.go extraServicesForProxy), so its
  export cluster exists only while the collector is an extension provider.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN_NAME = "meshtrace"
# Mirrors the plugin's default exporter (core/config/src/lib.rs DEFAULT_COLLECTOR_CLUSTER).
DEFAULT_CLUSTER = "outbound|4318||opentelemetry-collector.observability.svc.cluster.local"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HCM_SUFFIX = ".HttpConnectionManager"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# istio-proxy's own listeners (admin, agent, health, Prometheus): no application traffic.
ISTIO_INTERNAL_PORTS = {15000, 15004, 15020, 15021, 15090}
# A waypoint's HBONE listeners (pilot/pkg/networking/core/waypoint.go): tunnels, no app HTTP.
WAYPOINT_TUNNEL_LISTENERS = {"connect_terminate", "connect_originate", "inner_connect_originate",
                             "outer_connect_originate", "forward_inner_connect"}
# Istio filters whose place relative to meshtrace changes what is traced.
EXT_AUTHZ = "envoy.filters.http.ext_authz"
RBAC = "envoy.filters.http.rbac"

OK, INFO, WARN, PROBLEM = "ok", "info", "warning", "PROBLEM"


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, level: str, text: str) -> None:
        self.lines.append((level, text))

    @property
    def problems(self) -> int:
        return sum(1 for level, _ in self.lines if level == PROBLEM)

    def render(self) -> str:
        out = [f"[{level:>7}] {text}" for level, text in self.lines]
        out.append(f"{self.problems} problem(s) found." if self.problems else
                   "No problem found.")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Reading the dump


def sections(dump: dict) -> dict[str, list[dict]]:
    """The dump's config sections by their type name (`ListenersConfigDump`, ...)."""
    out: dict[str, list[dict]] = {}
    for cfg in dump.get("configs", []) if isinstance(dump, dict) else []:
        kind = str(cfg.get("@type", "")).rsplit(".", 1)[-1]
        out.setdefault(kind, []).append(cfg)
    return out


def listeners(secs: dict) -> list[tuple[dict, bool]]:
    """(listener, warming): the active version of each listener, else the one still warming."""
    out = []
    for d in secs.get("ListenersConfigDump", []):
        out += [(s.get("listener", {}), False) for s in d.get("static_listeners", [])]
        for s in d.get("dynamic_listeners", []):
            if s.get("active_state"):
                out.append((s["active_state"].get("listener", {}), False))
            elif s.get("warming_state"):
                out.append((s["warming_state"].get("listener", {}), True))
    return [(lst, warming) for lst, warming in out if lst]


def clusters(secs: dict) -> dict[str, dict]:
    out = {}
    for d in secs.get("ClustersConfigDump", []):
        for key in ("static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"):
            for c in d.get(key, []):
                cluster = c.get("cluster", {})
                out[cluster.get("name", "")] = cluster
    return out


def endpoint_counts(secs: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in secs.get("EndpointsConfigDump", []):
        for key in ("static_endpoint_configs", "dynamic_endpoint_configs"):
            for e in d.get(key, []):
                cfg = e.get("endpoint_config", {})
                n = sum(len(loc.get("lb_endpoints", [])) for loc in cfg.get("endpoints", []))
                out[cfg.get("cluster_name", "")] = out.get(cfg.get("cluster_name", ""), 0) + n
    return out


def ecds_filters(secs: dict) -> dict[str, dict]:
    """ECDS-delivered filters by name → their TypedExtensionConfig typed_config."""
    out = {}
    for d in secs.get("EcdsConfigDump", []):
        for f in d.get("ecds_filters", []):
            ext = f.get("ecds_filter", {})
            out[ext.get("name", "")] = ext.get("typed_config", {})
    return out


def port_of(listener: dict) -> int | None:
    return listener.get("address", {}).get("socket_address", {}).get("port_value")


def connection_managers(listener: dict) -> list[dict]:
    chains = list(listener.get("filter_chains", []))
    if listener.get("default_filter_chain"):
        chains.append(listener["default_filter_chain"])
    return [f["typed_config"] for chain in chains for f in chain.get("filters", [])
            if str(f.get("typed_config", {}).get("@type", "")).endswith(HCM_SUFFIX)]


@dataclass
class Found:
    """One meshtrace filter in one connection manager."""
    listener: str
    index: int
    before: list[str]
    state: str  # "loaded", "fail-open", "fail-closed", "pending"
    plugin_config: dict | None
    filter_name: str = ""
    warming: bool = False
    enforcing_rbac_before: bool = False


def is_meshtrace_wasm(typed: dict) -> bool:
    if typed.get("@type") != WASM_TYPE:
        return False
    # Istio names it `<namespace>.<WasmPlugin name>` with root_id = spec.pluginName
    # (pilot/pkg/model/extensions.go TrafficExtensionWrapper.buildWasmConfig) and a content-addressed file name.
    cfg = typed.get("config", {})
    name = cfg.get("name", "")
    return cfg.get("root_id") == PLUGIN_NAME or name == PLUGIN_NAME or \
        name.endswith("." + PLUGIN_NAME) or PLUGIN_NAME in json.dumps(cfg.get("vm_config", {}).get("code", {}))


def plugin_config_of(typed: dict) -> dict | None:
    if typed.get("@type") == DYNAMIC_MODULE_TYPE:  # the native runtime (see below)
        value = typed.get("filter_config", {}).get("value", "")
    else:
        value = typed.get("config", {}).get("configuration", {}).get("value", "")
    try:
        parsed = json.loads(value) if value else {}
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def classify(f: dict, ecds: dict[str, dict]) -> tuple[str, dict | None] | None:
    """meshtrace's state in this HTTP filter entry, or None when it is not meshtrace."""
    name = f.get("name", "")
    if "typed_config" in f:
        typed = f["typed_config"]
        if is_meshtrace_wasm(typed) or is_meshtrace_native(typed):
            return "loaded", plugin_config_of(typed)
        return None
    if "config_discovery" in f and PLUGIN_NAME in name:
        typed = ecds.get(name)
        if typed is None:
            return "pending", None
        if is_meshtrace_wasm(typed) or typed.get("@type") == WASM_TYPE:
            return "loaded", plugin_config_of(typed)
        if typed.get("@type") == RBAC_TYPE:
            # No rules: allow all (FAIL_OPEN); rules, even empty: deny all (FAIL_CLOSE).
            return ("fail-closed" if "rules" in typed else "fail-open"), None
        return "pending", None
    return None


# ---------------------------------------------------------------------------------------------
# Checks


def node_id(secs: dict) -> str:
    for d in secs.get("BootstrapConfigDump", []):
        return str(d.get("bootstrap", {}).get("node", {}).get("id", ""))
    return ""


def bootstrap_tracer(secs: dict) -> str | None:
    """The bootstrap's tracer (legacy, used by an HCM `tracing` without a provider)."""
    for d in secs.get("BootstrapConfigDump", []):
        http = d.get("bootstrap", {}).get("tracing", {}).get("http")
        if http:
            return str(http.get("name", "?"))
    return None


ECDS_PREFIXES = {"extensions.istio.io/wasmplugin/": False,
                 "extensions.istio.io/trafficextension/": True}
TRANSLATED = "~istio-translated-wasmplugin"


def istio_resource(filter_name: str) -> str | None:
    """The Istio resource an ECDS filter name comes from, in words (pilot/pkg/model/extensions.go
    WasmPluginResourceNamePrefix / TrafficExtensionResourceNamePrefix + `<ns>.<name>`)."""
    for prefix, traffic_extension in ECDS_PREFIXES.items():
        if filter_name.startswith(prefix):
            ns, _, name = filter_name[len(prefix):].partition(".")
            if not traffic_extension:
                return f"WasmPlugin {ns}/{name}"
            if name.endswith(TRANSLATED):
                return (f"WasmPlugin {ns}/{name[:-len(TRANSLATED)]} (Istio 1.30+: TrafficExtension "
                        f"{ns}/{name})")
            return f"TrafficExtension {ns}/{name}"
    return None


def enforcing_rbac(f: dict) -> bool:
    """An RBAC filter that can deny: one with rules. A CUSTOM policy's RBAC holds shadow rules
    only (builder.go buildHTTP), so does the agent's allow-all stand-in."""
    typed = f.get("typed_config", {})
    return f.get("name") == RBAC and "rules" in typed


def check_filters(secs: dict, report: Report) -> list[Found]:
    ecds = ecds_filters(secs)
    waypoint = node_id(secs).startswith("waypoint~")
    if waypoint:
        report.add(INFO, "a waypoint (ambient mode): meshtrace records the source's CLIENT and "
                         "the destination's SERVER span in main_internal (waypoint.spans)")
    found: list[Found] = []
    without: list[str] = []
    total = 0
    tracer_on: list[str] = []
    legacy = bootstrap_tracer(secs)
    for lst, warming in listeners(secs):
        if port_of(lst) in ISTIO_INTERNAL_PORTS:
            continue
        if waypoint and lst.get("name") in WAYPOINT_TUNNEL_LISTENERS:
            continue
        name = lst.get("name", "?")
        for hcm in connection_managers(lst):
            total += 1
            names = [f.get("name", "") for f in hcm.get("http_filters", [])]
            here = []
            filters = hcm.get("http_filters", [])
            for i, f in enumerate(filters):
                c = classify(f, ecds)
                if c:
                    here.append(Found(name, i, names[:i], c[0], c[1], f.get("name", ""), warming,
                                      any(enforcing_rbac(b) for b in filters[:i])))
            if not here:
                without.append(name)
                continue
            found += here
            if len(here) > 1:
                report.add(PROBLEM, f"listener {name}: {len(here)} meshtrace filters in one chain "
                                    "— two spans per request (a root-namespace WasmPlugin and "
                                    "another one selecting this workload; WasmPlugins add up)")
            provider = hcm.get("tracing", {}).get("provider")
            if provider:
                tracer_on.append(f"{name} ({provider.get('name', '?')})")
            elif "tracing" in hcm and legacy:
                tracer_on.append(f"{name} ({legacy}, the bootstrap's legacy tracer)")
    if total == 0:
        report.add(PROBLEM, "no HTTP connection manager in this dump: is it a full /config_dump?")
        return found
    if not found:
        report.add(PROBLEM, "meshtrace's filter is in none of the "
                            f"{total} HTTP connection managers: no WasmPlugin selects this "
                            "workload, or Istio has not pushed it (istioctl proxy-status; "
                            "kubectl get wasmplugin -A; from Istio 1.30 kubectl get "
                            "trafficextension -A)"
                            + (". A waypoint takes a WasmPlugin only through targetRefs "
                               "(GatewayClass istio-waypoint from the root namespace, or its "
                               "Gateway): the chart's waypoints.attach" if waypoint else ""))
        return found
    listeners_with = sorted({f.listener for f in found})
    report.add(OK, f"meshtrace's filter is in {total - len(without)} of {total} HTTP connection "
                   f"managers (listeners: {', '.join(listeners_with)})")
    resources = sorted({r for f in found if (r := istio_resource(f.filter_name))})
    if resources:
        report.add(INFO, "delivered by Istio from " + "; ".join(resources))
    for warm in sorted({f.listener for f in found if f.warming}):
        report.add(PROBLEM, f"listener {warm} is still warming: it serves no traffic until "
                            "meshtrace's module arrives (Istio's ECDS waits with no timeout)")
    if without:
        report.add(WARN, "no meshtrace filter in listener(s) " + ", ".join(sorted(set(without)))
                   + " — requests through them are not traced by meshtrace")
    states = {f.state for f in found}
    if "fail-open" in states:
        report.add(PROBLEM, "meshtrace failed to load: Istio's agent put an allow-all filter in "
                            "its place (failStrategy FAIL_OPEN). Most often spec.sha256 is not the "
                            "image MANIFEST digest (the `spec.sha256` line of ./build.sh push; "
                            "agent metric wasm_remote_fetch_count{result=\"checksum_mismatched\"}), "
                            "else the registry is unreachable or needs imagePullSecret. See the "
                            "istio-proxy log (grep -i wasm)")
    if "fail-closed" in states:
        report.add(PROBLEM, "meshtrace failed to load: Istio's agent put a deny-all filter in its "
                            "place (failStrategy FAIL_CLOSE): every request through it is refused. "
                            "Check spec.sha256 (the image MANIFEST digest), the registry and "
                            "imagePullSecret (in the WasmPlugin's own namespace); see the "
                            "istio-proxy log (grep -i wasm)")
    if "pending" in states:
        report.add(PROBLEM, "meshtrace's filter waits for its module (ECDS not delivered): the "
                            "agent is still fetching it or cannot; see the istio-proxy log "
                            "(grep -i wasm)")
    first = found[0]
    report.add(INFO, f"meshtrace is HTTP filter #{first.index + 1} in {first.listener}; before it: "
                     + (", ".join(first.before) or "nothing"))
    if any(EXT_AUTHZ in f.before for f in found):
        report.add(INFO, "ext_authz (an AuthorizationPolicy with action CUSTOM) runs before "
                         "meshtrace: requests it denies are not traced (Istio places CUSTOM before "
                         "every AUTHN extension)")
    if any(f.enforcing_rbac_before for f in found):
        report.add(INFO, "Istio's RBAC filter runs before meshtrace (phase AUTHZ or later): "
                         "requests AuthorizationPolicies deny are not traced; phase AUTHN traces them")
    if tracer_on:
        report.add(PROBLEM, "Envoy's own tracer is still on where meshtrace runs: "
                            + ", ".join(sorted(set(tracer_on)))
                            + ". It starts its own span and overwrites meshtrace's traceparent. "
                            "A Telemetry with disableSpanReporting: true must apply to this "
                            "workload; Istio applies only the OLDEST selector-less Telemetry per "
                            "namespace, so an existing one can shadow meshtrace's "
                            "(kubectl get telemetry -A; see deploy/README.md)")
    else:
        report.add(OK, "Envoy's own tracer is off where meshtrace runs")
    return found


def http2(cluster: dict) -> bool | None:
    """True for HTTP/2, None when it follows the downstream (auto), False for HTTP/1.1."""
    if "http2_protocol_options" in cluster:
        return True
    opts = cluster.get("typed_extension_protocol_options", {}).get(HTTP_OPTIONS, {})
    if "http2_protocol_options" in opts.get("explicit_http_config", {}):
        return True
    if "use_downstream_protocol_config" in opts or "auto_config" in opts:
        return None
    return False


def check_export(secs: dict, found: list[Found], report: Report) -> str | None:
    waypoint = node_id(secs).startswith("waypoint~")
    configs = [f.plugin_config for f in found if f.plugin_config is not None]
    if not configs:
        return None
    exporter = configs[0].get("exporter", {})
    protocol = exporter.get("protocol", "http/protobuf")
    if protocol == "none":
        report.add(INFO, "exporter.protocol is none: spans are not exported")
        return None
    name = exporter.get("cluster", DEFAULT_CLUSTER)
    all_clusters = clusters(secs)
    cluster = all_clusters.get(name)
    if cluster is None:
        near = [c for c in all_clusters if PLUGIN_NAME in c or "collector" in c or ":4317" in c
                or "|4317|" in c or "|4318|" in c]
        report.add(PROBLEM, f"export cluster {name} does not exist in this proxy: spans cannot "
                            "leave. Check the collector Service's name, namespace, port and the "
                            "cluster domain; a Sidecar resource with egress hosts must list the "
                            "collector (e.g. observability/*)"
                   + (f"; similar clusters: {', '.join(sorted(near))}" if near else "")
                   + (". On a waypoint that is the rule, not a Sidecar: a waypoint has outbound "
                      "clusters only for routed hosts and meshConfig extensionProviders services "
                      "(waypoint.go filterWaypointOutboundServices), so the collector must be an "
                      "extension provider in meshConfig (the chart's renderIstioInstallConfig), "
                      "whether or not a Telemetry uses it" if waypoint else ""))
        return name
    report.add(OK, f"export cluster {name} exists ({protocol})")
    h2 = http2(cluster)
    if protocol == "grpc" and h2 is False:
        report.add(PROBLEM, f"export cluster {name} speaks HTTP/1.1 but exporter.protocol is grpc "
                            "(HTTP/2): name the Service port grpc-* or set appProtocol: grpc")
    elif protocol == "grpc" and h2 is None:
        report.add(WARN, f"export cluster {name} follows the downstream protocol; gRPC export "
                         "needs HTTP/2: name the Service port grpc-* or set appProtocol: grpc")
    if cluster.get("transport_socket", {}).get("name", "").endswith("tls"):
        report.add(WARN, f"export cluster {name} uses TLS (a DestinationRule sets it, e.g. a "
                         "mesh-wide ISTIO_MUTUAL): a collector without a sidecar answers plain "
                         "text; set collector.destinationRule.enabled in the chart")
    counts = endpoint_counts(secs)
    if name in counts and counts[name] == 0:
        report.add(WARN, f"export cluster {name} has no endpoints: is the collector running?")
    return name


def parse_stats(text: str) -> dict[str, float]:
    """Envoy's `/stats` text (`name: value`) or Prometheus text (`name{labels} value`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(.+?): (-?[0-9.eE+]+)$", line) or \
            re.match(r"^(\S+?(?:\{[^}]*\})?) (-?[0-9.eE+]+)(?: \d+)?$", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def stat_sum(stats: dict[str, float], suffix: str) -> float | None:
    hits = [v for k, v in stats.items() if k.split("{")[0].endswith(suffix)]
    return sum(hits) if hits else None


def check_stats(stats: dict[str, float], cluster: str | None, loaded: bool, report: Report) -> None:
    mismatches = sum(v for k, v in stats.items()
                     if "wasm_remote_fetch_count" in k and "checksum_mismatched" in k)
    if mismatches:
        report.add(PROBLEM, f"Istio's agent rejected the module {int(mismatches)} time(s) as "
                            "checksum_mismatched: for oci:// URLs spec.sha256 must be the image "
                            "MANIFEST digest (the `spec.sha256` line of ./build.sh push)")
    recorded = stat_sum(stats, "meshtrace_spans_recorded")
    if recorded is None:
        if loaded:
            report.add(PROBLEM, "no meshtrace_* stats although the filter is configured: the "
                                "plugin did not start or rejected its configuration (istio-proxy "
                                "log: 'invalid meshtrace configuration at …')")
        return
    exported = stat_sum(stats, "meshtrace_spans_exported") or 0
    dropped = {reason: stat_sum(stats, f"meshtrace_spans_dropped_{reason}") or 0
               for reason in ("queue_full", "export_failed", "too_large")}
    failures = stat_sum(stats, "meshtrace_export_failures") or 0
    report.add(INFO, f"spans: {int(recorded)} recorded, {int(exported)} exported, dropped "
                     + ", ".join(f"{int(n)} {r.replace('_', ' ')}" for r, n in dropped.items())
                     + f"; {int(failures)} failed export request(s)")
    if recorded == 0:
        report.add(INFO, "no span recorded yet: send traffic (at 1% sampling, ~100 requests per "
                         "trace) or force one with x-envoy-force-trace: true")
    if dropped["export_failed"] or failures:
        connect = sum(v for k, v in stats.items() if cluster and k == f"cluster.{cluster}.upstream_cx_connect_fail")
        report.add(PROBLEM, "exports fail"
                   + (f" ({int(connect)} connection failure(s) to {cluster})" if connect else "")
                   + ": is the collector reachable from this pod, on the protocol it expects?")
    elif recorded and exported:
        report.add(OK, "spans are exported")
    if dropped["queue_full"]:
        report.add(WARN, "spans dropped because the queue was full: raise exporter.maxQueueSize "
                         "or scale the collector")
    if dropped["too_large"]:
        report.add(WARN, "spans dropped as too large for one export: raise limits.maxBatchBytes")


# ---------------------------------------------------------------------------------------------
# The native runtime (plugin.runtime native): meshtrace as envoy.filters.http.dynamic_modules
# (dynamic_module_config.name meshtrace → libmeshtrace.so), put there by an EnvoyFilter. Envoy
# REJECTS a whole listener whose filter names a module it cannot load — not on
# ENVOY_DYNAMIC_MODULES_SEARCH_PATH, or an extension this Envoy lacks (istio-proxy before 1.31,
# istio/proxy#6955): the listener's error_state in the dump, listener_manager.lds.update_rejected
# in the stats, and traffic through that listener breaks. The published module runs on the
# Envoy versions its ABI supports (Envoy's dynamic modules: a module built for X.Y runs on X.Y
# and X.(Y+1)).

DYNAMIC_MODULE_TYPE = \
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
# The native module's file (dynamic_module_config.name meshtrace → lib{name}.so).
NATIVE_FILE = "libmeshtrace.so"
# Built against Envoy 1.40's ABI (the module says so in its start-up log line).
NATIVE_ENVOY_BUILD = (1, 40)
NATIVE_ENVOY_SUPPORTED = (NATIVE_ENVOY_BUILD, (NATIVE_ENVOY_BUILD[0], NATIVE_ENVOY_BUILD[1] + 1))
# The first Istio whose proxy has envoy.filters.http.dynamic_modules (istio/proxy#6955).
NATIVE_ISTIO_MIN = (1, 31)
# The pod label the chart's injection template sets with the module (values native.label).
NATIVE_LABEL = ("meshtrace.io/module", "native")


def is_meshtrace_native(typed: dict) -> bool:
    """The dynamic module filter naming meshtrace: by name through the search path (the chart's
    EnvoyFilter), or by file (Envoy Gateway's local source, `module.local.filename`)."""
    if typed.get("@type") != DYNAMIC_MODULE_TYPE:
        return False
    cfg = typed.get("dynamic_module_config", {})
    filename = cfg.get("module", {}).get("local", {}).get("filename", "")
    return cfg.get("name") == PLUGIN_NAME or filename.endswith("/" + NATIVE_FILE)


def runtimes_in(secs: dict) -> set[str]:
    """Which of meshtrace's runtimes have a filter inline in this proxy's connection managers."""
    out = set()
    for lst, _ in listeners(secs):
        for hcm in connection_managers(lst):
            for f in hcm.get("http_filters", []):
                typed = f.get("typed_config", {})
                if is_meshtrace_native(typed):
                    out.add("native")
                elif is_meshtrace_wasm(typed) or (f.get("config_discovery") and PLUGIN_NAME in f.get("name", "")):
                    out.add("wasm")
    return out


def check_runtime(secs: dict, report: Report) -> bool:
    """Says which runtime runs here; True when the native one does."""
    runtimes = runtimes_in(secs)
    if runtimes == {"native"}:
        report.add(INFO, "meshtrace runs as the Envoy dynamic module (plugin.runtime native)")
    if len(runtimes) > 1:
        report.add(PROBLEM, "meshtrace runs both as Wasm and as the dynamic module on this proxy: a "
                            "WasmPlugin and the native EnvoyFilter both reach it (two spans per "
                            "request); one plugin.runtime per proxy")
    return "native" in runtimes


def rejected_listeners(secs: dict) -> list[tuple[str, str, dict]]:
    """(listener, Envoy's reason, the configuration it refused) for every listener update Envoy
    rejected (ListenersConfigDump dynamic_listeners[].error_state)."""
    out: dict[tuple[str, str], dict] = {}
    for d in secs.get("ListenersConfigDump", []):
        for lst in d.get("dynamic_listeners", []):
            err = lst.get("error_state")
            if err:
                config = err.get("failed_configuration", {})
                # Envoy also lists the failed update once without a name: one line per listener.
                name = lst.get("name") or config.get("name") or "?"
                out.setdefault((name, str(err.get("details", ""))), config)
    return [(name, details, config) for (name, details), config in out.items()]


def names_meshtrace_module(config: dict) -> bool:
    text = json.dumps(config)
    return DYNAMIC_MODULE_TYPE in text and (f'"name": "{PLUGIN_NAME}"' in text or NATIVE_FILE in text)


def check_rejections(secs: dict, report: Report) -> bool:
    """Says why Envoy refused listeners; True when meshtrace's module is involved."""
    involved = False
    for name, details, config in rejected_listeners(secs):
        missing = re.search(r"(lib[\w.-]+\.so) not found in any search path", details)
        if missing and missing.group(1) == NATIVE_FILE:
            involved = True
            report.add(PROBLEM, f"listener {name} was REJECTED: {NATIVE_FILE} is not on this proxy "
                                "(ENVOY_DYNAMIC_MODULES_SEARCH_PATH), and Envoy refuses the whole "
                                "listener — traffic through it is broken, not just untraced. "
                                "meshtrace's EnvoyFilter reached a pod without the module: pods "
                                "opt in only with the annotation inject.istio.io/templates: "
                                "sidecar,meshtrace (gateways: gateway,meshtrace), which mounts the "
                                "module and sets the label the EnvoyFilter selects; remove a label "
                                "set by hand or re-create the pod. Waypoints: the "
                                "meshtrace-waypoint-defaults ConfigMap must be the OLDEST "
                                "istio-waypoint class defaults. Envoy said: " + details[:300])
        elif NATIVE_FILE in details and "failed to map segment" in details:
            involved = True
            report.add(PROBLEM, f"listener {name} was REJECTED: {NATIVE_FILE} is there but on a "
                                "noexec mount, and the loader cannot map its code (a Kubernetes "
                                "image volume is always mounted noexec): deliver it with the "
                                "chart's native.delivery initContainer (an emptyDir) or "
                                "proxyImage. Envoy said: " + details[:300])
        elif "envoy.filters.http.dynamic_modules" in details and (
                "registered" in details or "Didn't find" in details):
            involved = True
            report.add(PROBLEM, f"listener {name} was REJECTED: this Envoy has no "
                                "envoy.filters.http.dynamic_modules (istio-proxy before "
                                f"{NATIVE_ISTIO_MIN[0]}.{NATIVE_ISTIO_MIN[1]}, istio/proxy#6955); "
                                "the EnvoyFilter's proxyVersion match should have kept it away. "
                                "Envoy said: " + details[:300])
        elif names_meshtrace_module(config):
            involved = True
            report.add(PROBLEM, f"listener {name} was REJECTED with meshtrace's dynamic module in "
                                "it (the module failed to load or refused its configuration): "
                                + details[:300])
        else:
            report.add(WARN, f"listener {name}: Envoy rejected its last update: {details[:300]}")
    return involved


def node_of(secs: dict) -> dict:
    for d in secs.get("BootstrapConfigDump", []):
        return d.get("bootstrap", {}).get("node", {}) or {}
    return {}


def envoy_version(secs: dict) -> tuple[int, int] | None:
    """Envoy's own version, which it writes into the bootstrap's node (user_agent_build_version)."""
    v = node_of(secs).get("user_agent_build_version", {}).get("version")
    return (int(v.get("major_number", 0)), int(v.get("minor_number", 0))) if v else None


def istio_version(secs: dict) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)\.(\d+)", str(node_of(secs).get("metadata", {}).get("ISTIO_VERSION", "")))
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_native_versions(secs: dict, report: Report) -> None:
    supported = " and ".join(f"{a}.{b}" for a, b in NATIVE_ENVOY_SUPPORTED)
    envoy = envoy_version(secs)
    if envoy is None:
        report.add(WARN, f"Envoy's version is not in this dump; meshtrace's native module runs on "
                         f"Envoy {supported}")
    elif envoy in NATIVE_ENVOY_SUPPORTED:
        report.add(OK, f"Envoy {envoy[0]}.{envoy[1]}: one meshtrace's native module supports "
                       f"({supported})")
    else:
        report.add(PROBLEM, f"Envoy {envoy[0]}.{envoy[1]} is not one meshtrace's native module "
                            f"supports ({supported}: built for {NATIVE_ENVOY_BUILD[0]}."
                            f"{NATIVE_ENVOY_BUILD[1]}, and a module for X.Y runs on X.Y and "
                            "X.(Y+1)): use the build for this Envoy, or the Wasm runtime")
    istio = istio_version(secs)
    if istio is not None and istio < NATIVE_ISTIO_MIN:
        report.add(PROBLEM, f"istio-proxy {istio[0]}.{istio[1]} has no dynamic-modules extension "
                            f"(from {NATIVE_ISTIO_MIN[0]}.{NATIVE_ISTIO_MIN[1]}, istio/proxy#6955)")


def native_hint(secs: dict) -> str:
    """Why the native filter may be missing, from the pod labels istio-agent put in the node."""
    labels = node_of(secs).get("metadata", {}).get("LABELS", {}) or {}
    if labels.get(NATIVE_LABEL[0]) == NATIVE_LABEL[1]:
        return (f"this pod has the module ({NATIVE_LABEL[0]}={NATIVE_LABEL[1]}): is meshtrace's "
                "EnvoyFilter installed for its namespace (kubectl get envoyfilter -A), and is its "
                "istio-proxy 1.31 or later (the EnvoyFilter's proxyVersion match)?")
    return ("with plugin.runtime native, a pod opts in with the annotation "
            "inject.istio.io/templates: sidecar,meshtrace (gateways: gateway,meshtrace), which "
            "mounts the module and sets the label the EnvoyFilter selects; re-create the pod")


def diagnose(dump: dict, stats_text: str | None = None) -> Report:
    report = Report()
    secs = sections(dump)
    native_rejected = check_rejections(secs, report)
    serving = any(connection_managers(lst) for lst, _ in listeners(secs))
    # Every listener rejected: nothing else to read (check_filters would only say it is empty).
    found = check_filters(secs, report) if serving or not native_rejected else []
    if serving and not found:
        report.add(INFO, native_hint(secs))
    if check_runtime(secs, report) or native_rejected:
        check_native_versions(secs, report)
    cluster = check_export(secs, found, report)
    if stats_text is not None:
        stats = parse_stats(stats_text)
        rejected = stat_sum(stats, "listener_manager.lds.update_rejected") or 0
        if rejected:
            report.add(WARN if native_rejected else PROBLEM,
                       f"listener_manager.lds.update_rejected = {int(rejected)}: Envoy refused "
                       "listener updates from Istio"
                       + (" (above)" if native_rejected else "; the config dump's listener "
                          "error_state says why (a dynamic module not found, an extension this "
                          "Envoy lacks)"))
        check_stats(stats, cluster, any(f.state == "loaded" for f in found), report)
    return report


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        dump = json.loads(Path(argv[0]).read_text())
        stats = Path(argv[1]).read_text() if len(argv) == 2 else None
    except (OSError, json.JSONDecodeError) as e:
        print(f"doctor: cannot read the input: {e}", file=sys.stderr)
        return 2
    report = diagnose(dump, stats)
    print(report.render())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
