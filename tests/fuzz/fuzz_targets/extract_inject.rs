#![no_main]
//! Any header list through extract → inject: what is sent on is valid and bounded.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::headers::HeaderMap;
use meshtrace_core::config::Propagator;
use meshtrace_core::context::{SpanContext, TraceFlags};
use meshtrace_core::ids::{SpanId, TraceId};
use meshtrace_core::propagation::{self, traceparent, tracestate};

const NAMES: [&str; 9] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
];
const ALL: [Propagator; 4] = [
    Propagator::Tracecontext,
    Propagator::B3,
    Propagator::B3multi,
    Propagator::Baggage,
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Each line is one header: its first byte picks the name, the rest is the value.
    let headers: HeaderMap = s
        .lines()
        .filter_map(|line| {
            let first = *line.as_bytes().first()?;
            let name = NAMES[usize::from(first) % NAMES.len()];
            Some((name, line.get(1..).unwrap_or("")))
        })
        .collect();
    let got = propagation::extract(&headers, &ALL);
    let ctx = got.parent.unwrap_or(SpanContext {
        trace_id: TraceId([1; 16]),
        span_id: SpanId([2; 8]),
        flags: TraceFlags(3),
    });
    propagation::inject(
        &ctx,
        &got.tracestate,
        got.baggage.as_deref(),
        &ALL,
        &ALL,
        |name, value| {
            let Some(v) = value else { return };
            match name {
                "traceparent" => assert!(traceparent::parse(v).is_ok() && v.len() == 55),
                "tracestate" => assert!(!v.is_empty() && v.len() <= tracestate::MAX_LEN),
                _ => assert!(!v.is_empty()),
            }
        },
    );
});
