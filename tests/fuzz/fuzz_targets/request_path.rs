#![no_main]
//! The whole request path (extract, sample, inject, finish, encode) on arbitrary headers, under
//! a configuration that trusts nothing and one that trusts everything: what is sent on stays
//! valid and bounded, and the span encodes within the limits.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::config::Config;
use meshtrace_core::span::SpanKind;
use meshtrace_core::export::Exporter;
use meshtrace_core::host::mock::MockHost;
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::Metrics;
use meshtrace_core::node::NodeInfo;
use meshtrace_core::propagation::{traceparent, tracestate};
use meshtrace_core::tracer::{Outcome, Pending, Tracer};

const NAMES: [&str; 12] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-sampled",
    "x-request-id",
    "x-envoy-force-trace",
    ":path",
    ":authority",
    "user-agent",
    "x-tenant",
];

const CONFIGS: [&str; 2] = [
    r#"{"randomSamplingPercentage": 37.5, "sampling": {"trustIncoming": false, "maxTracesPerSecond": 5,
        "rules": [{"match": {"path": {"prefix": "/a"}}, "sample": 50}]},
        "propagation": {"inject": ["tracecontext", "b3", "b3multi", "baggage"], "trustIncomingRequestId": false},
        "limits": {"maxAttributeLength": 32, "maxAttributes": 8, "maxBatchBytes": 2048}}"#,
    r#"{"randomSamplingPercentage": 100, "customTags": {"t": {"header": {"name": "x-tenant"}}}}"#,
];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for (i, json) in CONFIGS.iter().enumerate() {
        let Ok(config) = Config::parse(json.as_bytes()) else {
            return;
        };
        let limits = config.limits.clone();
        let exporter_config = config.exporter.clone();
        let tracer = Tracer::new(config, NodeInfo::default(), &|_| None);
        let mut host = MockHost::new().with_time(1_700_000_000_000_000_000);
        for line in s.lines() {
            let Some(first) = line.as_bytes().first() else { continue };
            let name = NAMES[usize::from(*first) % NAMES.len()];
            host = host.with_header(name, line.get(1..).unwrap_or(""));
        }
        let mut ids = IdGenerator::from_seed(i as u64);
        let kind = if i == 0 { SpanKind::Server } else { SpanKind::Client };
        let active = tracer
            .on_request_headers(&host, &mut ids, &Metrics::none())
            .pending
            .and_then(Pending::into_recorded);
        let tp = host.header("traceparent").expect("a traceparent is always sent on");
        assert!(traceparent::parse(&tp).is_ok() && tp.len() == 55, "{tp}");
        if let Some(ts) = host.header("tracestate") {
            assert!(!ts.is_empty() && ts.len() <= tracestate::MAX_LEN);
        }
        if let Some(active) = active {
            let outcome = Outcome { kind, ..Outcome::default() };
            let finished = tracer.finish(active, outcome, 1_700_000_000_000_000_001);
            let mut exporter = Exporter::new(&exporter_config, &limits, tracer.resource.clone());
            for span in finished {
                assert!(span.attributes.len() <= limits.max_attributes);
                assert!(span.name.len() <= limits.max_span_name_length);
                exporter.enqueue(span, &host, &Metrics::none());
            }
            exporter.on_tick(&host, &Metrics::none(), 0);
            exporter.on_tick(&host, &Metrics::none(), 10_000_000_000);
            for call in host.calls.borrow().iter() {
                assert!(call.body.len() <= limits.max_batch_bytes);
            }
        }
    }
});
