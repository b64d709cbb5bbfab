use super::outcome::{is_error, span_status, GrpcOutcome};
use super::*;
use crate::config::Config;
use crate::host::mock::MockHost;
use crate::host::StreamFact;
use crate::node::ListenerDirection;
use crate::node::NodeInfo;
use crate::span::{SpanKind, StatusCode};

pub(super) const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(super) const SPAN: &str = "00f067aa0ba902b7";

pub(super) fn tracer(json: &str) -> Tracer {
    let node = NodeInfo {
        namespace: "default".into(),
        workload_name: "reviews-v2".into(),
        labels: vec![(crate::node::LABEL_APP, "reviews".into())],
        mesh_id: "cluster.local".into(),
        ..NodeInfo::default()
    };
    Tracer::new(Config::parse(json.as_bytes()).unwrap(), node, &|name| {
        (name == "POD_NAME").then(|| "reviews-v2-abc".to_string())
    })
}

pub(super) fn request(host: &MockHost, t: &Tracer) -> Option<ActiveSpan> {
    let mut ids = IdGenerator::from_seed(1);
    t.on_request_headers(host, &mut ids, &Metrics::none())
        .pending
        .and_then(Pending::into_recorded)
}

pub(super) fn traceparent(host: &MockHost) -> (String, String, String) {
    let tp = host
        .header("traceparent")
        .expect("traceparent is always sent on");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// A recorded request's state, for reading an outcome.
fn recorded() -> ActiveSpan {
    request(
        &base_request(),
        &tracer(r#"{"randomSamplingPercentage": 100}"#),
    )
    .unwrap()
}

pub(super) fn base_request() -> MockHost {
    MockHost::new()
        .with_time(1_700_000_000_000_000_000)
        .with_header(":method", "GET")
        .with_header(":path", "/reviews/0?user=1")
        .with_header(":authority", "reviews:9080")
        .with_header(":scheme", "http")
}

#[test]
fn a_request_without_context_starts_a_random_sampled_trace() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = base_request();
    let active = request(&host, &t).expect("sampled at 100%");
    let (trace, span, flags) = traceparent(&host);
    assert_eq!(
        flags, "03",
        "sampled, and the random flag for an id we generated"
    );
    assert_eq!(trace, active.context.trace_id.to_hex());
    assert_eq!(span, active.context.span_id.to_hex());
    assert!(active.parent.is_none());
    let rid = host
        .header("x-request-id")
        .expect("a request id is generated");
    assert_eq!(rid.len(), 36);
}

#[test]
fn a_valid_parent_is_continued_with_a_new_span_id() {
    let t = tracer(r#"{"randomSamplingPercentage": 0}"#);
    let host = base_request()
        .with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"))
        .with_header("x-request-id", "req-7");
    let active = request(&host, &t).expect("parent-based: sampled parent");
    let (trace, span, flags) = traceparent(&host);
    assert_eq!(trace, TRACE);
    assert_ne!(span, SPAN);
    assert_eq!(flags, "01", "the parent's random flag (unset) is kept");
    assert_eq!(active.parent.map(|p| p.to_hex()), Some(SPAN.to_string()));
    assert_eq!(host.header("x-request-id").as_deref(), Some("req-7"));
}

#[test]
fn unsampled_requests_are_propagated_but_not_recorded() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-00"));
    assert!(request(&host, &t).is_none());
    let (trace, _, flags) = traceparent(&host);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "00"));
}

