//! Istio's conventions as the proxy sees them: the names istiod gives Envoy's clusters
//! (`pilot/pkg/model/service.go` `BuildSubsetKey`: `direction|port|subset|hostname`, and the
//! passthrough and black-hole clusters of `pilot/pkg/networking/util/util.go`).

use crate::node::ListenerDirection;

/// The direction of a sidecar listener from the name Istio gives the upstream cluster: inbound
/// clusters are `inbound|port|subset|host` (and `InboundPassthroughCluster`), outbound ones
/// `outbound|port|subset|host`, `PassthroughCluster` or `BlackHoleCluster`. `None` for names
/// Istio did not make.
pub(crate) fn cluster_direction(cluster: Option<&str>) -> Option<ListenerDirection> {
    let cluster = cluster?;
    if cluster.starts_with("inbound|") || cluster == "InboundPassthroughCluster" {
        Some(ListenerDirection::Inbound)
    } else if cluster.starts_with("outbound|")
        || cluster == "PassthroughCluster"
        || cluster == "BlackHoleCluster"
    {
        Some(ListenerDirection::Outbound)
    } else {
        None
    }
}
