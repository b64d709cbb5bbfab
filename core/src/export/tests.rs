use super::sender::MAX_IN_FLIGHT;
use super::*;
use crate::config::{Config, ExportProtocol};
use crate::context::{SpanContext, TraceFlags};
use crate::host::mock::MockHost;
use crate::ids::{SpanId, TraceId};
use crate::otlp::ExportTraceServiceRequest;

fn ok() -> ExportResponse<'static> {
    ExportResponse {
        status: Some(200),
        ..ExportResponse::default()
    }
}

fn http(status: Option<u16>) -> ExportResponse<'static> {
    ExportResponse {
        status,
        ..ExportResponse::default()
    }
}
use crate::span::{PeerResource, SpanKind};
use prost::Message;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn exporter(json: &str) -> (Exporter, MockHost, Metrics) {
    let config = Config::parse(json.as_bytes()).unwrap();
    let host = MockHost::new();
    let metrics = Metrics::define(&host);
    let resource = vec![(
        "service.name".to_string(),
        AttrValue::Str("reviews.default".into()),
    )];
    (
        Exporter::new(&config.exporter, &config.limits, resource),
        host,
        metrics,
    )
}

fn span(name: &str) -> Span {
    let ctx = SpanContext {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([1; 8]),
        flags: TraceFlags(1),
    };
    Span::new(
        ctx,
        None,
        String::new(),
        name.to_string(),
        SpanKind::Server,
        1,
        2,
    )
}

/// Span names of each recorded export request, decoded.
fn sent(host: &MockHost) -> Vec<Vec<String>> {
    host.calls
        .borrow()
        .iter()
        .map(|c| {
            let grpc = c
                .headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/grpc");
            let body = if grpc { &c.body[5..] } else { &c.body[..] };
            let req = ExportTraceServiceRequest::decode(body).unwrap();
            req.resource_spans
                .iter()
                .flat_map(|rs| {
                    rs.scope_spans
                        .iter()
                        .flat_map(|ss| ss.spans.iter().map(|s| s.name.clone()))
                })
                .collect()
        })
        .collect()
}

fn fill(e: &mut Exporter, host: &MockHost, m: &Metrics, names: &[&str]) {
    for n in names {
        e.enqueue(span(n), host, m);
    }
}

#[test]
fn full_batches_leave_at_once_and_partial_ones_after_the_flush_interval() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 2, "flushInterval": "1s"}}"#);
    e.on_tick(&host, &m, SEC);
    fill(&mut e, &host, &m, &["a", "b", "c", "d", "e"]);
    e.on_tick(&host, &m, SEC + 100 * MS);
    assert_eq!(
        sent(&host),
        vec![vec!["a", "b"], vec!["c", "d"]],
        "two full batches, in order"
    );
    assert_eq!(e.queue_len(), 1);
    e.on_tick(&host, &m, SEC + 500 * MS);
    assert_eq!(
        sent(&host).len(),
        2,
        "a partial batch waits for the interval"
    );
    e.on_tick(&host, &m, 2 * SEC + 100 * MS);
    assert_eq!(sent(&host)[2], vec!["e"]);
    m.flush(&host);
    assert_eq!(host.metric("meshtrace_spans_recorded"), 5);
    assert_eq!(host.metric("meshtrace_export_requests"), 3);
    for (token, _) in [(1, ()), (2, ()), (3, ())] {
        e.on_response(token, &ok(), &host, &m, 3 * SEC);
    }
    assert_eq!(host.metric("meshtrace_spans_exported"), 5);
    assert_eq!(e.in_flight(), 0);
}