#[test]
fn export_none_propagates_and_samples_but_records_nothing() {
    let t = tracer(r#"{"randomSamplingPercentage": 100, "exporter": {"protocol": "none"}}"#);
    let host = base_request();
    assert!(request(&host, &t).is_none());
    assert_eq!(traceparent(&host).2, "03");
}

#[test]
#[rustfmt::skip]
fn kind_follows_direction_gateway_and_override() {
    let sidecar = tracer("{}");
    let mut gw = tracer("{}");
    gw.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
    let forced = tracer(r#"{"role": "client"}"#);
    use ListenerDirection::*;
    // The direction is a property read, one of the dearest host calls: made only when needed.
    struct Row<'a> { tracer: &'a Tracer, listener: ListenerDirection, kind: SpanKind, reads_direction: bool, why: &'a str }
    let cases = [
        Row { tracer: &sidecar, listener: Inbound,     kind: SpanKind::Server, reads_direction: true,  why: "inbound listener" },
        Row { tracer: &sidecar, listener: Outbound,    kind: SpanKind::Client, reads_direction: true,  why: "outbound listener" },
        Row { tracer: &sidecar, listener: Unspecified, kind: SpanKind::Server, reads_direction: true,  why: "plain Envoy listener" },
        Row { tracer: &gw,      listener: Outbound,    kind: SpanKind::Server, reads_direction: false, why: "gateways are the mesh's entry, whatever the listener" },
        Row { tracer: &forced,  listener: Inbound,     kind: SpanKind::Client, reads_direction: false, why: "role set in config" },
    ];
    for Row { tracer: t, listener, kind, reads_direction, why } in cases {
        let read = std::cell::Cell::new(false);
        let got = t.kind(|| {
            read.set(true);
            listener
        });
        assert_eq!(got, kind, "{why}");
        assert_eq!(read.get(), reads_direction, "{why}: reads the listener's direction");
    }
}

#[test]
fn finished_span_carries_semantic_convention_attributes() {
    let t = tracer(
        r#"{"randomSamplingPercentage": 100, "customTags": {
            "team": {"literal": {"value": "books"}},
            "pod": {"environment": {"name": "POD_NAME"}},
            "tenant": {"header": {"name": "x-tenant", "defaultValue": "none"}}}}"#,
    );
    let host = base_request()
        .with_header("user-agent", "curl/8")
        .with_header("x-request-id", "rid");
    let active = request(&host, &t).unwrap();
    let outcome = Outcome {
        kind: SpanKind::Client,
        status: Some(503),
        protocol_version: Some("1.1".into()),
        upstream_cluster: Some("outbound|9080||ratings.default.svc.cluster.local".into()),
        route_name: None,
        details: Some("upstream_reset_before_response_started".into()),
        ..Outcome::default()
    };
    let span = t.finish(active, outcome, 1_700_000_000_000_500_000).span;
    assert_eq!(
        span.name, "ratings.default.svc.cluster.local:9080/*",
        "Istio's operation name by default"
    );
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(span.end_unix_nanos - span.start_unix_nanos, 500_000);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing attribute {k}"))
    };
    assert_eq!(attr("http.request.method"), AttrValue::Str("GET".into()));
    assert_eq!(
        attr("url.path"),
        AttrValue::Str("/reviews/0".into()),
        "no query string"
    );
    assert_eq!(attr("url.scheme"), AttrValue::Str("http".into()));
    assert_eq!(attr("server.address"), AttrValue::Str("reviews".into()));
    assert_eq!(attr("server.port"), AttrValue::Int(9080));
    assert_eq!(attr("http.response.status_code"), AttrValue::Int(503));
    assert_eq!(
        attr("network.protocol.version"),
        AttrValue::Str("1.1".into())
    );
    assert_eq!(attr("user_agent.original"), AttrValue::Str("curl/8".into()));
    assert_eq!(attr("guid:x-request-id"), AttrValue::Str("rid".into()));
    assert_eq!(attr("team"), AttrValue::Str("books".into()));
    assert_eq!(attr("pod"), AttrValue::Str("reviews-v2-abc".into()));
    assert_eq!(
        attr("tenant"),
        AttrValue::Str("none".into()),
        "header default"
    );
    assert_eq!(span.status, StatusCode::Error);
    assert_eq!(
        span.status_message,
        "upstream_reset_before_response_started"
    );
}

#[test]
#[rustfmt::skip]
fn status_follows_the_http_semantic_conventions() {
    // OTel semantic conventions, HTTP spans, "Status".
    let cases = [
        (SpanKind::Server, Some(200), StatusCode::Unset, "2xx"),
        (SpanKind::Server, Some(404), StatusCode::Unset, "4xx is the client's fault"),
        (SpanKind::Client, Some(404), StatusCode::Error, "4xx fails the call"),
        (SpanKind::Server, Some(500), StatusCode::Error, "5xx"),
        (SpanKind::Client, Some(503), StatusCode::Error, "5xx"),
        (SpanKind::Server, None,      StatusCode::Error, "reset: no response"),
        (SpanKind::Client, Some(302), StatusCode::Unset, "redirects are fine"),
    ];
    for (kind, status, want, reason) in cases {
        let outcome = Outcome { status, ..Outcome::default() };
        assert_eq!(span_status(kind, &outcome).0, want, "{kind:?} {status:?}: {reason}");
    }
}

#[test]
#[rustfmt::skip]
fn grpc_status_decides_errors_per_kind() {
    // OTel semantic conventions, RPC spans, gRPC status: CLIENT any non-OK; SERVER only the
    // server's failures. The HTTP status of a gRPC response (200) does not matter.
    // An error is a span with an `error.type`; `None`: not an error.
    let cases = [
        (SpanKind::Client, Some(0),  None,                      "OK"),
        (SpanKind::Server, Some(0),  None,                      "OK"),
        (SpanKind::Client, Some(14), Some("UNAVAILABLE"),       "client: any non-OK"),
        (SpanKind::Server, Some(14), Some("UNAVAILABLE"),       "server: UNAVAILABLE"),
        (SpanKind::Client, Some(5),  Some("NOT_FOUND"),         "client: NOT_FOUND fails the call"),
        (SpanKind::Server, Some(5),  None,                      "server: NOT_FOUND is the caller's"),
        (SpanKind::Server, Some(3),  None,                      "server: INVALID_ARGUMENT is the caller's"),
        (SpanKind::Server, Some(2),  Some("UNKNOWN"),           "server: UNKNOWN"),
        (SpanKind::Server, Some(4),  Some("DEADLINE_EXCEEDED"), "server: DEADLINE_EXCEEDED"),
        (SpanKind::Server, Some(12), Some("UNIMPLEMENTED"),     "server: UNIMPLEMENTED"),
        (SpanKind::Server, Some(13), Some("INTERNAL"),          "server: INTERNAL"),
        (SpanKind::Server, Some(15), Some("DATA_LOSS"),         "server: DATA_LOSS"),
        (SpanKind::Server, Some(8),  None,                      "server: RESOURCE_EXHAUSTED is not in the list"),
        (SpanKind::Server, None,     Some("upstream_reset"),    "no status at all: reset"),
    ];
    for (kind, code, error_type, reason) in cases {
        let outcome = Outcome {
            status: code.map(|_| 200),
            details: code.is_none().then(|| "upstream_reset".to_string()),
            grpc: Some(GrpcOutcome { status: code, message: None }),
            ..Outcome::default()
        };
        assert_eq!(is_error(kind, &outcome), error_type.is_some(), "{reason}");
        assert_eq!(outcome.error_type(kind).as_deref(), error_type, "{reason}");
    }
}

