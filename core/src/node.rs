//! What the proxy knows about its workload: Istio's node metadata and the listener's direction.
//!
//! Envoy 1.40 exposes node data under `xds.node.*`; older istio-proxy builds under `node.*`. Both
//! are read, the new path first, once per configuration; which one answered tells where this
//! proxy keeps the per-request xDS attributes (`listener_direction`, `cluster_name`, `route_name`),
//! so a request reads exactly one path for each (a property read is among the dearest host calls).
//! Labels are read one key at a time (a whole-struct read would return an opaque serialized map).

use crate::host::Host;

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
    /// Where the per-request xDS attributes are.
    pub xds: XdsAttributes,
}

/// Where a proxy exposes xDS attributes: under `xds.` (Envoy 1.40) or at the top level (older
/// istio-proxy builds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdsAttributes {
    #[default]
    Nested,
    TopLevel,
}

impl XdsAttributes {
    /// Reads the xDS attribute `name` (e.g. `cluster_name`) of the current stream.
    pub(crate) fn read(self, host: &dyn Host, name: &str) -> Option<Vec<u8>> {
        match self {
            XdsAttributes::Nested => host.property(&["xds", name]),
            XdsAttributes::TopLevel => host.property(&[name]),
        }
    }
}

impl NodeInfo {
    pub fn read(host: &dyn Host) -> NodeInfo {
        let meta = |key: &str| node_property(host, &["metadata", key]).unwrap_or_default();
        let labels = LABELS_READ
            .iter()
            .filter_map(|label| {
                node_property(host, &["metadata", "LABELS", label])
                    .filter(|v| !v.is_empty())
                    .map(|v| (*label, v))
            })
            .collect();
        let (id, xds) = node_property_at(host, &["id"]).unwrap_or_default();
        NodeInfo {
            id,
            namespace: meta("NAMESPACE"),
            workload_name: meta("WORKLOAD_NAME"),
            pod_name: meta("NAME"),
            cluster_id: meta("CLUSTER_ID"),
            mesh_id: meta("MESH_ID"),
            zone: node_property(host, &["locality", "zone"]).unwrap_or_default(),
            labels,
            xds,
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

/// Reads `xds.node.<path>`, falling back to `node.<path>`.
fn node_property(host: &dyn Host, path: &[&str]) -> Option<String> {
    node_property_at(host, path).map(|(value, _)| value)
}

/// [`node_property`], and which of the two paths answered.
fn node_property_at(host: &dyn Host, path: &[&str]) -> Option<(String, XdsAttributes)> {
    let mut full: Vec<&str> = Vec::with_capacity(path.len() + 2);
    full.extend(["xds", "node"]);
    full.extend_from_slice(path);
    let (bytes, xds) = match host.property(&full) {
        Some(bytes) => (bytes, XdsAttributes::Nested),
        None => (
            full.get(1..).and_then(|old| host.property(old))?,
            XdsAttributes::TopLevel,
        ),
    };
    Some((String::from_utf8(bytes).ok()?, xds))
}

/// Traffic direction of the listener handling this stream (envoy.config.core.v3.TrafficDirection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerDirection {
    Unspecified,
    Inbound,
    Outbound,
}

impl ListenerDirection {
    /// `xds.listener_direction` (older: `listener_direction`) is a little-endian int64.
    pub(crate) fn read(host: &dyn Host, xds: XdsAttributes) -> ListenerDirection {
        let value = xds
            .read(host, "listener_direction")
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_le_bytes);
        match value {
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

    #[test]
    fn reads_new_paths_first_and_falls_back_to_old_ones() {
        let host = MockHost::new()
            .with_property(&["xds", "node", "metadata", "NAMESPACE"], b"shop")
            .with_property(&["node", "metadata", "NAMESPACE"], b"old")
            .with_property(&["node", "metadata", "WORKLOAD_NAME"], b"cart-v1")
            .with_property(&["xds", "node", "metadata", "LABELS", "app"], b"cart")
            .with_property(&["node", "metadata", "LABELS", "version"], b"v1")
            .with_property(
                &[
                    "xds",
                    "node",
                    "metadata",
                    "LABELS",
                    "app.kubernetes.io/name",
                ],
                b"",
            )
            .with_property(&["xds", "node", "id"], b"router~10.0.0.1~gw.istio-system~x");
        let node = NodeInfo::read(&host);
        assert_eq!(node.namespace, "shop", "xds.node wins over node");
        assert_eq!(
            node.workload_name, "cart-v1",
            "node.* used when xds.node.* is absent"
        );
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
    fn listener_direction_is_a_little_endian_int64() {
        use XdsAttributes::*;
        type Prop<'a> = Option<(&'a [&'a str], Vec<u8>)>;
        let cases: [(Prop, XdsAttributes, ListenerDirection, &str); 6] = [
            (
                Some((&["xds", "listener_direction"], 1i64.to_le_bytes().to_vec())),
                Nested,
                ListenerDirection::Inbound,
                "inbound",
            ),
            (
                Some((&["xds", "listener_direction"], 2i64.to_le_bytes().to_vec())),
                Nested,
                ListenerDirection::Outbound,
                "outbound",
            ),
            (
                Some((&["listener_direction"], 1i64.to_le_bytes().to_vec())),
                TopLevel,
                ListenerDirection::Inbound,
                "older proxies",
            ),
            (
                Some((&["listener_direction"], 1i64.to_le_bytes().to_vec())),
                Nested,
                ListenerDirection::Unspecified,
                "only the path this proxy uses is read",
            ),
            (
                Some((&["xds", "listener_direction"], vec![1, 0])),
                Nested,
                ListenerDirection::Unspecified,
                "truncated value",
            ),
            (
                None,
                Nested,
                ListenerDirection::Unspecified,
                "property missing",
            ),
        ];
        for (prop, xds, want, reason) in cases {
            let host = match prop {
                Some((path, v)) => MockHost::new().with_property(path, &v),
                None => MockHost::new(),
            };
            assert_eq!(ListenerDirection::read(&host, xds), want, "{reason}");
        }
    }

    #[test]
    fn the_node_path_that_answers_tells_where_xds_attributes_are() {
        let new = MockHost::new().with_property(&["xds", "node", "id"], b"sidecar~a");
        let old = MockHost::new().with_property(&["node", "id"], b"sidecar~a");
        assert_eq!(NodeInfo::read(&new).xds, XdsAttributes::Nested);
        assert_eq!(NodeInfo::read(&old).xds, XdsAttributes::TopLevel);
        assert_eq!(NodeInfo::read(&old).id, "sidecar~a");
        assert_eq!(
            NodeInfo::read(&MockHost::new()).xds,
            XdsAttributes::Nested,
            "no node data at all: assume a current Envoy"
        );
    }
}
