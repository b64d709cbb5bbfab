//! What an unsampled request keeps, and its capture when it ends (see [`crate::sampling::capture`]).
//!
//! Cost is paid by every unsampled request of the mesh, so it keeps a small record: the request's
//! header map as the host handed it over (moved, not copied — a captured span's attributes are
//! read from it, as a sampled one's), and reads the clock at its start only when a latency
//! threshold applies to it. When it ends, the response status is read (one host call) and more
//! only when the status does not settle it. A captured request — a few per second at most — then
//! pays what a sampled one pays: the outcome, and its start from Envoy's `request.time` when the
//! clock was not read. The headers are kept rather than read again at the end: the Wasm adapter
//! ends a stream in `proxy_on_done`, where Envoy no longer shows the request's headers
//! (`Context::decodeHeaders` in `source/extensions/common/wasm/context.cc` forgets them once the
//! filter continues).

use super::{ActiveSpan, Finished, Note, Tracer};
use crate::context::SpanContext;
use crate::grpc::is_grpc_content_type;
use crate::headers::HeaderMap;
use crate::host::{Host, StreamFact};
use crate::ids::SpanId;
use crate::metrics::{Metric, Metrics};
use crate::propagation::Extracted;
use crate::sampling::capture::{CaptureReason, ResponseReads};
use crate::sampling::Decision;
use crate::span::SpanKind;

/// What an unsampled request keeps until it ends: enough to record its span if it is captured.
#[derive(Debug, Clone)]
pub struct Unsampled {
    context: SpanContext,
    parent: Option<SpanId>,
    /// Empty (no allocation) for the many requests without `tracestate`.
    trace_state: String,
    /// The request's headers as they arrived (the host's own buffer, kept).
    headers: HeaderMap,
    /// The request id this proxy generated, as [`ActiveSpan`] keeps it.
    generated_request_id: Option<String>,
    /// The request is gRPC (its status is in `response.grpc_status`).
    grpc: bool,
    /// `(start, threshold)` when latency capture applies: the clock read at the start.
    latency: Option<(u64, u64)>,
    /// At a waypoint: the id of the source's CLIENT span, should this one be captured.
    source_span_id: Option<SpanId>,
}

impl Unsampled {
    pub(super) fn with_source_span(self, source_span_id: Option<SpanId>) -> Unsampled {
        Unsampled {
            source_span_id,
            ..self
        }
    }

    /// The request is gRPC (Envoy's test: [`is_grpc_content_type`]).
    pub(super) fn is_grpc(&self) -> bool {
        self.grpc
    }
}

impl Tracer {
    /// The record an unsampled request keeps; `None` when it cannot be captured.
    pub(super) fn keep_unsampled(
        &self,
        host: &dyn Host,
        context: SpanContext,
        incoming: &Extracted,
        headers: HeaderMap,
        generated_request_id: Option<String>,
        decision: &Decision,
    ) -> Option<Unsampled> {
        let latency = decision.capture_slower_than;
        if !(self.capture.captures_errors() || latency.is_some()) {
            return None;
        }
        Some(Unsampled {
            context,
            parent: incoming.parent.map(|p| p.span_id),
            trace_state: incoming.tracestate.header_value().unwrap_or_default(),
            grpc: headers
                .get("content-type")
                .is_some_and(is_grpc_content_type),
            headers,
            generated_request_id,
            latency: latency.map(|threshold| (host.now_unix_nanos(), threshold)),
            source_span_id: None,
        })
    }

    /// An unsampled request ended: its span when it failed or was slow and the cap allows.
    pub(super) fn capture(
        &self,
        host: &dyn Host,
        unsampled: Unsampled,
        metrics: &Metrics,
    ) -> Option<Finished> {
        let end = unsampled.latency.map(|_| host.now_unix_nanos());
        // Read once, for the decision and for the span.
        let status = self
            .capture
            .captures_errors()
            .then(|| host.response_status());
        let reason = if self.is_capturable_error(host, &unsampled, status.flatten()) {
            CaptureReason::Error
        } else {
            match (unsampled.latency, end) {
                (Some((start, threshold)), Some(end)) if end.saturating_sub(start) > threshold => {
                    CaptureReason::Latency
                }
                _ => return None,
            }
        };
        let end = end.unwrap_or_else(|| host.now_unix_nanos());
        if !self.capture.admit(end) {
            metrics.add_deferred(Metric::CaptureCapped, 1);
            return None;
        }
        metrics.add_deferred(
            match reason {
                CaptureReason::Error => Metric::SpansCapturedError,
                CaptureReason::Latency => Metric::SpansCapturedLatency,
            },
            1,
        );
        let start = match unsampled.latency {
            Some((start, _)) => start,
            None => host
                .int_fact(StreamFact::RequestStartTime)
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(end),
        };
        let active = ActiveSpan {
            context: unsampled.context,
            parent: unsampled.parent,
            trace_state: unsampled.trace_state,
            start_unix_nanos: start,
            headers: unsampled.headers,
            generated_request_id: unsampled.generated_request_id,
            note: Some(Note::Captured(reason)),
            // Unsampled requests send their own span id upstream: no CLIENT child to record.
            upstream_span_id: None,
            source_span_id: unsampled.source_span_id,
        };
        let outcome = self.read_outcome_after_status(host, &active, status);
        Some(Finished {
            captured: true,
            ..self.finish(active, outcome, end)
        })
    }

    /// Error capture's decision, reading the response one fact at a time (`status`: the
    /// `:status` read once for this and the span). Not the span's status:
    /// [`crate::sampling::capture::CapturePolicy::is_capturable`] says how they differ.
    fn is_capturable_error(
        &self,
        host: &dyn Host,
        unsampled: &Unsampled,
        status: Option<u16>,
    ) -> bool {
        if !self.capture.captures_errors() {
            return false;
        }
        self.capture.is_capturable(&ResponseReads {
            status,
            grpc_status: &|| {
                if unsampled.grpc {
                    host.int_fact(StreamFact::GrpcStatus)
                        .and_then(|c| u32::try_from(c).ok())
                } else {
                    None
                }
            },
            response_flags: &|| {
                host.int_fact(StreamFact::ResponseFlags)
                    .and_then(|f| u64::try_from(f).ok())
                    .unwrap_or(0)
            },
            // Only for a `clientStatuses` status (opt-in, then capped): the outcome is read again
            // for the span rather than kept.
            is_client: &|| self.read_kind(host).0 == SpanKind::Client,
        })
    }
}

#[cfg(test)]
mod tests;
