//! Istio's conventions as the proxy sees them: the names istiod gives Envoy's clusters
//! (`pilot/pkg/model/service.go` `BuildSubsetKey`: `direction|port|subset|hostname`, and the
//! passthrough and black-hole clusters of `pilot/pkg/networking/util/util.go`), the waypoint's
//! (`pilot/pkg/networking/core/waypoint.go`: `main_internal`, `connect_originate`, `encap`;
//! `listener_waypoint.go` `buildWaypointInternal`: `inbound-vip|PORT|http|HOST`), and the
//! endpoint metadata a waypoint's clusters carry (`istio.workload`).

use crate::http::split_once_str;
use crate::node::ListenerDirection;

/// The direction of a sidecar listener from the name Istio gives the upstream cluster: inbound
/// clusters are `inbound|port|subset|host` (and `InboundPassthroughCluster`), outbound ones
/// `outbound|port|subset|host`, `PassthroughCluster` or `BlackHoleCluster`. `None` for names
/// Istio did not make.
///
/// The ambient names: `inbound-vip|…` (a waypoint's service VIP) and `main_internal` (the
/// waypoint's internal listener) serve a destination, `encap` (pod-addressed traffic) and
/// `connect_originate` (HBONE origination) leave for one. A waypoint never asks (its span's role
/// is fixed), but a sidecar that talks to waypoints may see them.
pub(crate) fn cluster_direction(cluster: Option<&str>) -> Option<ListenerDirection> {
    let cluster = cluster?;
    if cluster.starts_with("inbound|")
        || cluster.starts_with("inbound-vip|")
        || cluster == "InboundPassthroughCluster"
        || cluster == MAIN_INTERNAL
    {
        Some(ListenerDirection::Inbound)
    } else if cluster.starts_with("outbound|")
        || cluster == "PassthroughCluster"
        || cluster == "BlackHoleCluster"
        || cluster == ENCAP
        || cluster == CONNECT_ORIGINATE
    {
        Some(ListenerDirection::Outbound)
    } else {
        None
    }
}

/// The waypoint's internal listener and the cluster that reaches it
/// (`pilot/pkg/networking/core/waypoint.go` `MainInternalName`).
pub(crate) const MAIN_INTERNAL: &str = "main_internal";
/// The waypoint's cluster for pod-addressed traffic (`EncapClusterName`).
pub(crate) const ENCAP: &str = "encap";
/// HBONE origination (`ConnectOriginate`).
pub(crate) const CONNECT_ORIGINATE: &str = "connect_originate";

/// The parts of a cluster name Istio built with `BuildSubsetKey` (`pilot/pkg/model/service.go`;
/// parsed there by `ParseSubsetKey`): `direction|port|subset|hostname`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubsetKey<'a> {
    pub direction: ListenerDirection,
    pub port: u16,
    /// Empty for inbound clusters of recent Istio versions (`inbound|9080||`).
    pub host: &'a str,
}

/// Parses `outbound|9080||reviews.default.svc.cluster.local` (or `inbound|9080||`, or a
/// waypoint's `inbound-vip|9080|http|reviews.default.svc.cluster.local`, whose subset part holds
/// the protocol); `None` for any other name (passthrough, black hole, `encap`, the plugin's own
/// clusters).
pub(crate) fn parse_subset_key(cluster: &str) -> Option<SubsetKey<'_>> {
    let mut parts = cluster.split('|');
    let direction = match parts.next()? {
        "inbound" | "inbound-vip" => ListenerDirection::Inbound,
        "outbound" => ListenerDirection::Outbound,
        _ => return None,
    };
    let port = parts.next()?.parse().ok()?;
    let _subset = parts.next()?;
    let host = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(SubsetKey {
        direction,
        port,
        host,
    })
}