/// An operator reads `spans_exported` and the drops against `spans_recorded`: no outcome may
/// reach the host before the spans it counts were counted recorded (which is deferred to the
/// tick). A saturated run once read exported 24 above recorded.
#[test]
fn no_outcome_is_counted_before_its_spans_are_counted_recorded() {
    #[rustfmt::skip]
    let cases: [(ExportResponse<'static>, &str, &str); 3] = [
        (ok(), "meshtrace_spans_exported", "delivered"),
        (http(Some(400)), "meshtrace_spans_dropped_export_failed", "refused for good"),
        (http(None), "meshtrace_spans_exported", "retried, then delivered"),
    ];
    for (answer, outcome, why) in cases {
        let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 2}}"#);
        fill(&mut e, &host, &m, &["a", "b"]);
        e.on_response(1, &answer, &host, &m, SEC);
        e.on_tick(&host, &m, 100 * SEC);
        e.on_response(2, &ok(), &host, &m, 100 * SEC);
        assert_eq!(host.metric(outcome), 2, "{why}: the outcome");
        assert_eq!(
            host.metric("meshtrace_spans_recorded"),
            2,
            "{why}: recorded already"
        );
    }
    let (mut e, host, m) = exporter("{}");
    fill(&mut e, &host, &m, &["a"]);
    e.abandon(&host, &m);
    assert_eq!(
        host.metric("meshtrace_spans_dropped_shutdown"),
        1,
        "abandoned"
    );
    assert_eq!(
        host.metric("meshtrace_spans_recorded"),
        1,
        "abandoned: recorded already"
    );
}

/// At ~10,000 spans/s a batch of 512 fills every 50 ms: waiting for the tick (200 ms, later on
/// a saturated worker) overflowed the queue of 2,048 with a collector that kept up (issue 18).
#[test]
fn a_full_batch_leaves_with_its_last_span_and_when_an_answer_frees_a_request() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 2, "maxQueueSize": 8}}"#);
    fill(&mut e, &host, &m, &["a"]);
    assert!(sent(&host).is_empty(), "a partial batch waits for the tick");
    fill(&mut e, &host, &m, &["b"]);
    assert_eq!(
        sent(&host),
        vec![vec!["a", "b"]],
        "sent with the span that filled it"
    );
    let names: Vec<String> = (0..2 * MAX_IN_FLIGHT + 3)
        .map(|i| format!("s{i}"))
        .collect();
    fill(
        &mut e,
        &host,
        &m,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(
        e.in_flight(),
        MAX_IN_FLIGHT,
        "never more requests out than the limit"
    );
    assert_eq!(e.queue_len(), 5, "the rest waits");
    e.on_response(1, &ok(), &host, &m, SEC);
    assert_eq!(
        e.in_flight(),
        MAX_IN_FLIGHT,
        "the freed request carries the next batch"
    );
    assert_eq!(e.queue_len(), 3);
    m.flush(&host);
    assert_eq!(host.metric("meshtrace_spans_dropped_queue_full"), 0);
    e.on_response(2, &http(Some(503)), &host, &m, SEC);
    assert_eq!(
        e.in_flight(),
        MAX_IN_FLIGHT - 1,
        "after a retryable failure nothing leaves before the back-off"
    );
}

#[test]
fn http_requests_are_otlp_http_protobuf_posts() {
    let (mut e, host, m) = exporter(
        r#"{"exporter": {"cluster": "outbound|4318||otel.obs.svc.cluster.local", "path": "/otlp/v1/traces",
            "timeout": "2s", "headers": [{"name": "authorization", "value": "Bearer t"}]}}"#,
    );
    fill(&mut e, &host, &m, &["a"]);
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 2 * SEC);
    let calls = host.calls.borrow();
    let call = &calls[0];
    assert_eq!(call.cluster, "outbound|4318||otel.obs.svc.cluster.local");
    assert_eq!(call.target, "/otlp/v1/traces");
    assert_eq!(call.timeout, Duration::from_secs(2));
    let h = |k: &str| {
        call.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h(":method"), Some("POST"));
    assert_eq!(
        h(":authority"),
        Some("otel.obs.svc.cluster.local"),
        "authority from the Istio cluster name"
    );
    assert_eq!(h("content-type"), Some("application/x-protobuf"));
    assert_eq!(h("authorization"), Some("Bearer t"));
    let req = ExportTraceServiceRequest::decode(call.body.as_slice()).unwrap();
    let resource = req.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
}

