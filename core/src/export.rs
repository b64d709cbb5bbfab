//! OTLP export from a worker VM: a bounded queue of encoded spans, batches sent through the
//! Envoy cluster of the collector — a full batch as soon as it is full, a partial one on the root
//! context's tick — and retries for the failures the OTLP specification calls retryable
//! ("OTLP/HTTP Response", "OTLP/gRPC Response").
//!
//! Tracing must never hurt traffic, so nothing here blocks a request or grows without bound:
//! the queue drops its oldest spans when full, at most [`sender::MAX_IN_FLIGHT`] requests are
//! outstanding, at most [`sender::MAX_RETRY_BATCHES`] batches wait for a retry, and every span
//! that does not reach the collector is counted by reason.
//!
//! The parts, as OpenTelemetry's SDK divides them (its batch span processor owns the queue and
//! the schedule, its exporter sends a batch and reports how it went):
//!
//! ```text
//!  Tracer::end ─ span ─▶ Exporter: the processor (when a batch leaves; retirement)
//!                          │ encoded once (otlp::BatchEncoder; PeerResources: the
//!                          │ resources of other services)
//!                          ▼
//!                        SpanQueue ── next_batch ──▶ Sender ── Host::dispatch ──▶ collector
//!                        (sampled lane, captured      (in flight, retries,
//!                         lane, their bytes)           back-off, ExportResponse)
//! ```
//!
//! [`ExportSettings`] are derived once per configuration and read by all three.

mod encoded;
mod queue;
mod resources;
mod response;
mod sender;
mod settings;

pub use encoded::EncodedSpan;
pub use resources::MAX_PEER_RESOURCES;
pub use response::{ExportResponse, MAX_RESPONSE_BODY};

use crate::config::{ExporterConfig, LimitsConfig};
use crate::host::Host;
use crate::metrics::{Metric, Metrics};
use crate::otlp::{self, BatchEncoder, InstrumentationScope};
use crate::span::{AttrValue, Span};
use queue::{Queued, SpanQueue};
use resources::PeerResources;
use sender::Sender;
use settings::ExportSettings;
use std::time::Duration;

/// The export pipeline of a worker VM: what OpenTelemetry's SDK calls the batch span processor
/// (queue, schedule) with its exporter (the [`Sender`]) behind it.
#[derive(Debug)]
pub struct Exporter {
    settings: ExportSettings,
    encoder: BatchEncoder,
    peers: PeerResources,
    queue: SpanQueue,
    sender: Sender,
    /// When a partial batch last left on the flush schedule (or the schedule found none).
    last_flush: Option<u64>,
}

impl Exporter {
    pub fn new(
        config: &ExporterConfig,
        limits: &LimitsConfig,
        resource: Vec<(String, AttrValue)>,
    ) -> Exporter {
        let scope = InstrumentationScope {
            name: "meshtrace".to_string(),
            version: crate::VERSION.to_string(),
        };
        Exporter {
            settings: ExportSettings::new(config, limits),
            encoder: BatchEncoder::new(&otlp::resource(resource.clone()), &scope),
            peers: PeerResources::new(resource),
            queue: SpanQueue::default(),
            sender: Sender::default(),
            last_flush: None,
        }
    }

    /// How often the root context should call [`Exporter::on_tick`].
    pub fn tick_period(&self) -> Duration {
        self.settings.tick_period
    }