#[test]
#[rustfmt::skip]
fn error_type_gives_the_reason_of_every_error_and_of_envoys_own_4xx() {
    let nr = 1u64 << 8;
    let cases = [
        (SpanKind::Client, Some(503), 0,  None,                                Some("503"),                  "HTTP error: the status"),
        (SpanKind::Server, Some(404), 0,  Some("via_upstream"),                None,                         "the app's 404 on a SERVER span: no error"),
        (SpanKind::Server, Some(404), nr, Some("route_not_found"),             Some("404"),                  "Envoy's own NR 404: the reason is kept"),
        (SpanKind::Server, Some(403), 0,  Some("rbac_access_denied_matched_policy[none]"), Some("403"),      "RBAC: a local reply without a flag"),
        (SpanKind::Server, None,      1 << 14, Some("downstream_remote_disconnect"), Some("downstream_remote_disconnect"), "no response: Envoy's details"),
        (SpanKind::Server, None,      1 << 14, None,                           Some("DC"),                   "no response, no details: the flags"),
        (SpanKind::Server, Some(200), 0,  None,                                None,                         "success"),
    ];
    for (kind, status, flags, details, want, reason) in cases {
        let outcome = Outcome {
            status,
            response_flags: flags,
            details: details.map(str::to_string),
            ..Outcome::default()
        };
        assert_eq!(outcome.error_type(kind).as_deref(), want, "{reason}");
    }
}

#[test]
fn a_grpc_outcome_reads_the_final_status_and_the_message_of_a_failure() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let grpc_request = || {
        MockHost::new()
            .with_header(":method", "POST")
            .with_header(":path", "/shop.Cart/Add")
            .with_header(":authority", "cart:9080")
            .with_header("content-type", "application/grpc")
    };
    let active = request(&grpc_request(), &t).unwrap();
    let host = grpc_request()
        .with_response_header(":status", "200")
        .with_text(
            StreamFact::UpstreamCluster,
            "outbound|9080||cart.shop.svc.cluster.local",
        )
        .with_int(StreamFact::GrpcStatus, 14)
        .with_response_trailer("grpc-message", "backend down");
    let outcome = t.read_outcome(&host, &active);
    assert_eq!(
        outcome.grpc,
        Some(GrpcOutcome {
            status: Some(14),
            message: Some("backend down".into())
        }),
        "status from response.grpc_status, message from the trailers"
    );
    let span = t.finish(active, outcome, 1_700_000_000_000_500_000).span;
    assert_eq!(span.name, "shop.Cart/Add");
    assert_eq!(span.status, StatusCode::Error, "HTTP 200 but UNAVAILABLE");
    assert_eq!(span.status_message, "backend down");
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attr("rpc.system"), Some(AttrValue::Str("grpc".into())));
    assert_eq!(
        attr("rpc.service"),
        Some(AttrValue::Str("shop.Cart".into()))
    );
    assert_eq!(attr("rpc.method"), Some(AttrValue::Str("Add".into())));
    assert_eq!(attr("rpc.grpc.status_code"), Some(AttrValue::Int(14)));
    assert_eq!(attr("grpc.status_code"), Some(AttrValue::Str("14".into())));
    assert_eq!(
        attr("grpc.message"),
        Some(AttrValue::Str("backend down".into()))
    );
    assert_eq!(
        attr("error"),
        Some(AttrValue::Str("true".into())),
        "Envoy's error tag"
    );
    assert_eq!(
        attr("error.type"),
        Some(AttrValue::Str("UNAVAILABLE".into()))
    );

    // An OK call reads no message.
    let active = request(&grpc_request(), &t).unwrap();
    let ok = grpc_request()
        .with_response_header(":status", "200")
        .with_int(StreamFact::GrpcStatus, 0)
        .with_response_trailer("grpc-message", "unused");
    assert_eq!(
        t.read_outcome(&ok, &active).grpc,
        Some(GrpcOutcome {
            status: Some(0),
            message: None
        })
    );
}