/// A workload as a waypoint's endpoint metadata names it: `filter_metadata.istio.workload`,
/// `workload;namespace;canonical-service;canonical-revision;cluster` (istiod
/// `pilot/pkg/networking/util/util.go` `AppendLbEndpointMetadata` writes it; istio-proxy `extensions/common/metadata_object.h`
/// `convertEndpointMetadata` reads it). Empty parts are kept empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct EndpointWorkload<'a> {
    pub workload: &'a str,
    pub namespace: &'a str,
    pub canonical_service: &'a str,
    pub canonical_revision: &'a str,
    pub cluster: &'a str,
}

/// Parses `istio.workload` endpoint metadata; `None` unless it has the five parts and a workload.
pub(crate) fn parse_endpoint_workload(value: &str) -> Option<EndpointWorkload<'_>> {
    let mut parts = value.split(';');
    let workload = EndpointWorkload {
        workload: parts.next()?,
        namespace: parts.next()?,
        canonical_service: parts.next()?,
        canonical_revision: parts.next()?,
        cluster: parts.next()?,
    };
    (parts.next().is_none() && !workload.workload.is_empty()).then_some(workload)
}

/// The namespace and service account of a SPIFFE principal as Istio issues them
/// (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`; the waypoint keeps the peer's
/// in filter state `io.istio.peer_principal`: `pilot/pkg/xds/filters/filters.go`).
pub(crate) fn parse_principal(principal: &str) -> Option<(&str, &str)> {
    let path = principal.strip_prefix("spiffe://")?;
    let (_, rest) = split_once_str(path, "/ns/")?;
    let (namespace, account) = split_once_str(rest, "/sa/")?;
    (!namespace.is_empty() && !account.is_empty() && !account.contains('/'))
        .then_some((namespace, account))
}

/// OTel `peer.service` of a CLIENT span: the service it calls, named the way Istio's
/// `tracingServiceName` names services (`APP_LABEL_AND_NAMESPACE`: `reviews.default`) when the
/// host is a Kubernetes service of the mesh (`reviews.default.svc.<domain>`), else the host
/// itself (a `ServiceEntry` such as `api.example.com`: a node of its own in service graphs).
pub(crate) fn peer_service(host: &str) -> Option<&str> {
    if host.is_empty() {
        return None;
    }
    Some(match split_once_str(host, ".svc.") {
        Some((name_ns, _)) if name_ns.contains('.') => name_ns,
        _ => host,
    })
}

/// Envoy's response flags, in the bit order of `response.flags` (the `CoreResponseFlag` enum,
/// `envoy/stream_info/stream_info.h`) with their short codes
/// (`source/common/stream_info/utility.h` `ResponseFlagUtils::ALL_RESPONSE_STRINGS_FLAGS`).
const RESPONSE_FLAGS: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// `NoRouteFound`: Envoy answered 404 without a route — the path must not name the span.
pub(crate) const FLAG_NO_ROUTE: u64 = 1 << 8;

