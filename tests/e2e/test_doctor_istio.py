"""`./build.sh doctor` on the shapes Istio really renders, read from its source (issue 26): the
RBAC filter a CUSTOM policy puts before ext_authz, a listener still warming for its module, the
legacy bootstrap tracer, Istio 1.30's TrafficExtension names, the agent's allow-all and deny-all
stand-ins, and a waypoint without the collector's cluster. Each on a real Envoy's dump."""
from __future__ import annotations

import json

from helpers.harness import (INBOUND, RefusedPort, free_port, http_get, listener, plugin_filter,
                             static_cluster, wait_until, wasm_path)
from test_doctor import CONFIG, RBAC_TYPE, WASM_TYPE, doctor, ecds_envoy, single_listener_envoy

EXT_AUTHZ_CLUSTER = "outbound|9000||ext-authz.foo.svc.cluster.local"


def custom_policy_filters() -> list[dict]:
    """What pilot/pkg/security/authz/builder/builder.go buildHTTP emits for a CUSTOM policy: an
    RBAC filter holding the policy's rules as shadow rules only (stat prefix istio_ext_authz_,
    authzmodel.RBACExtAuthzShadowRulesStatPrefix), then ext_authz; listener_builder.go appends
    both before every AUTHN Wasm filter."""
    shadow = {"@type": RBAC_TYPE, "shadow_rules_stat_prefix": "istio_ext_authz_",
              "shadow_rules": {"action": "DENY", "policies": {
                  "istio-ext-authz-ns[foo]-policy[ext]-rule[0]": {
                      "permissions": [{"any": True}], "principals": [{"any": True}]}}}}
    ext_authz = {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                 "transport_api_version": "V3",
                 "grpc_service": {"envoy_grpc": {"cluster_name": EXT_AUTHZ_CLUSTER}}}
    return [{"name": "envoy.filters.http.rbac", "typed_config": shadow},
            {"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz}]


def test_a_custom_policy_is_not_mistaken_for_phase_authz(stack, tmp_path):
    envoy, _ = single_listener_envoy(
        stack, custom_policy_filters() + [plugin_filter(wasm_path(), CONFIG)],
        extra_clusters=[static_cluster(EXT_AUTHZ_CLUSTER, free_port(), http2=True)])
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 0, out
    assert "ext_authz (an AuthorizationPolicy with action CUSTOM) runs before meshtrace" in out, out
    assert "phase AUTHZ or later" not in out, "the CUSTOM policy's shadow RBAC enforces nothing"


def test_a_local_rbac_filter_before_meshtrace_is_phase_authz(stack, tmp_path):
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": RBAC_TYPE, "rules": {"action": "ALLOW", "policies": {"ns[foo]-policy[a]-rule[0]": {
            "permissions": [{"any": True}], "principals": [{"any": True}]}}}}}
    envoy, _ = single_listener_envoy(stack, [rbac, plugin_filter(wasm_path(), CONFIG)])
    code, out = doctor(tmp_path, envoy.config_dump())
    assert "Istio's RBAC filter runs before meshtrace (phase AUTHZ or later)" in out, out