#[test]
fn a_gateway_records_a_server_span_and_its_client_child_whose_id_goes_upstream() {
    let mut t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    t.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
    let t = Tracer::new(t.config.clone(), t.node.clone(), &|_| None);
    let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"));
    let active = request(&host, &t).unwrap();
    let (_, sent, _) = traceparent(&host);
    let outcome = Outcome {
        kind: SpanKind::Server,
        status: Some(200),
        upstream_cluster: Some("outbound|9080||productpage.default.svc.cluster.local".into()),
        upstream_address: Some("10.0.0.9:9080".into()),
        downstream_address: Some("10.0.0.2:51234".into()),
        ..Outcome::default()
    };
    let finished = t.finish(active, outcome, 1_700_000_000_000_500_000);
    let server = &finished.span;
    let client = finished
        .upstream
        .as_ref()
        .expect("a CLIENT child at a gateway");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.parent.map(|p| p.to_hex()), Some(SPAN.to_string()));
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(
        client.parent,
        Some(server.context.span_id),
        "child of the SERVER span"
    );
    assert_eq!(
        client.context.span_id.to_hex(),
        sent,
        "the upstream's parent is the CLIENT span"
    );
    assert_ne!(client.context.span_id, server.context.span_id);
    let attr = |s: &Span, k: &str| {
        s.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        attr(client, "peer.address"),
        Some(AttrValue::Str("10.0.0.9:9080".into())),
        "the upstream"
    );
    assert_eq!(
        attr(server, "peer.address"),
        Some(AttrValue::Str("10.0.0.2:51234".into())),
        "the caller"
    );
    assert_eq!(
        attr(client, "peer.service"),
        Some(AttrValue::Str("productpage.default".into()))
    );
    assert_eq!(
        attr(client, "network.peer.address"),
        Some(AttrValue::Str("10.0.0.9".into()))
    );
    assert_eq!(
        attr(server, "client.address"),
        Some(AttrValue::Str("10.0.0.2".into()))
    );

    let off = tracer(r#"{"randomSamplingPercentage": 100, "spawnUpstreamSpan": false}"#);
    let mut node = off.node.clone();
    node.id = "router~x".into();
    let off = Tracer::new(off.config.clone(), node, &|_| None);
    let host = base_request();
    let active = request(&host, &off).unwrap();
    assert!(
        off.finish(active, Outcome::default(), 1).upstream.is_none(),
        "configurable"
    );
}

/// Host calls per recorded span (every one is paid on every recorded request): counted so that
/// a new read shows up here.
#[test]
fn host_calls_per_recorded_span() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = base_request()
        .with_response_header(":status", "200")
        .with_text(
            StreamFact::UpstreamCluster,
            "outbound|9080||ratings.default.svc.cluster.local",
        );
    let active = request(&host, &t).unwrap();
    host.fact_reads.borrow_mut().clear();
    t.read_outcome(&host, &active);
    assert_eq!(
        *host.fact_reads.borrow(),
        [
            StreamFact::UpstreamCluster,
            StreamFact::Protocol,
            StreamFact::ResponseFlags,
            StreamFact::DownstreamAddress,
            StreamFact::RequestSize,
            StreamFact::ResponseSize,
            StreamFact::UpstreamAddress,
        ],
        "a plain HTTP 200 CLIENT span: 7 facts (6 asked together) and the :status header"
    );
    let lean = tracer(r#"{"randomSamplingPercentage": 100, "attributes": {"istioCompat": false}}"#);
    let active = request(&host, &lean).unwrap();
    host.fact_reads.borrow_mut().clear();
    lean.read_outcome(&host, &active);
    assert_eq!(
        host.fact_reads.borrow().len(),
        5,
        "no body sizes without the legacy tags"
    );
}

