//! Ambient waypoints: what the waypoint reads of its peers, the CLIENT mark, and the spans it
//! records through the tracer (the source's CLIENT span, the destination's SERVER span).

use super::*;
use crate::config::Config;
use crate::host::mock::MockHost;
use crate::metrics::Metrics;
use crate::node::NodeInfo;
use crate::span::{AttrValue, Span, SpanKind, StatusCode};
use crate::tracer::tests::{base_request, request, state, traceparent, tracer, SPAN, TRACE};
use crate::tracer::Tracer;

#[test]
#[rustfmt::skip]
fn a_client_mark_counts_only_for_the_span_it_names() {
    let id = SpanId::from_hex("00f067aa0ba902b7");
    let other = SpanId::from_hex("b7ad6b7169203331");
    let state = |v: &str| TraceState::parse([v].into_iter()).unwrap_or_default();
    let cases = [
        ("meshtrace=c:00f067aa0ba902b7,congo=1", id,    true,  "names the parent"),
        ("meshtrace=c:00f067aa0ba902b7",         other, false, "left by a proxy further up"),
        ("congo=1",                              id,    false, "no mark"),
        ("meshtrace=c:00f067aa0ba902b7",         None,  false, "no parent"),
        ("meshtrace=s:00f067aa0ba902b7",         id,    false, "not a CLIENT mark"),
    ];
    for (tracestate, parent, want, why) in cases {
        assert_eq!(caller_recorded_client(&state(tracestate), parent), want, "{why}");
    }
    assert_eq!(client_mark(SpanId([0xab; 8])), "c:abababababababab");
}

fn source_obj(host: MockHost, fields: &[(StreamFact, &str)]) -> MockHost {
    fields.iter().fold(host, |h, (k, v)| h.with_text(*k, v))
}

#[test]
fn the_source_is_istios_peer_object_else_the_principal() {
    let host = source_obj(
        MockHost::new(),
        &[
            (StreamFact::PeerWorkload, "productpage-v1"),
            (StreamFact::PeerNamespace, "default"),
            (StreamFact::PeerService, "productpage"),
            (StreamFact::PeerRevision, "v1"),
            (StreamFact::PeerCluster, "Kubernetes"),
        ],
    )
    .with_text(
        StreamFact::PeerPrincipal,
        "spiffe://cluster.local/ns/other/sa/x",
    );
    let peer = read_source(&host).unwrap();
    assert_eq!(
        (peer.workload.as_str(), peer.canonical_service.as_str()),
        ("productpage-v1", "productpage"),
        "the peer object wins"
    );
    assert!(
        !host
            .fact_reads
            .borrow()
            .contains(&StreamFact::PeerPrincipal),
        "the principal is not read when the peer is known"
    );

    let host = MockHost::new().with_text(
        StreamFact::PeerPrincipal,
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
    );
    let peer = read_source(&host).unwrap();
    assert_eq!(
        (peer.namespace.as_str(), peer.canonical_service.as_str()),
        ("default", "bookinfo-productpage"),
        "no peer object (Istio < 1.29): the principal's namespace and service account"
    );
    assert_eq!(
        host.fact_reads.borrow().len(),
        2,
        "one read for the absent object's workload, one for the principal"
    );
    assert_eq!(read_source(&MockHost::new()), None, "nothing known");
}

#[test]
#[rustfmt::skip]
fn the_destination_is_the_endpoints_workload_else_the_clusters_service() {
    let vip = Some("inbound-vip|9080|http|reviews.default.svc.cluster.local");
    let host = MockHost::new().with_text(StreamFact::UpstreamWorkload, "reviews-v2;default;reviews;v2;Kubernetes");
    let got = read_destination(&host, vip).unwrap();
    assert_eq!((got.workload.as_str(), got.canonical_revision.as_str()), ("reviews-v2", "v2"), "endpoint metadata");
    let got = read_destination(&MockHost::new(), vip).unwrap();
    assert_eq!((got.canonical_service.as_str(), got.namespace.as_str()), ("reviews", "default"), "the VIP's service");
    let got = read_destination(&MockHost::new(), Some("outbound|443||api.example.com")).unwrap();
    assert_eq!((got.canonical_service.as_str(), got.namespace.as_str()), ("api.example.com", ""), "a ServiceEntry host");
    assert_eq!(read_destination(&host, Some("encap")), Some(PeerWorkload {
        workload: "reviews-v2".into(), namespace: "default".into(), canonical_service: "reviews".into(),
        canonical_revision: "v2".into(), cluster: "Kubernetes".into() }), "encap: the endpoint still tells");
    let none = MockHost::new();
    assert_eq!(read_destination(&none, None), None, "no upstream: nothing read");
    assert!(none.fact_reads.borrow().is_empty(), "no upstream cluster, no endpoint to ask about");
}

