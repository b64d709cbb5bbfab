use super::*;
use crate::config::LimitsConfig;
use crate::context::{SpanContext, TraceFlags};
use crate::ids::{SpanId, TraceId};

fn sample_span(name: &str, parent: Option<SpanId>) -> span::Span {
    let mut s = span::Span::new(
        SpanContext {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags: TraceFlags(3),
        },
        parent,
        "ot=th:0".into(),
        name.into(),
        SpanKind::Server,
        1_700_000_000_000_000_000,
        1_700_000_000_002_000_000,
    );
    let limits = LimitsConfig::default();
    s.set_attribute("http.request.method", AttrValue::Str("GET".into()), &limits);
    s.set_attribute("http.response.status_code", AttrValue::Int(503), &limits);
    s.set_attribute("error.flag", AttrValue::Bool(true), &limits);
    s.status = StatusCode::Error;
    s.status_message = "upstream reset".into();
    s
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "meshtrace".into(),
        version: "0.1.0".into(),
    }
}

#[test]
fn span_fields_map_to_otlp() {
    let parent = SpanId::from_hex("b7ad6b7169203331").unwrap();
    let s = Span::from(sample_span("GET /reviews/{id}", Some(parent)));
    assert_eq!(
        s.trace_id,
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
            .unwrap()
            .0
    );
    assert_eq!(s.parent_span_id, parent.0.to_vec());
    assert_eq!(s.kind, SPAN_KIND_SERVER);
    assert_eq!(s.flags, 0x303, "trace flags 03, parent known to be remote");
    assert_eq!(
        s.status,
        Some(Status {
            message: "upstream reset".into(),
            code: 2
        })
    );
    assert_eq!(s.attributes.len(), 3);
    assert_eq!(
        s.attributes[1].value,
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(503))
        })
    );
    let root = Span::from(sample_span("GET /", None));
    assert!(
        root.parent_span_id.is_empty(),
        "a root span has no parent id"
    );
    assert_eq!(
        root.flags, 0x103,
        "root: has-is-remote set, is-remote clear"
    );
}

#[test]
fn framed_batches_equal_a_struct_encoding_and_decode_back() {
    let resource = resource(vec![(
        "service.name".into(),
        AttrValue::Str("reviews.default".into()),
    )]);
    let core_spans: Vec<span::Span> = ["a", "b", "c"]
        .iter()
        .map(|n| sample_span(&format!("GET /{}", n.repeat(200)), None))
        .collect();
    let spans: Vec<Span> = core_spans.iter().cloned().map(Span::from).collect();
    let encoded: Vec<Vec<u8>> = core_spans.iter().map(BatchEncoder::encode_span).collect();
    let enc = BatchEncoder::new(&resource, &scope());
    let framed = enc.encode(encoded.iter().map(Vec::as_slice), false);
    let expected = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: spans.clone(),
                schema_url: String::new(),
            }],
            schema_url: SCHEMA_URL.into(),
        }],
    };
    assert_eq!(
        framed,
        expected.encode_to_vec(),
        "byte-identical to prost's own encoding"
    );
    let decoded = ExportTraceServiceRequest::decode(framed.as_slice()).unwrap();
    assert_eq!(decoded, expected);
    let cost: usize = encoded
        .iter()
        .map(|e| BatchEncoder::span_cost(e.len()))
        .sum();
    assert_eq!(
        framed.len(),
        enc.request_len(cost),
        "size accounting is exact"
    );
    let empty = enc.encode(std::iter::empty(), false);
    assert!(
        empty.is_empty(),
        "no spans: no ResourceSpans (an empty request)"
    );
    let grpc = enc.encode(encoded.iter().map(Vec::as_slice), true);
    assert_eq!(grpc[0], 0, "uncompressed");
    assert_eq!(
        u32::from_be_bytes(grpc[1..5].try_into().unwrap()) as usize,
        framed.len()
    );
    assert_eq!(
        &grpc[5..],
        framed.as_slice(),
        "gRPC frame around the same message"
    );
}

