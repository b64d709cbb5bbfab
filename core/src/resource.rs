//! The OTel Resource of every span this proxy exports: who emitted it (OTel semantic
//! conventions: `service.*`, `k8s.*`, `telemetry.sdk.*`), computed once per configuration.

use crate::node::{NodeInfo, LABEL_CANONICAL_REVISION, LABEL_K8S_VERSION, LABEL_VERSION};
use crate::span::{AttrValue, PeerResource};

/// `extra` are `OTEL_RESOURCE_ATTRIBUTES`-style attributes from the configuration; they add to
/// or replace the detected ones, except `service.name`, which `serviceName` and
/// `tracingServiceName` own.
pub(crate) fn build_resource(
    node: &NodeInfo,
    service_name: &str,
    extra: &[(String, String)],
) -> Vec<(String, AttrValue)> {
    let mut attrs: Vec<(String, AttrValue)> = Vec::with_capacity(12 + extra.len());
    let mut put = |key: &str, value: &str| {
        if value.is_empty() {
            return;
        }
        let value = AttrValue::Str(value.to_string());
        match attrs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => attrs.push((key.to_string(), value)),
        }
    };
    put("service.name", service_name);
    // Istio's canonical revision order: the explicit label, then the Kubernetes and plain ones.
    let version = [LABEL_CANONICAL_REVISION, LABEL_K8S_VERSION, LABEL_VERSION]
        .iter()
        .find_map(|l| node.label(l));
    put("service.version", version.unwrap_or(""));
    // One service, one name. `service.name` is Istio's `tracingServiceName` (Kiali queries
    // `app.namespace`: kiali `business/tracing.go` `tracingServiceName`); OTel qualifies a name
    // by `service.namespace` (semconv "service.namespace"), and backends that do would show
    // `default/reviews.default`. So the namespace goes in `service.namespace` only when the name
    // does not carry it already (`CANONICAL_NAME_ONLY`, or a `serviceName` without it).
    let qualified = service_name
        .strip_suffix(node.namespace.as_str())
        .is_some_and(|rest| rest.ends_with('.'));
    if !qualified {
        put("service.namespace", &node.namespace);
    }
    put("k8s.namespace.name", &node.namespace);
    put("k8s.pod.name", &node.pod_name);
    put("k8s.cluster.name", &node.cluster_id);
    put("istio.mesh_id", &node.mesh_id);
    let instance = match (node.pod_name.is_empty(), node.namespace.is_empty()) {
        (false, false) => format!("{}.{}", node.pod_name, node.namespace),
        (false, true) => node.pod_name.clone(),
        _ => node.id.clone(),
    };
    put("service.instance.id", &instance);
    put("telemetry.sdk.name", "meshtrace");
    put("telemetry.sdk.language", "rust");
    put("telemetry.sdk.version", crate::VERSION);
    for (k, v) in extra {
        if k != "service.name" {
            put(k, v);
        }
    }
    attrs
}

/// Keys of the proxy's own resource that describe its pod, not a service it records for.
const PER_POD_KEYS: [&str; 2] = ["k8s.pod.name", "service.instance.id"];

