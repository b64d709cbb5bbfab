//! The request path: what the plugin does for each request, from request headers to a finished
//! span. Built once per configuration as a [`Tracer`] and shared by every request of the VM.

use crate::config::{Config, CustomTag, ExportProtocol, RoleSetting};
use crate::context::{Role, SpanContext, TraceFlags};
use crate::headers::HeaderMap;
use crate::host::Host;
use crate::ids::{IdGenerator, SpanId};
use crate::metrics::{Metric, Metrics};
use crate::naming;
use crate::node::{ListenerDirection, NodeInfo};
use crate::propagation::{self, request_id, Extracted};
use crate::resource;
use crate::sampling::{ParentInfo, Reason, RequestInfo, Sampler};
use crate::span::{AttrValue, Span, SpanKind, StatusCode};

const REQUEST_ID: &str = "x-request-id";
/// The tracestate key of OpenTelemetry's own entries (`ot=th:…;rv:…`).
const OT_KEY: &str = "ot";

/// Everything decided once per configuration.
#[derive(Debug)]
pub struct Tracer {
    pub config: Config,
    pub node: NodeInfo,
    pub service_name: String,
    pub resource: Vec<(String, AttrValue)>,
    sampler: Sampler,
    /// Custom tags whose value is known at configuration time (literal, environment).
    static_tags: Vec<(String, String)>,
    /// Custom tags read from request headers: (tag, header, default).
    header_tags: Vec<(String, String, Option<String>)>,
    record_spans: bool,
}

/// What a request keeps between its headers and its end, only when it is sampled.
#[derive(Debug, Clone)]
pub struct ActiveSpan {
    context: SpanContext,
    parent: Option<SpanId>,
    trace_state: String,
    start_unix_nanos: u64,
    /// The request's headers as they arrived, moved here rather than copied piece by piece: the
    /// span's attributes are read from them when it ends.
    headers: HeaderMap,
    /// The request id this proxy generated (or put in place of an unacceptable one); `None`
    /// when the incoming `x-request-id` was forwarded.
    generated_request_id: Option<String>,
}

impl Tracer {
    /// `env` resolves Istio `environment` custom tags (the proxy's environment variables).
    pub fn new(config: Config, node: NodeInfo, env: &dyn Fn(&str) -> Option<String>) -> Tracer {
        let service_name = naming::service_name(
            config.tracing_service_name,
            config.service_name.as_deref(),
            &node,
        );
        let resource = resource::build_resource(&node, &service_name, &config.resource_attributes);
        let mut static_tags = Vec::new();
        let mut header_tags = Vec::new();
        for (tag, source) in &config.custom_tags {
            match source {
                CustomTag::Literal { value } => static_tags.push((tag.clone(), value.clone())),
                CustomTag::Environment {
                    name,
                    default_value,
                } => {
                    if let Some(v) = env(name).or_else(|| default_value.clone()) {
                        static_tags.push((tag.clone(), v));
                    }
                }
                CustomTag::Header {
                    name,
                    default_value,
                } => header_tags.push((
                    tag.clone(),
                    name.to_ascii_lowercase(),
                    default_value.clone(),
                )),
            }
        }
        Tracer {
            sampler: Sampler::new(&config),
            record_spans: config.exporter.protocol != ExportProtocol::None,
            config,
            node,
            service_name,
            resource,
            static_tags,
            header_tags,
        }
    }

    /// The role of this proxy's span. `direction` gives the listener's direction, asked only
    /// when the role depends on it (not at gateways, not with `role` set).
    pub fn role(&self, direction: impl FnOnce() -> ListenerDirection) -> Role {
        match self.config.role {
            RoleSetting::Server => Role::Server,
            RoleSetting::Client => Role::Client,
            // Istio marks every gateway listener OUTBOUND, but a gateway is the server side of the
            // entry into the mesh.
            RoleSetting::Auto if self.node.is_gateway() => Role::Server,
            RoleSetting::Auto => match direction() {
                ListenerDirection::Outbound => Role::Client,
                ListenerDirection::Inbound | ListenerDirection::Unspecified => Role::Server,
            },
        }
    }

