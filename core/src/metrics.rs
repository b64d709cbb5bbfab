//! The plugin's own metrics, defined through the proxy-wasm metrics API so they appear in
//! Envoy's stats (`/stats`, prefixed `wasmcustom.` by Envoy) and in Istio's Prometheus scrape.

use crate::host::{Host, MetricKind};
use std::cell::Cell;

/// Every metric meshtrace reports. Names are stable: dashboards depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Sampling decisions, by reason.
    SampledParent,
    SampledPercentage,
    SampledRule,
    SampledForced,
    NotSampledParent,
    NotSampledPercentage,
    NotSampledRule,
    NotSampledProbe,
    NotSampledCap,
    /// Incoming trace context that was invalid and restarted the trace.
    ContextRestarted,
    /// Incoming `tracestate` discarded whole because it could not be parsed (W3C Trace Context
    /// processing model); the trace continued.
    TracestateDiscarded,
    /// Incoming `x-request-id` that was replaced (malformed or untrusted).
    RequestIdReplaced,
    /// Spans recorded (sampled and finished).
    SpansRecorded,
    /// Spans the collector accepted.
    SpansExported,
    /// Spans dropped, by reason.
    SpansDroppedQueueFull,
    SpansDroppedExportFailed,
    SpansDroppedTooLarge,
    /// Spans the collector accepted the request of but rejected itself (OTLP partial success).
    SpansDroppedRejected,
    /// Spans still unsent or unanswered when a configuration push retired this VM's exporter
    /// (the export timeout passed after `on_done`, or a failure that could no longer be retried).
    SpansDroppedShutdown,
    /// Export requests sent, and those that failed (any reason, retried or not).
    ExportRequests,
    ExportFailures,
    /// Spans waiting in this worker's queue (gauge).
    QueueDepth,
    /// Unsampled requests recorded anyway, by reason (`sampling.captureErrors`,
    /// `sampling.captureSlowerThan`).
    SpansCapturedError,
    SpansCapturedLatency,
    /// Captures refused by `sampling.maxCapturedPerSecond`.
    CaptureCapped,
}

