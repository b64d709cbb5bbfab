//! Capture through the tracer: what an unsampled request keeps and costs, and the span it gives
//! when it fails or is slow.

use super::super::{Finished, Pending, Tracer};
use crate::config::Config;
use crate::headers::HeaderMap;
use crate::host::mock::MockHost;
use crate::host::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use crate::ids::IdGenerator;
use crate::metrics::Metrics;
use crate::node::NodeInfo;
use crate::span::{AttrValue, StatusCode};
use std::cell::RefCell;

const START: u64 = 1_700_000_000_000_000_000;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// A [`MockHost`] that logs every host call the request path makes, by name.
struct Counting {
    inner: MockHost,
    calls: RefCell<Vec<String>>,
}

impl Counting {
    fn new(inner: MockHost) -> Counting {
        Counting {
            inner,
            calls: RefCell::new(Vec::new()),
        }
    }
    fn log(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl Host for Counting {
    fn now_unix_nanos(&self) -> u64 {
        self.log("clock".into());
        self.inner.now_unix_nanos()
    }
    fn request_headers(&self) -> HeaderMap {
        self.log("request headers".into());
        self.inner.request_headers()
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.log(format!("set {name}"));
        self.inner.set_request_header(name, value)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.log(format!("response {name}"));
        self.inner.response_header(name)
    }
    fn set_response_header(&self, name: &str, value: &str) {
        self.log(format!("set response {name}"));
        self.inner.set_response_header(name, value)
    }
    fn set_property(&self, name: &str, value: &[u8]) {
        self.log(format!("set property {name}"));
        self.inner.set_property(name, value)
    }
    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        self.inner.node_fact(fact)
    }
    fn stream_fact(&self, fact: StreamFact) -> Option<Fact> {
        self.log(format!("{fact:?}"));
        self.inner.stream_fact(fact)
    }
    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        self.inner.dispatch(call)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.inner.increment_metric(id, delta)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.inner.record_metric(id, value)
    }
}

fn tracer(json: &str) -> Tracer {
    Tracer::new(
        Config::parse(json.as_bytes()).unwrap(),
        NodeInfo::default(),
        &|_| None,
    )
}

/// A request with an unsampled W3C parent and a trusted request id, answered with `status`.
fn request(status: Option<&str>) -> Counting {
    let mut host = MockHost::new()
        .with_time(START)
        .with_header(":method", "GET")
        .with_header(":path", "/reviews/0")
        .with_header(":authority", "reviews:9080")
        .with_header("traceparent", &format!("00-{TRACE}-{PARENT}-00"))
        .with_header("x-request-id", "0b4e1f34-6a2c-4c1b-9a8e-3f0c2d1e5a77")
        .with_int(StreamFact::RequestStartTime, START as i64 - 7_000);
    if let Some(s) = status {
        host = host.with_response_header(":status", s);
    }
    Counting::new(host)
}

/// Request headers, then the end after `elapsed` nanoseconds: (kept, span, calls at the end).
fn run(
    t: &Tracer,
    host: &Counting,
    metrics: &Metrics,
    elapsed: u64,
) -> (bool, Option<Finished>, Vec<String>) {
    let mut ids = IdGenerator::from_seed(5);
    let pending = t.on_request_headers(host, &mut ids, metrics).pending;
    host.take();
    host.inner.now.set(START + elapsed);
    let kept = matches!(pending, Some(Pending::Unsampled(_)));
    let finished = pending.and_then(|p| t.end(host, p, metrics));
    (kept, finished, host.take())
}

