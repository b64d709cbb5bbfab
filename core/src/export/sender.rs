//! The sender — what OpenTelemetry's SDK calls the span exporter: it sends a batch through the
//! collector's Envoy cluster and acts on the answer. It owns what a batch needs once it has left
//! the queue: the requests in flight, the batches waiting for a retry and the back-off before
//! them, and the lines answers log (a refused cluster once, a partial success at most once a
//! minute).

use super::response::{Delivery, ExportResponse};
use super::settings::ExportSettings;
use crate::clock::nanos;
use crate::host::{Host, Outgoing};
use crate::metrics::{Metric, Metrics};
use crate::otlp;
use std::collections::VecDeque;
use std::time::Duration;

/// Export requests outstanding at once per worker.
pub(crate) const MAX_IN_FLIGHT: usize = 4;
/// Failed batches kept for a retry; older ones are dropped (and counted) beyond.
pub(crate) const MAX_RETRY_BATCHES: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A collector's `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A collector's partial-success message is logged at most once per this interval: a collector
/// that rejects spans does so on every answer, and the log must not grow with the traffic.
const PARTIAL_SUCCESS_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// An encoded export request and the spans it carries.
#[derive(Debug)]
pub(crate) struct Batch {
    body: Vec<u8>,
    spans: u64,
    /// Retries already made.
    retries: u32,
}