#[test]
fn grpc_requests_are_otlp_grpc_over_http2() {
    let (mut e, host, m) = exporter(
        r#"{"exporter": {"protocol": "grpc", "cluster": "outbound|4317||otel.obs.svc.cluster.local",
            "timeout": "3s", "headers": [{"name": "x-tenant", "value": "books"}]}}"#,
    );
    fill(&mut e, &host, &m, &["a"]);
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 2 * SEC);
    {
        let calls = host.calls.borrow();
        let h = |k: &str| {
            calls[0]
                .headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            calls[0].target,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(
            h(":authority"),
            Some("otel.obs.svc.cluster.local"),
            "a valid authority"
        );
        assert_eq!(h("content-type"), Some("application/grpc"));
        assert_eq!(h("te"), Some("trailers"));
        assert_eq!(h("grpc-timeout"), Some("3000m"));
        assert_eq!(h("x-tenant"), Some("books"));
        let body = &calls[0].body;
        assert_eq!(body[0], 0, "uncompressed message");
        assert_eq!(
            u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize,
            body.len() - 5
        );
    }
    assert_eq!(sent(&host), vec![vec!["a"]]);
    e.on_response(
        1,
        &ExportResponse {
            status: Some(200),
            grpc_status: Some(0),
            ..ExportResponse::default()
        },
        &host,
        &m,
        3 * SEC,
    );
    assert_eq!(host.metric("meshtrace_spans_exported"), 1);
}

#[test]
fn the_queue_is_bounded_and_drops_the_oldest() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 4, "maxQueueSize": 4}}"#);
    // The collector never answers: once MAX_IN_FLIGHT requests are out, spans pile up.
    let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    for chunk in names.chunks(10) {
        for n in chunk {
            e.enqueue(span(n), &host, &m);
        }
        e.on_tick(&host, &m, 0);
    }
    assert_eq!(e.in_flight(), MAX_IN_FLIGHT);
    assert_eq!(e.queue_len(), 4);
    m.flush(&host);
    assert_eq!(
        host.metric("meshtrace_spans_dropped_queue_full"),
        100 - 4 - 4 * MAX_IN_FLIGHT as i64
    );
    e.on_response(1, &ok(), &host, &m, 0);
    e.on_tick(&host, &m, 0);
    assert_eq!(
        sent(&host).last().unwrap(),
        &vec!["s96", "s97", "s98", "s99"],
        "the newest spans survive"
    );
}

#[test]
fn retryable_failures_back_off_and_give_up_after_max_retries() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxRetries": 2}}"#);
    fill(&mut e, &host, &m, &["a"]);
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, SEC);
    e.on_response(1, &http(Some(503)), &host, &m, SEC);
    e.on_tick(&host, &m, SEC + 900 * MS);
    assert_eq!(host.calls.borrow().len(), 1, "first back-off is one second");
    e.on_tick(&host, &m, 2 * SEC);
    assert_eq!(host.calls.borrow().len(), 2, "retried");
    assert_eq!(
        host.calls.borrow()[0].body,
        host.calls.borrow()[1].body,
        "the same batch"
    );
    e.on_response(2, &http(None), &host, &m, 2 * SEC);
    e.on_tick(&host, &m, 3 * SEC + 900 * MS);
    assert_eq!(
        host.calls.borrow().len(),
        2,
        "second back-off is two seconds"
    );
    e.on_tick(&host, &m, 4 * SEC);
    e.on_response(3, &http(Some(502)), &host, &m, 4 * SEC);
    assert_eq!(host.metric("meshtrace_export_failures"), 3);
    assert_eq!(
        host.metric("meshtrace_spans_dropped_export_failed"),
        1,
        "dropped after two retries"
    );
    e.on_tick(&host, &m, 60 * SEC);
    assert_eq!(host.calls.borrow().len(), 3, "nothing left to retry");
}

/// What becomes of a batch whose export failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Retried,
    Dropped,
}

