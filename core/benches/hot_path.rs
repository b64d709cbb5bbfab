//! Micro-benchmarks of the pure core: the work meshtrace does per request, without the proxy.
//! `cargo bench -p meshtrace-core` (or `./build.sh bench --micro`) prints ns per operation.
//!
//! Native figures; inside Envoy the same code runs as Wasm under V8, typically 1.5–3× slower,
//! and host calls come on top (see BENCHMARKS.md for both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use meshtrace_core::config::{Config, Propagator};
use meshtrace_core::headers::{serialize, HeaderMap};
use meshtrace_core::host::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use meshtrace_core::ids::{IdGenerator, TraceId};
use meshtrace_core::metrics::Metrics;
use meshtrace_core::node::NodeInfo;
use meshtrace_core::otlp::{self, BatchEncoder, InstrumentationScope};
use meshtrace_core::propagation::{self, b3, traceparent, TraceState};
use meshtrace_core::sampling::{ParentInfo, RequestInfo, Sampler};
use meshtrace_core::span::SpanKind;
use meshtrace_core::tracer::{Outcome, Pending, Tracer};
use prost::Message;
use std::cell::Cell;
use std::hint::black_box;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "ot=th:0;rv:0123456789abcd,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// A host that answers like Envoy does for a typical mesh request, and counts header and
/// property writes.
/// `request_headers` parses the map from the ABI's serialized form, as the plugin does.
struct BenchHost {
    headers: HeaderMap,
    serialized: Vec<u8>,
    writes: Cell<u32>,
    property_writes: Cell<u32>,
}

impl BenchHost {
    fn new(extra: &[(&str, &str)]) -> BenchHost {
        let mut pairs: Vec<(&str, &str)> = vec![
            (":authority", "reviews.default.svc.cluster.local:9080"),
            (":path", "/reviews/0?user=jason"),
            (":method", "GET"),
            (":scheme", "http"),
            ("user-agent", "python-requests/2.32"),
            ("accept", "*/*"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "a3e1c4d2-7b1f-4c3e-9d2a-5f6b7c8d9e0f"),
        ];
        pairs.extend_from_slice(extra);
        BenchHost {
            headers: pairs.iter().copied().collect(),
            serialized: serialize(&pairs),
            writes: Cell::new(0),
            property_writes: Cell::new(0),
        }
    }
}

