//! The span queue of a worker — what OpenTelemetry's SDK keeps in its batch span processor:
//! finished spans, encoded once, wait here until a batch takes them. Two lanes: sampled spans,
//! bounded by `exporter.maxQueueSize` and four batches' worth of bytes, the oldest dropped
//! beyond; and captured spans (`sampling.captureErrors`, `captureSlowerThan`), in a quarter of
//! those bounds, the newest refused beyond — so a capture never costs a sampled span. Each lane
//! keeps the bytes it holds beside its spans, updated by the lane alone.

use super::sender::Batch;
use super::settings::ExportSettings;
use crate::otlp::{self, BatchEncoder};
use std::collections::VecDeque;
use std::rc::Rc;

/// A span waiting: its encoded bytes and, when it belongs to another service, that service's
/// encoded resource (shared with the other spans of the service).
#[derive(Debug)]
pub(crate) struct Queued {
    pub resource: Option<Rc<[u8]>>,
    pub bytes: Vec<u8>,
}

/// Spans in arrival order and the bytes they hold.
#[derive(Debug, Default)]
struct Lane {
    spans: VecDeque<Queued>,
    bytes: usize,
}

impl Lane {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn push(&mut self, span: Queued) {
        self.bytes += span.bytes.len();
        self.spans.push_back(span);
    }

    fn pop_oldest(&mut self) -> Option<Queued> {
        let span = self.spans.pop_front()?;
        self.bytes -= span.bytes.len();
        Some(span)
    }

    /// Moves the `n` oldest spans (at most all) to the end of `into`.
    fn take(&mut self, n: usize, into: &mut Vec<Queued>) {
        let n = n.min(self.spans.len());
        let start = into.len();
        into.extend(self.spans.drain(..n));
        self.bytes -= into
            .iter()
            .skip(start)
            .map(|q| q.bytes.len())
            .sum::<usize>();
    }

    /// Empties the lane; the spans it held.
    fn clear(&mut self) -> usize {
        let n = self.spans.len();
        self.spans.clear();
        self.bytes = 0;
        n
    }
}

#[derive(Debug, Default)]
pub(crate) struct SpanQueue {
    sampled: Lane,
    captured: Lane,
}

