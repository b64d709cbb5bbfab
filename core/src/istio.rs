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

/// The parts of a cluster name Istio built with `BuildSubsetKey` (`pilot/pkg/model/service.go`;
/// parsed there by `ParseSubsetKey`): `direction|port|subset|hostname`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubsetKey<'a> {
    pub direction: ListenerDirection,
    pub port: u16,
    /// Empty for inbound clusters of recent Istio versions (`inbound|9080||`).
    pub host: &'a str,
}

/// Parses `outbound|9080||reviews.default.svc.cluster.local` (or `inbound|9080||`); `None` for
/// any other name (passthrough, black hole, the plugin's own clusters).
pub(crate) fn parse_subset_key(cluster: &str) -> Option<SubsetKey<'_>> {
    let mut parts = cluster.split('|');
    let direction = match parts.next()? {
        "inbound" => ListenerDirection::Inbound,
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

/// OTel `peer.service` of a CLIENT span: the service it calls, named the way Istio's
/// `tracingServiceName` names services (`APP_LABEL_AND_NAMESPACE`: `reviews.default`) when the
/// host is a Kubernetes service of the mesh (`reviews.default.svc.<domain>`), else the host
/// itself (a `ServiceEntry` such as `api.example.com`: a node of its own in service graphs).
pub(crate) fn peer_service(host: &str) -> Option<&str> {
    if host.is_empty() {
        return None;
    }
    Some(match host.find(".svc.") {
        Some(i) if host.get(..i).is_some_and(|s| s.contains('.')) => host.get(..i)?,
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