impl Host for BenchHost {
    fn now_unix_nanos(&self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn request_headers(&self) -> HeaderMap {
        HeaderMap::from_serialized(&self.serialized)
    }
    fn set_request_header(&self, _name: &str, _value: Option<&str>) {
        self.writes.set(self.writes.get() + 1);
    }
    fn response_header(&self, _name: &str) -> Option<String> {
        None
    }
    fn set_response_header(&self, _name: &str, _value: &str) {
        self.writes.set(self.writes.get() + 1);
    }
    fn node_fact(&self, _fact: NodeFact<'_>) -> Option<String> {
        None
    }
    fn stream_fact(&self, _fact: StreamFact) -> Option<Fact> {
        None
    }
    fn set_property(&self, _name: &str, _value: &[u8]) {
        self.property_writes.set(self.property_writes.get() + 1);
    }
    fn dispatch(&self, _call: Outgoing<'_>) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }
    fn define_metric(&self, _kind: MetricKind, _name: &str) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }
    fn increment_metric(&self, _id: u32, _delta: i64) {}
    fn record_metric(&self, _id: u32, _value: u64) {}
}

fn node() -> NodeInfo {
    NodeInfo {
        namespace: "default".into(),
        workload_name: "reviews-v2".into(),
        labels: vec![(meshtrace_core::node::LABEL_APP, "reviews".into())],
        mesh_id: "cluster.local".into(),
        ..NodeInfo::default()
    }
}

fn tracer(json: &str) -> Tracer {
    Tracer::new(Config::parse(json.as_bytes()).unwrap(), node(), &|_| None)
}

fn outcome() -> Outcome {
    Outcome {
        kind: SpanKind::Client,
        status: Some(200),
        protocol_version: Some("1.1".into()),
        upstream_cluster: Some("outbound|9080||reviews.default.svc.cluster.local".into()),
        route_name: None,
        details: None,
        downstream_address: Some("10.0.0.7:51234".into()),
        upstream_address: Some("10.0.0.9:9080".into()),
        request_size: Some(0),
        response_size: Some(1432),
        ..Outcome::default()
    }
}

fn propagation(c: &mut Criterion) {
    let mut g = c.benchmark_group("propagation");
    g.bench_function("traceparent parse", |b| {
        b.iter(|| traceparent::parse(black_box(TRACEPARENT)))
    });
    let ctx = traceparent::parse(TRACEPARENT).unwrap();
    g.bench_function("traceparent format", |b| {
        b.iter(|| traceparent::format(black_box(&ctx)))
    });
    g.bench_function("tracestate parse+format (3 members)", |b| {
        b.iter(|| {
            TraceState::parse(std::iter::once(black_box(TRACESTATE))).map(|s| s.header_value())
        })
    });
    g.bench_function("b3 single parse", |b| {
        b.iter(|| {
            b3::parse_single(black_box(
                "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            ))
        })
    });
    let host = BenchHost::new(&[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)]);
    g.bench_function("read the header map (10 headers)", |b| {
        b.iter(|| HeaderMap::from_serialized(black_box(&host.serialized)))
    });
    let headers = host.headers;
    let all = [
        Propagator::Tracecontext,
        Propagator::B3,
        Propagator::B3multi,
        Propagator::Baggage,
    ];
    g.bench_function("extract (default propagators, W3C request)", |b| {
        b.iter(|| propagation::extract(black_box(&headers), &all))
    });
    g.finish();
}

fn sampling(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampling");
    let request = RequestInfo {
        method: "GET",
        path: "/reviews/0",
        host: "reviews:9080",
        headers: &HeaderMap::new(),
    };
    let root = Sampler::new(&Config::parse(br#"{"randomSamplingPercentage": 1}"#).unwrap());
    let mut ids = IdGenerator::from_seed(7);
    g.bench_function("decide (new trace, 1%)", |b| {
        b.iter(|| root.decide(ids.trace_id(), &ParentInfo::default(), &request, 0))
    });
    let parent = ParentInfo {
        sampled: Some(true),
        ot: Some("th:0;rv:0123456789abcd"),
        ..ParentInfo::default()
    };
    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    g.bench_function("decide (sampled parent with ot)", |b| {
        b.iter(|| root.decide(black_box(trace), &parent, &request, 0))
    });
    let with_rules = Sampler::new(
        &Config::parse(
            br#"{"sampling": {"rules": [
                {"match": {"path": {"prefix": "/static/"}}, "sample": "never"},
                {"match": {"method": "POST", "path": {"prefix": "/api/checkout"}}, "sample": "always"},
                {"match": {"headers": [{"name": "x-tenant", "value": "gold"}]}, "sample": 50}]}}"#,
        )
        .unwrap(),
    );
    g.bench_function("decide (3 rules, none match)", |b| {
        b.iter(|| with_rules.decide(ids.trace_id(), &ParentInfo::default(), &request, 0))
    });
    g.finish();
}

fn spans_and_export(c: &mut Criterion) {
    let mut g = c.benchmark_group("export");
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = BenchHost::new(&[("traceparent", TRACEPARENT)]);
    let mut ids = IdGenerator::from_seed(3);
    let metrics = Metrics::none();
    let mut span = || {
        let active = t
            .on_request_headers(&host, &mut ids, &metrics)
            .pending
            .and_then(Pending::into_recorded)
            .unwrap();
        t.finish(active, outcome(), 1_700_000_000_002_000_000).span
    };
    let one = span();
    g.bench_function("encode one span", |b| {
        b.iter(|| BatchEncoder::encode_span(black_box(&one)))
    });
    // What the direct encoding saves: building prost's message first (an allocation per key).
    g.bench_function("encode one span via the prost message", |b| {
        b.iter_batched(
            || one.clone(),
            |s| otlp::Span::from(s).encode_to_vec(),
            BatchSize::SmallInput,
        )
    });
    let encoded = BatchEncoder::encode_span(&one);
    let spans: Vec<Vec<u8>> = (0..512).map(|_| encoded.clone()).collect();
    let encoder = BatchEncoder::new(
        &otlp::resource(t.resource.clone()),
        &InstrumentationScope {
            name: "meshtrace".into(),
            version: "0.1.0".into(),
        },
    );
    g.bench_function("frame a batch of 512 encoded spans (OTLP/HTTP)", |b| {
        b.iter(|| encoder.encode(spans.iter().map(Vec::as_slice), false))
    });
    g.finish();
}

/// The whole request path as the plugin runs it per request, host calls excepted.
fn request_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("request path");
    let metrics = Metrics::none();
    let mut ids = IdGenerator::from_seed(11);
    for (name, json, extra) in [
        (
            "new trace, not sampled (1%)",
            r#"{"randomSamplingPercentage": 0}"#,
            &[][..],
        ),
        (
            "new trace, not sampled, nothing published",
            r#"{"randomSamplingPercentage": 0, "propagation": {"publishContext": []}}"#,
            &[][..],
        ),
        (
            "W3C parent, not sampled",
            "{}",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )][..],
        ),
    ] {
        let t = tracer(json);
        let host = BenchHost::new(extra);
        g.bench_function(format!("request headers: {name}"), |b| {
            b.iter(|| t.on_request_headers(&host, &mut ids, &metrics))
        });
    }
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = BenchHost::new(&[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)]);
    g.bench_function("sampled: headers, finish, encode", |b| {
        b.iter(|| {
            let active = t
                .on_request_headers(&host, &mut ids, &metrics)
                .pending
                .and_then(Pending::into_recorded)
                .unwrap();
            let span = t.finish(active, outcome(), 1_700_000_000_002_000_000).span;
            BatchEncoder::encode_span(&span)
        })
    });
    g.finish();
    black_box((host.writes.get(), host.property_writes.get()));
}

criterion_group!(
    benches,
    propagation,
    sampling,
    spans_and_export,
    request_path
);
criterion_main!(benches);
