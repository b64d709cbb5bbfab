//! What the host knows about a stream that is ending, read only for spans that are recorded,
//! and what it makes of the span: its kind, its status, whether it is an error.

use super::waypoint::Peers;
use super::{ActiveSpan, Tracer};
use crate::config::{RoleSetting, SpanNameMode};
use crate::grpc::{self, is_grpc_content_type, OK as GRPC_OK};
use crate::host::{FactSet, Host, StreamFact};
use crate::istio::{cluster_direction, FLAG_NO_ROUTE};
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
    /// Envoy's response code details (`via_upstream`, `route_not_found`, …), read for an error
    /// or a 4xx only.
    pub details: Option<String>,
    /// Envoy's response flags (`response.flags`, bit order of `CoreResponseFlag`).
    pub response_flags: u64,
    /// `Some` for a gRPC request (Envoy's test: [`crate::grpc::is_grpc_content_type`]).
    pub grpc: Option<GrpcOutcome>,
    /// The downstream peer, `ip:port` (`source.address`).
    pub downstream_address: Option<String>,
    /// The upstream host Envoy picked, `ip:port` (`upstream.address`).
    pub upstream_address: Option<String>,
    /// Request and response body bytes (`request.size`, `response.size`), read only for the
    /// legacy `request_size`/`response_size` tags (`attributes.istioCompat`).
    pub request_size: Option<i64>,
    pub response_size: Option<i64>,
    /// At a waypoint: who the request came from and went to.
    pub peers: Option<Peers>,
}

/// The end of a gRPC call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcOutcome {
    /// Final gRPC status (`response.grpc_status`: from the trailers, a trailers-only response,
    /// or mapped from the HTTP status by Envoy); `None` when the stream ended without one.
    pub status: Option<u32>,
    /// `grpc-message`, read only for a non-OK status.
    pub message: Option<String>,
}

/// Whether the span of `kind` for `outcome` is an error — the one rule for span status, for
/// `error.type`, and for anyone who needs to know (error capture at any sampling rate).
///
/// - gRPC (OTel semantic conventions, RPC spans, "gRPC status"): a CLIENT span is an error for
///   any status but OK; a SERVER span only for UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
///   INTERNAL, UNAVAILABLE and DATA_LOSS (the others are the caller's doing); no status at all
///   (the stream was reset) is an error.
/// - HTTP (OTel semantic conventions, HTTP spans, "Status"): a SERVER span for 5xx only (4xx is
///   the client's fault), a CLIENT span for 4xx and 5xx; no response at all is an error.
pub(crate) fn is_error(kind: SpanKind, outcome: &Outcome) -> bool {
    if let Some(grpc) = &outcome.grpc {
        return match grpc.status {
            None => true,
            Some(GRPC_OK) => false,
            Some(code) => kind == SpanKind::Client || grpc::is_server_fault(code),
        };
    }
    match outcome.status {
        None | Some(0) => true,
        Some(code) if code >= 500 => true,
        Some(code) if code >= 400 => kind == SpanKind::Client,
        Some(_) => false,
    }
}

impl Outcome {
    /// Envoy answered by itself (a local reply: no route, no healthy upstream, rate limited,
    /// RBAC denied, …) rather than passing on the upstream's answer.
    pub(crate) fn is_local_reply(&self) -> bool {
        self.response_flags != 0 || self.details.as_deref().is_some_and(|d| d != "via_upstream")
    }

    /// Envoy's `error` tag (`HttpTracerUtility::setCommonTags`: no response or 5xx;
    /// `addGrpcResponseTags`: a gRPC status meaning the server failed).
    pub(super) fn envoy_error_tag(&self) -> bool {
        let http = match self.status {
            None | Some(0) => true,
            Some(code) => code >= 500,
        };
        http || self
            .grpc
            .as_ref()
            .and_then(|g| g.status)
            .is_some_and(grpc::is_envoy_error)
    }

    /// OTel `error.type`: the gRPC status name, the HTTP status as a string, or — no response
    /// at all — Envoy's reason (response code details, else the response flags). Also set on a
    /// SERVER span's 4xx that Envoy answered itself (NR 404, RL 429, RBAC 403), so the reason is
    /// on the span though its status stays unset.
    pub(super) fn error_type(&self, kind: SpanKind) -> Option<String> {
        let error = is_error(kind, self);
        let envoys_own_4xx = self.is_local_reply() && self.status.is_some_and(|c| c >= 400);
        if !(error || envoys_own_4xx) {
            return None;
        }
        if let Some(code) = self.grpc.as_ref().and_then(|g| g.status).filter(|_| error) {
            return Some(grpc::code_name(code).map_or_else(|| code.to_string(), str::to_string));
        }
        match self.status.filter(|c| *c != 0) {
            Some(code) => Some(code.to_string()),
            None => Some(match &self.details {
                Some(d) => d.clone(),
                None if self.response_flags != 0 => {
                    crate::istio::response_flags_short(self.response_flags)
                }
                None => "_OTHER".to_string(),
            }),
        }
    }

