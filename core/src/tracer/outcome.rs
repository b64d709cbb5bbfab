//! What the host knows about a stream that is ending, read only for spans that are recorded,
//! and what it makes of the span: its kind and its status.

use super::Tracer;
use crate::config::RoleSetting;
use crate::host::Host;
use crate::istio::cluster_direction;
use crate::node::ListenerDirection;
use crate::span::{SpanKind, StatusCode};

/// What the host knows about a finished stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Which side of the call the span describes.
    pub kind: SpanKind,
    /// Final HTTP status; `None` when no response was sent (reset, timeout).
    pub status: Option<u16>,
    /// `1.1`, `2`, … (OTel `network.protocol.version`).
    pub protocol_version: Option<String>,
    pub upstream_cluster: Option<String>,
    pub route_name: Option<String>,
    /// Envoy response flags / details, used as the status message on errors.
    pub details: Option<String>,
}

impl Tracer {
    /// The role of this proxy's span. `direction` gives the listener's direction, asked only
    /// when the role depends on it (not at gateways, not with `role` set).
    pub(crate) fn kind(&self, direction: impl FnOnce() -> ListenerDirection) -> SpanKind {
        match self.config.role {
            RoleSetting::Server => SpanKind::Server,
            RoleSetting::Client => SpanKind::Client,
            // Istio marks every gateway listener OUTBOUND, but a gateway is the server side of the
            // entry into the mesh.
            RoleSetting::Auto if self.node.is_gateway() => SpanKind::Server,
            RoleSetting::Auto => match direction() {
                ListenerDirection::Outbound => SpanKind::Client,
                ListenerDirection::Inbound | ListenerDirection::Unspecified => SpanKind::Server,
            },
        }
    }

    /// What the host knows about the stream that is ending, read for a recorded span only.
    ///
    /// Property reads are among the dearest host calls (each returns data through an allocation
    /// inside the VM), so each is made only where it can change the span:
    /// - the role: at a sidecar, Istio's name for the upstream cluster says which side this is
    ///   (`inbound|…` or `outbound|…`), and that name is read for `upstream_cluster` anyway; the
    ///   listener's direction is read only when the name does not tell;
    /// - the route name: Istio generates every route of a sidecar's inbound listener
    ///   (VirtualServices shape outbound and gateway traffic), so not for a sidecar's SERVER span.
    pub fn read_outcome(&self, host: &dyn Host) -> Outcome {
        let xds = self.node.xds;
        let text = |bytes: Option<Vec<u8>>| {
            bytes
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
        };
        let upstream_cluster = text(xds.read(host, "cluster_name"));
        let kind = self.kind(|| {
            cluster_direction(upstream_cluster.as_deref())
                .unwrap_or_else(|| ListenerDirection::read(host, xds))
        });
        let sidecar_inbound = kind == SpanKind::Server && self.node.is_sidecar();
        let status = host
            .response_header(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|c| *c != 0);
        Outcome {
            kind,
            status,
            protocol_version: text(host.property(&["request", "protocol"]))
                .map(|p| p.trim_start_matches("HTTP/").to_string()),
            upstream_cluster,
            route_name: if sidecar_inbound {
                None
            } else {
                text(xds.read(host, "route_name"))
            },
            // Only an error's status message uses the details.
            details: if status.is_none_or(|c| c >= 400) {
                text(host.property(&["response", "code_details"]))
            } else {
                None
            },
        }
    }
}

/// OTel HTTP semantic conventions, "Status": a SERVER span is an error for 5xx only (4xx is the
/// client's fault), a CLIENT span for 4xx and 5xx; no response at all (reset) is an error.
pub(super) fn span_status(kind: SpanKind, outcome: &Outcome) -> (StatusCode, String) {
    let error = match outcome.status {
        None | Some(0) => true,
        Some(code) if code >= 500 => true,
        Some(code) if code >= 400 => kind == SpanKind::Client,
        Some(_) => false,
    };
    if error {
        let message = outcome.details.clone().unwrap_or_default();
        (StatusCode::Error, message)
    } else {
        (StatusCode::Unset, String::new())
    }
}
