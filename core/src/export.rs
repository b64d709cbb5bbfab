//! OTLP export from a worker VM: a bounded queue of encoded spans, batches sent through the
//! Envoy cluster of the collector — a full batch as soon as it is full, a partial one on the root
//! context's tick — and retries for the failures the OTLP specification calls retryable
//! ("OTLP/HTTP Response", "OTLP/gRPC Response").
//!
//! Tracing must never hurt traffic, so nothing here blocks a request or grows without bound:
//! the queue drops its oldest spans when full, at most [`MAX_IN_FLIGHT`] requests are
//! outstanding, at most [`MAX_RETRY_BATCHES`] batches wait for a retry, and every span that does
//! not reach the collector is counted by reason.

use crate::config::{ExportProtocol, ExporterConfig, LimitsConfig};
use crate::host::{Host, Outgoing};
use crate::metrics::{Metric, Metrics};
use crate::otlp::{self, BatchEncoder, InstrumentationScope};
use crate::resource::peer_resource;
use crate::span::{AttrValue, PeerResource, Span};
use prost::Message;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// OTLP/gRPC: `TraceService/Export`, as gRPC over HTTP/2 ("gRPC over HTTP2" protocol spec).
pub(crate) const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const CONTENT_TYPE: &str = "application/x-protobuf";
const GRPC_CONTENT_TYPE: &str = "application/grpc";
const USER_AGENT: &str = concat!("meshtrace/", env!("CARGO_PKG_VERSION"));

/// Export requests outstanding at once per worker.
pub(crate) const MAX_IN_FLIGHT: usize = 4;
/// Failed batches kept for a retry; older ones are dropped (and counted) beyond.
pub(crate) const MAX_RETRY_BATCHES: usize = 4;
/// The queue also holds at most this many batches' worth of bytes.
const QUEUE_BYTES_IN_BATCHES: usize = 4;
/// Captured spans wait apart, in at most this fraction of the queue's bounds.
const CAPTURED_SHARE: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A collector's `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Ticks are at least this frequent so full batches leave promptly under load.
const MAX_TICK: Duration = Duration::from_millis(200);
/// A collector's partial-success message is logged at most once per this interval: a collector
/// that rejects spans does so on every answer, and the log must not grow with the traffic.
const PARTIAL_SUCCESS_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// After a drain, answers are awaited this much longer than the export timeout (the host's
/// timer for the call fires at the timeout; its answer may come a tick later).
const DRAIN_MARGIN: Duration = Duration::from_secs(1);
/// Encoded resources of other services kept for reuse (a waypoint's sources and destinations);
/// beyond, the oldest is forgotten (spans still queued keep theirs).
pub const MAX_PEER_RESOURCES: usize = 32;
/// Bytes of a collector's answer read at most (an `ExportTraceServiceResponse` is small).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// gRPC status codes OTLP/gRPC lists as retryable: CANCELLED, DEADLINE_EXCEEDED,
/// RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS.
const GRPC_RETRYABLE: [u32; 7] = [1, 4, 8, 10, 11, 14, 15];
/// HTTP statuses OTLP/HTTP lists as retryable.
const HTTP_RETRYABLE: [u16; 4] = [429, 502, 503, 504];