impl SpanQueue {
    /// Spans waiting, sampled and captured.
    pub fn len(&self) -> usize {
        self.sampled.len() + self.captured.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a sampled span, dropping the oldest beyond the queue's bounds; how many it dropped.
    pub fn push_sampled(&mut self, span: Queued, s: &ExportSettings) -> u64 {
        self.sampled.push(span);
        let mut dropped = 0;
        while self.sampled.len() > s.max_queue_size || self.sampled.bytes > s.max_queue_bytes {
            if self.sampled.pop_oldest().is_none() {
                break;
            }
            dropped += 1;
        }
        dropped
    }

    /// Queues a captured span within its share of the bounds; `false`: it did not fit and is
    /// dropped.
    pub fn push_captured(&mut self, span: Queued, s: &ExportSettings) -> bool {
        if self.captured.len() >= s.max_captured
            || self.captured.bytes + span.bytes.len() > s.max_captured_bytes
        {
            return false;
        }
        self.captured.push(span);
        true
    }

    /// A full batch is waiting: `maxBatchSize` spans, or spans enough to fill `maxBatchBytes`.
    pub fn batch_ready(&self, s: &ExportSettings) -> bool {
        self.len() >= s.max_batch_size
            || self.sampled.bytes + self.captured.bytes >= s.max_batch_bytes
    }

    /// Takes up to `maxBatchSize` spans from the front, sampled ones first, within
    /// `maxBatchBytes`, and encodes them into an export request.
    pub fn next_batch(&mut self, encoder: &BatchEncoder, s: &ExportSettings) -> Option<Batch> {
        let count = self.batch_len(encoder, s);
        if count == 0 {
            return None;
        }
        let sampled = count.min(self.sampled.len());
        let mut spans = Vec::with_capacity(count);
        self.sampled.take(sampled, &mut spans);
        self.captured.take(count - sampled, &mut spans);
        let body = encoder.encode_grouped(
            spans
                .iter()
                .map(|q| (q.resource.as_deref(), q.bytes.as_slice())),
            s.grpc,
        );
        Some(Batch::new(body, count as u64))
    }

    /// How many spans from the front fit one request: at most `maxBatchSize`, and the request —
    /// one `ResourceSpans` per resource, each with its framing — within `maxBatchBytes`.
    fn batch_len(&self, encoder: &BatchEncoder, s: &ExportSettings) -> usize {
        // Each resource of the request and what its spans cost so far.
        let mut groups: Vec<(Option<&[u8]>, usize)> = Vec::new();
        let mut request_len = 0;
        let mut count = 0;
        let front = self.sampled.spans.iter().chain(&self.captured.spans);
        for span in front.take(s.max_batch_size) {
            let cost = BatchEncoder::span_cost(span.bytes.len());
            let resource = span.resource.as_deref();
            let group = groups
                .iter_mut()
                .find(|(r, _)| otlp::same_resource(*r, resource));
            let (was, spans_len) = match &group {
                Some((_, len)) => (encoder.group_len(resource, *len), *len + cost),
                None => (0, cost),
            };
            let len = request_len - was + encoder.group_len(resource, spans_len);
            if len > s.max_batch_bytes {
                break;
            }
            request_len = len;
            match group {
                Some(group) => group.1 = spans_len,
                None => groups.push((resource, spans_len)),
            }
            count += 1;
        }
        count
    }

    /// Empties the queue; the spans it held.
    pub fn clear(&mut self) -> u64 {
        (self.sampled.clear() + self.captured.clear()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExporterConfig, LimitsConfig};
    use crate::otlp::InstrumentationScope;

    /// The request of the first `n` spans, measured from scratch: one `ResourceSpans` per
    /// resource, in the order each first appears.
    fn request_len(encoder: &BatchEncoder, spans: &[Queued]) -> usize {
        let mut groups: Vec<(Option<&[u8]>, usize)> = Vec::new();
        for q in spans {
            let cost = BatchEncoder::span_cost(q.bytes.len());
            let resource = q.resource.as_deref();
            match groups
                .iter_mut()
                .find(|(r, _)| otlp::same_resource(*r, resource))
            {
                Some(group) => group.1 += cost,
                None => groups.push((resource, cost)),
            }
        }
        groups
            .iter()
            .map(|(r, len)| encoder.group_len(*r, *len))
            .sum()
    }

    /// The running sum of `batch_len` against the request measured from scratch: every batch is
    /// the longest run from the front within `maxBatchBytes` and `maxBatchSize`.
    #[test]
    fn each_batch_is_the_longest_run_that_fits() {
        let scope = InstrumentationScope::default();
        let encoder = BatchEncoder::new(&otlp::resource(Vec::new()), &scope);
        let limits = LimitsConfig {
            max_batch_bytes: 2048,
            ..LimitsConfig::default()
        };
        let config = ExporterConfig {
            max_batch_size: 40,
            max_queue_size: 4096,
            ..ExporterConfig::default()
        };
        let mut s = ExportSettings::new(&config, &limits);
        s.max_queue_bytes = usize::MAX; // every span stays queued
        let peers: Vec<Rc<[u8]>> = (1..4)
            .map(|i| vec![i; 30 * usize::from(i)].into())
            .collect();
        let mut queue = SpanQueue::default();
        let mut all = Vec::new();
        for i in 0..600_usize {
            let resource = peers.get(i % 5).cloned();
            let bytes = vec![0; 10 + (i * 37) % 300];
            all.push(Queued {
                resource: resource.clone(),
                bytes: bytes.clone(),
            });
            queue.push_sampled(Queued { resource, bytes }, &s);
        }
        let mut start = 0;
        while start < all.len() {
            let n = queue.batch_len(&encoder, &s);
            let rest = &all[start..];
            let fits =
                |k: usize| k <= s.max_batch_size && request_len(&encoder, &rest[..k]) <= 2048;
            assert!(n > 0 && fits(n), "batch at span {start}: {n} spans fit");
            assert!(
                n == rest.len() || !fits(n + 1),
                "batch at span {start}: {n} is the longest"
            );
            assert!(queue.next_batch(&encoder, &s).is_some());
            start += n;
        }
        assert!(queue.is_empty());
    }
}