fn waypoint(json: &str) -> Tracer {
    let node = NodeInfo {
        id: "waypoint~10.0.0.5~waypoint-6c8f.default~default.svc.cluster.local".into(),
        namespace: "default".into(),
        workload_name: "waypoint".into(),
        labels: vec![(crate::node::LABEL_CANONICAL_NAME, "waypoint".into())],
        ..NodeInfo::default()
    };
    Tracer::new(Config::parse(json.as_bytes()).unwrap(), node, &|_| None)
}

/// What a waypoint's host knows when the request to reviews ends: Istio's cluster and endpoint
/// metadata, the peer object of the source.
fn waypoint_host(host: MockHost) -> MockHost {
    waypoint_host_status(host, "200")
}

fn waypoint_host_status(host: MockHost, status: &str) -> MockHost {
    host.with_response_header(":status", status)
        .with_text(
            StreamFact::UpstreamCluster,
            "inbound-vip|9080|http|reviews.default.svc.cluster.local",
        )
        .with_text(
            StreamFact::UpstreamWorkload,
            "reviews-v2;default;reviews;v2;Kubernetes",
        )
        .with_text(StreamFact::PeerWorkload, "productpage-v1")
        .with_text(StreamFact::PeerNamespace, "default")
        .with_text(StreamFact::PeerService, "productpage")
        .with_text(StreamFact::PeerRevision, "v1")
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| match v {
            AttrValue::Str(s) => Some(s.clone()),
            _ => None,
        })
}