/// A span waiting in the queue: its encoded bytes and, when it belongs to another service, that
/// service's encoded resource (shared with the other spans of the service).
#[derive(Debug)]
struct Queued {
    resource: Option<Rc<[u8]>>,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Batch {
    body: Vec<u8>,
    spans: u64,
    /// Retries already made.
    retries: u32,
}

#[derive(Debug)]
pub struct Exporter {
    protocol: ExportProtocol,
    cluster: String,
    path: String,
    authority: String,
    timeout: Duration,
    headers: Vec<(String, String)>,
    max_batch_size: usize,
    max_batch_bytes: usize,
    max_queue_size: usize,
    max_queue_bytes: usize,
    max_retries: u32,
    flush_interval: u64,
    encoder: BatchEncoder,
    /// The proxy's own resource attributes, the base of every peer resource.
    own_resource: Vec<(String, AttrValue)>,
    /// Encoded peer resources, oldest first, at most [`MAX_PEER_RESOURCES`].
    peer_resources: VecDeque<(PeerResource, Rc<[u8]>)>,
    queue: VecDeque<Queued>,
    queue_bytes: usize,
    /// Captured spans (`sampling.captureErrors`, `captureSlowerThan`), apart from sampled ones:
    /// they never push a sampled span out, and batches take them after the sampled ones.
    captured: VecDeque<Queued>,
    captured_bytes: usize,
    in_flight: Vec<(u32, Batch)>,
    retries: VecDeque<Batch>,
    /// After a retryable failure nothing is sent before this time (back-off, `Retry-After`).
    paused_until: u64,
    last_flush: Option<u64>,
    warned_dispatch: bool,
    /// When a partial success was last logged, and the spans rejected since.
    partial_success_logged: Option<u64>,
    rejected_since_log: u64,
    /// Set by [`Exporter::drain`]: this exporter's VM is being retired.
    draining_since: Option<u64>,
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
            protocol: config.protocol,
            cluster: config.cluster.clone(),
            path: config.path.clone(),
            authority: config.effective_authority().to_string(),
            timeout: config.timeout,
            headers: config
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            max_batch_size: config.max_batch_size,
            max_batch_bytes: limits.max_batch_bytes,
            max_queue_size: config.max_queue_size,
            max_queue_bytes: limits
                .max_batch_bytes
                .saturating_mul(QUEUE_BYTES_IN_BATCHES),
            max_retries: config.max_retries,
            flush_interval: nanos(config.flush_interval),
            encoder: BatchEncoder::new(&otlp::resource(resource.clone()), &scope),
            own_resource: resource,
            peer_resources: VecDeque::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            captured: VecDeque::new(),
            captured_bytes: 0,
            in_flight: Vec::new(),
            retries: VecDeque::new(),
            paused_until: 0,
            last_flush: None,
            warned_dispatch: false,
            partial_success_logged: None,
            rejected_since_log: 0,
            draining_since: None,
        }
    }

    /// How often the root context should call [`Exporter::on_tick`].
    pub fn tick_period(&self) -> Duration {
        Duration::from_nanos(self.flush_interval).min(MAX_TICK)
    }

    /// Spans waiting, sampled and captured.
    pub fn queue_len(&self) -> usize {
        self.queue.len() + self.captured.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records a finished span: encoded once, queued, the oldest dropped when the queue is full.
    /// Counts go through [`Metrics::add_deferred`]: no host call on the request path, except
    /// when this span completes a batch (see [`Exporter::send_full_batches`]).
    pub fn enqueue(&mut self, span: Span, host: &dyn Host, metrics: &Metrics) {
        let Some(queued) = self.encode(&span, metrics) else {
            return;
        };
        self.queue_bytes += queued.bytes.len();
        self.queue.push_back(queued);
        let mut dropped = 0;
        while self.queue.len() > self.max_queue_size || self.queue_bytes > self.max_queue_bytes {
            match self.queue.pop_front() {
                Some(old) => {
                    self.queue_bytes -= old.bytes.len();
                    dropped += 1;
                }
                None => break,
            }
        }
        metrics.add_deferred(Metric::SpansDroppedQueueFull, dropped);
        self.send_full_batches(host, metrics, span.end_unix_nanos);
    }

    /// Records a captured span: queued apart, within a quarter of the queue's bounds; when that
    /// is full the new span is dropped (and counted), so captures never cost a sampled span.
    pub fn enqueue_captured(&mut self, span: Span, host: &dyn Host, metrics: &Metrics) {
        let Some(queued) = self.encode(&span, metrics) else {
            return;
        };
        if self.captured.len() >= (self.max_queue_size / CAPTURED_SHARE).max(1)
            || self.captured_bytes + queued.bytes.len() > self.max_queue_bytes / CAPTURED_SHARE
        {
            metrics.add_deferred(Metric::SpansDroppedQueueFull, 1);
            return;
        }
        self.captured_bytes += queued.bytes.len();
        self.captured.push_back(queued);
        self.send_full_batches(host, metrics, span.end_unix_nanos);
    }

    /// A full batch is waiting: `maxBatchSize` spans, or spans enough to fill `maxBatchBytes`.
    fn batch_ready(&self) -> bool {
        self.queue_len() >= self.max_batch_size
            || self.queue_bytes + self.captured_bytes >= self.max_batch_bytes
    }

    fn may_send(&self, now: u64) -> bool {
        self.draining_since.is_none()
            && now >= self.paused_until
            && self.in_flight.len() < MAX_IN_FLIGHT
            && self.retries.is_empty()
    }

    /// Sends every full batch the in-flight limit allows, now rather than at the next tick: at
    /// ~10,000 spans/s a tick every 200 ms (later on a saturated worker, whose timers wait for
    /// the event loop) finds 2,000 or more spans against a queue of 2,048, and dropped some with
    /// a collector that kept up. Called when a span is queued — from the stream's `on_log`:
    /// `proxy_http_call` is owned by the root context whatever context dispatches it
    /// (proxy-wasm-cpp-host `src/exports.cc`, `http_call`: `contextOrEffectiveContext()->
    /// root_context()`), so the answer comes to the root's `on_http_call_response` — and when an
    /// answer frees a slot. One request in `maxBatchSize` pays for framing a batch; the tick
    /// keeps partial batches (flush interval), retries and back-off.
    fn send_full_batches(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        while self.may_send(now) && self.batch_ready() {
            let Some(batch) = self.next_batch() else {
                break;
            };
            self.send(batch, host, metrics);
        }
    }

    /// Counts a recorded span and encodes it; `None` when not exporting or too large to send.
    fn encode(&mut self, span: &Span, metrics: &Metrics) -> Option<Queued> {
        metrics.add_deferred(Metric::SpansRecorded, 1);
        let bytes = BatchEncoder::encode_span(span);
        let resource = span.resource.as_ref().map(|peer| self.peer_resource(peer));
        if self
            .encoder
            .group_len(resource.as_deref(), BatchEncoder::span_cost(bytes.len()))
            > self.max_batch_bytes
        {
            metrics.add_deferred(Metric::SpansDroppedTooLarge, 1);
            return None;
        }
        Some(Queued { resource, bytes })
    }

    /// The encoded resource of a peer service: from the cache, or encoded once and kept (the
    /// oldest forgotten beyond [`MAX_PEER_RESOURCES`]).
    fn peer_resource(&mut self, peer: &PeerResource) -> Rc<[u8]> {
        if let Some((_, encoded)) = self.peer_resources.iter().find(|(p, _)| p == peer) {
            return encoded.clone();
        }
        let encoded: Rc<[u8]> =
            BatchEncoder::encode_resource(peer_resource(&self.own_resource, peer)).into();
        if self.peer_resources.len() >= MAX_PEER_RESOURCES {
            self.peer_resources.pop_front();
        }
        self.peer_resources
            .push_back((peer.clone(), encoded.clone()));
        encoded
    }

    /// Peer resources encoded and kept.
    pub fn peer_resources(&self) -> usize {
        self.peer_resources.len()
    }

    /// Sends what is due: batches waiting for a retry first, then full batches, then — once per
    /// flush interval — a partial one.
    pub fn on_tick(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        if self.draining_since.is_some() {
            self.drain(host, metrics, now);
            return;
        }
        let last = *self.last_flush.get_or_insert(now);
        while now >= self.paused_until && self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(batch) = self.retries.pop_front() else {
                break;
            };
            self.send(batch, host, metrics);
        }
        let interval_due = now.saturating_sub(last) >= self.flush_interval;
        while self.may_send(now) && (self.batch_ready() || (interval_due && self.queue_len() > 0)) {
            let Some(batch) = self.next_batch() else {
                break;
            };
            self.send(batch, host, metrics);
            self.last_flush = Some(now);
        }
        if interval_due && self.queue_len() == 0 {
            self.last_flush = Some(now);
        }
    }

    /// Retirement (the root context's `on_done`, after a configuration push): sends every
    /// batch waiting for a retry and every queued span now, whatever the batch size, flush
    /// interval, back-off or in-flight limit. From then on a failure is not retried: its spans
    /// are counted in `meshtrace_spans_dropped_shutdown`. Called again on later ticks, it sends
    /// what arrived since.
    pub fn drain(&mut self, host: &dyn Host, metrics: &Metrics, now: u64) {
        self.draining_since.get_or_insert(now);
        while let Some(batch) = self.retries.pop_front() {
            self.send(batch, host, metrics);
        }
        while let Some(batch) = self.next_batch() {
            self.send(batch, host, metrics);
        }
    }

    /// After [`Exporter::drain`]: every span sent has its answer (or there was nothing to send).
    pub fn drained(&self) -> bool {
        self.in_flight.is_empty() && self.retries.is_empty() && self.queue_len() == 0
    }

    /// After [`Exporter::drain`]: past the export timeout (and a margin for the host's own
    /// timer), answers that have not arrived will not; see [`Exporter::abandon`].
    pub fn drain_overdue(&self, now: u64) -> bool {
        self.draining_since.is_some_and(|since| {
            now.saturating_sub(since) > nanos(self.timeout.saturating_add(DRAIN_MARGIN))
        })
    }

    /// Gives up on whatever is still unanswered or unsent, counting it as lost to shutdown.
    pub fn abandon(&mut self, host: &dyn Host, metrics: &Metrics) {
        let in_flight: u64 = self.in_flight.drain(..).map(|(_, b)| b.spans).sum();
        let retries: u64 = self.retries.drain(..).map(|b| b.spans).sum();
        let queued = self.queue_len() as u64;
        self.queue.clear();
        self.queue_bytes = 0;
        self.captured.clear();
        self.captured_bytes = 0;
        metrics.add(
            host,
            Metric::SpansDroppedShutdown,
            in_flight + retries + queued,
        );
    }

    /// Takes up to `maxBatchSize` spans from the front of the queue, sampled ones first, within
    /// `maxBatchBytes`.
    fn next_batch(&mut self) -> Option<Batch> {
        // The spans' cost per resource in the batch (one `ResourceSpans` each).
        let mut groups: Vec<(Option<&[u8]>, usize)> = Vec::new();
        let mut count = 0;
        for span in self
            .queue
            .iter()
            .chain(&self.captured)
            .take(self.max_batch_size)
        {
            let cost = BatchEncoder::span_cost(span.bytes.len());
            let resource = span.resource.as_deref();
            let slot = groups
                .iter()
                .position(|(r, _)| otlp::same_resource(*r, resource));
            let total: usize = groups
                .iter()
                .enumerate()
                .map(|(i, (r, len))| {
                    let len = if Some(i) == slot { len + cost } else { *len };
                    self.encoder.group_len(*r, len)
                })
                .sum::<usize>()
                + if slot.is_none() {
                    self.encoder.group_len(resource, cost)
                } else {
                    0
                };
            if total > self.max_batch_bytes {
                break;
            }
            match slot.and_then(|i| groups.get_mut(i)) {
                Some(group) => group.1 += cost,
                None => groups.push((resource, cost)),
            }
            count += 1;
        }
        if count == 0 {
            return None;
        }
        let sampled = count.min(self.queue.len());
        let mut spans: Vec<Queued> = self.queue.drain(..sampled).collect();
        self.queue_bytes -= spans.iter().map(|q| q.bytes.len()).sum::<usize>();
        let captured: Vec<Queued> = self.captured.drain(..count - sampled).collect();
        self.captured_bytes -= captured.iter().map(|q| q.bytes.len()).sum::<usize>();
        spans.extend(captured);
        Some(Batch {
            body: self.encoder.encode_grouped(
                spans
                    .iter()
                    .map(|q| (q.resource.as_deref(), q.bytes.as_slice())),
                self.protocol == ExportProtocol::Grpc,
            ),
            spans: count as u64,
            retries: 0,
        })
    }

    fn send(&mut self, batch: Batch, host: &dyn Host, metrics: &Metrics) {
        metrics.inc(host, Metric::ExportRequests);
        let grpc = self.protocol == ExportProtocol::Grpc;
        let grpc_timeout;
        let mut headers = vec![(":method", "POST")];
        if grpc {
            // Milliseconds as u64: formatting the u128 `as_millis` brought u128 printing (1.4 KB).
            grpc_timeout = format!(
                "{}m",
                u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
            );
            headers.extend([
                (":path", GRPC_PATH),
                (":authority", self.authority.as_str()),
                ("content-type", GRPC_CONTENT_TYPE),
                ("te", "trailers"),
                ("grpc-timeout", grpc_timeout.as_str()),
            ]);
        } else {
            headers.extend([
                (":path", self.path.as_str()),
                (":authority", self.authority.as_str()),
                ("content-type", CONTENT_TYPE),
            ]);
        }
        headers.push(("user-agent", USER_AGENT));
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let result = host.dispatch(Outgoing::Http {
            cluster: &self.cluster,
            headers,
            body: &batch.body,
            timeout: self.timeout,
        });
        match result {
            Ok(token) => self.in_flight.push((token, batch)),
            Err(_) => {
                // The host refused the call (e.g. no such cluster): not retryable.
                if !self.warned_dispatch {
                    log::warn!(
                        "meshtrace: cannot send spans through exporter.cluster `{}`: is it a \
                         cluster this proxy knows? Spans are dropped and counted in \
                         meshtrace_spans_dropped_export_failed",
                        self.cluster
                    );
                    self.warned_dispatch = true;
                }
                metrics.inc(host, Metric::ExportFailures);
                metrics.add(host, Metric::SpansDroppedExportFailed, batch.spans);
            }
        }
    }

    fn take_in_flight(&mut self, token: u32) -> Option<Batch> {
        let i = self.in_flight.iter().position(|(t, _)| *t == token)?;
        Some(self.in_flight.swap_remove(i).1)
    }

    /// The answer to an export request.
    pub fn on_response(
        &mut self,
        token: u32,
        response: &ExportResponse<'_>,
        host: &dyn Host,
        metrics: &Metrics,
        now: u64,
    ) {
        let Some(batch) = self.take_in_flight(token) else {
            return;
        };
        let grpc = self.protocol == ExportProtocol::Grpc;
        match response.outcome(grpc) {
            Delivery::Delivered => {
                self.delivered(&batch, response.partial_success(grpc), host, metrics, now)
            }
            Delivery::Retry => {
                let delay = response.retry_after.and_then(parse_retry_after);
                self.retry(batch, delay, host, metrics, now);
            }
            Delivery::Rejected => self.give_up(batch, host, metrics),
        }
        self.send_full_batches(host, metrics, now);
    }

    /// OTLP "Partial Success": an accepted request whose answer names rejected spans. Those are
    /// dropped (reason `rejected`, not retryable), the rest exported; the collector's message
    /// is logged at most once per [`PARTIAL_SUCCESS_LOG_INTERVAL`] with the count since.
    fn delivered(
        &mut self,
        batch: &Batch,
        partial: Option<otlp::ExportTracePartialSuccess>,
        host: &dyn Host,
        metrics: &Metrics,
        now: u64,
    ) {
        let rejected = partial.as_ref().map_or(0, |p| {
            u64::try_from(p.rejected_spans)
                .unwrap_or(0)
                .min(batch.spans)
        });
        metrics.add(host, Metric::SpansExported, batch.spans - rejected);
        metrics.add(host, Metric::SpansDroppedRejected, rejected);
        let Some(partial) = partial else { return };
        self.rejected_since_log = self.rejected_since_log.saturating_add(rejected);
        let due = self
            .partial_success_logged
            .is_none_or(|at| now.saturating_sub(at) >= nanos(PARTIAL_SUCCESS_LOG_INTERVAL));
        if due && (self.rejected_since_log > 0 || !partial.error_message.is_empty()) {
            log::warn!(
                "meshtrace: the collector rejected {} span(s) since the last report \
                 (meshtrace_spans_dropped_rejected): {}",
                self.rejected_since_log,
                partial.error_message
            );
            self.partial_success_logged = Some(now);
            self.rejected_since_log = 0;
        }
    }

    fn give_up(&mut self, batch: Batch, host: &dyn Host, metrics: &Metrics) {
        metrics.inc(host, Metric::ExportFailures);
        metrics.add(host, Metric::SpansDroppedExportFailed, batch.spans);
    }

    /// Exponential back-off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], or the collector's
    /// `Retry-After`; the batch is dropped after `maxRetries`.
    fn retry(
        &mut self,
        mut batch: Batch,
        retry_after: Option<Duration>,
        host: &dyn Host,
        metrics: &Metrics,
        now: u64,
    ) {
        metrics.inc(host, Metric::ExportFailures);
        if self.draining_since.is_some() {
            metrics.add(host, Metric::SpansDroppedShutdown, batch.spans);
            return;
        }
        if batch.retries >= self.max_retries {
            metrics.add(host, Metric::SpansDroppedExportFailed, batch.spans);
            return;
        }
        batch.retries += 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (batch.retries - 1).min(16))
            .min(MAX_BACKOFF);
        let delay = retry_after.map_or(backoff, |d| d.min(MAX_RETRY_AFTER));
        self.paused_until = self.paused_until.max(now.saturating_add(nanos(delay)));
        self.retries.push_back(batch);
        while self.retries.len() > MAX_RETRY_BATCHES {
            if let Some(old) = self.retries.pop_front() {
                metrics.add(host, Metric::SpansDroppedExportFailed, old.spans);
            }
        }
    }
}