#[test]
fn direct_encoding_equals_prost_for_every_shape_of_span() {
    let limits = LimitsConfig::default();
    let parent = SpanId::from_hex("b7ad6b7169203331").unwrap();
    let mut cases: Vec<(span::Span, &str)> = Vec::new();
    cases.push((
        sample_span("GET /", Some(parent)),
        "error with message, remote parent",
    ));
    cases.push((sample_span("GET /", None), "root span"));
    let mut s = sample_span("", None);
    s.status = StatusCode::Unset;
    s.status_message.clear();
    s.trace_state.clear();
    cases.push((s, "empty name and tracestate, status unset"));
    let mut s = sample_span("x", None);
    s.status = StatusCode::Ok;
    cases.push((s, "status ok"));
    let mut s = sample_span("x", None);
    s.status_message.clear();
    cases.push((s, "error without message"));
    let mut s = sample_span("x", Some(parent));
    s.set_attribute("neg", AttrValue::Int(-1), &limits);
    s.set_attribute("zero", AttrValue::Int(0), &limits);
    s.set_attribute("f", AttrValue::Bool(false), &limits);
    s.set_attribute("empty", AttrValue::Str(String::new()), &limits);
    s.set_attribute(
        String::from("custom.tag"),
        AttrValue::Str("é".repeat(100)),
        &limits,
    );
    s.dropped_attributes = 3;
    s.start_unix_nanos = 0;
    cases.push((
        s,
        "defaults inside attributes are kept, zero start left out",
    ));
    let mut s = sample_span(&"n".repeat(300), None);
    for i in 0..40 {
        s.set_attribute(format!("k{i}"), AttrValue::Str("v".repeat(200)), &limits);
    }
    cases.push((s, "lengths over 127 take two-byte varints"));
    let mut s = sample_span("x", Some(parent));
    s.status_message = "m".repeat(20_000);
    s.set_attribute("big", AttrValue::Int(i64::MIN), &limits);
    s.set_attribute("k".repeat(200), AttrValue::Str("v".repeat(70_000)), &limits);
    cases.push((s, "three-byte lengths, the longest int64"));
    for (s, why) in cases {
        let direct = BatchEncoder::encode_span(&s);
        assert!(
            direct.len() <= span_len_bound(&s),
            "{why}: one allocation, never grown"
        );
        assert_eq!(direct, Span::from(s).encode_to_vec(), "{why}");
    }
}

#[test]
fn spans_of_different_services_go_in_one_resource_spans_each() {
    let named = |name: &str| resource(vec![("service.name".into(), AttrValue::Str(name.into()))]);
    let own = named("waypoint.default");
    let reviews = named("reviews.default");
    let productpage = named("productpage.default");
    let reviews_bytes = reviews.encode_to_vec();
    let productpage_bytes = productpage.encode_to_vec();
    let s: Vec<span::Span> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| sample_span(n, None))
        .collect();
    let e: Vec<Vec<u8>> = s.iter().map(BatchEncoder::encode_span).collect();
    let enc = BatchEncoder::new(&own, &scope());
    let queued: Vec<(Option<&[u8]>, &[u8])> = vec![
        (Some(&productpage_bytes), &e[0]),
        (Some(&reviews_bytes), &e[1]),
        (None, &e[2]),
        (Some(&productpage_bytes), &e[3]),
    ];
    let framed = enc.encode_grouped(queued.iter().copied(), false);
    let group = |r: &Resource, spans: &[&span::Span]| ResourceSpans {
        resource: Some(r.clone()),
        scope_spans: vec![ScopeSpans {
            scope: Some(scope()),
            spans: spans.iter().map(|s| Span::from((*s).clone())).collect(),
            schema_url: String::new(),
        }],
        schema_url: SCHEMA_URL.into(),
    };
    let expected = ExportTraceServiceRequest {
        resource_spans: vec![
            group(&productpage, &[&s[0], &s[3]]),
            group(&reviews, &[&s[1]]),
            group(&own, &[&s[2]]),
        ],
    };
    assert_eq!(
        framed,
        expected.encode_to_vec(),
        "one ResourceSpans per resource, in first-seen order, byte-identical to prost"
    );
    let copy = productpage_bytes.clone();
    let apart = enc.encode_grouped(
        [
            (Some(&productpage_bytes[..]), &e[0][..]),
            (Some(&copy[..]), &e[3][..]),
        ]
        .into_iter(),
        false,
    );
    assert_eq!(
        ExportTraceServiceRequest::decode(apart.as_slice())
            .unwrap()
            .resource_spans
            .len(),
        2,
        "resources are told apart by their shared bytes, not compared byte by byte"
    );
    let len: usize = [
        enc.group_len(
            Some(&productpage_bytes),
            BatchEncoder::span_cost(e[0].len()) + BatchEncoder::span_cost(e[3].len()),
        ),
        enc.group_len(Some(&reviews_bytes), BatchEncoder::span_cost(e[1].len())),
        enc.group_len(None, BatchEncoder::span_cost(e[2].len())),
    ]
    .iter()
    .sum();
    assert_eq!(framed.len(), len, "size accounting is exact per resource");
}