    /// Spans waiting, sampled and captured.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.sender.in_flight()
    }

    /// Peer resources encoded and kept.
    pub fn peer_resources(&self) -> usize {
        self.peers.len()
    }

    /// Records a finished span: encoded once, queued, the oldest dropped when the queue is full.
    /// Counts go through [`Metrics::add_deferred`]: no host call on the request path, except
    /// when this span completes a batch (see [`Exporter::send_full_batches`]).
    pub fn enqueue(&mut self, span: Span, host: &dyn Host, metrics: &Metrics) {
        let Some(queued) = self.encode(&span, metrics) else {
            return;
        };
        let dropped = self.queue.push_sampled(queued, &self.settings);
        metrics.add_deferred(Metric::SpansDroppedQueueFull, dropped);
        self.send_full_batches(host, metrics, span.end_unix_nanos);
    }

    /// Records a captured span: queued apart, within a quarter of the queue's bounds; when that
    /// is full the new span is dropped (and counted), so captures never cost a sampled span.
    pub fn enqueue_captured(&mut self, span: Span, host: &dyn Host, metrics: &Metrics) {
        let Some(queued) = self.encode(&span, metrics) else {
            return;
        };
        if !self.queue.push_captured(queued, &self.settings) {
            metrics.add_deferred(Metric::SpansDroppedQueueFull, 1);
            return;
        }
        self.send_full_batches(host, metrics, span.end_unix_nanos);
    }

    /// Counts a recorded span and encodes it; `None` when too large to send.
    fn encode(&mut self, span: &Span, metrics: &Metrics) -> Option<Queued> {
        metrics.add_deferred(Metric::SpansRecorded, 1);
        let bytes = BatchEncoder::encode_span(span);
        let resource = span.resource.as_ref().map(|peer| self.peers.get(peer));
        let request_len = self
            .encoder
            .group_len(resource.as_deref(), BatchEncoder::span_cost(bytes.len()));
        if request_len > self.settings.max_batch_bytes {
            metrics.add_deferred(Metric::SpansDroppedTooLarge, 1);
            return None;
        }
        Some(Queued { resource, bytes })
    }

    /// A new batch may leave now: not retiring (a drain sends everything itself), and the
    /// sender free (no back-off, a request slot, no retry waiting).
    fn may_send(&self, now: u64) -> bool {
        !self.sender.retiring() && self.sender.ready(now)
    }

    /// Sends every full batch the in-flight limit allows, now rather than at the next tick: at
    /// ~10,000 spans/s a tick every 200 ms (later on a saturated worker, whose timers wait for
    /// the event loop) finds 2,000 or more spans against a queue of 2,048, and dropped some with
    /// a collector that kept up. Called when a span is queued — from the stream's end (`proxy_on_done`):
    /// `proxy_http_call` is owned by the root context whatever context dispatches it
    /// (proxy-wasm-cpp-host `src/exports.cc`, `http_call`: `contextOrEffectiveContext()->
    /// root_context()`), so the answer comes to the root's `on_http_call_response` — and when an
    /// answer frees a slot. One request in `maxBatchSize` pays for framing a batch; the tick
    /// keeps partial batches (flush interval), retries and back-off.
    fn send_full_batches(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        while self.may_send(now) && self.queue.batch_ready(&self.settings) {
            let Some(batch) = self.queue.next_batch(&self.encoder, &self.settings) else {
                break;
            };
            self.sender.send(batch, &self.settings, host, metrics);
        }
    }

    /// Sends what is due: batches waiting for a retry first, then full batches, then — once per
    /// flush interval — a partial one.
    pub fn on_tick(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        if self.sender.retiring() {
            self.drain(host, metrics, now);
            return;
        }
        let last = *self.last_flush.get_or_insert(now);
        self.sender.send_retries(&self.settings, host, metrics, now);
        let interval_due = now.saturating_sub(last) >= self.settings.flush_interval;
        while self.may_send(now)
            && (self.queue.batch_ready(&self.settings) || (interval_due && !self.queue.is_empty()))
        {
            let Some(batch) = self.queue.next_batch(&self.encoder, &self.settings) else {
                break;
            };
            self.sender.send(batch, &self.settings, host, metrics);
            self.last_flush = Some(now);
        }
        if interval_due && self.queue.is_empty() {
            self.last_flush = Some(now);
        }
    }

    /// The answer to an export request; a slot it frees carries the next full batch at once.
    pub fn on_response(
        &mut self,
        token: u32,
        response: &ExportResponse<'_>,
        host: &dyn Host,
        metrics: &Metrics,
        now: u64,
    ) {
        if self
            .sender
            .on_response(token, response, &self.settings, host, metrics, now)
        {
            self.send_full_batches(host, metrics, now);
        }
    }

    /// Retirement (the root context's `on_done`, after a configuration push): sends every
    /// batch waiting for a retry and every queued span now, whatever the batch size, flush
    /// interval, back-off or in-flight limit. From then on a failure is not retried: its spans
    /// are counted in `meshtrace_spans_dropped_shutdown`. Called again on later ticks, it sends
    /// what arrived since.
    pub fn drain(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        self.sender.retire(now);
        self.sender.send_all_retries(&self.settings, host, metrics);
        while let Some(batch) = self.queue.next_batch(&self.encoder, &self.settings) {
            self.sender.send(batch, &self.settings, host, metrics);
        }
    }

    /// After [`Exporter::drain`]: every span sent has its answer (or there was nothing to send).
    pub fn drained(&self) -> bool {
        self.sender.idle() && self.queue.is_empty()
    }

    /// After [`Exporter::drain`]: past the export timeout (and a margin for the host's own
    /// timer), answers that have not arrived will not; see [`Exporter::abandon`].
    pub fn drain_overdue(&self, now: u64) -> bool {
        self.sender.retirement_overdue(&self.settings, now)
    }

    /// Gives up on whatever is still unanswered or unsent, counting it as lost to shutdown.
    pub fn abandon(&mut self, host: &dyn Host, metrics: &Metrics) {
        let lost = self.sender.abandon() + self.queue.clear();
        metrics.flush(host); // their recorded counts first, as in `Sender::send`
        metrics.add(host, Metric::SpansDroppedShutdown, lost);
    }
}

#[cfg(test)]
mod tests;