#[test]
#[rustfmt::skip]
fn responses_are_classified_as_the_otlp_specification_says() {
    use Fate::*;
    let statuses = [
        (Some(429), Retried, "too many requests"),
        (Some(502), Retried, "bad gateway"),
        (Some(503), Retried, "unavailable"),
        (Some(504), Retried, "gateway timeout"),
        (None,      Retried, "no response: connection refused or timed out"),
        (Some(400), Dropped, "bad request is permanent"),
        (Some(401), Dropped, "unauthorized is permanent"),
        (Some(404), Dropped, "wrong path is permanent"),
        (Some(500), Dropped, "internal error is not in the retryable list"),
    ];
    for (status, fate, why) in statuses {
        let (mut e, host, m) = exporter("{}");
        fill(&mut e, &host, &m, &["a"]);
        e.on_tick(&host, &m, 0);
        e.on_tick(&host, &m, SEC);
        e.on_response(1, &http(status), &host, &m, SEC);
        e.on_tick(&host, &m, 100 * SEC);
        assert_eq!(host.calls.borrow().len() == 2, fate == Retried, "HTTP {status:?}: {why}");
        assert_eq!(host.metric("meshtrace_spans_dropped_export_failed") == 0, fate == Retried, "{why}");
    }
    let grpc = [
        (Some(14), Retried, "UNAVAILABLE"),
        (Some(8),  Retried, "RESOURCE_EXHAUSTED"),
        (Some(4),  Retried, "DEADLINE_EXCEEDED"),
        (Some(3),  Dropped, "INVALID_ARGUMENT"),
        (Some(16), Dropped, "UNAUTHENTICATED"),
        (None,     Dropped, "HTTP 200 without grpc-status is not a gRPC server"),
    ];
    for (code, fate, why) in grpc {
        let (mut e, host, m) = exporter(r#"{"exporter": {"protocol": "grpc"}}"#);
        fill(&mut e, &host, &m, &["a"]);
        e.on_tick(&host, &m, 0);
        e.on_tick(&host, &m, SEC);
        let answer = ExportResponse { grpc_status: code, ..ok() };
        e.on_response(1, &answer, &host, &m, SEC);
        e.on_tick(&host, &m, 100 * SEC);
        assert_eq!(host.calls.borrow().len() == 2, fate == Retried, "gRPC {code:?}: {why}");
    }
}

#[test]
#[rustfmt::skip]
fn retry_after_is_honoured_and_bounded() {
    let cases = [
        (Some("3"),                             3 * SEC,  "delay-seconds"),
        (Some("3600"),                          60 * SEC, "capped at a minute"),
        (Some("Wed, 21 Oct 2026 07:28:00 GMT"), SEC,      "HTTP-date: our own back-off"),
        (Some("-1"),                            SEC,      "garbage: our own back-off"),
        (None,                                  SEC,      "absent"),
    ];
    for (header, wait, why) in cases {
        let (mut e, host, m) = exporter("{}");
        fill(&mut e, &host, &m, &["a"]);
        e.on_tick(&host, &m, 0);
        e.on_tick(&host, &m, SEC);
        let answer = ExportResponse { status: Some(429), retry_after: header, ..ExportResponse::default() };
        e.on_response(1, &answer, &host, &m, SEC);
        e.on_tick(&host, &m, SEC + wait - 1);
        assert_eq!(host.calls.borrow().len(), 1, "{why}: not before {wait}ns");
        e.on_tick(&host, &m, SEC + wait);
        assert_eq!(host.calls.borrow().len(), 2, "{why}: retried at {wait}ns");
    }
}

#[test]
fn batches_respect_max_batch_bytes_and_oversized_spans_are_dropped() {
    let (mut e, host, m) = exporter(r#"{"limits": {"maxBatchBytes": 1024}}"#);
    let big = "x".repeat(300);
    for i in 0..6 {
        e.enqueue(span(&format!("{i}{big}")), &host, &m);
    }
    e.enqueue(span(&"y".repeat(2000)), &host, &m);
    m.flush(&host);
    assert_eq!(host.metric("meshtrace_spans_dropped_too_large"), 1);
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 2 * SEC);
    let calls = host.calls.borrow();
    assert!(
        calls.len() >= 2,
        "six 300-byte spans do not fit one 1 KiB request"
    );
    assert!(
        calls.iter().all(|c| c.body.len() <= 1024),
        "every request within maxBatchBytes"
    );
    drop(calls);
    assert_eq!(sent(&host).concat().len(), 6, "and none is lost");
}

#[test]
fn a_refused_dispatch_drops_and_counts_without_failing() {
    let (mut e, host, m) = exporter("{}");
    host.fail_dispatch.set(true);
    fill(&mut e, &host, &m, &["a", "b"]);
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 2 * SEC);
    assert_eq!(host.metric("meshtrace_spans_dropped_export_failed"), 2);
    assert_eq!(host.metric("meshtrace_export_failures"), 1);
    assert_eq!(e.in_flight(), 0);
}