#[test]
fn the_outcome_is_read_from_the_status_header_and_the_proxys_facts() {
    let host = |status: Option<&str>| {
        let mut h = MockHost::new()
            .with_text(StreamFact::Protocol, "HTTP/2")
            .with_text(StreamFact::UpstreamCluster, "outbound|9080||reviews")
            .with_text(StreamFact::RouteName, "reviews-v2")
            .with_text(
                StreamFact::ResponseCodeDetails,
                "upstream_reset_before_response_started",
            );
        if let Some(s) = status {
            h = h.with_response_header(":status", s);
        }
        h
    };
    let t = tracer(r#"{"spanName": "route"}"#);

    let ok = t.read_outcome(&host(Some("200")), &recorded());
    assert_eq!(ok.status, Some(200));
    assert_eq!(
        ok.kind,
        SpanKind::Client,
        "an outbound| cluster: the client side"
    );
    assert_eq!(ok.protocol_version.as_deref(), Some("2"));
    assert_eq!(
        ok.upstream_cluster.as_deref(),
        Some("outbound|9080||reviews")
    );
    assert_eq!(ok.route_name.as_deref(), Some("reviews-v2"));
    assert_eq!(ok.details, None, "details are read for errors only");

    let reset = t.read_outcome(&host(None), &recorded());
    assert_eq!(
        reset.status, None,
        "no response headers: the stream was reset"
    );
    assert_eq!(
        reset.details.as_deref(),
        Some("upstream_reset_before_response_started")
    );
    let error = t.read_outcome(&host(Some("503")), &recorded());
    assert_eq!(error.status, Some(503));
    assert!(
        error.details.is_some(),
        "an error's details become its status message"
    );
    let garbage = t.read_outcome(&host(Some("2x0")), &recorded());
    assert_eq!(garbage.status, None);
}

/// Property reads are among the dearest host calls: each is made only where it can change the
/// span. (role from the cluster name or else the listener, which property paths are read)
#[test]
fn each_property_is_read_only_where_it_can_change_the_span() {
    let mut sidecar = tracer(r#"{"randomSamplingPercentage": 100, "spanName": "templatedPath"}"#);
    sidecar.node.id = "sidecar~10.0.0.7~reviews-v2-x.default~default.svc.cluster.local".into();
    let mut gateway = tracer(r#"{"randomSamplingPercentage": 100, "spanName": "templatedPath"}"#);
    gateway.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
    let plain = tracer(r#"{"randomSamplingPercentage": 100, "spanName": "templatedPath"}"#);
    struct Row<'a> {
        tracer: &'a Tracer,
        cluster: Option<&'a str>,
        kind: SpanKind,
        reads_direction: bool,
        reads_route: bool,
        why: &'a str,
    }
    #[rustfmt::skip]
    let cases = [
        Row { tracer: &sidecar, cluster: Some("inbound|9080||"),                                   kind: SpanKind::Server, reads_direction: false, reads_route: false, why: "sidecar inbound: the cluster name tells; Istio made the route" },
        Row { tracer: &sidecar, cluster: Some("outbound|9080||ratings.default.svc.cluster.local"), kind: SpanKind::Client, reads_direction: false, reads_route: true,  why: "sidecar outbound: the cluster name tells; a VirtualService may name the route" },
        Row { tracer: &sidecar, cluster: Some("PassthroughCluster"),                               kind: SpanKind::Client, reads_direction: false, reads_route: true,  why: "passthrough" },
        Row { tracer: &sidecar, cluster: None,                                                     kind: SpanKind::Server, reads_direction: true,  reads_route: false, why: "no cluster (no route): the listener tells" },
        Row { tracer: &gateway, cluster: Some("outbound|9080||productpage"),                       kind: SpanKind::Server, reads_direction: false, reads_route: true,  why: "gateways are the mesh's entry: no direction needed" },
        Row { tracer: &plain,   cluster: Some("backend"),                                          kind: SpanKind::Server, reads_direction: true,  reads_route: true,  why: "other names: the listener tells" },
    ];
    for Row {
        tracer: t,
        cluster,
        kind,
        reads_direction,
        reads_route,
        why,
    } in cases
    {
        let mut host = base_request()
            .with_response_header(":status", "200")
            .with_int(StreamFact::ListenerDirection, 1);
        if let Some(c) = cluster {
            host = host.with_text(StreamFact::UpstreamCluster, c);
        }
        let outcome = t.read_outcome(&host, &recorded());
        assert_eq!(outcome.kind, kind, "{why}");
        let reads = host.fact_reads.borrow();
        assert_eq!(
            reads.contains(&StreamFact::ListenerDirection),
            reads_direction,
            "{why}"
        );
        assert_eq!(reads.contains(&StreamFact::RouteName), reads_route, "{why}");
    }
}

/// A host that answers a set of facts in one crossing (the Wasm adapter on Envoy's CEL) is asked
/// once per span — the status with the rest, no `:status` header read — and the span's outcome
/// is the one the fact-by-fact reads give.
#[test]
fn a_host_answering_facts_at_once_is_asked_once_for_the_same_outcome() {
    let mut sidecar = tracer(r#"{"randomSamplingPercentage": 100, "spanName": "route"}"#);
    sidecar.node.id = "sidecar~10.0.0.7~reviews-v2-x.default~default.svc.cluster.local".into();
    let plain = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let lean = tracer(r#"{"randomSamplingPercentage": 100, "attributes": {"istioCompat": false}}"#);
    #[rustfmt::skip]
    let cases: [(&Tracer, Option<u16>, Option<&str>, &str); 7] = [
        (&sidecar, Some(200), Some("outbound|9080||ratings.default.svc.cluster.local"), "outbound 200: route, upstream address"),
        (&sidecar, Some(200), Some("inbound|9080||"),                                   "inbound 200: no route name"),
        (&sidecar, Some(503), Some("outbound|9080||ratings.default.svc.cluster.local"), "503: details"),
        (&sidecar, None,      Some("outbound|9080||ratings.default.svc.cluster.local"), "reset: no status, details"),
        (&sidecar, Some(404), None,                                                     "no route: no cluster, the listener tells"),
        (&plain,   Some(200), Some("backend"),                                          "other cluster names: the listener tells"),
        (&lean,    Some(200), Some("outbound|9080||ratings.default.svc.cluster.local"), "no legacy tags: no body sizes"),
    ];
    for (t, status, cluster, why) in cases {
        let facts = |mut h: MockHost| {
            h = h
                .with_text(StreamFact::Protocol, "HTTP/1.1")
                .with_text(StreamFact::RouteName, "ratings-route")
                .with_text(StreamFact::ResponseCodeDetails, "via_upstream")
                .with_text(StreamFact::DownstreamAddress, "10.0.0.9:4000")
                .with_text(StreamFact::UpstreamAddress, "10.0.0.8:9080")
                .with_int(StreamFact::ListenerDirection, 2)
                .with_int(StreamFact::ResponseFlags, 0)
                .with_int(StreamFact::RequestSize, 0)
                .with_int(StreamFact::ResponseSize, 176);
            if let Some(c) = cluster {
                h = h.with_text(StreamFact::UpstreamCluster, c);
            }
            h
        };
        let mut one_by_one = facts(base_request());
        if let Some(code) = status {
            one_by_one = one_by_one.with_response_header(":status", &code.to_string());
        }
        // No :status header at all: the status can only come with the facts.
        let mut at_once = facts(base_request().with_facts_at_once());
        if let Some(code) = status {
            at_once = at_once.with_int(StreamFact::ResponseCode, i64::from(code));
        }
        let want = t.read_outcome(&one_by_one, &recorded());
        let got = t.read_outcome(&at_once, &recorded());
        assert_eq!(got, want, "{why}");
        assert_eq!(got.status, status, "{why}");
        assert_eq!(
            at_once.fact_reads.borrow().len(),
            0,
            "{why}: no fact asked alone"
        );
        assert_eq!(
            at_once.fact_batches.borrow().len(),
            1,
            "{why}: one crossing"
        );
        let prepared = t.end_of_stream_facts();
        for fact in at_once.fact_batches.borrow()[0].iter() {
            assert!(
                prepared.contains(fact),
                "{why}: {fact:?} asked but not among the facts the adapter prepares"
            );
        }
    }
}

#[test]
fn requests_read_no_property() {
    // The role does not change what is sent on; it is decided only for recorded spans.
    for json in [
        r#"{"randomSamplingPercentage": 0}"#,
        r#"{"randomSamplingPercentage": 100}"#,
    ] {
        let t = tracer(json);
        let host = base_request();
        request(&host, &t);
        assert!(host.header("traceparent").is_some());
        assert_eq!(
            *host.fact_reads.borrow(),
            Vec::<StreamFact>::new(),
            "{json}"
        );
    }
}

/// W3C processing model: an unparsable tracestate is discarded whole (counted), the trace
/// continues, and our own `ot` entry is written as for a request that carried none.
#[test]
fn an_unparsable_tracestate_is_replaced_by_our_entry_alone() {
    let t = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let sent_on = |tracestate: Option<&str>| {
        let mut host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"));
        if let Some(ts) = tracestate {
            host = host.with_header("tracestate", ts);
        }
        let metrics = Metrics::define(&host);
        let mut ids = IdGenerator::from_seed(1);
        t.on_request_headers(&host, &mut ids, &metrics);
        metrics.flush(&host);
        let (trace, _, _) = traceparent(&host);
        assert_eq!(trace, TRACE, "the trace continues");
        (
            host.header("tracestate"),
            host.metric("meshtrace_tracestate_discarded"),
        )
    };
    let (fresh, _) = sent_on(None);
    let (discarded, count) = sent_on(Some("congo=1,foo=bar=baz"));
    assert_eq!(discarded, fresh, "only our entry, as if none had come");
    assert_eq!(count, 1, "counted in meshtrace_tracestate_discarded");
    let (kept, count) = sent_on(Some("congo=1"));
    assert!(kept.is_some_and(|v| v.contains("congo=1")), "valid: kept");
    assert_eq!(count, 0);
}

pub(super) fn state(host: &MockHost, t: &Tracer) -> RequestState {
    let mut ids = IdGenerator::from_seed(1);
    t.on_request_headers(host, &mut ids, &Metrics::none())
}

/// Issue 15: every request, sampled or not, publishes the context it sent upstream as filter
/// state, so an access log line joins its trace.
#[test]
fn every_request_publishes_the_context_sent_upstream_as_filter_state() {
    #[rustfmt::skip]
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{"randomSamplingPercentage": 0}"#, None, "unsampled new trace"),
        (r#"{"randomSamplingPercentage": 100}"#, None, "sampled new trace"),
        (r#"{"randomSamplingPercentage": 100, "exporter": {"protocol": "none"}}"#, None, "sampled, nothing recorded"),
        (r#"{"randomSamplingPercentage": 0}"#, Some("00"), "unsampled parent"),
        (r#"{"randomSamplingPercentage": 0}"#, Some("01"), "sampled parent"),
    ];
    for (json, parent_flags, why) in cases {
        // Every documented key, listed (the default publishes the two ids only).
        let json = json.replacen(
            '{',
            r#"{"propagation": {"publishContext": ["trace_id", "span_id", "parent_span_id", "sampled", "request_id"]}, "#,
            1,
        );
        let t = tracer(&json);
        let mut host = base_request();
        if let Some(flags) = parent_flags {
            host = host
                .with_header("traceparent", &format!("00-{TRACE}-{SPAN}-{flags}"))
                .with_header("x-request-id", "req-7");
        }
        state(&host, &t);
        let (trace, span, flags) = traceparent(&host);
        let published = |name| host.property_set(name);
        assert_eq!(published("meshtrace.trace_id"), Some(trace), "{why}");
        assert_eq!(
            published("meshtrace.span_id"),
            Some(span),
            "{why}: this proxy's span id, the one sent upstream"
        );
        let sampled = if flags.ends_with(['1', '3']) {
            "true"
        } else {
            "false"
        };
        assert_eq!(
            published("meshtrace.sampled").as_deref(),
            Some(sampled),
            "{why}"
        );
        assert_eq!(
            published("meshtrace.request_id"),
            host.header("x-request-id"),
            "{why}: forwarded or generated"
        );
        let parent = parent_flags.map(|_| SPAN.to_string());
        assert_eq!(
            published("meshtrace.parent_span_id"),
            parent,
            "{why}: set only when there is a parent"
        );
    }
}

/// The published ids come from the `traceparent` sent when it is sent, and are written on their
/// own when it is not (B3 only): the same ids either way.
#[test]
fn the_published_ids_are_the_ids_sent_in_any_format() {
    for (inject, why) in [
        (r#"["tracecontext"]"#, "W3C"),
        (r#"["b3multi"]"#, "B3 only"),
    ] {
        let t = tracer(&format!(r#"{{"propagation": {{"inject": {inject}}}}}"#));
        let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"));
        state(&host, &t);
        let span = match host.header("traceparent") {
            Some(_) => traceparent(&host).1,
            None => host.header("x-b3-spanid").expect("B3 sent"),
        };
        assert_eq!(
            host.property_set("meshtrace.trace_id").as_deref(),
            Some(TRACE),
            "{why}"
        );
        assert_eq!(host.property_set("meshtrace.span_id"), Some(span), "{why}");
    }
}

#[test]
fn publish_context_sets_only_the_listed_values_one_host_call_each() {
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], &str)] = &[
        (r#"{}"#, &["meshtrace.trace_id", "meshtrace.span_id"], "the two ids by default: two host calls"),
        (r#"{"propagation": {"publishContext": ["trace_id", "span_id", "parent_span_id", "sampled", "request_id"]}}"#, &["meshtrace.trace_id", "meshtrace.span_id", "meshtrace.parent_span_id", "meshtrace.sampled", "meshtrace.request_id"], "all five when listed"),
        (r#"{"propagation": {"publishContext": []}}"#, &[], "none: no host call"),
        (r#"{"propagation": {"publishContext": ["span_id", "trace_id"]}}"#, &["meshtrace.trace_id", "meshtrace.span_id"], "only those listed"),
    ];
    for (json, want, why) in cases {
        let t = tracer(json);
        let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-00"));
        state(&host, &t);
        let names: Vec<String> = host
            .properties_set
            .borrow()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(names, *want, "{why}");
    }
}

/// w3c/trace-context spec/21-http_response_header_format.md (since #560): the context returned
/// to the caller is the `trace` metric of `server-timing`, appended to the response's own
/// metrics; nothing is returned unless asked for.
#[test]
fn the_trace_metric_and_request_id_are_returned_only_when_configured() {
    let off = tracer(r#"{"randomSamplingPercentage": 100}"#);
    let host = base_request().with_response_header("server-timing", "db;dur=53");
    let s = state(&host, &off);
    assert!(
        s.response_headers.is_empty(),
        "nothing is kept for the response by default"
    );
    s.on_response_headers(&host);
    assert_eq!(
        host.response_header_values("server-timing"),
        ["db;dur=53"],
        "off: the response is left alone"
    );
    assert_eq!(
        host.response_header("traceresponse"),
        None,
        "off: no legacy header"
    );
    assert_eq!(
        host.response_header("x-request-id"),
        None,
        "off: no request id leaks"
    );

    for percentage in [0, 100] {
        let on = tracer(&format!(
            r#"{{"randomSamplingPercentage": {percentage}, "propagation": {{"traceResponse": true, "responseRequestId": true}}}}"#
        ));
        let host = base_request()
            .with_header("traceparent", &format!("00-{TRACE}-{SPAN}-02"))
            .with_response_header("server-timing", "db;dur=53, cache;desc=hit");
        state(&host, &on).on_response_headers(&host);
        let sent = host.header("traceparent").unwrap();
        assert_eq!(
            host.response_header_values("server-timing"),
            [
                "db;dur=53, cache;desc=hit".to_string(),
                format!("trace;desc={sent}")
            ],
            "{percentage}%: the app's metrics kept, ours appended: this sidecar's span, as sent on"
        );
        assert_eq!(
            host.response_header("traceresponse"),
            None,
            "{percentage}%: the replaced draft header is not sent"
        );
        assert_eq!(
            host.response_header("x-request-id"),
            host.header("x-request-id"),
            "{percentage}%: the request's id"
        );
    }
}

/// The metric's span id is the server operation's: at a gateway that spawns a CLIENT child, the
/// proxy's own (SERVER) span, not the child sent upstream. The compatibility header
/// `traceresponse` keeps what it always carried: the upstream's `traceparent`.
#[test]
fn the_trace_metric_names_the_server_span_and_the_legacy_header_what_went_upstream() {
    let mut t = tracer(
        r#"{"randomSamplingPercentage": 100, "propagation": {"traceResponse": true, "traceResponseHeader": true}}"#,
    );
    t.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
    let t = Tracer::new(t.config.clone(), t.node.clone(), &|_| None);
    let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"));
    let mut ids = IdGenerator::from_seed(1);
    let s = t.on_request_headers(&host, &mut ids, &Metrics::none());
    s.on_response_headers(&host);
    let own = match &s.pending {
        Some(Pending::Recorded(active)) => active.context.span_id.to_hex(),
        other => panic!("a recorded request: {other:?}"),
    };
    let (_, sent, flags) = traceparent(&host);
    assert_ne!(own, sent, "a gateway sends its CLIENT child's id upstream");
    assert_eq!(
        host.response_header_values("server-timing"),
        [format!("trace;desc=00-{TRACE}-{own}-{flags}")]
    );
    assert_eq!(
        host.response_header("traceresponse"),
        host.header("traceparent")
    );
}

/// A host that cannot append (reads one value, replaces all) still never drops the app's
/// metrics: the value is joined after a comma (RFC 9110 §5.3).
#[test]
fn a_host_without_append_joins_the_metric_to_the_existing_value() {
    let t = tracer(r#"{"randomSamplingPercentage": 0, "propagation": {"traceResponse": true}}"#);
    #[rustfmt::skip]
    let cases: &[(Option<&str>, &str)] = &[
        (Some("db;dur=53"), "an app metric: kept before ours"),
        (Some(" "),         "blank: replaced, no leading comma"),
        (None,              "none: ours alone"),
    ];
    for (existing, why) in cases {
        let host = base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-00"));
        let host = match existing {
            Some(v) => host.with_response_header("server-timing", v),
            None => host,
        };
        host.replace_only.set(true);
        state(&host, &t).on_response_headers(&host);
        let ours = format!("trace;desc={}", host.header("traceparent").unwrap());
        let want = match existing {
            Some(v) if !v.trim().is_empty() => format!("{v}, {ours}"),
            _ => ours,
        };
        assert_eq!(
            host.response_header_values("server-timing"),
            [want],
            "{why}"
        );
    }
}

/// Every attribute of a gateway's spans, in the order they are written: the order of importance
/// under `limits.maxAttributes` (HTTP conventions, RPC, Istio's tags, its duplicates, the custom
/// tags); the CLIENT child has the upstream's tags, not the request's own.
#[test]
#[rustfmt::skip]
fn attributes_are_written_convention_by_convention_in_order_of_importance() {
    let gateway = |json: &str| {
        let mut t = tracer(json);
        t.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
        Tracer::new(t.config.clone(), t.node.clone(), &|_| None)
    };
    let config = r#"{"randomSamplingPercentage": 100, "customTags": {
        "team": {"literal": {"value": "books"}},
        "tenant": {"header": {"name": "x-tenant", "defaultValue": "none"}}}}"#;
    let finish = |t: &Tracer| {
        let host = MockHost::new()
            .with_header(":method", "POST")
            .with_header(":path", "/shop.Cart/Add?x=1")
            .with_header(":authority", "cart:9080")
            .with_header(":scheme", "http")
            .with_header("content-type", "application/grpc")
            .with_header("grpc-timeout", "1S")
            .with_header("user-agent", "grpc-go/1.60")
            .with_header("x-forwarded-for", "203.0.113.7, 10.0.0.2")
            .with_header("x-envoy-downstream-service-cluster", "gw");
        let active = request(&host, t).unwrap();
        let outcome = Outcome {
            kind: SpanKind::Server,
            status: Some(200),
            protocol_version: Some("2".into()),
            upstream_cluster: Some("outbound|9080||cart.shop.svc.cluster.local".into()),
            grpc: Some(GrpcOutcome {
                status: Some(14),
                message: Some("backend down".into()),
            }),
            downstream_address: Some("10.0.0.2:51234".into()),
            upstream_address: Some("10.0.0.9:9080".into()),
            request_size: Some(12),
            response_size: Some(34),
            ..Outcome::default()
        };
        t.finish(active, outcome, 1_700_000_000_000_500_000)
    };
    let keys = |s: &Span| s.attributes.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    let http = [
        "http.request.method", "url.path", "url.query", "url.scheme", "server.address",
        "server.port", "http.response.status_code", "network.protocol.version",
        "user_agent.original", "error.type", "network.peer.address", "network.peer.port",
    ];
    let rpc = [
        "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "grpc.status_code",
        "grpc.message",
    ];
    let istio = [
        "istio.canonical_revision", "istio.canonical_service", "istio.mesh_id", "istio.namespace",
        "istio.cluster_id", "node_id", "zone", "component", "response_flags", "upstream_cluster",
        "upstream_cluster.name", "upstream_address", "guid:x-request-id",
    ];
    let duplicates = ["http.status_code", "http.protocol", "error", "peer.address"];
    let request_duplicates = [
        "http.method", "http.url", "user_agent", "request_size", "http.request.body.size",
        "response_size", "http.response.body.size", "grpc.path", "grpc.authority",
        "grpc.content_type", "grpc.timeout",
    ];
    let custom = ["team", "tenant"];
    let finished = finish(&gateway(config));
    let server = [
        &http[..], &["client.address"], &rpc, &istio, &["downstream_cluster"], &duplicates,
        &request_duplicates, &custom,
    ];
    assert_eq!(keys(&finished.span), server.concat(), "the SERVER span");
    let client = [&http[..], &["url.full", "peer.service"], &rpc, &istio, &duplicates, &custom];
    assert_eq!(keys(finished.upstream.as_ref().unwrap()), client.concat(), "its CLIENT child");

    let limited = config.replacen('{', r#"{"limits": {"maxAttributes": 14},"#, 1);
    let span = finish(&gateway(&limited)).span;
    assert_eq!(keys(&span), server.concat()[..14], "the first ones kept");
    assert_eq!(span.dropped_attributes as usize, server.concat().len() - 14, "the rest counted");
}

#[test]
fn both_adapters_log_one_configured_line() {
    #[rustfmt::skip]
    let cases = [
        (r#"{"randomSamplingPercentage": 1}"#, "sampling 1%, export outbound|4318||opentelemetry-collector.observability.svc.cluster.local", "the default collector"),
        (r#"{"randomSamplingPercentage": 0.5, "exporter": {"protocol": "none"}}"#, "sampling 0.5%, export off", "no export"),
    ];
    for (json, want, why) in cases {
        let line = tracer(json).configured_summary();
        assert!(
            line.starts_with("meshtrace configured: service "),
            "{why}: {line}"
        );
        assert!(line.ends_with(want), "{why}: {line}");
    }
}
