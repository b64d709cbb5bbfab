//! Scratch: N unsampled requests through the core (request headers, then end), for callgrind.
#![allow(clippy::unwrap_used)]
use meshtrace_core::config::Config;
use meshtrace_core::headers::{serialize, HeaderMap};
use meshtrace_core::host::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::Metrics;
use meshtrace_core::node::NodeInfo;
use meshtrace_core::tracer::Tracer;
use std::cell::Cell;

struct H {
    serialized: Vec<u8>,
    writes: Cell<u32>,
}
impl Host for H {
    fn now_unix_nanos(&self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn request_headers(&self) -> HeaderMap {
        HeaderMap::from_serialized_vec(self.serialized.clone())
    }
    fn set_request_header(&self, _n: &str, _v: Option<&str>) {
        self.writes.set(self.writes.get() + 1)
    }
    fn response_header(&self, _n: &str) -> Option<String> {
        None
    }
    fn response_status(&self) -> Option<u16> {
        Some(200)
    }
    fn set_response_header(&self, _n: &str, _v: &str) {}
    fn node_fact(&self, _f: NodeFact<'_>) -> Option<String> {
        None
    }
    fn stream_fact(&self, _f: StreamFact) -> Option<Fact> {
        None
    }
    fn set_property(&self, _n: &str, v: &[u8]) {
        self.writes.set(self.writes.get() + v.len() as u32)
    }
    fn dispatch(&self, _c: Outgoing<'_>) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }
    fn define_metric(&self, _k: MetricKind, _n: &str) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }
    fn increment_metric(&self, _i: u32, _d: i64) {}
    fn record_metric(&self, _i: u32, _v: u64) {}
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(1000, |a| a.parse().unwrap());
    let pairs = [
        (":authority", "reviews:9080"),
        (":path", "/reviews/0"),
        (":method", "GET"),
        (":scheme", "http"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
        ),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "7c0cbc3e-4c3e-4b4e-9a5e-3f1c2d8a9b10"),
    ];
    let host = H {
        serialized: serialize(&pairs),
        writes: Cell::new(0),
    };
    let cfg = r#"{"randomSamplingPercentage": 0.0001}"#;
    let t = Tracer::new(
        Config::parse(cfg.as_bytes()).unwrap(),
        NodeInfo::default(),
        &|_| None,
    );
    let metrics = Metrics::none();
    let mut ids = IdGenerator::from_seed(7);
    let mut spans = 0;
    for _ in 0..n {
        let state = t.on_request_headers(&host, &mut ids, &metrics);
        if let Some(p) = state.pending {
            spans += t.end(&host, p, &metrics).is_some() as u32;
        }
    }
    println!("{} writes, {spans} spans", host.writes.get());
}
