//! Spans encoded where they finished, queued elsewhere: the native adapter's workers encode
//! each finished span (a few hundred bytes) and hand the bytes to the one exporter on Envoy's
//! main thread, instead of the core's `Span` (its attributes as separate strings, a few KiB).
//! What waits between the two is compact, and the span's strings are freed on the thread that
//! allocated them (Envoy's tcmalloc keeps freed memory in the freeing CPU's cache). The Wasm
//! plugin encodes in [`Exporter::enqueue`], where a span finishes and is queued in one VM.

use super::queue::Queued;
use super::Exporter;
use crate::host::Host;
use crate::metrics::{Metric, Metrics};
use crate::otlp::BatchEncoder;
use crate::span::{PeerResource, Span};

/// A finished span as the exporter queues it: its OTLP bytes ([`BatchEncoder::encode_span`]),
/// whose resource it belongs to, and when it ended (the exporter's clock for sending).
#[derive(Debug)]
pub struct EncodedSpan {
    bytes: Vec<u8>,
    resource: Option<PeerResource>,
    end_unix_nanos: u64,
}

impl EncodedSpan {
    pub fn new(span: Span) -> EncodedSpan {
        let mut bytes = BatchEncoder::encode_span(&span);
        // The encoder reserves for a large span; what waits keeps only its own bytes.
        bytes.shrink_to_fit();
        EncodedSpan {
            bytes,
            resource: span.resource,
            end_unix_nanos: span.end_unix_nanos,
        }
    }

    /// Bytes the encoded span holds.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Exporter {
    /// [`Exporter::enqueue`] (`captured`: [`Exporter::enqueue_captured`]) for a span encoded
    /// elsewhere: the same counts, bounds and sends.
    pub fn enqueue_encoded(
        &mut self,
        span: EncodedSpan,
        captured: bool,
        host: &dyn Host,
        metrics: &Metrics,
    ) {
        metrics.add_deferred(Metric::SpansRecorded, 1);
        let resource = span.resource.as_ref().map(|peer| self.peers.get(peer));
        let request_len = self.encoder.group_len(
            resource.as_deref(),
            BatchEncoder::span_cost(span.bytes.len()),
        );
        if request_len > self.settings.max_batch_bytes {
            metrics.add_deferred(Metric::SpansDroppedTooLarge, 1);
            return;
        }
        let queued = Queued {
            resource,
            bytes: span.bytes,
        };
        if captured {
            if !self.queue.push_captured(queued, &self.settings) {
                metrics.add_deferred(Metric::SpansDroppedQueueFull, 1);
                return;
            }
        } else {
            let dropped = self.queue.push_sampled(queued, &self.settings);
            metrics.add_deferred(Metric::SpansDroppedQueueFull, dropped);
        }
        self.send_full_batches(host, metrics, span.end_unix_nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::context::{SpanContext, TraceFlags};
    use crate::host::mock::MockHost;
    use crate::ids::{SpanId, TraceId};
    use crate::span::{AttrValue, SpanKind};

    fn span(name: &str, peer: Option<&str>) -> Span {
        let ctx = SpanContext {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            flags: TraceFlags(1),
        };
        let mut s = Span::new(
            ctx,
            None,
            String::new(),
            name.into(),
            SpanKind::Server,
            1,
            2,
        );
        s.resource = peer.map(|p| PeerResource {
            service_name: p.to_string(),
            ..PeerResource::default()
        });
        s
    }

    /// What one exporter sent and counted for `spans` (name, peer, captured), each queued
    /// through `enqueue`/`enqueue_captured` or encoded first.
    fn run(spans: &[(&str, Option<&str>, bool)], encoded_first: bool) -> (Vec<Vec<u8>>, Vec<i64>) {
        let json = r#"{"exporter": {"maxBatchSize": 3, "maxQueueSize": 4}, "limits": {"maxBatchBytes": 1024}}"#;
        let config = Config::parse(json.as_bytes()).unwrap();
        let host = MockHost::new();
        let m = Metrics::define(&host);
        let own = vec![("service.name".to_string(), AttrValue::Str("me".into()))];
        let mut e = Exporter::new(&config.exporter, &config.limits, own);
        for &(name, peer, captured) in spans {
            let s = span(name, peer);
            match (encoded_first, captured) {
                (true, _) => e.enqueue_encoded(EncodedSpan::new(s), captured, &host, &m),
                (false, true) => e.enqueue_captured(s, &host, &m),
                (false, false) => e.enqueue(s, &host, &m),
            }
        }
        e.on_tick(&host, &m, 0);
        e.on_tick(&host, &m, 10_000_000_000);
        m.flush(&host);
        let counts = [
            "meshtrace_spans_recorded",
            "meshtrace_spans_dropped_queue_full",
            "meshtrace_spans_dropped_too_large",
        ]
        .iter()
        .map(|n| host.metric(n))
        .collect();
        let bodies = host.calls.borrow().iter().map(|c| c.body.clone()).collect();
        (bodies, counts)
    }

    /// The native adapter's path (encode on a worker, queue on the main thread) sends the same
    /// bytes and counts the same as the Wasm plugin's, for full and partial batches, peer
    /// resources, captured spans, a full queue and an oversized span.
    #[test]
    fn encoded_spans_are_sent_and_counted_as_spans_queued_directly() {
        let big = "x".repeat(2000);
        #[rustfmt::skip]
        let spans = [
            ("a", None, false),
            ("b", Some("peer"), false),
            ("c", None, true),
            (big.as_str(), None, false),
            ("d", None, false),
            ("e", Some("peer"), false),
            ("f", None, false),
            ("g", None, false),
            ("h", None, false),
            ("i", None, true),
        ];
        let direct = run(&spans, false);
        let encoded = run(&spans, true);
        assert!(direct.0.len() >= 2, "several requests were sent");
        assert_eq!(direct.1[2], 1, "the oversized span was dropped");
        assert_eq!(encoded, direct);
    }
}
