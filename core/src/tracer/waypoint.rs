//! A waypoint (Istio's ambient mode): one proxy between two workloads that have none. It
//! records what two sidecars would have recorded — a CLIENT span for the source workload and a
//! SERVER span for the destination service, each under its service's resource — so service
//! graphs draw source → destination edges instead of a hub named after the waypoint
//! (`waypoint.spans: pair`, the default); `proxy` keeps Istio's one waypoint-named span.
//!
//! Who the two ends are is read when a recorded span ends, never for unsampled requests:
//! - the destination from the endpoint Envoy picked, `xds.upstream_host_metadata`
//!   `filter_metadata.istio.workload` (istiod `pilot/pkg/networking/util/util.go`
//!   `AppendLbEndpointMetadata`), else from the service host of the waypoint's cluster
//!   `inbound-vip|PORT|http|HOST` (`pilot/pkg/networking/core/listener_waypoint.go`
//!   `buildWaypointInternal`), as Kiali looks services up;
//! - the source from the peer Istio's peer-metadata filter found, filter state
//!   `downstream_peer_obj` (istio-proxy `extensions/common/metadata_object.h`
//!   `WorkloadMetadataObject`, readable field by field; Istio ≥ 1.29 reads the same fields for
//!   its `istio.source_*` tags: `pilot/pkg/networking/core/tracing.go`
//!   `buildWaypointSourceTags`), else from the peer's SPIFFE principal, filter state
//!   `io.istio.peer_principal` (`pilot/pkg/xds/filters/filters.go`).
//!
//! The CLIENT span is left out when the caller's own proxy recorded it: a meshtrace gateway
//! writes `meshtrace=c:<span id>` into `tracestate` when the id it sends upstream is its
//! recorded CLIENT span's ([`CLIENT_MARK_KEY`]); the waypoint compares that id with its parent.

use super::Tracer;
use crate::host::{Host, StreamFact};
use crate::ids::{push_hex, SpanId};
use crate::istio::{parse_endpoint_workload, parse_principal, parse_subset_key};
use crate::naming;
use crate::node::{NodeInfo, LABEL_CANONICAL_NAME};
use crate::propagation::tracestate::TraceState;
use crate::span::PeerResource;

/// The `tracestate` key of meshtrace's own entry: `c:<16 hex>`, the id of a CLIENT span the
/// sending proxy records (W3C Trace Context "tracestate" — a vendor's entry, moved to the front
/// when written).
pub const CLIENT_MARK_KEY: &str = "meshtrace";

/// `c:<span id>`: the entry that says the span `id` is a recorded CLIENT span.
pub(super) fn client_mark(id: SpanId) -> String {
    let mut value = String::with_capacity(18);
    value.push_str("c:");
    push_hex(&mut value, &id.0);
    value
}

/// The caller's proxy recorded the CLIENT span `parent`: its entry names exactly that id (an
/// entry left by a proxy further up names another span and is ignored).
pub(super) fn caller_recorded_client(tracestate: &TraceState, parent: Option<SpanId>) -> bool {
    let marked = tracestate
        .get(CLIENT_MARK_KEY)
        .and_then(|v| v.strip_prefix("c:"))
        .and_then(SpanId::from_hex);
    parent.is_some() && marked == parent
}

/// One end of a request through a waypoint, as Istio names workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerWorkload {
    pub workload: String,
    pub namespace: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub cluster: String,
}

/// Both ends of a request through a waypoint; either may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub source: Option<PeerWorkload>,
    pub destination: Option<PeerWorkload>,
}

/// Fields of `downstream_peer_obj` read, with the tag each gives (`buildWaypointSourceTags`).
const SOURCE_FIELDS: [StreamFact; 4] = [
    StreamFact::PeerNamespace,
    StreamFact::PeerService,
    StreamFact::PeerRevision,
    StreamFact::PeerCluster,
];

impl Tracer {
    /// Who the request came from and went to (a recorded span at a waypoint only).
    pub(super) fn read_peers(&self, host: &dyn Host, upstream_cluster: Option<&str>) -> Peers {
        Peers {
            source: read_source(host),
            destination: read_destination(host, upstream_cluster),
        }
    }