/// An `ExportTraceServiceResponse` body, as OTLP/HTTP sends it.
fn partial_success(rejected: i64, message: &str) -> Vec<u8> {
    crate::otlp::ExportTraceServiceResponse {
        partial_success: Some(crate::otlp::ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.to_string(),
        }),
    }
    .encode_to_vec()
}

/// A message in gRPC's length-prefixed frame, uncompressed.
fn grpc_frame(message: Vec<u8>) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend((message.len() as u32).to_be_bytes());
    framed.extend(message);
    framed
}

/// OTLP "Partial Success" (OTLP/HTTP and OTLP/gRPC): a successful answer may name spans the
/// collector rejected; those are dropped (reason `rejected`), the rest exported.
#[test]
#[rustfmt::skip]
fn partial_success_counts_rejected_spans_as_dropped() {
    let garbage = [0xff, 0xff, 0xff];
    let mut compressed = grpc_frame(partial_success(1, "x"));
    compressed[0] = 1;
    use ExportProtocol::{Grpc, HttpProtobuf as Http};
    // (protocol, the answer's body, spans exported, spans dropped as rejected, why)
    let cases: Vec<(ExportProtocol, Vec<u8>, u64, u64, &str)> = vec![
        (Http, vec![],                                3, 0, "an empty 200 is full success"),
        (Http, partial_success(2, "bad"),             1, 2, "HTTP: rejected spans are dropped"),
        (Http, partial_success(0, "warn"),            3, 0, "a warning alone drops nothing"),
        (Http, partial_success(9, "all"),             0, 3, "more than the batch: at most the batch"),
        (Http, partial_success(-1, ""),               3, 0, "a negative count is not a rejection"),
        (Http, garbage.to_vec(),                      3, 0, "an undecodable 200 is still a success"),
        (Grpc, grpc_frame(partial_success(1, "bad")), 2, 1, "gRPC: the message in its 5-byte frame"),
        (Grpc, partial_success(1, "bad"),             3, 0, "gRPC: an unframed body is not a message"),
        (Grpc, compressed,                            3, 0, "gRPC: a compressed message is not decoded"),
    ];
    for (protocol, body, exported, rejected, reason) in cases {
        let grpc = protocol == Grpc;
        let config = if grpc { r#"{"exporter": {"protocol": "grpc"}}"# } else { "{}" };
        let (mut e, host, m) = exporter(config);
        fill(&mut e, &host, &m, &["a", "b", "c"]);
        e.on_tick(&host, &m, 0);
        e.on_tick(&host, &m, SEC);
        let answer = ExportResponse { grpc_status: grpc.then_some(0), body: &body, ..ok() };
        e.on_response(1, &answer, &host, &m, SEC);
        assert_eq!(host.metric("meshtrace_spans_exported"), exported as i64, "{reason}");
        assert_eq!(host.metric("meshtrace_spans_dropped_rejected"), rejected as i64, "{reason}");
        assert_eq!(host.metric("meshtrace_spans_dropped_export_failed"), 0, "{reason}: not a failure");
        e.on_tick(&host, &m, 100 * SEC);
        assert_eq!(host.calls.borrow().len(), 1, "{reason}: rejected spans are not retried");
    }
}

#[test]
fn the_partial_success_message_is_logged_once_per_interval() {
    crate::host::mock::take_logs();
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 1}}"#);
    let body = partial_success(1, "span name too long");
    let answer = ExportResponse {
        body: &body,
        ..ok()
    };
    for (token, at) in [(1, SEC), (2, 2 * SEC), (3, 30 * SEC), (4, 62 * SEC)] {
        fill(&mut e, &host, &m, &["a"]);
        e.on_tick(&host, &m, at);
        e.on_response(token, &answer, &host, &m, at);
    }
    let warnings: Vec<String> = crate::host::mock::take_logs()
        .into_iter()
        .filter(|(level, _)| *level == log::Level::Warn)
        .map(|(_, line)| line)
        .collect();
    assert_eq!(host.metric("meshtrace_spans_dropped_rejected"), 4);
    assert_eq!(
        warnings.len(),
        2,
        "one per minute, not per answer: {warnings:?}"
    );
    assert!(
        warnings[0].contains("rejected 1 span(s)") && warnings[0].contains("span name too long")
    );
    assert!(
        warnings[1].contains("rejected 3 span(s)"),
        "the count since the last line: {warnings:?}"
    );
}

