//! Property tests: whatever a client sends, the parsers never panic, stay bounded, and what the
//! proxy sends on is always valid (issue 9, "hostile input").

use meshtrace_core::config::{Config, Propagator};
use meshtrace_core::context::{SpanContext, TraceFlags};
use meshtrace_core::headers::{serialize, HeaderMap};
use meshtrace_core::ids::{SpanId, TraceId};
use meshtrace_core::propagation::{
    self, b3, baggage, request_id, traceparent, tracestate, TraceState, TraceStateError,
};
use proptest::prelude::*;

const ALL: [Propagator; 4] = [
    Propagator::Tracecontext,
    Propagator::B3,
    Propagator::B3multi,
    Propagator::Baggage,
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // No files under WASI, and failures are reported with their input anyway.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Values near the grammar (where bugs live) as well as arbitrary text with controls.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F]{0,3}-[0-9a-fA-F]{0,33}-[0-9a-fA-F]{0,17}-[0-9a-f]{0,3}(-.{0,5})?",
        "[ \t]*00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}[ \t,]*",
        "([a-z0-9@_*/-]{0,10}=[ -~]{0,10},?){0,40}",
        "[0-9a-f]{16,32}-[0-9a-f]{16}(-[01d])?(-[0-9a-f]{16})?",
        "[\\x00-\\x1f\\x7f]{0,8}",
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("traceparent"),
        Just("tracestate"),
        Just("baggage"),
        Just("b3"),
        Just("x-b3-traceid"),
        Just("x-b3-spanid"),
        Just("x-b3-sampled"),
        Just("x-b3-flags"),
        Just("x-request-id"),
    ]
    .prop_map(String::from)
}

fn is_valid_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 55
        && v.starts_with("00-")
        && traceparent::parse(v).is_ok()
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c) || *c == b'-')
}