    /// Request headers arrived: extract, sample, and rewrite the context sent on. Returns the
    /// span to finish later when this request is sampled (and spans are exported).
    ///
    /// The span's role does not matter yet: what is sent on is the same on either side (a new
    /// span id, child of the incoming context). It is decided when the stream ends, and only
    /// for spans that are recorded (see [`Tracer::read_outcome`]).
    pub fn on_request_headers(
        &self,
        host: &dyn Host,
        ids: &mut IdGenerator,
        metrics: &Metrics,
    ) -> Option<ActiveSpan> {
        // The clock is a host call: read only when a rate cap needs it or a span starts.
        let clock = || host.now_unix_nanos();
        let headers = host.request_headers();
        let prop = &self.config.propagation;
        let extracted = propagation::extract(&headers, &prop.extract);
        // Counted only when the request really starts over (another format may have carried a
        // valid context).
        if extracted.invalid.is_some() && extracted.parent.is_none() {
            metrics.add_deferred(Metric::ContextRestarted, 1);
        }
        if extracted.tracestate_discarded.is_some() {
            metrics.add_deferred(Metric::TracestateDiscarded, 1);
        }
        propagation::log_discarded(&extracted);
        let Extracted {
            parent,
            mut tracestate,
            baggage,
            sampling_hint,
            debug,
            ..
        } = extracted;

        // W3C Trace Context §3.2.2.5.2: ids we generate are random, so the RANDOM flag is set;
        // for a continued trace the incoming flag is kept (it describes the trace id).
        let (trace_id, inherited_flags) = match parent {
            Some(p) => (p.trace_id, p.flags.known()),
            None => (ids.trace_id(), TraceFlags(TraceFlags::RANDOM)),
        };

        let header = |name: &str| headers.get(name);
        let method = header(":method").unwrap_or("");
        let path = header(":path").unwrap_or("");
        let authority = header(":authority").unwrap_or("");

        let incoming_ot = tracestate.get(OT_KEY).map(str::to_string);
        // An untrusted client chooses its trace id, hence its randomness: a continued trace gets
        // fresh explicit randomness (`ot=rv`) from us instead.
        let local_randomness =
            (!self.config.sampling.trust_incoming && parent.is_some()).then(|| ids.u64());
        let decision = self.sampler.decide(
            trace_id,
            &ParentInfo {
                sampled: sampling_hint,
                debug,
                ot: incoming_ot.as_deref(),
                local_randomness,
            },
            &RequestInfo {
                method,
                path,
                host: authority,
                headers: &headers,
            },
            if self.sampler.has_rate_cap() {
                clock()
            } else {
                0
            },
        );
        metrics.add_deferred(decision_metric(decision.reason, decision.sampled), 1);
        // OpenTelemetry tracestate handling: a modified entry moves to the front (W3C §3.5).
        if decision.ot != incoming_ot {
            match &decision.ot {
                Some(v) => tracestate.upsert_front(OT_KEY, v),
                None => tracestate.remove(OT_KEY),
            }
        }

        let context = SpanContext {
            trace_id,
            span_id: ids.span_id(),
            flags: inherited_flags.with_sampled(decision.sampled),
        };

        let generated_request_id = self.request_id(host, ids, metrics, header(REQUEST_ID));

        for (name, value) in propagation::inject(
            &context,
            &tracestate,
            baggage.as_deref(),
            &prop.inject,
            &prop.extract,
        ) {
            // Host calls cost more than this comparison: skip removing an absent header or
            // rewriting one that already holds exactly the value.
            let mut present = headers.get_all(name);
            let unchanged = match (&value, present.next(), present.next()) {
                (None, None, _) => true,
                (Some(v), Some(old), None) => v == old,
                _ => false,
            };
            if !unchanged {
                host.set_request_header(name, value.as_deref());
            }
        }

        if !(decision.sampled && self.record_spans) {
            return None;
        }
        Some(ActiveSpan {
            context,
            parent: parent.map(|p| p.span_id),
            trace_state: tracestate.header_value().unwrap_or_default(),
            start_unix_nanos: clock(),
            headers,
            generated_request_id,
        })
    }

