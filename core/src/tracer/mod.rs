//! The request path: what the plugin does for each request, from request headers to a finished
//! span. Built once per configuration as a [`Tracer`] and shared by every request of the VM.

use crate::config::{Config, ContextValue, CustomTag, ExportProtocol, WaypointSpans};
use crate::context::{SpanContext, TraceFlags};
use crate::headers::HeaderMap;
use crate::host::Host;
use crate::ids::{write_hex, IdGenerator, SpanId, TRACE_ID_LEN};
use crate::metrics::{Metric, Metrics};
use crate::naming;
use crate::node::NodeInfo;
use crate::propagation::{self, request_id, traceparent, Extracted};
use crate::resource;
use crate::sampling::capture::{CapturePolicy, CaptureReason};
use crate::sampling::{Decision, ParentInfo, Reason, RequestInfo, Sampler};
use crate::span::{AttrValue, Span, SpanKind};

mod attributes;
mod capture;
mod outcome;
mod waypoint;

use self::attributes::SpanRole;
pub(crate) use self::capture::Unsampled;
pub use self::outcome::Outcome;
use self::waypoint::CLIENT_MARK_KEY;

const REQUEST_ID: &str = "x-request-id";
/// The response header carrying the W3C trace context metric (w3c/trace-context
/// spec/21-http_response_header_format.md, "Trace Context Server Timing Metric Format", since
/// #560): a list-valued field (W3C Server Timing), so ours is appended to the response's own.
const SERVER_TIMING: &str = "server-timing";
/// The metric's name and the start of its description: `trace;desc=` + a traceparent-shaped
/// value (version `00`, trace-id, span-id of the server operation, flags). Unquoted, as the
/// spec's example: the value is a token.
const TRACE_METRIC: &str = "trace;desc=";
/// The header earlier drafts of the same section defined (up to 81d8c9a), replaced by the
/// metric; sent only for `propagation.traceResponseHeader`.
const TRACE_RESPONSE: &str = "traceresponse";
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
    capture: CapturePolicy,
    /// Custom tags whose value is known at configuration time (literal, environment).
    static_tags: Vec<(String, String)>,
    /// Custom tags read from request headers: (tag, header, default).
    header_tags: Vec<(String, String, Option<String>)>,
    /// The tags of Istio's tracer known once per configuration: Istio's service tags, Envoy's
    /// `node_id`, `zone`, `component` (see [`attributes::static_tags`]).
    istio_tags: Vec<(&'static str, String)>,
    /// A CLIENT child span per recorded request, whose id goes upstream (Envoy's
    /// `spawn_upstream_span`).
    spawn_upstream_span: bool,
    /// A waypoint recording what two sidecars would (`waypoint.spans: pair`): a CLIENT span
    /// for the source above its SERVER span for the destination.
    waypoint_pair: bool,
    record_spans: bool,
}

/// What a request keeps between its headers and its end.
#[derive(Debug, Default)]
pub struct RequestState {
    /// What is finished, or perhaps captured, when the stream ends; `None` when no span can be
    /// recorded (export off, or capture off for an unsampled request).
    pub pending: Option<Pending>,
    /// Headers returned to the caller (`server-timing`'s trace metric, `traceresponse`,
    /// `x-request-id`); empty (no allocation) unless configured, so nothing internal leaks by
    /// default.
    pub response_headers: Vec<(&'static str, String)>,
}

impl RequestState {
    /// Response headers arrived (from the upstream or a local reply): add ours. The trace metric
    /// joins whatever `server-timing` the response has (never replacing the app's metrics); the
    /// others replace a value the upstream may have set.
    pub fn on_response_headers(&self, host: &dyn Host) {
        for (name, value) in &self.response_headers {
            if *name == SERVER_TIMING {
                host.add_response_header(name, value);
                continue;
            }
            host.set_response_header(name, value);
        }
    }
}

#[derive(Debug, Clone)]
pub enum Pending {
    /// Sampled: the span will be recorded.
    Recorded(ActiveSpan),
    /// Not sampled, kept small in case it is captured when it ends.
    Unsampled(Unsampled),
}

impl Pending {
    /// The request is gRPC: its status comes with the response's trailers (or headers, for a
    /// trailers-only response), which an adapter may have to keep for the stream's end.
    pub fn is_grpc(&self) -> bool {
        match self {
            Pending::Recorded(active) => active
                .headers
                .get("content-type")
                .is_some_and(crate::grpc::is_grpc_content_type),
            Pending::Unsampled(unsampled) => unsampled.is_grpc(),
        }
    }