    /// Envoy answered 404 because no route matched: the request's path names nothing.
    pub(super) fn no_route(&self) -> bool {
        self.response_flags & FLAG_NO_ROUTE != 0
    }
}

impl Tracer {
    /// The role of this proxy's span. `direction` gives the listener's direction, asked only
    /// when the role depends on it (not at gateways, not with `role` set).
    pub(crate) fn kind(&self, direction: impl FnOnce() -> ListenerDirection) -> SpanKind {
        match self.config.role {
            RoleSetting::Server => SpanKind::Server,
            RoleSetting::Client => SpanKind::Client,
            // Istio marks every gateway listener OUTBOUND, but a gateway is the server side of the
            // entry into the mesh. A waypoint serves the destination in its INBOUND internal
            // listener (`listener_waypoint.go` `buildWaypointInternal`); its source's CLIENT span
            // is a span of its own (`waypoint.spans`).
            RoleSetting::Auto if self.node.is_gateway() || self.node.is_waypoint() => {
                SpanKind::Server
            }
            RoleSetting::Auto => match direction() {
                ListenerDirection::Outbound => SpanKind::Client,
                ListenerDirection::Inbound | ListenerDirection::Unspecified => SpanKind::Server,
            },
        }
    }

    /// The span's kind, and the upstream cluster's name that told it (read once, kept for
    /// `upstream_cluster`).
    pub(super) fn read_kind(&self, host: &dyn Host) -> (SpanKind, Option<String>) {
        let upstream_cluster = host.text_fact(StreamFact::UpstreamCluster);
        let kind = self.kind_from_cluster(host, upstream_cluster.as_deref());
        (kind, upstream_cluster)
    }

    /// The span's kind once the upstream cluster is known; the listener's direction is asked
    /// only when the cluster's name does not tell.
    fn kind_from_cluster(&self, host: &dyn Host, upstream_cluster: Option<&str>) -> SpanKind {
        self.kind(|| {
            cluster_direction(upstream_cluster).unwrap_or_else(|| ListenerDirection::read(host))
        })
    }

    /// What the host knows about the stream that is ending, read for a recorded span only.
    ///
    /// Property reads are among the dearest host calls (each returns data through an allocation
    /// inside the VM), so each is made only where it can change the span:
    /// - the role: at a sidecar, Istio's name for the upstream cluster says which side this is
    ///   (`inbound|…` or `outbound|…`), and that name is read for `upstream_cluster` anyway; the
    ///   listener's direction is read only when the name does not tell;
    /// - the route name: only when it can name the span (`spanName` `route` or `templatedPath`),
    ///   and not for a sidecar's SERVER span (Istio generates every inbound route);
    /// - the response code details: for an error or a 4xx only;
    /// - the upstream address: only when there is an upstream cluster;
    /// - the body sizes: only for the legacy tags (`attributes.istioCompat`), and the request's
    ///   not when its `content-length` tells (Envoy's `request.size` is that header when present);
    /// - the gRPC status: for gRPC requests only; its message for a non-OK status only.
    ///
    /// A host that answers facts at once ([`Host::answers_facts_at_once`]: the Wasm adapter on an
    /// Envoy with CEL) is asked for all of them — the response status included — in one set.
    pub(crate) fn read_outcome(&self, host: &dyn Host, active: &ActiveSpan) -> Outcome {
        let status = (!host.answers_facts_at_once()).then(|| host.response_status());
        self.read_outcome_after_status(host, active, status)
    }