    /// The resource a waypoint's span for `peer` is exported under: its service name under
    /// the configured `tracingServiceName` mode (the canonical service standing in for the app
    /// label Istio derives it from; `serviceName` names this proxy only).
    pub(super) fn peer_resource(&self, peer: &PeerWorkload) -> PeerResource {
        let canonical = [&peer.canonical_service, &peer.workload]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        let node = NodeInfo {
            namespace: peer.namespace.clone(),
            workload_name: peer.workload.clone(),
            labels: vec![(LABEL_CANONICAL_NAME, canonical)],
            ..NodeInfo::default()
        };
        PeerResource {
            service_name: naming::service_name(self.config.tracing_service_name, None, &node),
            namespace: peer.namespace.clone(),
            version: peer.canonical_revision.clone(),
            cluster: peer.cluster.clone(),
        }
    }
}

/// A peer field: absent when empty or `-` (Istio's placeholder for an unknown value).
fn peer_text(host: &dyn Host, fact: StreamFact) -> Option<String> {
    host.text_fact(fact).filter(|s| s != "-")
}

/// The source: Istio's peer object field by field (its workload first: nothing more is read
/// when the peer is unknown), else the principal's namespace and service account.
fn read_source(host: &dyn Host) -> Option<PeerWorkload> {
    let field = |fact: StreamFact| peer_text(host, fact);
    if let Some(workload) = field(StreamFact::PeerWorkload) {
        let [namespace, canonical_service, canonical_revision, cluster] =
            SOURCE_FIELDS.map(|f| field(f).unwrap_or_default());
        return Some(PeerWorkload {
            workload,
            namespace,
            canonical_service,
            canonical_revision,
            cluster,
        });
    }
    let principal = peer_text(host, StreamFact::PeerPrincipal)?;
    let (namespace, account) = parse_principal(&principal)?;
    Some(PeerWorkload {
        namespace: namespace.to_string(),
        canonical_service: account.to_string(),
        ..PeerWorkload::default()
    })
}

/// The destination: the picked endpoint's `istio.workload`, else the service of the cluster.
fn read_destination(host: &dyn Host, upstream_cluster: Option<&str>) -> Option<PeerWorkload> {
    if let Some(value) =
        upstream_cluster.and_then(|_| peer_text(host, StreamFact::UpstreamWorkload))
    {
        if let Some(w) = parse_endpoint_workload(&value) {
            return Some(PeerWorkload {
                workload: w.workload.to_string(),
                namespace: w.namespace.to_string(),
                canonical_service: w.canonical_service.to_string(),
                canonical_revision: w.canonical_revision.to_string(),
                cluster: w.cluster.to_string(),
            });
        }
    }
    let host_name = parse_subset_key(upstream_cluster?)?.host;
    let (service, namespace) = match crate::http::split_once_str(host_name, ".svc.") {
        Some((name_ns, _)) => name_ns.split_once('.')?,
        None => (host_name, ""),
    };
    (!service.is_empty()).then(|| PeerWorkload {
        namespace: namespace.to_string(),
        canonical_service: service.to_string(),
        ..PeerWorkload::default()
    })
}

/// Istio's tags for the two ends (`buildWaypointSourceTags`: `istio.source_*` from the
/// downstream peer, `istio.destination_*` from the upstream peer), those known.
pub(super) fn peer_tags(peers: &Peers) -> Vec<(&'static str, String)> {
    let mut tags = Vec::new();
    let mut add = |names: [&'static str; 5], peer: &Option<PeerWorkload>| {
        let Some(p) = peer else { return };
        let values = [
            &p.workload,
            &p.namespace,
            &p.canonical_service,
            &p.canonical_revision,
            &p.cluster,
        ];
        for (name, value) in names.into_iter().zip(values) {
            if !value.is_empty() {
                tags.push((name, value.clone()));
            }
        }
    };
    add(
        [
            "istio.source_workload",
            "istio.source_namespace",
            "istio.source_canonical_service",
            "istio.source_canonical_revision",
            "istio.source_cluster_id",
        ],
        &peers.source,
    );
    add(
        [
            "istio.destination_workload",
            "istio.destination_namespace",
            "istio.destination_canonical_service",
            "istio.destination_canonical_revision",
            "istio.destination_cluster_id",
        ],
        &peers.destination,
    );
    tags
}

#[cfg(test)]
mod tests;