    /// The span of a recorded request; `None` for an unsampled one.
    pub fn into_recorded(self) -> Option<ActiveSpan> {
        match self {
            Pending::Recorded(active) => Some(active),
            Pending::Unsampled(_) => None,
        }
    }
}

/// The spans a finished request gives: this proxy's span; at a gateway (or with
/// `spawnUpstreamSpan`) its CLIENT child — the span the upstream sees as its parent; at a
/// waypoint (`waypoint.spans: pair`) the CLIENT span of the source workload, this span's
/// parent — and whether they were captured (captured spans never displace sampled ones in the
/// export queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub span: Span,
    pub upstream: Option<Span>,
    pub source: Option<Span>,
    pub captured: bool,
}

impl IntoIterator for Finished {
    type Item = Span;
    type IntoIter = std::iter::Chain<
        std::iter::Chain<std::option::IntoIter<Span>, std::iter::Once<Span>>,
        std::option::IntoIter<Span>,
    >;

    /// Parents first.
    fn into_iter(self) -> Self::IntoIter {
        self.source
            .into_iter()
            .chain(std::iter::once(self.span))
            .chain(self.upstream)
    }
}

/// Why a span was recorded when its request was not sampled by the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    /// Captured when it ended (`meshtrace.capture`).
    Captured(CaptureReason),
    /// An override rule sampled a trace its parent did not (`meshtrace.starts_mid_trace`).
    StartsMidTrace,
}

/// What a recorded request keeps between its headers and its end.
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
    /// when the incoming `x-request-id` was forwarded (or it is in `headers` already).
    generated_request_id: Option<String>,
    note: Option<Note>,
    /// The id of the CLIENT child span, sent upstream in place of this span's own.
    upstream_span_id: Option<SpanId>,
    /// At a waypoint: the id of the source's CLIENT span, this span's parent (`None` when the
    /// caller's proxy recorded that span itself).
    source_span_id: Option<SpanId>,
}

impl Tracer {
    /// The exporter this configuration asks for, under this proxy's resource (each adapter
    /// makes one per configuration).
    pub fn new_exporter(&self) -> crate::export::Exporter {
        crate::export::Exporter::new(
            &self.config.exporter,
            &self.config.limits,
            self.resource.clone(),
        )
    }