    /// [`Tracer::read_outcome`] with the response's status when it is known already (error
    /// capture read it: one data read fewer for a captured request); `None`: ask it with the
    /// other facts.
    pub(super) fn read_outcome_after_status(
        &self,
        host: &dyn Host,
        active: &ActiveSpan,
        status: Option<Option<u16>>,
    ) -> Outcome {
        let at_once = host.answers_facts_at_once();
        let status = match status {
            Some(known) => Some(known),
            None if at_once => None,
            None => Some(host.response_status()),
        };
        let compat = self.config.attributes.istio_compat;
        let headers = &active.headers;
        let grpc_request = headers
            .get("content-type")
            .is_some_and(is_grpc_content_type);
        let request_length = headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<i64>().ok());
        // The facts every recorded span may carry, asked together (an adapter may answer them in
        // one crossing); those that depend on an answer are asked after it — unless the host
        // answers any set at once, when they are asked with the rest.
        let known_error = status.map(|s| s.filter(|c| *c != 0).is_none_or(|c| c >= 400));
        let wanted = FactSet::EMPTY
            .with(StreamFact::UpstreamCluster)
            .with(StreamFact::Protocol)
            .with(StreamFact::ResponseFlags)
            .with(StreamFact::DownstreamAddress)
            .with_if(StreamFact::ResponseCode, status.is_none())
            .with_if(StreamFact::ResponseCodeDetails, known_error.unwrap_or(true))
            .with_if(StreamFact::GrpcStatus, grpc_request)
            .with_if(StreamFact::RequestSize, compat && request_length.is_none())
            .with_if(StreamFact::ResponseSize, compat)
            .with_if(StreamFact::UpstreamAddress, at_once)
            .with_if(StreamFact::RouteName, at_once && self.names_from_route())
            .with_if(
                StreamFact::ListenerDirection,
                at_once
                    && self
                        .end_of_stream_facts()
                        .contains(StreamFact::ListenerDirection),
            );
        let mut facts = host.stream_facts(wanted);
        let status = status
            .unwrap_or_else(|| {
                facts
                    .int(StreamFact::ResponseCode)
                    .and_then(|c| u16::try_from(c).ok())
            })
            .filter(|c| *c != 0);
        let upstream_cluster = facts.take_text(StreamFact::UpstreamCluster);
        let kind = if at_once {
            self.kind(|| {
                cluster_direction(upstream_cluster.as_deref()).unwrap_or_else(|| {
                    ListenerDirection::from_int(facts.int(StreamFact::ListenerDirection))
                })
            })
        } else {
            self.kind_from_cluster(host, upstream_cluster.as_deref())
        };
        let sidecar_inbound = kind == SpanKind::Server && self.node.is_sidecar();
        let peers = self
            .node
            .is_waypoint()
            .then(|| self.read_peers(host, upstream_cluster.as_deref()));
        let grpc = grpc_request.then(|| {
            let status = facts
                .int(StreamFact::GrpcStatus)
                .and_then(|c| u32::try_from(c).ok());
            let message = status.filter(|c| *c != GRPC_OK).and_then(|_| {
                host.response_trailer("grpc-message")
                    .or_else(|| host.response_header("grpc-message"))
                    .filter(|m| !m.is_empty())
            });
            GrpcOutcome { status, message }
        });
        Outcome {
            kind,
            status,
            protocol_version: facts.take_text(StreamFact::Protocol).map(|p| {
                match p.strip_prefix("HTTP/") {
                    Some(version) => version.to_string(),
                    None => p,
                }
            }),
            // Not for a sidecar's SERVER span: Istio generates every inbound route.
            route_name: if !self.names_from_route() || sidecar_inbound {
                None
            } else if at_once {
                facts.take_text(StreamFact::RouteName)
            } else {
                host.text_fact(StreamFact::RouteName)
            },
            // Only for an error or a 4xx (asked with the rest when the status came with them).
            details: facts
                .take_text(StreamFact::ResponseCodeDetails)
                .filter(|_| status.is_none_or(|c| c >= 400)),
            response_flags: facts
                .int(StreamFact::ResponseFlags)
                .and_then(|f| u64::try_from(f).ok())
                .unwrap_or(0),
            grpc,
            downstream_address: facts.take_text(StreamFact::DownstreamAddress),
            upstream_address: if upstream_cluster.is_none() {
                None
            } else if at_once {
                facts.take_text(StreamFact::UpstreamAddress)
            } else {
                host.text_fact(StreamFact::UpstreamAddress)
            },
            upstream_cluster,
            request_size: if compat {
                request_length.or_else(|| facts.int(StreamFact::RequestSize))
            } else {
                None
            },
            response_size: facts.int(StreamFact::ResponseSize),
            peers,
        }
    }

    /// Every stream fact [`Tracer::read_outcome`] may ask a host that answers facts at once,
    /// with this configuration: what an adapter prepares its one read for (the Wasm adapter
    /// compiles it into a CEL expression). The waypoint's peers are asked on their own.
    pub fn end_of_stream_facts(&self) -> FactSet {
        let compat = self.config.attributes.istio_compat;
        let direction_may_tell = self.config.role == RoleSetting::Auto
            && !(self.node.is_gateway() || self.node.is_waypoint());
        FactSet::EMPTY
            .with(StreamFact::UpstreamCluster)
            .with(StreamFact::Protocol)
            .with(StreamFact::ResponseFlags)
            .with(StreamFact::DownstreamAddress)
            .with(StreamFact::ResponseCode)
            .with(StreamFact::ResponseCodeDetails)
            .with(StreamFact::GrpcStatus)
            .with(StreamFact::UpstreamAddress)
            .with_if(StreamFact::RequestSize, compat)
            .with_if(StreamFact::ResponseSize, compat)
            .with_if(StreamFact::RouteName, self.names_from_route())
            .with_if(StreamFact::ListenerDirection, direction_may_tell)
    }

    /// The route's name can name the span (`spanName` `route` or `templatedPath`).
    fn names_from_route(&self) -> bool {
        matches!(
            self.config.span_name,
            SpanNameMode::Route | SpanNameMode::TemplatedPath
        )
    }
}

/// The span's status: Error when [`is_error`] says so, with Envoy's reason (the gRPC message,
/// else the response code details) as its message.
pub(super) fn span_status(kind: SpanKind, outcome: &Outcome) -> (StatusCode, String) {
    if !is_error(kind, outcome) {
        return (StatusCode::Unset, String::new());
    }
    let message = outcome
        .grpc
        .as_ref()
        .and_then(|g| g.message.clone())
        .or_else(|| outcome.details.clone())
        .unwrap_or_default();
    (StatusCode::Error, message)
}