impl Batch {
    pub fn new(body: Vec<u8>, spans: u64) -> Batch {
        Batch {
            body,
            spans,
            retries: 0,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Sender {
    /// Requests awaiting their answer, by the host's token.
    in_flight: Vec<(u32, Batch)>,
    retries: VecDeque<Batch>,
    /// After a retryable failure nothing is sent before this time (back-off, `Retry-After`).
    paused_until: u64,
    warned_dispatch: bool,
    rejections: RejectionLog,
    /// Set by [`Sender::retire`]: the VM is being retired, failures are no longer retried.
    retiring_since: Option<u64>,
}

impl Sender {
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// From now on a failure is not retried: its spans are counted as lost to shutdown.
    pub fn retire(&mut self, now: u64) {
        self.retiring_since.get_or_insert(now);
    }

    pub fn retiring(&self) -> bool {
        self.retiring_since.is_some()
    }

    /// Retiring for longer than the export timeout and a margin: answers not yet arrived will
    /// not.
    pub fn retirement_overdue(&self, s: &ExportSettings, now: u64) -> bool {
        self.retiring_since
            .is_some_and(|since| now.saturating_sub(since) > s.drain_timeout)
    }

    /// Nothing in flight, nothing waiting for a retry.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.retries.is_empty()
    }

    /// A new batch may leave: no back-off, a request slot free, no retry waiting first.
    pub fn ready(&self, now: u64) -> bool {
        now >= self.paused_until && self.in_flight.len() < MAX_IN_FLIGHT && self.retries.is_empty()
    }

    /// Sends the batches waiting for a retry, as far as the back-off and the in-flight limit
    /// allow.
    pub fn send_retries(&mut self, s: &ExportSettings, host: &dyn Host, m: &Metrics, now: u64) {
        while now >= self.paused_until && self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(batch) = self.retries.pop_front() else {
                break;
            };
            self.send(batch, s, host, m);
        }
    }

    /// Sends every batch waiting for a retry, whatever the back-off and the in-flight limit.
    pub fn send_all_retries(&mut self, s: &ExportSettings, host: &dyn Host, m: &Metrics) {
        while let Some(batch) = self.retries.pop_front() {
            self.send(batch, s, host, m);
        }
    }

    pub fn send(&mut self, batch: Batch, s: &ExportSettings, host: &dyn Host, m: &Metrics) {
        // The batch's spans were counted recorded in deferred counts: they reach the host
        // before any outcome of theirs can (one call per count that moved, once per batch).
        m.flush(host);
        m.inc(host, Metric::ExportRequests);
        let headers = s
            .request_headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let result = host.dispatch(Outgoing::Http {
            cluster: &s.cluster,
            headers,
            body: &batch.body,
            timeout: s.timeout,
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
                        s.cluster
                    );
                    self.warned_dispatch = true;
                }
                m.inc(host, Metric::ExportFailures);
                m.add(host, Metric::SpansDroppedExportFailed, batch.spans);
            }
        }
    }

    /// The answer to request `token`: its spans exported, retried or dropped. `false` when the
    /// token is none of ours.
    pub fn on_response(
        &mut self,
        token: u32,
        response: &ExportResponse<'_>,
        s: &ExportSettings,
        host: &dyn Host,
        m: &Metrics,
        now: u64,
    ) -> bool {
        let Some(i) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, batch) = self.in_flight.swap_remove(i);
        match response.outcome(s.grpc) {
            Delivery::Delivered => {
                self.delivered(&batch, response.partial_success(s.grpc), host, m, now)
            }
            Delivery::Retry if self.retiring() => {
                m.inc(host, Metric::ExportFailures);
                m.add(host, Metric::SpansDroppedShutdown, batch.spans);
            }
            Delivery::Retry => self.retry(batch, response.retry_after(), s, host, m, now),
            Delivery::Rejected => {
                m.inc(host, Metric::ExportFailures);
                m.add(host, Metric::SpansDroppedExportFailed, batch.spans);
            }
        }
        true
    }

    /// OTLP "Partial Success": an accepted request whose answer names rejected spans. Those are
    /// dropped (reason `rejected`, not retryable), the rest exported.
    fn delivered(
        &mut self,
        batch: &Batch,
        partial: Option<otlp::ExportTracePartialSuccess>,
        host: &dyn Host,
        m: &Metrics,
        now: u64,
    ) {
        let rejected = partial.as_ref().map_or(0, |p| {
            u64::try_from(p.rejected_spans)
                .unwrap_or(0)
                .min(batch.spans)
        });
        m.add(host, Metric::SpansExported, batch.spans - rejected);
        m.add(host, Metric::SpansDroppedRejected, rejected);
        if let Some(partial) = partial {
            self.rejections.note(rejected, &partial.error_message, now);
        }
    }

    /// Exponential back-off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], or the collector's
    /// `Retry-After`; the batch is dropped after `maxRetries`, the oldest waiting batch beyond
    /// [`MAX_RETRY_BATCHES`].
    fn retry(
        &mut self,
        mut batch: Batch,
        retry_after: Option<Duration>,
        s: &ExportSettings,
        host: &dyn Host,
        m: &Metrics,
        now: u64,
    ) {
        m.inc(host, Metric::ExportFailures);
        if batch.retries >= s.max_retries {
            m.add(host, Metric::SpansDroppedExportFailed, batch.spans);
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
                m.add(host, Metric::SpansDroppedExportFailed, old.spans);
            }
        }
    }

    /// Forgets every batch unanswered or waiting for a retry; the spans they carried.
    pub fn abandon(&mut self) -> u64 {
        let in_flight: u64 = self.in_flight.drain(..).map(|(_, b)| b.spans).sum();
        let retries: u64 = self.retries.drain(..).map(|b| b.spans).sum();
        in_flight + retries
    }
}

/// The collector's partial-success messages, logged at most once per
/// [`PARTIAL_SUCCESS_LOG_INTERVAL`] with the spans rejected since the last line.
#[derive(Debug, Default)]
struct RejectionLog {
    logged_at: Option<u64>,
    since_logged: u64,
}

impl RejectionLog {
    fn note(&mut self, rejected: u64, message: &str, now: u64) {
        self.since_logged = self.since_logged.saturating_add(rejected);
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_sub(at) >= nanos(PARTIAL_SUCCESS_LOG_INTERVAL));
        if due && (self.since_logged > 0 || !message.is_empty()) {
            log::warn!(
                "meshtrace: the collector rejected {} span(s) since the last report \
                 (meshtrace_spans_dropped_rejected): {message}",
                self.since_logged
            );
            self.logged_at = Some(now);
            self.since_logged = 0;
        }
    }
}