#[test]
fn a_waypoint_records_the_sources_client_span_and_the_destinations_server_span() {
    let t = waypoint(r#"{"randomSamplingPercentage": 100}"#);
    let host =
        waypoint_host(base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01")));
    let active = request(&host, &t).unwrap();
    let (_, sent, _) = traceparent(&host);
    let outcome = t.read_outcome(&host, &active);
    assert!(
        !host
            .fact_reads
            .borrow()
            .contains(&StreamFact::ListenerDirection),
        "a waypoint never reads the listener's direction"
    );
    let finished = t.finish(active, outcome, 1_700_000_000_000_500_000);
    let server = &finished.span;
    let client = finished.source.as_ref().expect("the source's CLIENT span");
    assert!(
        finished.upstream.is_none(),
        "no spawned child at a waypoint"
    );
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(
        client.parent.map(|p| p.to_hex()),
        Some(SPAN.to_string()),
        "child of the caller"
    );
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(
        server.parent,
        Some(client.context.span_id),
        "SERVER child of CLIENT"
    );
    assert_eq!(
        server.context.span_id.to_hex(),
        sent,
        "the SERVER span's id goes upstream"
    );
    let service = |s: &Span| s.resource.as_ref().map(|r| r.service_name.clone());
    assert_eq!(
        service(client).as_deref(),
        Some("productpage.default"),
        "the source's service"
    );
    assert_eq!(
        service(server).as_deref(),
        Some("reviews.default"),
        "the destination's service"
    );
    assert_eq!(
        server.resource.as_ref().map(|r| r.version.as_str()),
        Some("v2")
    );
    for s in [client, server] {
        assert_eq!(
            attr(s, "istio.source_workload").as_deref(),
            Some("productpage-v1")
        );
        assert_eq!(
            attr(s, "istio.source_canonical_service").as_deref(),
            Some("productpage")
        );
        assert_eq!(
            attr(s, "istio.destination_workload").as_deref(),
            Some("reviews-v2")
        );
        assert_eq!(
            attr(s, "istio.destination_canonical_revision").as_deref(),
            Some("v2")
        );
        assert_eq!(
            attr(s, "istio.destination_cluster_id").as_deref(),
            Some("Kubernetes")
        );
        assert!(
            attr(s, "node_id").is_some_and(|n| n.starts_with("waypoint~")),
            "who recorded it"
        );
    }
    assert_eq!(
        attr(client, "peer.service").as_deref(),
        Some("reviews.default"),
        "the edge"
    );
}

#[test]
fn a_waypoint_names_the_destination_under_the_configured_mode() {
    let t = waypoint(
        r#"{"randomSamplingPercentage": 100, "tracingServiceName": "CANONICAL_NAME_ONLY"}"#,
    );
    let host = waypoint_host(base_request());
    let active = request(&host, &t).unwrap();
    let outcome = t.read_outcome(&host, &active);
    let finished = t.finish(active, outcome, 2);
    let service = |s: &Span| s.resource.as_ref().map(|r| r.service_name.clone());
    assert_eq!(service(&finished.span).as_deref(), Some("reviews"));
    assert_eq!(
        service(finished.source.as_ref().unwrap()).as_deref(),
        Some("productpage")
    );
}

#[test]
fn a_waypoint_leaves_out_the_client_span_its_callers_proxy_recorded() {
    // A meshtrace gateway: its CLIENT child's id goes upstream, marked.
    let mut gw = tracer(r#"{"randomSamplingPercentage": 100}"#);
    gw.node.id = "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into();
    let gw = Tracer::new(gw.config.clone(), gw.node.clone(), &|_| None);
    let host = base_request().with_header("tracestate", "congo=1");
    request(&host, &gw).unwrap();
    let (trace, sent, _) = traceparent(&host);
    let tracestate = host.header("tracestate").unwrap();
    assert!(
        tracestate.starts_with(&format!("meshtrace=c:{sent},")),
        "the gateway marks the CLIENT span it sends: {tracestate}"
    );

    let t = waypoint(r#"{"randomSamplingPercentage": 100}"#);
    let host = waypoint_host(
        base_request()
            .with_header("traceparent", &format!("00-{trace}-{sent}-01"))
            .with_header("tracestate", &tracestate),
    );
    let active = request(&host, &t).unwrap();
    let outcome = t.read_outcome(&host, &active);
    let finished = t.finish(active, outcome, 2);
    assert!(
        finished.source.is_none(),
        "the gateway recorded the CLIENT span"
    );
    assert_eq!(
        finished.span.parent.map(|p| p.to_hex()),
        Some(sent.clone()),
        "SERVER child of it"
    );

    // A mark naming another span (left by a proxy further up): the CLIENT span is recorded.
    let host = waypoint_host(
        base_request()
            .with_header("traceparent", &format!("00-{trace}-{SPAN}-01"))
            .with_header("tracestate", &tracestate),
    );
    let active = request(&host, &t).unwrap();
    let outcome = t.read_outcome(&host, &active);
    assert!(
        t.finish(active, outcome, 2).source.is_some(),
        "a stale mark is ignored"
    );
}

#[test]
fn waypoint_spans_proxy_keeps_istios_one_waypoint_span() {
    let t = waypoint(r#"{"randomSamplingPercentage": 100, "waypoint": {"spans": "proxy"}}"#);
    let host =
        waypoint_host(base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01")));
    let active = request(&host, &t).unwrap();
    let outcome = t.read_outcome(&host, &active);
    let finished = t.finish(active, outcome, 2);
    assert!(finished.source.is_none(), "one span");
    assert_eq!(finished.span.kind, SpanKind::Server);
    assert_eq!(finished.span.resource, None, "the waypoint's own resource");
    assert_eq!(
        finished.span.parent.map(|p| p.to_hex()),
        Some(SPAN.to_string())
    );
    assert_eq!(
        attr(&finished.span, "istio.source_workload").as_deref(),
        Some("productpage-v1"),
        "Istio's tags kept"
    );
}

#[test]
fn a_waypoint_without_a_known_source_records_the_server_span_alone() {
    let t = waypoint(r#"{"randomSamplingPercentage": 100}"#);
    let host = base_request()
        .with_header("traceparent", &format!("00-{TRACE}-{SPAN}-01"))
        .with_response_header(":status", "200");
    let active = request(&host, &t).unwrap();
    let outcome = t.read_outcome(&host, &active);
    let finished = t.finish(active, outcome, 2);
    assert!(
        finished.source.is_none(),
        "no CLIENT span under the waypoint's own name"
    );
    assert_eq!(
        finished.span.parent.map(|p| p.to_hex()),
        Some(SPAN.to_string()),
        "no dangling parent"
    );
}

#[test]
fn unsampled_requests_at_a_waypoint_read_no_property() {
    let t = waypoint(r#"{"randomSamplingPercentage": 0, "sampling": {"captureErrors": false}}"#);
    let host =
        waypoint_host(base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-00")));
    let state = state(&host, &t);
    assert!(state.pending.is_none());
    assert!(
        host.fact_reads.borrow().is_empty(),
        "{:?}",
        host.fact_reads.borrow()
    );
}

#[test]
fn a_captured_error_at_a_waypoint_gives_the_pair_too() {
    let t = waypoint(r#"{"randomSamplingPercentage": 0}"#);
    let host = waypoint_host_status(
        base_request().with_header("traceparent", &format!("00-{TRACE}-{SPAN}-00")),
        "503",
    );
    let state = state(&host, &t);
    let (_, sent, _) = traceparent(&host);
    let finished = t
        .end(&host, state.pending.unwrap(), &Metrics::none())
        .expect("a 503 is captured");
    let client = finished.source.as_ref().expect("the source's CLIENT span");
    assert_eq!(
        finished.span.context.span_id.to_hex(),
        sent,
        "the id the upstream saw"
    );
    assert_eq!(finished.span.parent, Some(client.context.span_id));
    assert_eq!(
        finished.span.status,
        StatusCode::Error,
        "the destination's 503"
    );
    assert_eq!(client.status, StatusCode::Error, "and the source's");
    assert_eq!(attr(client, "meshtrace.capture").as_deref(), Some("error"));
}