    /// The line each adapter logs once a configuration is in force.
    pub fn configured_summary(&self) -> String {
        let export = if self.config.exporter.protocol == ExportProtocol::None {
            "off"
        } else {
            self.config.exporter.cluster.as_str()
        };
        format!(
            "meshtrace configured: service {}, sampling {}%, export {export}",
            self.service_name,
            crate::config::percentage(self.config.random_sampling_percentage),
        )
    }

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
            istio_tags: attributes::static_tags(&node),
            spawn_upstream_span: config.spawn_upstream_span.unwrap_or(node.is_gateway()),
            waypoint_pair: node.is_waypoint() && config.waypoint.spans == WaypointSpans::Pair,
            sampler: Sampler::new(&config),
            capture: CapturePolicy::new(&config.sampling),
            record_spans: config.exporter.protocol != ExportProtocol::None,
            config,
            node,
            service_name,
            resource,
            static_tags,
            header_tags,
        }
    }

    /// Request headers arrived: the four steps below, in order, then the context is published
    /// (filter state, response headers, debug log). Returns what the request keeps until it
    /// ends: the span to finish when it is recorded, a small record in case it is captured
    /// otherwise (see [`Tracer::end`]).
    ///
    /// The span's kind does not matter yet: what is sent on is the same on either side (a new
    /// span id, child of the incoming context). It is decided when the stream ends, and only
    /// for spans that are recorded (see [`Tracer::read_outcome`]).
    pub fn on_request_headers(
        &self,
        host: &dyn Host,
        ids: &mut IdGenerator,
        metrics: &Metrics,
    ) -> RequestState {
        let headers = host.request_headers();
        let mut incoming = self.extract(&headers, metrics);
        let (context, decision) = self.decide(&headers, &mut incoming, host, ids, metrics);
        let incoming_request_id = headers.get(REQUEST_ID);
        let generated_request_id = self.request_id(host, ids, metrics, incoming_request_id);
        let recorded = decision.sampled && self.record_spans;
        // Envoy's `spawn_upstream_span` (`Router::Filter`, a child of the downstream span): the
        // upstream's parent is the CLIENT child, so a recorded request at a gateway takes two
        // span ids here. An unrecorded one sends its own: no span would carry a second id.
        let upstream_span_id = (recorded && self.spawn_upstream_span).then(|| ids.span_id());
        // A waypoint's CLIENT span for the source sits between the caller and this span, unless
        // the caller's proxy recorded it (its mark names our parent): the id this span sends
        // upstream stays its own. Taken for unsampled requests too, in case they are captured.
        let source_span_id = (self.waypoint_pair
            && self.record_spans
            && !waypoint::caller_recorded_client(
                &incoming.tracestate,
                incoming.parent.map(|p| p.span_id),
            ))
        .then(|| ids.span_id());
        // The id sent upstream is a CLIENT span we record: say so, for a waypoint downstream.
        if let Some(id) = upstream_span_id {
            incoming
                .tracestate
                .upsert_front(CLIENT_MARK_KEY, &waypoint::client_mark(id));
        }
        let sent = SpanContext {
            span_id: upstream_span_id.unwrap_or(context.span_id),
            ..context
        };
        let mut sent_traceparent = None;
        self.inject(host, &headers, &sent, &incoming, &mut sent_traceparent);

        let parent = incoming.parent.map(|p| p.span_id);
        let request_id = generated_request_id
            .as_deref()
            .or(incoming_request_id)
            .unwrap_or("");
        // Published: the span id the upstream received (an exported span's id when recorded).
        self.publish(host, &sent, sent_traceparent.as_ref(), parent, request_id);
        let response_headers = self.response_headers(&context, &sent, request_id);
        // No formatting unless the proxy's Wasm log level is debug (the adapter follows it).
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "request trace_id={} span_id={} parent_span_id={} sampled={} request_id={}",
                sent.trace_id.to_hex(),
                sent.span_id.to_hex(),
                parent.map(|p| p.to_hex()).unwrap_or_default(),
                decision.sampled,
                request_id
            );
        }

        let pending = if !self.record_spans {
            None
        } else if !decision.sampled {
            self.keep_unsampled(
                host,
                context,
                &incoming,
                headers,
                generated_request_id,
                &decision,
            )
            .map(|u| Pending::Unsampled(u.with_source_span(source_span_id)))
        } else {
            Some(Pending::Recorded(ActiveSpan {
                context,
                parent,
                trace_state: incoming.tracestate.header_value().unwrap_or_default(),
                start_unix_nanos: host.now_unix_nanos(),
                headers,
                generated_request_id,
                note: decision.starts_mid_trace.then_some(Note::StartsMidTrace),
                upstream_span_id,
                source_span_id,
            }))
        };
        RequestState {
            pending,
            response_headers,
        }
    }

    /// The stream ended: the spans to export, if any. A recorded request's spans are finished;
    /// an unsampled one is captured when it failed or was slow (and the capture cap allows).
    pub fn end(&self, host: &dyn Host, pending: Pending, metrics: &Metrics) -> Option<Finished> {
        match pending {
            Pending::Recorded(active) => {
                let outcome = self.read_outcome(host, &active);
                Some(self.finish(active, outcome, host.now_unix_nanos()))
            }
            Pending::Unsampled(unsampled) => self.capture(host, unsampled, metrics),
        }
    }

    /// Step 1: the incoming trace context, in the configured formats.
    fn extract(&self, headers: &HeaderMap, metrics: &Metrics) -> Extracted {
        let extracted = propagation::extract(headers, &self.config.propagation.extract);
        // Counted only when the request really starts over (another format may have carried a
        // valid context).
        if extracted.invalid.is_some() && extracted.parent.is_none() {
            metrics.add_deferred(Metric::ContextRestarted, 1);
        }
        if extracted.tracestate_discarded.is_some() {
            metrics.add_deferred(Metric::TracestateDiscarded, 1);
        }
        propagation::log_discarded(&extracted);
        extracted
    }

    /// Step 2: sampling, and this hop's span context (a new span id in the incoming trace, or a
    /// new trace). Updates the `ot` tracestate entry to what is sent on.
    fn decide(
        &self,
        headers: &HeaderMap,
        incoming: &mut Extracted,
        host: &dyn Host,
        ids: &mut IdGenerator,
        metrics: &Metrics,
    ) -> (SpanContext, Decision) {
        let parent = incoming.parent;
        // W3C Trace Context §3.2.2.5.2: ids we generate are random, so the RANDOM flag is set;
        // for a continued trace the incoming flag is kept (it describes the trace id).
        let (trace_id, inherited_flags) = match parent {
            Some(p) => (p.trace_id, p.flags.known()),
            None => (ids.trace_id(), TraceFlags(TraceFlags::RANDOM)),
        };
        let incoming_ot = incoming.tracestate.get(OT_KEY).map(str::to_string);
        // An untrusted client chooses its trace id, hence its randomness: a continued trace gets
        // fresh explicit randomness (`ot=rv`) from us instead.
        let local_randomness =
            (!self.config.sampling.trust_incoming && parent.is_some()).then(|| ids.u64());
        let decision = self.sampler.decide(
            trace_id,
            &ParentInfo {
                sampled: incoming.sampling_hint,
                debug: incoming.debug,
                ot: incoming_ot.as_deref(),
                local_randomness,
            },
            &RequestInfo {
                method: headers.get(":method").unwrap_or(""),
                path: headers.get(":path").unwrap_or(""),
                host: headers.get(":authority").unwrap_or(""),
                headers,
            },
            // The clock is a host call: read only when a rate cap needs it.
            if self.sampler.has_rate_cap() {
                host.now_unix_nanos()
            } else {
                0
            },
        );
        metrics.add_deferred(decision_metric(decision.reason, decision.sampled), 1);
        // W3C §3.5: an entry this proxy writes moves to the front; an unchanged one keeps its
        // place.
        if decision.ot != incoming_ot {
            match &decision.ot {
                Some(v) => incoming.tracestate.upsert_front(OT_KEY, v),
                None => incoming.tracestate.remove(OT_KEY),
            }
        }
        let context = SpanContext {
            trace_id,
            span_id: ids.span_id(),
            flags: inherited_flags.with_sampled(decision.sampled),
        };
        (context, decision)
    }

    /// Step 4: the context sent on, in the configured formats. Host calls cost more than a
    /// comparison: an absent header is not removed, one that already holds exactly the value is
    /// not rewritten. The `traceparent` written is kept in `sent_traceparent` (when injected):
    /// [`Tracer::publish`] takes the ids' hex from it rather than formatting them again.
    fn inject(
        &self,
        host: &dyn Host,
        headers: &HeaderMap,
        context: &SpanContext,
        incoming: &Extracted,
        sent_traceparent: &mut Option<[u8; traceparent::LEN]>,
    ) {
        let prop = &self.config.propagation;
        propagation::inject(
            context,
            &incoming.tracestate,
            incoming.baggage.as_deref(),
            &prop.inject,
            &prop.extract,
            |name, value| {
                let Some(v) = value else {
                    // A removal: most requests carry none of the other formats' headers.
                    if headers.contains(name) {
                        host.set_request_header(name, None);
                    }
                    return;
                };
                if name == propagation::TRACEPARENT {
                    *sent_traceparent = v.as_bytes().try_into().ok();
                }
                // Rewritten unless it holds exactly this value, once.
                let mut present = headers.get_all(name);
                let unchanged =
                    matches!((present.next(), present.next()), (Some(old), None) if v == old);
                if !unchanged {
                    host.set_request_header(name, Some(v));
                }
            },
        );
    }

    /// Step 3: forwards a trusted, well-formed `x-request-id` (`None`); otherwise generates a UUIDv4,
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

    /// The context as filter state (`propagation.publishContext`), one host call per value that
    /// exists: an access log prints `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%`, other
    /// filters read the same names. Set at request headers, before the router, so a local reply
    /// (404 no route, 503 no healthy upstream) is logged with them too. A request without a
    /// parent has no `parent_span_id` (the access log prints `-`).
    fn publish(
        &self,
        host: &dyn Host,
        context: &SpanContext,
        sent_traceparent: Option<&[u8; traceparent::LEN]>,
        parent: Option<SpanId>,
        request_id: &str,
    ) {
        let published = &self.config.propagation.publish_context;
        if published.is_empty() {
            return;
        }
        // The ids' hex: from the `traceparent` just sent (`00-{trace id}-{span id}-{flags}`, W3C
        // Trace Context §3.2), else written once into a buffer on the stack — no allocation.
        let mut written = [0u8; traceparent::LEN];
        let ids = match sent_traceparent {
            Some(sent) => sent,
            None => {
                traceparent::write(context, &mut written);
                &written
            }
        };
        let mut hex = [0u8; 2 * TRACE_ID_LEN];
        for value in published {
            let bytes: &[u8] = match value {
                ContextValue::TraceId => ids.get(traceparent::TRACE_ID_HEX).unwrap_or_default(),
                // The parent-id of the `traceparent` sent on is the span id the upstream got.
                ContextValue::SpanId => ids.get(traceparent::PARENT_ID_HEX).unwrap_or_default(),
                ContextValue::ParentSpanId => match parent {
                    Some(p) => write_hex(&mut hex, &p.0),
                    None => continue,
                },
                ContextValue::Sampled => {
                    if context.flags.sampled() {
                        b"true"
                    } else {
                        b"false"
                    }
                }
                ContextValue::RequestId => request_id.as_bytes(),
            };
            host.set_property(value.property(), bytes);
        }
    }

    /// Headers for the caller, computed now (the response callback then only writes them):
    /// - `server-timing: trace;desc=…` (`propagation.traceResponse`): this proxy's own span, the
    ///   "server operation" the caller called (the spec's span-id), with its trace id and flags;
    ///   browsers expose it to page scripts (`PerformanceServerTiming`), so real-user
    ///   monitoring joins the trace;
    /// - `traceresponse` (`propagation.traceResponseHeader`, the earlier drafts' header): the
    ///   context sent upstream, as it always was: the upstream's `traceparent`;
    /// - `x-request-id` (`propagation.responseRequestId`): the request's id.
    fn response_headers(
        &self,
        own: &SpanContext,
        sent: &SpanContext,
        request_id: &str,
    ) -> Vec<(&'static str, String)> {
        let prop = &self.config.propagation;
        let mut out = Vec::new();
        if prop.trace_response {
            let mut metric = String::with_capacity(TRACE_METRIC.len() + 55);
            metric.push_str(TRACE_METRIC);
            metric.push_str(&propagation::traceparent::format(own));
            out.push((SERVER_TIMING, metric));
        }
        if prop.trace_response_header {
            out.push((TRACE_RESPONSE, propagation::traceparent::format(sent)));
        }
        if prop.response_request_id && !request_id.is_empty() {
            out.push((REQUEST_ID, request_id.to_string()));
        }
        out
    }

    /// The stream ended: build the span, its CLIENT child when one was spawned, and at a
    /// waypoint the source's CLIENT span above it. `outcome` is what the host reported about
    /// the response.
    pub fn finish(&self, active: ActiveSpan, outcome: Outcome, end_unix_nanos: u64) -> Finished {
        let end = end_unix_nanos.max(active.start_unix_nanos);
        let name = self.span_name(&active, &outcome);
        let peers = outcome.peers.as_ref();
        // The source's CLIENT span needs a known source: without one it would carry the
        // waypoint's name, the hub service graphs should not show.
        let source = active
            .source_span_id
            .zip(peers.and_then(|p| p.source.as_ref()));
        let new_span = |span_id, parent, kind| {
            Span::new(
                SpanContext {
                    span_id,
                    ..active.context
                },
                parent,
                active.trace_state.clone(),
                name.clone(),
                kind,
                active.start_unix_nanos,
                end,
            )
        };
        let mut span = new_span(
            active.context.span_id,
            source.map(|(id, _)| id).or(active.parent),
            outcome.kind,
        );
        if self.waypoint_pair {
            span.resource = peers
                .and_then(|p| p.destination.as_ref())
                .map(|d| self.peer_resource(d));
        }
        self.set_attributes(&mut span, &active, &outcome, SpanRole::Downstream);
        self.note(&mut span, active.note);
        let upstream = active.upstream_span_id.map(|id| {
            let mut child = new_span(id, Some(active.context.span_id), SpanKind::Client);
            self.set_attributes(&mut child, &active, &outcome, SpanRole::Upstream);
            child
        });
        let source = source.map(|(id, peer)| {
            let mut client = new_span(id, active.parent, SpanKind::Client);
            client.resource = Some(self.peer_resource(peer));
            self.set_attributes(&mut client, &active, &outcome, SpanRole::Downstream);
            self.note(&mut client, active.note);
            client
        });
        Finished {
            span,
            upstream,
            source,
            captured: false,
        }
    }

    /// Why a span was recorded when its request was not sampled by the parent.
    fn note(&self, span: &mut Span, note: Option<Note>) {
        let limits = &self.config.limits;
        match note {
            Some(Note::Captured(reason)) => {
                let reason = AttrValue::Str(reason.as_str().to_string());
                span.set_attribute("meshtrace.capture", reason, limits);
            }
            Some(Note::StartsMidTrace) => {
                span.set_attribute("meshtrace.starts_mid_trace", AttrValue::Bool(true), limits);
            }
            None => {}
        }
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

#[cfg(test)]
mod tests;