def test_a_listener_warming_for_its_module_is_a_stuck_fetch(stack, tmp_path):
    """Istio delivers a WasmPlugin by ECDS with InitialFetchTimeout 0 (pilot/pkg/networking/core/
    extension/wasmplugin.go): until the agent hands over the module, the listener warms and serves
    nothing; its dump entry has only warming_state."""
    up = stack.upstream()
    port = free_port()
    # ECDS over ADS as istio-agent serves it, here from a server that never answers.
    silent = RefusedPort()
    stack._own(silent)
    name = "extensions.istio.io/wasmplugin/istio-system.meshtrace"
    waiting = {"name": name, "config_discovery": {
        "config_source": {"api_config_source": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
        "type_urls": [WASM_TYPE, RBAC_TYPE]}}
    lds = tmp_path / "lds.json"
    lds.write_text(json.dumps({"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        **listener("virtualInbound", port, INBOUND, f"inbound|{up.port}||", [waiting])}]}))
    bootstrap = {"node": {"id": "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local",
                          "cluster": "app.default"},
                 "dynamic_resources": {"lds_config": {"path_config_source": {"path": str(lds)},
                                                      "resource_api_version": "V3"}},
                 "static_resources": {"clusters": [static_cluster(f"inbound|{up.port}||", up.port),
                                                   static_cluster("xds-grpc", silent.port, http2=True)]}}
    envoy = stack.envoy(f"warming-{port}", bootstrap, wait_ready=False)

    def warming() -> bool:
        try:
            return "warming_state" in json.dumps(envoy.config_dump())
        except OSError:  # admin not listening yet
            return False
    wait_until(warming, 15, "listener warming")
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1, out
    assert "no WasmPlugin selects this workload" not in out, out
    assert "listener virtualInbound is still warming" in out, out
    assert "waits for its module" in out, out


def test_the_legacy_bootstrap_tracer_is_a_tracer_on(stack, tmp_path):
    """With no Telemetry for a workload and meshConfig.enableTracing, Istio renders HCM tracing
    without a provider (pilot/pkg/networking/core/tracing.go configureTracingFromTelemetry, the
    `tracing == nil` branch): Envoy then uses the bootstrap's tracer, which Istio's bootstrap
    template sets from ProxyConfig.tracing (tools/packaging/common/envoy_bootstrap.json: zipkin)."""
    zipkin_port = free_port()
    up = stack.upstream()
    port = free_port()
    bootstrap = {"node": {"id": "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local",
                          "cluster": "app.default"},
                 "tracing": {"http": {"name": "envoy.tracers.zipkin", "typed_config": {
                     "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                     "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
                     "collector_endpoint_version": "HTTP_JSON", "trace_id_128bit": True,
                     "shared_span_context": False}}},
                 "static_resources": {
                     "listeners": [listener("virtualInbound", port, INBOUND, f"inbound|{up.port}||",
                                            [plugin_filter(wasm_path(), CONFIG)], tracing={})],
                     "clusters": [static_cluster(f"inbound|{up.port}||", up.port),
                                  static_cluster("zipkin", zipkin_port)]}}
    envoy = stack.envoy(f"legacy-{port}", bootstrap)
    # Live, not just configured: Envoy's zipkin tracer stamps its own B3 context on the request
    # after meshtrace (which sends only traceparent and removes the B3 headers it read).
    assert http_get(f"http://127.0.0.1:{port}/")[0] == 200
    assert up.last().get("x-b3-spanid"), "the bootstrap's tracer started a span of its own"
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1, out
    assert "Envoy's own tracer is still on where meshtrace runs: virtualInbound " \
           "(envoy.tracers.zipkin, the bootstrap's legacy tracer)" in out, out
    assert "Envoy's own tracer is off" not in out


def test_istio_1_30_trafficextension_names(stack, tmp_path):
    """From Istio 1.30 a WasmPlugin becomes a TrafficExtension named `<name>~istio-translated-
    wasmplugin` (pilot/pkg/config/kube/extensions/translate.go translateWasmPlugin), delivered
    under extensions.istio.io/trafficextension/ (pilot/pkg/model/extensions.go
    TrafficExtensionResourceNamePrefix)."""
    name = "extensions.istio.io/trafficextension/istio-system.meshtrace~istio-translated-wasmplugin"
    envoy, _ = ecds_envoy(stack, tmp_path, plugin_filter(wasm_path(), CONFIG)["typed_config"], name=name)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 0, out
    assert "WasmPlugin istio-system/meshtrace (Istio 1.30+: TrafficExtension " \
           "istio-system/meshtrace~istio-translated-wasmplugin)" in out, out
    # A TrafficExtension of the user's own (Istio 1.30's new API) keeps its name.
    own = "extensions.istio.io/trafficextension/shop.meshtrace"
    envoy, _ = ecds_envoy(stack, tmp_path, plugin_filter(wasm_path(), CONFIG)["typed_config"], name=own)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert "delivered by Istio from TrafficExtension shop/meshtrace" in out, out
    none, _ = single_listener_envoy(stack, [])
    code, out = doctor(tmp_path, none.config_dump())
    assert "kubectl get wasmplugin -A; from Istio 1.30 kubectl get trafficextension -A" in out, out


def test_the_agents_stand_ins_for_a_module_it_could_not_load(stack, tmp_path):
    """pkg/wasm/convert.go createHTTPDefaultFilter: FAIL_OPEN gives an RBAC without rules (bare
    up to Istio 1.27, rules_stat_prefix wasm-default-allow from 1.28); FAIL_CLOSE (1.25+) an RBAC
    with empty rules, which denies every request (wasm-default-deny from 1.28)."""
    # fmt: off
    cases = [
        ({"@type": RBAC_TYPE}, "allow-all", "Istio <= 1.27: a bare RBAC"),
        ({"@type": RBAC_TYPE, "rules_stat_prefix": "wasm-default-allow"}, "allow-all", "Istio 1.28+"),
        ({"@type": RBAC_TYPE, "rules": {}}, "deny-all", "FAIL_CLOSE, Istio 1.25-1.27"),
        ({"@type": RBAC_TYPE, "rules": {}, "rules_stat_prefix": "wasm-default-deny"}, "deny-all", "FAIL_CLOSE 1.28+"),
    ]
    # fmt: on
    for typed, kind, reason in cases:
        envoy, _ = ecds_envoy(stack, tmp_path, typed)
        code, out = doctor(tmp_path, envoy.config_dump())
        assert code == 1, (reason, out)
        if kind == "allow-all":
            assert "Istio's agent put an allow-all filter in its place (failStrategy FAIL_OPEN)" in out, (reason, out)
        else:
            assert "Istio's agent put a deny-all filter in its place (failStrategy FAIL_CLOSE): " \
                   "every request through it is refused" in out, (reason, out)


def test_a_waypoint_without_the_collector_cluster_needs_the_provider(stack, tmp_path):
    """Waypoints get outbound clusters only for routed hosts and extension-provider services
    (pilot/pkg/networking/core/waypoint.go filterWaypointOutboundServices, fed by
    pilot/pkg/model/push_context.go extraServicesForProxy from meshConfig.extensionProviders),
    unlike gateways (every cluster unless PILOT_FILTER_GATEWAY_CLUSTER_CONFIG)."""
    up = stack.upstream()
    port = free_port()
    bootstrap = {"node": {"id": "waypoint~10.0.0.9~waypoint-5d8c-x.bookinfo~bookinfo.svc.cluster.local",
                          "cluster": "waypoint.bookinfo"},
                 "static_resources": {
                     "listeners": [listener("main_internal", port, INBOUND, f"inbound-vip|9080|http|{up.port}",
                                            [plugin_filter(wasm_path(), CONFIG)])],
                     "clusters": [static_cluster(f"inbound-vip|9080|http|{up.port}", up.port)]}}
    envoy = stack.envoy(f"waypoint-{port}", bootstrap)
    code, out = doctor(tmp_path, envoy.config_dump())
    assert code == 1, out
    assert "does not exist in this proxy" in out, out
    assert "a waypoint has outbound clusters only for routed hosts and meshConfig " \
           "extensionProviders services" in out, out