/// Envoy's `response_flags` tag (`ResponseFlagUtils::toShortString`): the short codes of the set
/// flags, comma-separated in bit order, or `-` when none is set.
pub(crate) fn response_flags_short(flags: u64) -> String {
    if flags == 0 {
        return "-".to_string();
    }
    let mut out = String::new();
    for (bit, code) in RESPONSE_FLAGS.iter().enumerate() {
        if flags & (1u64 << bit) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(code);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn subset_keys_parse_as_istio_builds_them() {
        let cases = [
            ("outbound|9080||reviews.default.svc.cluster.local", Some((ListenerDirection::Outbound, 9080, "reviews.default.svc.cluster.local")), "outbound"),
            ("outbound|9080|v2|reviews.default.svc.cluster.local", Some((ListenerDirection::Outbound, 9080, "reviews.default.svc.cluster.local")), "subset"),
            ("inbound|9080||",                                    Some((ListenerDirection::Inbound, 9080, "")),                                   "recent inbound: no host"),
            ("PassthroughCluster",                                None,                                                                           "not a subset key"),
            ("outbound|http||x",                                  None,                                                                           "port not a number"),
            ("outbound|9080||x|y",                                None,                                                                           "too many parts"),
        ];
        for (name, want, reason) in cases {
            let got = parse_subset_key(name).map(|k| (k.direction, k.port, k.host));
            assert_eq!(got, want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn ambient_cluster_names_tell_their_side() {
        let cases = [
            ("inbound-vip|9080|http|reviews.default.svc.cluster.local", Some(ListenerDirection::Inbound),  "a waypoint's service VIP"),
            ("main_internal",                                          Some(ListenerDirection::Inbound),  "the waypoint's internal listener"),
            ("encap",                                                  Some(ListenerDirection::Outbound), "pod-addressed traffic"),
            ("connect_originate",                                      Some(ListenerDirection::Outbound), "HBONE origination"),
            ("inbound-vipx|9080||x",                                   None,                              "not Istio's"),
        ];
        for (name, want, reason) in cases {
            assert_eq!(cluster_direction(Some(name)), want, "{reason}");
        }
        let vip = parse_subset_key("inbound-vip|9080|http|reviews.default.svc.cluster.local").map(|k| (k.port, k.host));
        assert_eq!(vip, Some((9080, "reviews.default.svc.cluster.local")), "the VIP's host and port");
        assert_eq!(parse_subset_key("encap"), None, "encap names no service");
    }

    #[test]
    #[rustfmt::skip]
    fn endpoint_metadata_and_principals_parse_as_istio_writes_them() {
        let w = parse_endpoint_workload("reviews-v2;default;reviews;v2;Kubernetes");
        assert_eq!(w.map(|w| (w.workload, w.namespace, w.canonical_service, w.canonical_revision, w.cluster)),
                   Some(("reviews-v2", "default", "reviews", "v2", "Kubernetes")), "five parts");
        let cases = [
            ("reviews-v2;default;reviews;v2",           false, "four parts"),
            ("a;b;c;d;e;f",                             false, "six parts"),
            (";default;reviews;v2;Kubernetes",          false, "no workload"),
            ("reviews-v2;default;;;",                   true,  "empty optional parts"),
        ];
        for (value, ok, reason) in cases {
            assert_eq!(parse_endpoint_workload(value).is_some(), ok, "{reason}");
        }
        let cases = [
            ("spiffe://cluster.local/ns/default/sa/bookinfo-productpage", Some(("default", "bookinfo-productpage")), "Istio's form"),
            ("spiffe://td/ns//sa/x",                                       None,                                     "no namespace"),
            ("spiffe://td/ns/a/sa/b/c",                                    None,                                     "extra segment"),
            ("https://td/ns/a/sa/b",                                       None,                                     "not SPIFFE"),
        ];
        for (principal, want, reason) in cases {
            assert_eq!(parse_principal(principal), want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn peer_service_names_mesh_services_like_tracing_service_name() {
        let cases = [
            ("reviews.default.svc.cluster.local", Some("reviews.default"), "mesh service: name.namespace"),
            ("api.example.com",                   Some("api.example.com"), "external host kept whole"),
            ("reviews",                           Some("reviews"),         "short name"),
            ("",                                  None,                    "no host"),
        ];
        for (host, want, reason) in cases {
            assert_eq!(peer_service(host), want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn response_flags_print_as_envoy_short_codes() {
        let cases = [
            (0,                    "-",     "none"),
            (1 << 8,               "NR",    "no route"),
            (1 << 1,               "UH",    "no healthy upstream"),
            (1 << 5,               "UF",    "connection failure"),
            (1 << 2,               "UT",    "upstream timeout"),
            (1 << 11,              "RL",    "rate limited"),
            (1 << 14,              "DC",    "downstream connection termination"),
            ((1 << 5) | (1 << 15), "UF,URX", "several, in bit order"),
            (1 << 40,              "-",     "unknown bits only: as if none"),
        ];
        for (flags, want, reason) in cases {
            assert_eq!(response_flags_short(flags), want, "{reason}");
        }
    }
}