/// RFC 9110 §10.2.3 `Retry-After` as delay-seconds; an HTTP-date falls back to our back-off.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)))
}

/// What the host reported about an export request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportResponse<'a> {
    /// HTTP status; `None` when no response arrived (connection failure, timeout).
    pub status: Option<u16>,
    /// `grpc-status` from the trailers (or a trailers-only response's headers).
    pub grpc_status: Option<u32>,
    pub retry_after: Option<&'a str>,
    /// The answer's body (at most [`MAX_RESPONSE_BODY`] bytes): an `ExportTraceServiceResponse`,
    /// for gRPC in its 5-byte length-prefixed message frame.
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Delivered,
    Retry,
    Rejected,
}

impl ExportResponse<'_> {
    /// The `partial_success` of a successful answer (OTLP "Partial Success"), if it has one.
    /// An answer that is not a decodable `ExportTraceServiceResponse` is a full success: the
    /// status already said the request was accepted.
    fn partial_success(&self, grpc: bool) -> Option<otlp::ExportTracePartialSuccess> {
        let message = if grpc {
            grpc_message(self.body)?
        } else {
            self.body
        };
        otlp::ExportTraceServiceResponse::decode(message)
            .ok()?
            .partial_success
    }

    fn outcome(&self, grpc: bool) -> Delivery {
        match (self.status, grpc) {
            (None, _) => Delivery::Retry,
            (Some(200), true) => match self.grpc_status {
                Some(0) => Delivery::Delivered,
                Some(code) if GRPC_RETRYABLE.contains(&code) => Delivery::Retry,
                // A 200 without grpc-status is not a gRPC answer (wrong port, a proxy page).
                _ => Delivery::Rejected,
            },
            (Some(200..=299), false) => Delivery::Delivered,
            // Also for gRPC: Envoy answers with these when the collector is unreachable.
            (Some(code), _) if HTTP_RETRYABLE.contains(&code) => Delivery::Retry,
            (Some(_), _) => Delivery::Rejected,
        }
    }
}

/// The message of a gRPC response body ("gRPC over HTTP2", Length-Prefixed-Message): a
/// compressed-flag byte, a 4-byte big-endian length, the message. We never ask for compression,
/// so a compressed message is not decoded.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (compressed == 0).then(|| message.get(..len)).flatten()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
