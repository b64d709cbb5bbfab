//! What the proxy knows about its workload: Istio's node metadata and the listener's direction.
//!
//! Read once per configuration as [`NodeFact`]s; where each comes from is the adapter's business
//! (Envoy's `xds.node.*` properties for the Wasm plugin). Labels are asked one key at a time.

use crate::host::{Host, NodeFact, StreamFact};

/// Labels we look up, in the order naming and resource attributes need them.
pub const LABEL_APP: &str = "app";
pub(crate) const LABEL_K8S_NAME: &str = "app.kubernetes.io/name";
pub(crate) const LABEL_CANONICAL_NAME: &str = "service.istio.io/canonical-name";
pub(crate) const LABEL_VERSION: &str = "version";
pub(crate) const LABEL_K8S_VERSION: &str = "app.kubernetes.io/version";
pub(crate) const LABEL_CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

const LABELS_READ: [&str; 6] = [
    LABEL_APP,
    LABEL_K8S_NAME,
    LABEL_CANONICAL_NAME,
    LABEL_VERSION,
    LABEL_K8S_VERSION,
    LABEL_CANONICAL_REVISION,
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Envoy node id, `sidecar~IP~POD.NS~NS.svc.cluster.local` or `router~…` for gateways.
    pub id: String,
    pub namespace: String,
    pub workload_name: String,
    /// Pod name (`NAME`).
    pub pod_name: String,
    pub cluster_id: String,
    pub mesh_id: String,
    /// Envoy's locality zone (`node.locality.zone`), Envoy's `zone` tag.
    pub zone: String,
    /// The labels of `LABELS_READ` that are set and non-empty.
    pub labels: Vec<(&'static str, String)>,
}

impl NodeInfo {
    pub fn read(host: &dyn Host) -> NodeInfo {
        let fact = |fact: NodeFact| host.node_fact(fact).unwrap_or_default();
        let meta = |key: &str| fact(NodeFact::Metadata(key));
        let labels = LABELS_READ
            .iter()
            .filter_map(|label| {
                host.node_fact(NodeFact::Label(label))
                    .filter(|v| !v.is_empty())
                    .map(|v| (*label, v))
            })
            .collect();
        NodeInfo {
            id: fact(NodeFact::Id),
            namespace: meta("NAMESPACE"),
            workload_name: meta("WORKLOAD_NAME"),
            pod_name: meta("NAME"),
            cluster_id: meta("CLUSTER_ID"),
            mesh_id: meta("MESH_ID"),
            zone: fact(NodeFact::LocalityZone),
            labels,
        }
    }

    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Istio gateways have node ids beginning `router~`.
    pub fn is_gateway(&self) -> bool {
        self.id.starts_with("router~")
    }

    /// The mesh DNS domain of the proxy's namespace, the node id's last part
    /// (`sidecar~IP~POD.NS~NS.svc.cluster.local` → `NS.svc.cluster.local`).
    pub(crate) fn dns_domain(&self) -> &str {
        self.id
            .rsplit('~')
            .next()
            .filter(|_| self.id.contains('~'))
            .unwrap_or("")
    }

    /// Istio waypoints (ambient mode) have node ids beginning `waypoint~`
    /// (`pkg/model/proxy.go` `NodeType` `Waypoint`).
    pub fn is_waypoint(&self) -> bool {
        self.id.starts_with("waypoint~")
    }

    /// Istio sidecars have node ids beginning `sidecar~`.
    pub(crate) fn is_sidecar(&self) -> bool {
        self.id.starts_with("sidecar~")
    }
}

/// Traffic direction of the listener handling this stream (envoy.config.core.v3.TrafficDirection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerDirection {
    Unspecified,
    Inbound,
    Outbound,
}

impl ListenerDirection {
    pub(crate) fn read(host: &dyn Host) -> ListenerDirection {
        match host.int_fact(StreamFact::ListenerDirection) {
            Some(1) => ListenerDirection::Inbound,
            Some(2) => ListenerDirection::Outbound,
            _ => ListenerDirection::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use crate::host::Fact;

    #[test]
    fn node_facts_fill_the_node_info() {
        let host = MockHost::new()
            .with_node(NodeFact::Metadata("NAMESPACE"), "shop")
            .with_node(NodeFact::Metadata("WORKLOAD_NAME"), "cart-v1")
            .with_node(NodeFact::Label(LABEL_APP), "cart")
            .with_node(NodeFact::Label(LABEL_VERSION), "v1")
            .with_node(NodeFact::Label(LABEL_K8S_NAME), "")
            .with_node(NodeFact::Id, "router~10.0.0.1~gw.istio-system~x");
        let node = NodeInfo::read(&host);
        assert_eq!(node.namespace, "shop");
        assert_eq!(node.workload_name, "cart-v1");
        assert_eq!(node.label(LABEL_APP), Some("cart"));
        assert_eq!(node.label(LABEL_VERSION), Some("v1"));
        assert_eq!(
            node.label(LABEL_K8S_NAME),
            None,
            "empty labels count as unset"
        );
        assert!(node.is_gateway());
    }

    #[test]
    fn listener_direction_is_envoys_traffic_direction() {
        #[rustfmt::skip]
        let cases: [(Option<Fact>, ListenerDirection, &str); 5] = [
            (Some(Fact::Int(1)), ListenerDirection::Inbound, "1 is INBOUND"),
            (Some(Fact::Int(2)), ListenerDirection::Outbound, "2 is OUTBOUND"),
            (Some(Fact::Int(0)), ListenerDirection::Unspecified, "0 is UNSPECIFIED"),
            (Some(Fact::Text("1".into())), ListenerDirection::Unspecified, "a text answer is no direction"),
            (None, ListenerDirection::Unspecified, "unknown to the proxy"),
        ];
        for (answer, want, reason) in cases {
            let host = match answer {
                Some(v) => MockHost::new().with_fact(StreamFact::ListenerDirection, v),
                None => MockHost::new(),
            };
            assert_eq!(ListenerDirection::read(&host), want, "{reason}");
        }
    }
}