fn attr(f: &Finished, key: &str) -> Option<AttrValue> {
    f.span
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

#[test]
fn an_unsampled_request_pays_no_new_call_at_its_start_and_one_status_read_at_its_end() {
    let off = tracer(r#"{"randomSamplingPercentage": 0, "sampling": {"captureErrors": false}}"#);
    let on = tracer(r#"{"randomSamplingPercentage": 0}"#);
    let mut ids = IdGenerator::from_seed(5);
    let (h_off, h_on) = (request(Some("200")), request(Some("200")));
    assert!(
        off.on_request_headers(&h_off, &mut ids, &Metrics::none())
            .pending
            .is_none(),
        "capture off: nothing kept"
    );
    let mut ids = IdGenerator::from_seed(5);
    assert!(
        on.on_request_headers(&h_on, &mut ids, &Metrics::none())
            .pending
            .is_some(),
        "capture on: a small record kept"
    );
    assert_eq!(
        h_on.take(),
        h_off.take(),
        "no host call added at the request's start (no clock)"
    );

    let (kept, span, calls) = run(&on, &request(Some("200")), &Metrics::none(), 1_000);
    assert!(kept && span.is_none(), "a 200 is not captured");
    assert_eq!(
        calls,
        ["response :status"],
        "one host call at the end of a successful request"
    );
    let (_, _, calls) = run(&on, &request(Some("302")), &Metrics::none(), 1_000);
    assert_eq!(calls, ["response :status"], "nor for a redirect");
}

#[test]
fn latency_capture_reads_the_clock_at_both_ends_and_nothing_else() {
    let t = tracer(
        r#"{"randomSamplingPercentage": 0, "sampling": {"captureErrors": false, "captureSlowerThan": "2s"}}"#,
    );
    let mut ids = IdGenerator::from_seed(5);
    let host = request(Some("200"));
    t.on_request_headers(&host, &mut ids, &Metrics::none());
    assert_eq!(
        host.take().iter().filter(|c| *c == "clock").count(),
        1,
        "the start time"
    );
    let (_, span, calls) = run(&t, &request(Some("200")), &Metrics::none(), 1_999_000_000);
    assert!(span.is_none(), "below the threshold");
    assert_eq!(
        calls,
        ["clock"],
        "the end time only: errors are not captured here"
    );
    let (_, span, _) = run(&t, &request(Some("200")), &Metrics::none(), 2_500_000_000);
    let span = span.expect("captured as slow");
    assert_eq!(
        attr(&span, "meshtrace.capture"),
        Some(AttrValue::Str("latency".into()))
    );
    assert_eq!(
        span.span.end_unix_nanos - span.span.start_unix_nanos,
        2_500_000_000,
        "timed by our clock"
    );
}

#[test]
fn a_failed_unsampled_request_becomes_a_captured_span_that_links_to_its_parent() {
    let t = tracer(r#"{"randomSamplingPercentage": 0}"#);
    let host = request(Some("503"));
    let metrics = Metrics::define(&host.inner);
    let (_, finished, calls) = run(&t, &host, &metrics, 1_000);
    let f = finished.expect("a 503 is captured");
    assert!(f.captured, "queued as captured");
    assert_eq!(
        calls[..2],
        ["response :status".to_string(), "clock".to_string()],
        "status, then the end time for the cap"
    );
    assert!(
        calls.contains(&"RequestStartTime".to_string()),
        "the start from Envoy, not from a clock read every request pays"
    );
    assert!(
        !calls.contains(&"request headers".to_string()),
        "the attributes come from the headers kept at the request's start: a proxy-wasm host \
         shows no request headers at the stream's end (`proxy_on_done`)"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == "response :status").count(),
        1,
        "the status read for the decision is the span's: one data read, not two (issue 24)"
    );
    let span = &f.span;
    assert_eq!(span.context.trace_id.to_hex(), TRACE);
    assert_eq!(
        span.parent.map(|p| p.to_hex()).as_deref(),
        Some(PARENT),
        "linked to the caller's span"
    );
    assert!(!span.context.flags.sampled(), "the real, unsampled flags");
    assert_eq!(
        host.inner.header("traceparent").unwrap(),
        format!("00-{TRACE}-{}-00", span.context.span_id.to_hex()),
        "the span id sent on, unsampled"
    );
    assert_eq!(
        span.start_unix_nanos,
        START - 7_000,
        "started at Envoy's request.time"
    );
    assert_eq!(span.status, StatusCode::Error);
    assert_eq!(
        attr(&f, "meshtrace.capture"),
        Some(AttrValue::Str("error".into()))
    );
    assert_eq!(
        attr(&f, "http.response.status_code"),
        Some(AttrValue::Int(503))
    );
    assert_eq!(
        attr(&f, "url.path"),
        Some(AttrValue::Str("/reviews/0".into()))
    );
    assert_eq!(
        attr(&f, "guid:x-request-id"),
        Some(AttrValue::Str(
            "0b4e1f34-6a2c-4c1b-9a8e-3f0c2d1e5a77".into()
        ))
    );
    metrics.flush(&host.inner);
    assert_eq!(host.inner.metric("meshtrace_spans_captured_error"), 1);
}

#[test]
#[rustfmt::skip]
fn which_endings_are_captured() {
    let cases = [
        (r#"{"randomSamplingPercentage": 0}"#,                                                      None,        Some("error"), "no response at all (reset)"),
        (r#"{"randomSamplingPercentage": 0}"#,                                                      Some("404"), None,          "a 404 of the application"),
        (r#"{"randomSamplingPercentage": 0, "sampling": {"captureErrors": {"statuses": ["404"]}}}"#, Some("404"), Some("error"), "a configured status"),
        (r#"{"randomSamplingPercentage": 0, "sampling": {"captureErrors": false}}"#,                Some("503"), None,          "captureErrors off"),
        (r#"{"randomSamplingPercentage": 0, "exporter": {"protocol": "none"}}"#,                   Some("503"), None,          "no exporter: nothing recorded, nothing kept"),
    ];
    for (config, status, want, why) in cases {
        let (_, finished, _) = run(&tracer(config), &request(status), &Metrics::none(), 1_000);
        assert_eq!(finished.as_ref().and_then(|f| attr(f, "meshtrace.capture")), want.map(|w| AttrValue::Str(w.into())), "{why}");
    }
}

/// Error capture and the span's status tell gRPC by one test, Envoy's: a server fault under
/// HTTP 200 is captured and its span is an error; gRPC-Web is gRPC to neither (capture read its
/// status and kept a span whose status said no error).
#[test]
#[rustfmt::skip]
fn a_grpc_failure_under_http_200_is_captured_by_envoys_grpc_test() {
    let cases = [
        ("application/grpc",       Some("error"), "gRPC UNAVAILABLE under HTTP 200"),
        ("application/grpc+proto", Some("error"), "a +codec form is gRPC"),
        ("application/grpc-web",   None,          "gRPC-Web is not gRPC: Envoy's gRPC-Web filter translates it"),
    ];
    for (content_type, want, why) in cases {
        let host = MockHost::new()
            .with_time(START)
            .with_header(":method", "POST")
            .with_header(":path", "/shop.Cart/Add")
            .with_header(":authority", "cart:9080")
            .with_header("content-type", content_type)
            .with_header("traceparent", &format!("00-{TRACE}-{PARENT}-00"))
            .with_response_header(":status", "200")
            .with_int(StreamFact::GrpcStatus, 14);
        let t = tracer(r#"{"randomSamplingPercentage": 0}"#);
        let (_, finished, _) = run(&t, &Counting::new(host), &Metrics::none(), 1_000);
        assert_eq!(finished.as_ref().and_then(|f| attr(f, "meshtrace.capture")), want.map(|w| AttrValue::Str(w.into())), "{why}");
        if let Some(f) = finished {
            assert_eq!(f.span.status, StatusCode::Error, "{why}: the span's status agrees");
        }
    }
}

#[test]
fn captures_beyond_the_cap_are_counted_not_recorded() {
    let t = tracer(r#"{"randomSamplingPercentage": 0, "sampling": {"maxCapturedPerSecond": 2}}"#);
    let counter = MockHost::new();
    let metrics = Metrics::define(&counter);
    let captured = (0..5)
        .filter(|_| run(&t, &request(Some("500")), &metrics, 1_000).1.is_some())
        .count();
    assert_eq!(captured, 2, "a burst gets one second's worth");
    metrics.flush(&counter);
    assert_eq!(counter.metric("meshtrace_capture_capped"), 3);
    assert_eq!(counter.metric("meshtrace_spans_captured_error"), 2);
}

#[test]
fn a_sampled_request_is_never_marked_captured() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = Counting::new(
        MockHost::new()
            .with_time(START)
            .with_header(":path", "/")
            .with_response_header(":status", "503"),
    );
    let mut ids = IdGenerator::from_seed(5);
    let pending = t
        .on_request_headers(&host, &mut ids, &Metrics::none())
        .pending
        .expect("sampled at 100%");
    let f = t.end(&host, pending, &Metrics::none()).unwrap();
    assert!(
        !f.captured && attr(&f, "meshtrace.capture").is_none(),
        "sampled spans are not captured ones"
    );
}

#[test]
fn an_override_rule_that_starts_recording_mid_trace_says_so() {
    let t = tracer(
        r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"sample": "always", "parent": "override"}]}}"#,
    );
    let host = request(Some("200"));
    let mut ids = IdGenerator::from_seed(5);
    let pending = t
        .on_request_headers(&host, &mut ids, &Metrics::none())
        .pending
        .unwrap();
    assert!(
        host.inner.header("traceparent").unwrap().ends_with("-01"),
        "sampled from here down"
    );
    assert_eq!(
        host.inner.header("tracestate").as_deref(),
        Some("ot=th:0"),
        "the subtree's threshold"
    );
    let f = t.end(&host, pending, &Metrics::none()).unwrap();
    assert_eq!(
        attr(&f, "meshtrace.starts_mid_trace"),
        Some(AttrValue::Bool(true))
    );
    assert_eq!(
        f.span.parent.map(|p| p.to_hex()).as_deref(),
        Some(PARENT),
        "its parent was not recorded"
    );
}