    /// Forwards a trusted, well-formed `x-request-id` (`None`); otherwise generates a UUIDv4,
    /// sends it on and returns it (and counts a replaced one).
    fn request_id(
        &self,
        host: &dyn Host,
        ids: &mut IdGenerator,
        metrics: &Metrics,
        incoming: Option<&str>,
    ) -> Option<String> {
        if let Some(id) = incoming {
            if self.config.propagation.trust_incoming_request_id && request_id::is_acceptable(id) {
                return None;
            }
            metrics.add_deferred(Metric::RequestIdReplaced, 1);
        }
        let id = request_id::generate(ids);
        host.set_request_header(REQUEST_ID, Some(&id));
        Some(id)
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
        let role = self.role(|| {
            istio_cluster_direction(upstream_cluster.as_deref())
                .unwrap_or_else(|| ListenerDirection::read(host, xds))
        });
        let sidecar_inbound = role == Role::Server && self.node.is_sidecar();
        let status = host
            .response_header(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|c| *c != 0);
        Outcome {
            role,
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

    /// The stream ended: build the span. `outcome` is what the host reported about the response.
    pub fn finish(&self, active: ActiveSpan, outcome: Outcome, end_unix_nanos: u64) -> Span {
        let limits = &self.config.limits;
        let headers = &active.headers;
        let header = |name: &str| headers.get(name).unwrap_or("");
        let text = |s: &str| AttrValue::Str(s.to_string());
        let method = header(":method");
        let (path, _) = split_query(header(":path"));
        let kind = match outcome.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        };
        let mut span = Span::new(
            active.context,
            active.parent,
            active.trace_state,
            span_name(method, outcome.route_name.as_deref(), path),
            kind,
            active.start_unix_nanos,
            end_unix_nanos.max(active.start_unix_nanos),
        );
        // OpenTelemetry HTTP semantic conventions (semconv v1.26+ stable HTTP attributes).
        span.set_attribute("http.request.method", text(method), limits);
        span.set_attribute("url.path", text(path), limits);
        if let Some(scheme) = headers.get(":scheme").filter(|s| !s.is_empty()) {
            span.set_attribute("url.scheme", text(scheme), limits);
        }
        let (host_part, port) = split_authority(header(":authority"));
        if !host_part.is_empty() {
            span.set_attribute("server.address", text(host_part), limits);
        }
        if let Some(port) = port {
            span.set_attribute("server.port", AttrValue::Int(i64::from(port)), limits);
        }
        if let Some(code) = outcome.status {
            span.set_attribute(
                "http.response.status_code",
                AttrValue::Int(i64::from(code)),
                limits,
            );
        }
        let (status, message) = span_status(outcome.role, &outcome);
        if let Some(v) = outcome.protocol_version {
            span.set_attribute("network.protocol.version", AttrValue::Str(v), limits);
        }
        if let Some(ua) = headers.get("user-agent") {
            span.set_attribute("user_agent.original", text(ua), limits);
        }
        if let Some(cluster) = outcome.upstream_cluster {
            span.set_attribute("upstream_cluster", AttrValue::Str(cluster), limits);
        }
        // Istio's own tags, so spans look like those of Istio's tracer.
        let request_id = match active.generated_request_id {
            Some(id) => AttrValue::Str(id),
            None => text(header(REQUEST_ID)),
        };
        span.set_attribute("guid:x-request-id", request_id, limits);
        span.set_attribute("component", text("proxy"), limits);
        if !self.node.mesh_id.is_empty() {
            span.set_attribute("istio.mesh_id", text(&self.node.mesh_id), limits);
        }
        if !self.node.namespace.is_empty() {
            span.set_attribute("istio.namespace", text(&self.node.namespace), limits);
        }
        for (tag, value) in &self.static_tags {
            span.set_attribute(tag.clone(), text(value), limits);
        }
        for (tag, name, default) in &self.header_tags {
            if let Some(value) = headers.get(name).or(default.as_deref()) {
                span.set_attribute(tag.clone(), text(value), limits);
            }
        }
        span.status = status;
        span.status_message = message;
        span
    }
}

/// What the host knows about a finished stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Which side of the call the span describes.
    pub role: Role,
    /// Final HTTP status; `None` when no response was sent (reset, timeout).
    pub status: Option<u16>,
    /// `1.1`, `2`, … (OTel `network.protocol.version`).
    pub protocol_version: Option<String>,
    pub upstream_cluster: Option<String>,
    pub route_name: Option<String>,
    /// Envoy response flags / details, used as the status message on errors.
    pub details: Option<String>,
}

