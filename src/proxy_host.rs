//! [`Host`] over the plugin's own ABI layer ([`crate::abi`]). A failed host call means "absent"
//! here (the core degrades), never a panic; the calls that can fail visibly return the host's
//! status in a [`HostError`].
//!
//! Header values are read as bytes: any client can send a value that is not UTF-8 (RFC 9110
//! obs-text), which is read as U+FFFD rather than refused.

use crate::abi;
use meshtrace_core::headers::HeaderMap;
use meshtrace_core::host::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use std::cell::Cell;

/// Where this proxy exposes xDS attributes: under `xds.` (Envoy 1.40) or at the top level
/// (older istio-proxy builds). The node id's read tells, once per configuration, so a request
/// reads exactly one path for each (a property read is among the dearest host calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum XdsAttributes {
    #[default]
    Nested,
    TopLevel,
}

thread_local! {
    // One VM per worker thread, one value per VM.
    static XDS: Cell<XdsAttributes> = const { Cell::new(XdsAttributes::Nested) };
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl Host for ProxyHost {
    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }

    fn request_headers(&self) -> HeaderMap {
        map_pairs(abi::map::REQUEST_HEADERS)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = abi::set_header_map_value(abi::map::REQUEST_HEADERS, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(abi::map::RESPONSE_HEADERS, name)
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let _ = abi::set_header_map_value(abi::map::RESPONSE_HEADERS, name, Some(value));
    }

    /// One more field line (Envoy appends an entry; every value already there is kept).
    fn add_response_header(&self, name: &str, value: &str) {
        let _ = abi::add_header_map_value(abi::map::RESPONSE_HEADERS, name, value);
    }

    fn set_property(&self, name: &str, value: &[u8]) {
        let _ = abi::set_property(name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        map_value(abi::map::RESPONSE_TRAILERS, name)
    }

    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        let path: &[&str] = match fact {
            NodeFact::Id => &["id"],
            NodeFact::Metadata(key) => &["metadata", key],
            NodeFact::Label(name) => &["metadata", "LABELS", name],
            NodeFact::LocalityZone => &["locality", "zone"],
        };
        let (bytes, xds) = node_property(path)?;
        if fact == NodeFact::Id {
            XDS.with(|x| x.set(xds));
        }
        String::from_utf8(bytes).ok()
    }

    fn stream_fact(&self, fact: StreamFact) -> Option<Fact> {
        let path = property_path(fact, XDS.with(Cell::get));
        let bytes = abi::property(path).ok().flatten()?;
        if fact.is_int() {
            // Envoy serialises integers, timestamps and durations as 8 little-endian bytes
            // (`serializeValue` in `source/extensions/common/wasm/context.cc`).
            let bytes: [u8; 8] = bytes.try_into().ok()?;
            Some(Fact::Int(i64::from_le_bytes(bytes)))
        } else {
            String::from_utf8(bytes)
                .ok()
                .filter(|s| !s.is_empty())
                .map(Fact::Text)
        }
    }

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        let Outgoing::Http {
            cluster,
            headers,
            body,
            timeout,
        } = call;
        abi::http_call(cluster, &headers, body, timeout)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => abi::metric::COUNTER,
            MetricKind::Gauge => abi::metric::GAUGE,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = abi::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = abi::record_metric(id, value);
    }
}

/// Reads `xds.node.<path>`, falling back to `node.<path>` (older istio-proxy), and which of the
/// two answered (no node data at all: assume a current Envoy).
fn node_property(path: &[&str]) -> Option<(Vec<u8>, XdsAttributes)> {
    let mut full: Vec<&str> = Vec::with_capacity(path.len() + 2);
    full.extend(["xds", "node"]);
    full.extend_from_slice(path);
    if let Some(bytes) = abi::property(&full).ok().flatten() {
        return Some((bytes, XdsAttributes::Nested));
    }
    let old = full.get(1..)?;
    let bytes = abi::property(old).ok().flatten()?;
    Some((bytes, XdsAttributes::TopLevel))
}