/// Retirement after a configuration push (the root context's `on_done`): everything queued
/// leaves at once, answers are awaited up to the export timeout, and what is still lost is
/// counted, never silently gone.
#[test]
fn drain_sends_everything_and_counts_what_is_lost() {
    let (mut e, host, m) =
        exporter(r#"{"exporter": {"maxBatchSize": 2, "flushInterval": "10s", "timeout": "2s"}}"#);
    fill(
        &mut e,
        &host,
        &m,
        &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"],
    );
    e.drain(&host, &m, SEC);
    assert_eq!(
        host.calls.borrow().len(),
        6,
        "all 11 spans, past the in-flight limit"
    );
    assert!(!e.drained(), "answers outstanding");
    for token in 1..=4 {
        e.on_response(token, &ok(), &host, &m, SEC);
    }
    e.on_response(5, &http(Some(503)), &host, &m, SEC);
    e.on_tick(&host, &m, 2 * SEC);
    assert_eq!(host.calls.borrow().len(), 6, "no retry while retiring");
    assert_eq!(host.metric("meshtrace_spans_exported"), 8);
    assert_eq!(
        host.metric("meshtrace_spans_dropped_shutdown"),
        2,
        "the 503"
    );
    fill(&mut e, &host, &m, &["late"]);
    e.on_tick(&host, &m, 2 * SEC);
    assert_eq!(
        host.calls.borrow().len(),
        7,
        "a span ending while retiring still leaves"
    );
    assert!(!e.drain_overdue(4 * SEC), "within timeout + margin");
    assert!(e.drain_overdue(4 * SEC + 1) && !e.drained());
    e.abandon(&host, &m);
    assert!(e.drained());
    assert_eq!(
        host.metric("meshtrace_spans_dropped_shutdown"),
        4,
        "unanswered after the timeout: counted"
    );
}

#[test]
fn captured_spans_never_displace_sampled_ones() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 4, "maxQueueSize": 8}}"#);
    // Full batches leave as soon as they are full: with every request slot taken, spans wait.
    let names: Vec<String> = (0..4 * MAX_IN_FLIGHT).map(|i| format!("f{i}")).collect();
    fill(
        &mut e,
        &host,
        &m,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(e.in_flight(), MAX_IN_FLIGHT);
    for i in 0..5 {
        e.enqueue_captured(span(&format!("c{i}")), &host, &m);
    }
    assert_eq!(
        e.queue_len(),
        2,
        "captured spans get a quarter of the queue"
    );
    fill(
        &mut e,
        &host,
        &m,
        &["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"],
    );
    assert_eq!(e.queue_len(), 10, "sampled spans still get the whole queue");
    m.flush(&host);
    assert_eq!(
        host.metric("meshtrace_spans_dropped_queue_full"),
        3,
        "the captures that did not fit, not a single sampled span"
    );
    for token in 1..=MAX_IN_FLIGHT as u32 {
        e.on_response(token, &ok(), &host, &m, SEC);
    }
    e.on_tick(&host, &m, SEC);
    e.on_tick(&host, &m, 3 * SEC);
    assert_eq!(
        sent(&host)[MAX_IN_FLIGHT..],
        vec![
            vec!["s0", "s1", "s2", "s3"],
            vec!["s4", "s5", "s6", "s7"],
            vec!["c0", "c1"]
        ],
        "batches take sampled spans first, captured ones after"
    );
}