/// The direction of a sidecar listener from the name Istio gives the upstream cluster: inbound
/// clusters are `inbound|port|subset|host` (and `InboundPassthroughCluster`), outbound ones
/// `outbound|port|subset|host`, `PassthroughCluster` or `BlackHoleCluster`. `None` for names
/// Istio did not make.
fn istio_cluster_direction(cluster: Option<&str>) -> Option<ListenerDirection> {
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

/// OTel HTTP semantic conventions, "Status": a SERVER span is an error for 5xx only (4xx is the
/// client's fault), a CLIENT span for 4xx and 5xx; no response at all (reset) is an error.
fn span_status(role: Role, outcome: &Outcome) -> (StatusCode, String) {
    let error = match outcome.status {
        None | Some(0) => true,
        Some(code) if code >= 500 => true,
        Some(code) if code >= 400 => role == Role::Client,
        Some(_) => false,
    };
    if error {
        let message = outcome.details.clone().unwrap_or_default();
        (StatusCode::Error, message)
    } else {
        (StatusCode::Unset, String::new())
    }
}

fn decision_metric(reason: Reason, sampled: bool) -> Metric {
    match (reason, sampled) {
        (Reason::Parent, true) => Metric::SampledParent,
        (Reason::Parent, false) => Metric::NotSampledParent,
        (Reason::Percentage, true) => Metric::SampledPercentage,
        (Reason::Percentage, false) => Metric::NotSampledPercentage,
        (Reason::Rule, true) => Metric::SampledRule,
        (Reason::Rule, false) => Metric::NotSampledRule,
        (Reason::Probe, _) => Metric::NotSampledProbe,
        (Reason::Cap, _) => Metric::NotSampledCap,
        (Reason::Forced, _) => Metric::SampledForced,
    }
}

/// Route names Envoy and Istio give when nobody named the route: not worth a span name.
const GENERIC_ROUTES: [&str; 4] = [
    "default",
    "allow_any",
    "block_all",
    "InboundPassthroughCluster",
];

/// A route someone named (a VirtualService route name), not one Istio generated: generic names,
/// ports (`9080`), `host:port` virtual hosts and cluster-style names (`inbound|9080||`).
fn is_meaningful_route(route: &str) -> bool {
    !route.is_empty()
        && !GENERIC_ROUTES.contains(&route)
        && !route.bytes().all(|b| b.is_ascii_digit())
        && !route.contains(['|', ':'])
}

/// `{METHOD} {target}` (OTel HTTP span name): a named route if there is one, else the path with
/// id-like segments replaced by `{id}` — never the query string or raw ids (cardinality).
pub fn span_name(method: &str, route_name: Option<&str>, path: &str) -> String {
    let method = if method.is_empty() { "HTTP" } else { method };
    if let Some(route) = route_name.filter(|r| is_meaningful_route(r)) {
        return format!("{method} {route}");
    }
    let (path, _) = split_query(path);
    let mut name = String::with_capacity(method.len() + 1 + path.len());
    name.push_str(method);
    name.push(' ');
    if path.is_empty() || path == "/" {
        name.push('/');
        return name;
    }
    for segment in path.split('/').skip(1) {
        name.push('/');
        if looks_like_id(segment) {
            name.push_str("{id}");
        } else {
            name.push_str(segment);
        }
    }
    name
}

/// Numbers, UUIDs, long hex strings and long mixed tokens are ids, not route parts.
fn looks_like_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let hexish = segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    digits == segment.len()
        || (hexish && segment.len() >= 8 && digits > 0)
        || (segment.len() >= 16 && digits * 3 >= segment.len())
}

fn split_query(path: &str) -> (&str, &str) {
    match path.find(['?', '#']) {
        Some(i) => (path.get(..i).unwrap_or(path), path.get(i..).unwrap_or("")),
        None => (path, ""),
    }
}

/// `host[:port]`, `[v6]:port` → (host, port).
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests;