/// The resource of a span a waypoint records for another workload: the proxy's own resource
/// (SDK, mesh, configured extras) with the service's name, version, namespace and cluster in
/// place of the waypoint's, and without the waypoint pod's keys.
pub fn peer_resource(own: &[(String, AttrValue)], peer: &PeerResource) -> Vec<(String, AttrValue)> {
    let mut attrs: Vec<(String, AttrValue)> = own
        .iter()
        .filter(|(k, _)| !PER_POD_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut put = |key: &str, value: &str| {
        let slot = attrs.iter().position(|(k, _)| k == key);
        match (slot, value.is_empty()) {
            (Some(i), true) => {
                attrs.remove(i);
            }
            (Some(i), false) => {
                if let Some(s) = attrs.get_mut(i) {
                    s.1 = AttrValue::Str(value.to_string());
                }
            }
            (None, false) => attrs.push((key.to_string(), AttrValue::Str(value.to_string()))),
            (None, true) => {}
        }
    };
    put("service.name", &peer.service_name);
    put("service.version", &peer.version);
    let qualified = peer
        .service_name
        .strip_suffix(peer.namespace.as_str())
        .is_some_and(|rest| rest.ends_with('.'));
    put(
        "service.namespace",
        if qualified { "" } else { &peer.namespace },
    );
    put("k8s.namespace.name", &peer.namespace);
    if !peer.cluster.is_empty() {
        put("k8s.cluster.name", &peer.cluster);
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::LABEL_APP;

    fn get<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<&'a str> {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| match v {
                AttrValue::Str(s) => Some(s.as_str()),
                _ => None,
            })
    }

    #[test]
    fn a_peer_resource_is_the_service_not_the_waypoint_pod() {
        let node = NodeInfo {
            namespace: "ambient".into(),
            pod_name: "waypoint-7d9f".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: "cluster.local".into(),
            ..NodeInfo::default()
        };
        let extra = [("deployment.environment.name".into(), "prod".into())];
        let own = build_resource(&node, "waypoint.ambient", &extra);
        let peer = PeerResource {
            service_name: "reviews.default".into(),
            namespace: "default".into(),
            version: "v2".into(),
            cluster: String::new(),
        };
        let r = peer_resource(&own, &peer);
        let cases = [
            (
                "service.name",
                Some("reviews.default"),
                "the destination's name",
            ),
            ("service.version", Some("v2"), "its revision"),
            ("service.namespace", None, "the name carries it"),
            ("k8s.namespace.name", Some("default"), "its namespace"),
            (
                "k8s.pod.name",
                None,
                "the waypoint's pod is not the service's",
            ),
            ("service.instance.id", None, "nor its instance"),
            (
                "k8s.cluster.name",
                Some("Kubernetes"),
                "unknown peer cluster: the mesh's",
            ),
            (
                "deployment.environment.name",
                Some("prod"),
                "configured extras kept",
            ),
            ("telemetry.sdk.name", Some("meshtrace"), "who recorded it"),
        ];
        for (key, want, why) in cases {
            assert_eq!(get(&r, key), want, "{key}: {why}");
        }
    }

    #[test]
    fn resource_describes_the_workload() {
        let node = NodeInfo {
            namespace: "default".into(),
            pod_name: "reviews-v2-7d9f".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: "cluster.local".into(),
            labels: vec![
                (LABEL_APP, "reviews".into()),
                (LABEL_CANONICAL_REVISION, "v2".into()),
            ],
            ..NodeInfo::default()
        };
        let extra = [
            (
                "deployment.environment.name".to_string(),
                "prod".to_string(),
            ),
            ("service.name".to_string(), "ignored".to_string()),
            ("k8s.cluster.name".to_string(), "east".to_string()),
        ];
        let r = build_resource(&node, "reviews.default", &extra);
        let cases = [
            (
                "service.name",
                Some("reviews.default"),
                "from tracingServiceName, not overridable by extras",
            ),
            (
                "service.version",
                Some("v2"),
                "canonical revision when no version label",
            ),
            (
                "service.namespace",
                None,
                "the name carries the namespace already: not counted twice",
            ),
            ("k8s.namespace.name", Some("default"), "namespace"),
            ("k8s.pod.name", Some("reviews-v2-7d9f"), "pod"),
            (
                "k8s.cluster.name",
                Some("east"),
                "extras replace detected values",
            ),
            ("istio.mesh_id", Some("cluster.local"), "mesh"),
            (
                "service.instance.id",
                Some("reviews-v2-7d9f.default"),
                "pod.namespace",
            ),
            ("telemetry.sdk.name", Some("meshtrace"), "sdk"),
            (
                "deployment.environment.name",
                Some("prod"),
                "extra attribute",
            ),
        ];
        for (key, want, why) in cases {
            assert_eq!(get(&r, key), want, "{key}: {why}");
        }
        let canonical = build_resource(&node, "reviews", &[]);
        assert_eq!(
            get(&canonical, "service.namespace"),
            Some("default"),
            "CANONICAL_NAME_ONLY: the namespace qualifies the name, as an OTel SDK's does"
        );
        let empty = build_resource(&NodeInfo::default(), "istio-proxy", &[]);
        assert_eq!(
            get(&empty, "k8s.namespace.name"),
            None,
            "empty values are left out"
        );
    }
}