impl Metric {
    pub(crate) const ALL: [Metric; 25] = [
        Metric::SampledParent,
        Metric::SampledPercentage,
        Metric::SampledRule,
        Metric::SampledForced,
        Metric::NotSampledParent,
        Metric::NotSampledPercentage,
        Metric::NotSampledRule,
        Metric::NotSampledProbe,
        Metric::NotSampledCap,
        Metric::ContextRestarted,
        Metric::TracestateDiscarded,
        Metric::RequestIdReplaced,
        Metric::SpansRecorded,
        Metric::SpansExported,
        Metric::SpansDroppedQueueFull,
        Metric::SpansDroppedExportFailed,
        Metric::SpansDroppedTooLarge,
        Metric::SpansDroppedRejected,
        Metric::SpansDroppedShutdown,
        Metric::ExportRequests,
        Metric::ExportFailures,
        Metric::QueueDepth,
        Metric::SpansCapturedError,
        Metric::SpansCapturedLatency,
        Metric::CaptureCapped,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::SampledParent => "meshtrace_sampling_sampled_parent",
            Metric::SampledPercentage => "meshtrace_sampling_sampled_percentage",
            Metric::SampledRule => "meshtrace_sampling_sampled_rule",
            Metric::SampledForced => "meshtrace_sampling_sampled_forced",
            Metric::NotSampledParent => "meshtrace_sampling_not_sampled_parent",
            Metric::NotSampledPercentage => "meshtrace_sampling_not_sampled_percentage",
            Metric::NotSampledRule => "meshtrace_sampling_not_sampled_rule",
            Metric::NotSampledProbe => "meshtrace_sampling_not_sampled_probe",
            Metric::NotSampledCap => "meshtrace_sampling_not_sampled_cap",
            Metric::ContextRestarted => "meshtrace_context_restarted",
            Metric::TracestateDiscarded => "meshtrace_tracestate_discarded",
            Metric::RequestIdReplaced => "meshtrace_request_id_replaced",
            Metric::SpansRecorded => "meshtrace_spans_recorded",
            Metric::SpansExported => "meshtrace_spans_exported",
            Metric::SpansDroppedQueueFull => "meshtrace_spans_dropped_queue_full",
            Metric::SpansDroppedExportFailed => "meshtrace_spans_dropped_export_failed",
            Metric::SpansDroppedTooLarge => "meshtrace_spans_dropped_too_large",
            Metric::SpansDroppedRejected => "meshtrace_spans_dropped_rejected",
            Metric::SpansDroppedShutdown => "meshtrace_spans_dropped_shutdown",
            Metric::ExportRequests => "meshtrace_export_requests",
            Metric::ExportFailures => "meshtrace_export_failures",
            Metric::QueueDepth => "meshtrace_queue_depth",
            Metric::SpansCapturedError => "meshtrace_spans_captured_error",
            Metric::SpansCapturedLatency => "meshtrace_spans_captured_latency",
            Metric::CaptureCapped => "meshtrace_capture_capped",
        }
    }

    fn kind(self) -> MetricKind {
        match self {
            Metric::QueueDepth => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// Every metric has its bit in `Metrics::dirty`.
const _: () = assert!(Metric::ALL.len() <= 64);

/// Host metric ids, defined once per VM. A metric the host refused to define is skipped.
#[derive(Debug, Clone)]
pub struct Metrics {
    ids: [Option<u32>; Metric::ALL.len()],
    /// Counts from the request path, held in the VM and handed to the host by [`Metrics::flush`]
    /// on the root context's tick: a host call per request saved.
    pending: [Cell<u64>; Metric::ALL.len()],
    /// One bit per metric with a count in `pending`: the native adapter flushes after every
    /// request, which usually holds one count, so the flush visits only those.
    dirty: Cell<u64>,
}

impl Metrics {
    pub fn define(host: &dyn Host) -> Metrics {
        let mut ids = [None; Metric::ALL.len()];
        for (slot, m) in ids.iter_mut().zip(Metric::ALL) {
            *slot = host.define_metric(m.kind(), m.name()).ok();
        }
        Metrics {
            ids,
            pending: Default::default(),
            dirty: Cell::new(0),
        }
    }

    /// Metrics that record nothing (for tests that do not look at them).
    pub fn none() -> Metrics {
        Metrics {
            ids: [None; Metric::ALL.len()],
            pending: Default::default(),
            dirty: Cell::new(0),
        }
    }

    pub(crate) fn add(&self, host: &dyn Host, metric: Metric, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(Some(id)) = self.ids.get(metric.index()) {
            host.increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn inc(&self, host: &dyn Host, metric: Metric) {
        self.add(host, metric, 1);
    }

    /// Counts without a host call: held in the VM until the next [`Metrics::flush`] (the root
    /// context's tick), so the request path pays no host call for its counters.
    pub(crate) fn add_deferred(&self, metric: Metric, n: u64) {
        if let Some(cell) = self.pending.get(metric.index()) {
            cell.set(cell.get().saturating_add(n));
            self.dirty.set(self.dirty.get() | 1 << metric.index());
        }
    }

    /// Hands the counts held since the last flush to the host.
    pub fn flush(&self, host: &dyn Host) {
        let mut dirty = self.dirty.replace(0);
        while dirty != 0 {
            let i = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            if let (Some(metric), Some(cell)) = (Metric::ALL.get(i), self.pending.get(i)) {
                self.add(host, *metric, cell.replace(0));
            }
        }
    }

    pub fn set(&self, host: &dyn Host, metric: Metric, value: u64) {
        if let Some(Some(id)) = self.ids.get(metric.index()) {
            host.record_metric(*id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    /// A flush hands over every deferred count once, whichever metrics hold one (the first and
    /// the last of the list too), and nothing on the next flush.
    #[test]
    fn a_flush_hands_over_each_deferred_count_once() {
        let host = MockHost::new();
        let m = Metrics::define(&host);
        let first = Metric::ALL[0];
        let last = Metric::ALL[Metric::ALL.len() - 1];
        for (metric, n) in [
            (first, 2),
            (Metric::SpansRecorded, 3),
            (last, 1),
            (first, 5),
        ] {
            m.add_deferred(metric, n);
        }
        m.flush(&host);
        m.flush(&host);
        #[rustfmt::skip]
        let cases = [
            (first, 7, "the first metric, twice deferred"),
            (Metric::SpansRecorded, 3, "one in the middle"),
            (last, 1, "the last metric"),
            (Metric::SpansExported, 0, "one never deferred"),
        ];
        for (metric, want, reason) in cases {
            assert_eq!(host.metric(metric.name()), want, "{reason}");
        }
    }

    #[test]
    fn every_metric_is_defined_and_counts() {
        let host = MockHost::new();
        let m = Metrics::define(&host);
        assert_eq!(host.metric_names.borrow().len(), Metric::ALL.len());
        for (i, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric.index(), i, "ALL is in declaration order");
        }
        m.inc(&host, Metric::SpansRecorded);
        m.add(&host, Metric::SpansRecorded, 2);
        m.set(&host, Metric::QueueDepth, 7);
        m.add_deferred(Metric::SpansRecorded, 4);
        assert_eq!(
            host.metric("meshtrace_spans_recorded"),
            3,
            "held until the flush"
        );
        m.flush(&host);
        m.flush(&host);
        assert_eq!(host.metric("meshtrace_spans_recorded"), 7, "flushed once");
        assert_eq!(host.metric("meshtrace_queue_depth"), 7);
    }
}
