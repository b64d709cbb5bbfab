//! The request path: what the plugin does for each request, from request headers to a finished
//! span. Built once per configuration as a [`Tracer`] and shared by every request of the VM.

use crate::config::{Config, CustomTag, ExportProtocol};
use crate::context::{SpanContext, TraceFlags};
use crate::headers::HeaderMap;
use crate::host::Host;
use crate::ids::{IdGenerator, SpanId};
use crate::metrics::{Metric, Metrics};
use crate::naming;
use crate::node::NodeInfo;
use crate::propagation::{self, request_id, Extracted};
use crate::resource;
use crate::sampling::{ParentInfo, Reason, RequestInfo, Sampler};
use crate::span::{AttrValue, Span, SpanKind};

mod attributes;
mod outcome;

pub use self::outcome::{
    grpc_code_name, is_error, is_grpc_content_type, GrpcOutcome, Outcome, GRPC_OK,
};

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
    /// The tags of Istio's tracer known once per configuration: Istio's service tags, Envoy's
    /// `node_id`, `zone`, `component` (see [`attributes::static_tags`]).
    istio_tags: Vec<(&'static str, String)>,
    /// A CLIENT child span per recorded request, whose id goes upstream (Envoy's
    /// `spawn_upstream_span`).
    spawn_upstream_span: bool,
    record_spans: bool,
}

/// The spans a finished request gives: this proxy's span, and at a gateway (or with
/// `spawnUpstreamSpan`) its CLIENT child — the span the upstream sees as its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub span: Span,
    pub upstream: Option<Span>,
}

impl IntoIterator for Finished {
    type Item = Span;
    type IntoIter = std::iter::Chain<std::iter::Once<Span>, std::option::IntoIter<Span>>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.span).chain(self.upstream)
    }
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
    /// The id of the CLIENT child span, sent upstream in place of this span's own.
    upstream_span_id: Option<SpanId>,
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
            istio_tags: attributes::static_tags(&node),
            spawn_upstream_span: config.spawn_upstream_span.unwrap_or(node.is_gateway()),
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

    /// Request headers arrived: the four steps below, in order. Returns the span to finish
    /// later when this request is recorded.
    ///
    /// The span's kind does not matter yet: what is sent on is the same on either side (a new
    /// span id, child of the incoming context). It is decided when the stream ends, and only
    /// for spans that are recorded (see [`Tracer::read_outcome`]).
    pub fn on_request_headers(
        &self,
        host: &dyn Host,
        ids: &mut IdGenerator,
        metrics: &Metrics,
    ) -> Option<ActiveSpan> {
        let headers = host.request_headers();
        let mut incoming = self.extract(&headers, metrics);
        let (context, sampled) = self.decide(&headers, &mut incoming, host, ids, metrics);
        let generated_request_id = self.request_id(host, ids, metrics, headers.get(REQUEST_ID));
        let recorded = sampled && self.record_spans;
        // Envoy's `spawn_upstream_span` (`Router::Filter`, a child of the downstream span): the
        // upstream's parent is the CLIENT child, so a recorded request at a gateway takes two
        // span ids here. An unrecorded one sends its own: no span would carry a second id.
        let upstream_span_id = (recorded && self.spawn_upstream_span).then(|| ids.span_id());
        let sent = SpanContext {
            span_id: upstream_span_id.unwrap_or(context.span_id),
            ..context
        };
        self.inject(host, &headers, &sent, &incoming);

        if !recorded {
            return None;
        }
        Some(ActiveSpan {
            context,
            parent: incoming.parent.map(|p| p.span_id),
            trace_state: incoming.tracestate.header_value().unwrap_or_default(),
            start_unix_nanos: host.now_unix_nanos(),
            headers,
            generated_request_id,
            upstream_span_id,
        })
    }

    /// Step 1: the incoming trace context, in the configured formats.
    fn extract(&self, headers: &HeaderMap, metrics: &Metrics) -> Extracted {
        let extracted = propagation::extract(headers, &self.config.propagation.extract);
        // Counted only when the request really starts over (another format may have carried a
        // valid context).
        if extracted.invalid.is_some() && extracted.parent.is_none() {
            metrics.add_deferred(Metric::ContextRestarted, 1);
        }
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
    ) -> (SpanContext, bool) {
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
        (context, decision.sampled)
    }

    /// Step 4: the context sent on, in the configured formats. Host calls cost more than a
    /// comparison: an absent header is not removed, one that already holds exactly the value is
    /// not rewritten.
    fn inject(
        &self,
        host: &dyn Host,
        headers: &HeaderMap,
        context: &SpanContext,
        incoming: &Extracted,
    ) {
        let prop = &self.config.propagation;
        for (name, value) in propagation::inject(
            context,
            &incoming.tracestate,
            incoming.baggage.as_deref(),
            &prop.inject,
            &prop.extract,
        ) {
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

    /// The stream ended: build the span, and its CLIENT child when one was spawned. `outcome`
    /// is what the host reported about the response.
    pub fn finish(&self, active: ActiveSpan, outcome: Outcome, end_unix_nanos: u64) -> Finished {
        let end = end_unix_nanos.max(active.start_unix_nanos);
        let name = self.span_name(&active, &outcome);
        let mut span = Span::new(
            active.context,
            active.parent,
            active.trace_state.clone(),
            name.clone(),
            outcome.kind,
            active.start_unix_nanos,
            end,
        );
        self.set_attributes(&mut span, &active, &outcome, true);
        let upstream = active.upstream_span_id.map(|id| {
            let mut child = Span::new(
                SpanContext {
                    span_id: id,
                    ..active.context
                },
                Some(active.context.span_id),
                active.trace_state.clone(),
                name,
                SpanKind::Client,
                active.start_unix_nanos,
                end,
            );
            self.set_attributes(&mut child, &active, &outcome, false);
            child
        });
        Finished { span, upstream }
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
