use super::*;
use crate::context::TraceFlags;
use crate::ids::{SpanId, TraceId};

const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const S: &str = "00f067aa0ba902b7";
const ALL: [Propagator; 4] = [
    Propagator::Tracecontext,
    Propagator::B3,
    Propagator::B3multi,
    Propagator::Baggage,
];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs.iter().copied().collect()
}

#[test]
#[rustfmt::skip]
fn the_first_valid_format_wins() {
    use Propagator::*;
    let other = "1".repeat(32);
    let tp = format!("00-{T}-{S}-01");
    let b3_other = format!("{other}-{S}-0");
    let bad_tp = format!("00-{}-{S}-01", T.to_uppercase());
    let uppercase = Some(Invalid::Traceparent(TraceparentError::BadTraceId));
    // (headers, the trace continued, its format, the invalid context counted, why)
    type Row<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, Option<Propagator>, Option<Invalid>, &'a str);
    let cases: &[Row] = &[
        (&[("traceparent", &tp)],                         Some(T),      Some(Tracecontext), None,      "W3C"),
        (&[("b3", &b3_other)],                            Some(&other), Some(B3),           None,      "B3 only"),
        (&[("traceparent", &tp), ("b3", &b3_other)],      Some(T),      Some(Tracecontext), None,      "W3C first in the list"),
        (&[("traceparent", &bad_tp), ("b3", &b3_other)],  Some(&other), Some(B3),           uppercase, "invalid W3C falls through to B3, and is counted"),
        (&[("traceparent", &bad_tp)],                     None,         None,               uppercase, "invalid: new trace"),
        (&[],                                             None,         None,               None,      "nothing: new trace"),
    ];
    for (input, trace, source, invalid, reason) in cases {
        let got = extract(&headers(input), &ALL);
        assert_eq!(got.parent.map(|p| p.trace_id.to_hex()).as_deref(), *trace, "{reason}");
        assert_eq!(got.source, *source, "{reason}");
        assert_eq!(got.invalid, *invalid, "{reason}");
    }
}

#[test]
fn only_configured_formats_are_read() {
    let h = headers(&[("b3", &format!("{T}-{S}-1"))]);
    assert!(extract(&h, &[Propagator::Tracecontext]).parent.is_none());
    assert!(extract(&h, &[Propagator::B3]).parent.is_some());
}

#[test]
fn tracestate_needs_a_valid_traceparent() {
    let valid = headers(&[
        ("traceparent", &format!("00-{T}-{S}-01")),
        ("tracestate", "congo=1"),
    ]);
    assert_eq!(extract(&valid, &ALL).tracestate.get("congo"), Some("1"));
    let invalid = headers(&[
        ("traceparent", &format!("ff-{T}-{S}-01")),
        ("tracestate", "congo=1"),
    ]);
    assert!(
        extract(&invalid, &ALL).tracestate.is_empty(),
        "dropped with an invalid parent"
    );
    let b3 = headers(&[("b3", &format!("{T}-{S}-1")), ("tracestate", "congo=1")]);
    assert!(
        extract(&b3, &ALL).tracestate.is_empty(),
        "B3 carries no tracestate"
    );
}

/// W3C processing model ("A traceparent is Received", step 3): a tracestate that cannot be
/// parsed is discarded whole, and "failure to parse `tracestate` MUST NOT affect the parsing of
/// `traceparent`".
#[test]
#[rustfmt::skip]
fn an_unparsable_tracestate_is_discarded_whole_and_the_trace_continues() {
    let tp = format!("00-{T}-{S}-01");
    let cases: &[(&str, Option<TraceStateError>, &str)] = &[
        ("congo=1,rojo=2",   None,                                  "valid: kept"),
        ("congo=1,foo=",     Some(TraceStateError::InvalidMember),  "an empty value discards every member"),
        ("congo=1,@x=2",     Some(TraceStateError::InvalidMember),  "a bad key discards every member"),
    ];
    for (tracestate, discarded, reason) in cases {
        let got = extract(&headers(&[("traceparent", &tp), ("tracestate", tracestate)]), &ALL);
        assert_eq!(got.parent.map(|p| p.trace_id.to_hex()).as_deref(), Some(T), "{reason}");
        assert_eq!(got.invalid, None, "{reason}: the context itself is valid");
        assert_eq!(got.tracestate_discarded, *discarded, "{reason}");
        assert_eq!(got.tracestate.is_empty(), discarded.is_some(), "{reason}");
    }
}

#[test]
#[rustfmt::skip]
fn sampling_hints_and_debug() {
    let deferred = format!("{T}-{S}");
    let unsampled = format!("00-{T}-{S}-00");
    struct Row<'a> { headers: &'a [(&'a str, &'a str)], sampling_hint: Option<bool>, debug: bool, why: &'a str }
    let cases = [
        Row { headers: &[("b3", "0")],                 sampling_hint: Some(false), debug: false, why: "decision-only deny" },
        Row { headers: &[("b3", "d")],                 sampling_hint: Some(true),  debug: true,  why: "decision-only debug" },
        Row { headers: &[("x-b3-sampled", "1")],       sampling_hint: Some(true),  debug: false, why: "multi decision only" },
        Row { headers: &[("b3", &deferred)],           sampling_hint: None,        debug: false, why: "B3 deferred: local decision" },
        Row { headers: &[("traceparent", &unsampled)], sampling_hint: Some(false), debug: false, why: "W3C flag" },
    ];
    for Row { headers: input, sampling_hint, debug, why } in cases {
        let got = extract(&headers(input), &ALL);
        assert_eq!(got.sampling_hint, sampling_hint, "{why}");
        assert_eq!(got.debug, debug, "{why}: B3 debug");
    }
}

fn ctx() -> SpanContext {
    SpanContext {
        trace_id: TraceId::from_hex(T).unwrap(),
        span_id: SpanId::from_hex(S).unwrap(),
        flags: TraceFlags(0x03),
    }
}

/// What [`super::inject`] hands its callback, in order.
fn inject(
    context: &SpanContext,
    tracestate: &TraceState,
    baggage: Option<&str>,
    injected: &[Propagator],
    extracted: &[Propagator],
) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    super::inject(context, tracestate, baggage, injected, extracted, |k, v| {
        out.push((k, v.map(str::to_string)))
    });
    out
}

#[test]
fn inject_writes_configured_formats_and_clears_stale_ones() {
    let state = TraceState::parse(["congo=1"].into_iter()).unwrap();
    let out = inject(
        &ctx(),
        &state,
        Some("a=1"),
        &[Propagator::Tracecontext, Propagator::Baggage],
        &ALL,
    );
    let get = |name: &str| out.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    assert_eq!(get("traceparent"), Some(Some(format!("00-{T}-{S}-03"))));
    assert_eq!(get("tracestate"), Some(Some("congo=1".into())));
    assert_eq!(get("baggage"), Some(Some("a=1".into())));
    assert_eq!(get("b3"), Some(None), "stale single B3 removed");
    assert_eq!(get("x-b3-traceid"), Some(None), "stale multi B3 removed");

    let out = inject(
        &ctx(),
        &TraceState::default(),
        None,
        &[Propagator::B3],
        &[Propagator::B3],
    );
    assert_eq!(
        out,
        vec![("b3", Some(format!("{T}-{S}-1")))],
        "B3 only, nothing else touched"
    );

    let out = inject(&ctx(), &TraceState::default(), None, &ALL, &ALL);
    let get = |name: &str| out.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    assert_eq!(get("tracestate"), Some(None), "no empty tracestate header");
    assert_eq!(get("x-b3-sampled"), Some(Some("1".into())));
}