/// Envoy's attribute path for a stream fact (`source/extensions/filters/common/expr/context.h`;
/// the `xds` ones under `xds.` on Envoy 1.40, at the top level on older istio-proxy builds).
/// Static slices: nothing is built per read.
fn property_path(fact: StreamFact, xds: XdsAttributes) -> &'static [&'static str] {
    let nested = xds == XdsAttributes::Nested;
    match fact {
        StreamFact::UpstreamCluster if nested => &["xds", "cluster_name"],
        StreamFact::UpstreamCluster => &["cluster_name"],
        StreamFact::RouteName if nested => &["xds", "route_name"],
        StreamFact::RouteName => &["route_name"],
        StreamFact::ListenerDirection if nested => &["xds", "listener_direction"],
        StreamFact::ListenerDirection => &["listener_direction"],
        StreamFact::UpstreamWorkload if nested => &[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "istio",
            "workload",
        ],
        StreamFact::UpstreamWorkload => &[
            "upstream_host_metadata",
            "filter_metadata",
            "istio",
            "workload",
        ],
        StreamFact::Protocol => &["request", "protocol"],
        StreamFact::ResponseCodeDetails => &["response", "code_details"],
        StreamFact::ResponseFlags => &["response", "flags"],
        StreamFact::GrpcStatus => &["response", "grpc_status"],
        StreamFact::DownstreamAddress => &["source", "address"],
        StreamFact::UpstreamAddress => &["upstream", "address"],
        StreamFact::RequestSize => &["request", "size"],
        StreamFact::ResponseSize => &["response", "size"],
        StreamFact::RequestStartTime => &["request", "time"],
        // Istio's peer metadata filter (`pilot/pkg/xds/filters/filters.go`).
        StreamFact::PeerPrincipal => &["filter_state", "io.istio.peer_principal"],
        StreamFact::PeerWorkload => &["filter_state", "downstream_peer_obj", "workload"],
        StreamFact::PeerNamespace => &["filter_state", "downstream_peer_obj", "namespace"],
        StreamFact::PeerService => &["filter_state", "downstream_peer_obj", "service"],
        StreamFact::PeerRevision => &["filter_state", "downstream_peer_obj", "revision"],
        StreamFact::PeerCluster => &["filter_state", "downstream_peer_obj", "cluster"],
    }
}

/// Every pair of a header map; empty when the host has none to give.
pub fn map_pairs(map: abi::MapType) -> HeaderMap {
    abi::header_map_pairs(map)
        .ok()
        .flatten()
        .map(HeaderMap::from_serialized_vec)
        .unwrap_or_default()
}

/// One header's first value, bytes that are not UTF-8 read as U+FFFD.
pub fn map_value(map: abi::MapType, name: &str) -> Option<String> {
    abi::header_map_value(map, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(fact: StreamFact, xds: XdsAttributes) -> &'static [&'static str] {
        property_path(fact, xds)
    }

    #[test]
    #[rustfmt::skip]
    fn each_fact_reads_envoys_attribute_on_the_proxys_own_path() {
        use StreamFact::*;
        use XdsAttributes::*;
        let cases: [(StreamFact, XdsAttributes, &[&str], &str); 7] = [
            (UpstreamCluster,   Nested,   &["xds", "cluster_name"],  "Envoy 1.40: xds attributes nested"),
            (UpstreamCluster,   TopLevel, &["cluster_name"],         "older istio-proxy: at the top level"),
            (ListenerDirection, Nested,   &["xds", "listener_direction"], "the listener's direction is an xds attribute"),
            (UpstreamWorkload,  Nested,   &["xds", "upstream_host_metadata", "filter_metadata", "istio", "workload"], "the longest path fits"),
            (ResponseFlags,     TopLevel, &["response", "flags"],    "response attributes never move"),
            (Protocol,          Nested,   &["request", "protocol"],  "request attributes never move"),
            (PeerWorkload,      Nested,   &["filter_state", "downstream_peer_obj", "workload"], "Istio's peer object"),
        ];
        for (fact, xds, want, why) in cases {
            assert_eq!(path(fact, xds), want, "{why}");
        }
        for fact in StreamFact::ALL {
            assert!(!path(fact, Nested).is_empty(), "{fact:?} has a path");
        }
    }
}