#[test]
fn a_batch_mixes_sampled_and_captured_spans_when_both_wait() {
    let (mut e, host, m) = exporter(r#"{"exporter": {"maxBatchSize": 4, "maxQueueSize": 8}}"#);
    e.enqueue_captured(span("c0"), &host, &m);
    fill(&mut e, &host, &m, &["s0", "s1", "s2"]);
    e.on_tick(&host, &m, SEC);
    assert_eq!(
        sent(&host),
        vec![vec!["s0", "s1", "s2", "c0"]],
        "a full batch counts both"
    );
    assert_eq!(e.queue_len(), 0);
}

fn peer(name: &str) -> PeerResource {
    PeerResource {
        service_name: name.to_string(),
        namespace: "default".to_string(),
        ..PeerResource::default()
    }
}

/// `(service.name, span names)` of each `ResourceSpans` of each request.
fn sent_by_resource(host: &MockHost) -> Vec<Vec<(String, Vec<String>)>> {
    host.calls
        .borrow()
        .iter()
        .map(|c| {
            let req = ExportTraceServiceRequest::decode(&c.body[..]).unwrap();
            req.resource_spans
                .iter()
                .map(|rs| {
                    let name = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value);
                    let name = match name {
                        Some(otlp::any_value::Value::StringValue(s)) => s,
                        _ => String::new(),
                    };
                    let spans = rs.scope_spans[0].spans.iter().map(|s| s.name.clone());
                    (name, spans.collect())
                })
                .collect()
        })
        .collect()
}

#[test]
fn spans_of_other_services_leave_under_their_own_resource() {
    let (mut e, host, m) = exporter(r#"{"exporter":{"maxBatchSize":8}}"#);
    for (name, resource) in [
        ("client", Some("productpage.default")),
        ("server", Some("reviews.default")),
        ("own", None),
        ("client2", Some("productpage.default")),
    ] {
        let mut s = span(name);
        s.resource = resource.map(peer);
        e.enqueue(s, &host, &m);
    }
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 10 * SEC);
    let got = sent_by_resource(&host);
    let want = vec![vec![
        (
            "productpage.default".to_string(),
            vec!["client".to_string(), "client2".to_string()],
        ),
        ("reviews.default".to_string(), vec!["server".to_string()]),
        ("reviews.default".to_string(), vec!["own".to_string()]),
    ]];
    assert_eq!(got, want, "one ResourceSpans per service; the own resource (reviews.default here) apart from the peer of the same name only by its other keys");
    assert_eq!(e.peer_resources(), 2, "each peer resource encoded once");
}

#[test]
fn the_peer_resource_cache_is_bounded() {
    let (mut e, host, m) = exporter(r#"{"exporter":{"maxBatchSize":512,"maxQueueSize":4096}}"#);
    for i in 0..(MAX_PEER_RESOURCES + 10) {
        let mut s = span(&format!("s{i}"));
        s.resource = Some(peer(&format!("svc{i}.default")));
        e.enqueue(s, &host, &m);
    }
    assert_eq!(
        e.peer_resources(),
        MAX_PEER_RESOURCES,
        "the oldest forgotten"
    );
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 10 * SEC);
    let groups: usize = sent_by_resource(&host).iter().map(Vec::len).sum();
    assert_eq!(
        groups,
        MAX_PEER_RESOURCES + 10,
        "queued spans keep a forgotten resource"
    );
}

#[test]
fn max_batch_bytes_counts_each_resource() {
    // Every span under a resource of its own: a batch of many small spans must still fit.
    let (mut e, host, m) =
        exporter(r#"{"exporter":{"maxBatchSize":512},"limits":{"maxBatchBytes":4096}}"#);
    for i in 0..200 {
        let mut s = span(&format!("s{i}"));
        s.resource = Some(peer(&format!("svc{}.default", i % 50)));
        e.enqueue(s, &host, &m);
    }
    e.on_tick(&host, &m, 0);
    e.on_tick(&host, &m, 10 * SEC);
    let calls = host.calls.borrow();
    assert!(calls.len() > 1, "split into several batches");
    for c in calls.iter() {
        assert!(
            c.body.len() <= 4096,
            "within maxBatchBytes: {}",
            c.body.len()
        );
    }
}