fn ctx() -> SpanContext {
    SpanContext {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([9; 8]),
        flags: TraceFlags(TraceFlags::SAMPLED),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_parse_never_panics_and_round_trips(v in header_value()) {
        if let Ok(parsed) = traceparent::parse(&v) {
            let again = traceparent::format(&parsed);
            prop_assert!(is_valid_traceparent(&again), "{again}");
            let back = traceparent::parse(&again).unwrap();
            prop_assert_eq!(back.trace_id, parsed.trace_id);
            prop_assert_eq!(back.span_id, parsed.span_id);
            prop_assert!(parsed.trace_id.is_valid() && parsed.span_id.is_valid());
        }
    }

    #[test]
    fn what_is_sent_on_is_always_valid(
        headers in prop::collection::vec((header_name(), header_value()), 0..12)
    ) {
        let headers: HeaderMap = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let extracted = propagation::extract(&headers, &ALL);
        let context = match extracted.parent {
            Some(p) => SpanContext { span_id: SpanId([1; 8]), ..p },
            None => ctx(),
        };
        let mut out = Vec::new();
        propagation::inject(&context, &extracted.tracestate, extracted.baggage.as_deref(), &ALL,
                            &ALL, |name, value| out.push((name, value.map(str::to_string))));
        for (name, value) in out {
            let Some(value) = value else { continue };
            match name {
                "traceparent" => prop_assert!(is_valid_traceparent(&value), "{value}"),
                "tracestate" => {
                    prop_assert!(!value.is_empty() && value.len() <= tracestate::MAX_LEN);
                    prop_assert!(value.split(',').count() <= tracestate::MAX_MEMBERS);
                    let reparsed = TraceState::parse([value.as_str()].into_iter())
                        .map(|s| s.header_value());
                    prop_assert_eq!(reparsed, Ok(Some(value.clone())),
                        "every member survives a second parse: all valid");
                }
                "baggage" => {
                    prop_assert!(!value.is_empty() && value.len() <= baggage::MAX_BYTES);
                    prop_assert!(value.split(',').count() <= baggage::MAX_MEMBERS);
                    prop_assert!(value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
                }
                "b3" => prop_assert!(b3::parse_single(&value).is_ok(), "{value}"),
                _ => prop_assert!(!value.is_empty()),
            }
        }
    }

    #[test]
    fn accepted_request_ids_are_safe(v in header_value()) {
        if request_id::is_acceptable(&v) {
            prop_assert!(v.len() <= request_id::MAX_LEN);
            prop_assert!(v.bytes().all(|b| b.is_ascii_graphic() && b != b','));
        }
    }

    #[test]
    fn configuration_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Config::parse(&bytes);
    }

    #[test]
    fn configuration_values_of_any_type_are_rejected_or_accepted_cleanly(
        key in prop_oneof![
            Just("randomSamplingPercentage"), Just("tracingServiceName"), Just("role"),
            Just("sampling"), Just("propagation"), Just("exporter"), Just("limits"),
            Just("customTags"), Just("serviceName"), Just("unknownKey"),
        ],
        value in prop_oneof![
            Just("null".to_string()), Just("-1".to_string()), Just("101".to_string()),
            Just("1e309".to_string()), Just("\"\"".to_string()), Just("[]".to_string()),
            Just("{}".to_string()), Just("{\"x\":1}".to_string()),
            "[ -~]{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
        ],
    ) {
        let json = format!("{{\"{key}\": {value}}}");
        // JSON that does not parse (`1e309` overflows f64) has no key to name.
        let well_formed = serde_json::from_str::<serde_json::Value>(&json).is_ok();
        if let Err(e) = Config::parse(json.as_bytes()) {
            if well_formed {
                let under_key = e.key == key
                    || e.key.strip_prefix(key).is_some_and(|rest| rest.starts_with(['.', '[']));
                prop_assert!(under_key, "the error names `{key}` or a key under it: {e:?}");
                prop_assert!(e.to_string().contains(&e.key), "the message shows the key: {e}");
            } else {
                prop_assert!(e.key.is_empty(), "malformed JSON is not blamed on a key: {e:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Whatever bytes a client puts in header values, reading the map never fails, keeps every
    /// pair in order, and keeps UTF-8 values exactly.
    #[test]
    fn header_maps_from_the_host_round_trip(
        pairs in prop::collection::vec(
            ("[a-z:-]{1,12}".prop_map(String::into_bytes), any::<Vec<u8>>()), 0..16)
    ) {
        let map = HeaderMap::from_serialized(&serialize(&pairs));
        prop_assert_eq!(map.len(), pairs.len());
        for ((name, value), (k, v)) in map.iter().zip(&pairs) {
            prop_assert_eq!(name.as_bytes(), k.as_slice());
            prop_assert_eq!(value, String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn header_map_parse_never_panics(bytes in any::<Vec<u8>>()) {
        let map = HeaderMap::from_serialized(&bytes);
        prop_assert!(map.len() * 10 <= bytes.len());
    }
}

proptest! {
    // Thousands of members per case: fewer cases.
    #![proptest_config(ProptestConfig { cases: 32, ..config() })]

    #[test]
    fn huge_tracestate_stays_bounded(n in 0usize..5000, value in "[a-z0-9]{1,20}") {
        let members: Vec<String> = (0..n).map(|i| format!("k{i}={value}")).collect();
        let joined = members.join(",");
        match TraceState::parse([joined.as_str()].into_iter()) {
            Ok(state) => {
                prop_assert!(n <= tracestate::MAX_MEMBERS, "{n} members cannot be parsed");
                prop_assert!(state.header_value().map_or(0, |h| h.len()) <= tracestate::MAX_LEN);
            }
            Err(e) => {
                prop_assert!(n > tracestate::MAX_MEMBERS, "{n} members: {e:?}");
                prop_assert_eq!(e, TraceStateError::TooManyMembers);
            }
        }
    }
}

/// A list-member by the current key grammar (`( lcalpha / DIGIT ) 0*255 keychar`, W3C Trace
/// Context "Key") and value grammar, or one that breaks exactly one rule.
fn tracestate_member() -> impl Strategy<Value = (String, bool)> {
    let valid = ("[a-z0-9][a-z0-9_*/@-]{0,12}", "[ -+--<>-~]{0,6}[!-+--<>-~]")
        .prop_map(|(k, v)| (format!("{k}={v}"), true));
    let empty = "[ \t]{0,2}".prop_map(|m| (m, true));
    let invalid = prop_oneof![
        "[@_*/-][a-z0-9]{0,5}=v",
        "[a-z][a-z0-9]{0,5}[A-Z.]=v",
        "[a-z]{1,5}=",
        "[a-z]{1,5}=[a-z]{1,3}=[a-z]{1,3}",
        "[a-z]{1,8}",
    ]
    .prop_map(|m| (m, false));
    prop_oneof![6 => valid, 1 => empty, 1 => invalid]
}

proptest! {
    #![proptest_config(config())]

    /// W3C processing model: a tracestate that cannot be parsed is discarded whole; one that can
    /// is kept member for member (first of a repeated key) while within 512 characters.
    #[test]
    fn tracestate_is_kept_whole_or_discarded_whole(
        members in prop::collection::vec(tracestate_member(), 0..40)
    ) {
        let header = members.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(",");
        let written = members.iter().filter(|(m, _)| !m.trim().is_empty()).count();
        let parsable = members.iter().all(|(_, ok)| *ok) && written <= tracestate::MAX_MEMBERS;
        let got = TraceState::parse([header.as_str()].into_iter());
        prop_assert_eq!(got.is_ok(), parsable, "{}", header);
        if let Ok(state) = got {
            let mut expected: Vec<(String, String)> = Vec::new();
            for (m, _) in &members {
                if let Some((k, v)) = m.trim_matches([' ', '\t']).split_once('=') {
                    if !expected.iter().any(|(ek, _)| ek == k) {
                        expected.push((k.to_string(), v.trim_end_matches(' ').to_string()));
                    }
                }
            }
            let joined = expected.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
            let joined = joined.join(",");
            if joined.len() <= tracestate::MAX_LEN {
                prop_assert_eq!(state.header_value().unwrap_or_default(), joined);
            }
        }
    }
}
