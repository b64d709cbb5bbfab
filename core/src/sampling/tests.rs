use super::*;
use crate::headers::HeaderMap;
use crate::ids::IdGenerator;

const SEC: u64 = 1_000_000_000;

fn sampler(json: &str) -> Sampler {
    Sampler::new(&Config::parse(json.as_bytes()).unwrap())
}

/// A trace id whose rightmost 56 bits (its randomness) are `r`.
fn trace_with_randomness(r: u64) -> TraceId {
    let mut bytes = [0xabu8; 16];
    bytes[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    TraceId(bytes)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs.iter().copied().collect()
}

struct Case<'a> {
    config: &'a str,
    randomness: u64,
    parent: ParentInfo<'a>,
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    want: (bool, Reason, Option<&'a str>),
    why: &'a str,
}

const LOW: u64 = 0x00_0000_0000_0001;
const HIGH: u64 = 0xff_ffff_ffff_ffff;
const HALF: u64 = 0x80_0000_0000_0000;

fn run(cases: &[Case<'_>]) {
    for c in cases {
        let s = sampler(c.config);
        let h = headers(c.headers);
        let req = RequestInfo {
            method: c.method,
            path: c.path,
            host: "reviews.default:9080",
            headers: &h,
        };
        let d = s.decide(trace_with_randomness(c.randomness), &c.parent, &req, SEC);
        assert_eq!((d.sampled, d.reason, d.ot.as_deref()), c.want, "{}", c.why);
    }
}

fn case<'a>(
    config: &'a str,
    randomness: u64,
    want: (bool, Reason, Option<&'a str>),
    why: &'a str,
) -> Case<'a> {
    Case {
        config,
        randomness,
        parent: ParentInfo::default(),
        method: "GET",
        path: "/reviews/1",
        headers: &[],
        want,
        why,
    }
}

#[test]
fn decision_table_one_reason_per_row() {
    let sampled_parent = ParentInfo {
        sampled: Some(true),
        ..ParentInfo::default()
    };
    let unsampled_parent = ParentInfo {
        sampled: Some(false),
        ..ParentInfo::default()
    };
    let untrusted = r#"{"randomSamplingPercentage": 50, "sampling": {"trustIncoming": false}}"#;
    run(&[
        case(
            "{}",
            HIGH,
            (true, Reason::Percentage, Some("th:fd70a3d70a3d71")),
            "default 1%: high randomness sampled, th written",
        ),
        case(
            "{}",
            HALF,
            (false, Reason::Percentage, None),
            "default 1%: mid randomness not sampled",
        ),
        case(
            r#"{"randomSamplingPercentage": 100}"#,
            0,
            (true, Reason::Percentage, Some("th:0")),
            "100% samples even R = 0",
        ),
        case(
            r#"{"randomSamplingPercentage": 0}"#,
            HIGH,
            (false, Reason::Percentage, None),
            "0% never samples",
        ),
        case(
            r#"{"randomSamplingPercentage": 50}"#,
            HALF,
            (true, Reason::Percentage, Some("th:8")),
            "R = T is sampled (R ≥ T)",
        ),
        case(
            r#"{"randomSamplingPercentage": 50}"#,
            HALF - 1,
            (false, Reason::Percentage, None),
            "R just below T",
        ),
        Case {
            parent: sampled_parent,
            ..case(
                r#"{"randomSamplingPercentage": 0}"#,
                LOW,
                (true, Reason::Parent, None),
                "a sampled parent is honoured at 0%",
            )
        },
        Case {
            parent: unsampled_parent,
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                HIGH,
                (false, Reason::Parent, None),
                "an unsampled parent is honoured at 100%",
            )
        },
        Case {
            parent: sampled_parent,
            ..case(
                untrusted,
                LOW,
                (false, Reason::Percentage, None),
                "untrusted: the client's sampled flag is ignored",
            )
        },
        Case {
            parent: unsampled_parent,
            ..case(
                untrusted,
                HIGH,
                (true, Reason::Percentage, Some("th:8")),
                "untrusted: decided locally, trace id kept",
            )
        },
        Case {
            headers: &[("x-envoy-force-trace", "1")],
            ..case(
                r#"{"randomSamplingPercentage": 0}"#,
                LOW,
                (true, Reason::Forced, None),
                "force header",
            )
        },
        Case {
            headers: &[("x-envoy-force-trace", "1")],
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"trustIncoming": false}}"#,
                LOW,
                (false, Reason::Percentage, None),
                "force header not trusted at the edge",
            )
        },
        Case {
            headers: &[("x-debug", "")],
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"forceHeader": "x-debug"}}"#,
                LOW,
                (true, Reason::Forced, None),
                "configured force header",
            )
        },
        Case {
            parent: ParentInfo {
                debug: true,
                ..unsampled_parent
            },
            ..case(
                r#"{"randomSamplingPercentage": 0}"#,
                LOW,
                (true, Reason::Forced, None),
                "B3 debug wins over the parent's flag",
            )
        },
        Case {
            path: "/healthz",
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                HIGH,
                (false, Reason::Probe, None),
                "probe path",
            )
        },
        Case {
            path: "/app-health/reviews/livez",
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                HIGH,
                (false, Reason::Probe, None),
                "Istio-rewritten app probe",
            )
        },
        Case {
            path: "/",
            headers: &[("user-agent", "kube-probe/1.31")],
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                HIGH,
                (false, Reason::Probe, None),
                "probe user agent",
            )
        },
        Case {
            path: "/metrics?x=1",
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                HIGH,
                (false, Reason::Probe, None),
                "scrape with a query string",
            )
        },
        Case {
            path: "/healthz",
            ..case(
                r#"{"randomSamplingPercentage": 100, "sampling": {"skipProbes": false}}"#,
                HIGH,
                (true, Reason::Percentage, Some("th:0")),
                "probes sampled when skipProbes is off",
            )
        },
        Case {
            path: "/api/checkout",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"prefix": "/api/"}}, "sample": "always"}]}}"#,
                LOW,
                (true, Reason::Rule, Some("th:0")),
                "rule always",
            )
        },
        Case {
            path: "/static/x.css",
            ..case(
                r#"{"randomSamplingPercentage": 100, "sampling": {"rules": [{"match": {"path": {"prefix": "/static/"}}, "sample": "never"}]}}"#,
                HIGH,
                (false, Reason::Rule, None),
                "rule never",
            )
        },
        Case {
            path: "/api",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/api"}}, "sample": 50}]}}"#,
                HIGH,
                (true, Reason::Rule, Some("th:8")),
                "rule percentage writes its own threshold",
            )
        },
        Case {
            path: "/api/x",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/api"}}, "sample": "always"}]}}"#,
                HIGH,
                (false, Reason::Percentage, None),
                "exact path does not match a longer path",
            )
        },
        Case {
            method: "POST",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"method": "POST"}, "sample": "always"}]}}"#,
                LOW,
                (true, Reason::Rule, Some("th:0")),
                "method rule",
            )
        },
        case(
            r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"host": "reviews.default"}, "sample": "always"}]}}"#,
            LOW,
            (true, Reason::Rule, Some("th:0")),
            "host rule ignores the port",
        ),
        Case {
            headers: &[("x-tenant", "gold")],
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"headers": [{"name": "x-tenant", "value": "gold"}]}, "sample": "always"}]}}"#,
                LOW,
                (true, Reason::Rule, Some("th:0")),
                "header value rule",
            )
        },
        Case {
            headers: &[("x-tenant", "free")],
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"headers": [{"name": "x-tenant", "value": "gold"}]}, "sample": "always"}]}}"#,
                LOW,
                (false, Reason::Percentage, None),
                "header value differs",
            )
        },
        Case {
            path: "/healthz",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/healthz"}}, "sample": "always"}]}}"#,
                LOW,
                (true, Reason::Rule, Some("th:0")),
                "a rule overrides the probe default",
            )
        },
        Case {
            path: "/a",
            ..case(
                r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"prefix": "/a"}}, "sample": "never"}, {"sample": "always"}]}}"#,
                LOW,
                (false, Reason::Rule, None),
                "first matching rule wins",
            )
        },
        case(
            r#"{"randomSamplingPercentage": 100, "sampling": {"maxTracesPerSecond": 0}}"#,
            HIGH,
            (false, Reason::Cap, None),
            "a zero cap stops every local decision",
        ),
        Case {
            parent: sampled_parent,
            ..case(
                r#"{"randomSamplingPercentage": 100, "sampling": {"maxTracesPerSecond": 0}}"#,
                HIGH,
                (true, Reason::Parent, None),
                "the cap does not break traces started upstream",
            )
        },
    ]);
}

#[test]
fn incoming_ot_values_are_kept_checked_or_erased() {
    let parent = |sampled, ot| ParentInfo {
        sampled,
        ot: Some(ot),
        ..ParentInfo::default()
    };
    run(&[
        Case {
            parent: parent(Some(true), "th:8"),
            ..case(
                "{}",
                HIGH,
                (true, Reason::Parent, Some("th:8")),
                "consistent parent threshold kept",
            )
        },
        Case {
            parent: parent(Some(true), "th:8"),
            ..case(
                "{}",
                LOW,
                (true, Reason::Parent, None),
                "inconsistent th (R < T) erased, still sampled",
            )
        },
        Case {
            parent: parent(Some(false), "th:8;rv:ffffffffffffff"),
            ..case(
                "{}",
                LOW,
                (false, Reason::Parent, Some("rv:ffffffffffffff")),
                "unsampled: th erased, rv kept",
            )
        },
        Case {
            parent: parent(None, "rv:ffffffffffffff"),
            ..case(
                "{}",
                LOW,
                (
                    true,
                    Reason::Percentage,
                    Some("th:fd70a3d70a3d71;rv:ffffffffffffff"),
                ),
                "explicit rv overrides the trace id's randomness",
            )
        },
        Case {
            parent: parent(None, "rv:00000000000000;x:y"),
            ..case(
                "{}",
                HIGH,
                (false, Reason::Percentage, Some("rv:00000000000000;x:y")),
                "unknown sub-keys preserved",
            )
        },
        Case {
            parent: parent(None, "th:XYZ;rv:123"),
            ..case(
                r#"{"randomSamplingPercentage": 100}"#,
                LOW,
                (true, Reason::Percentage, Some("th:0")),
                "malformed th and rv dropped",
            )
        },
        Case {
            parent: ParentInfo {
                sampled: Some(false),
                ot: Some("rv:ffffffffffffff"),
                local_randomness: Some(0),
                ..ParentInfo::default()
            },
            ..case(
                r#"{"randomSamplingPercentage": 50, "sampling": {"trustIncoming": false}}"#,
                HIGH,
                (false, Reason::Percentage, Some("rv:00000000000000")),
                "untrusted: the client's rv is replaced by ours",
            )
        },
    ]);
}

#[test]
fn thresholds_match_the_specification_examples() {
    // OTel "TraceState: Probability Sampling", threshold examples (full precision).
    let cases = [
        (100.0, "0", "always"),
        (50.0, "8", "one in two"),
        (25.0, "c", "one in four"),
        (12.5, "e", "one in eight"),
        (10.0, "e6666666666666", "one in ten"),
        (1.0, "fd70a3d70a3d71", "one in a hundred"),
        (0.01, "fff972474538ef", "one in ten thousand"),
    ];
    for (pct, th, why) in cases {
        let t = threshold_for_percentage(pct).unwrap();
        assert_eq!(format_threshold(t), th, "{why}");
        assert_eq!(parse_threshold(th), Some(t), "{why}: round trip");
    }
    assert_eq!(threshold_for_percentage(0.0), None);
    let bad = [
        ("", "empty"),
        ("fffffffffffffff", "15 digits"),
        ("F", "uppercase"),
        ("-1", "sign"),
    ];
    for (th, why) in bad {
        assert_eq!(parse_threshold(th), None, "{why}");
    }
    assert_eq!(
        parse_threshold("08"),
        Some(0x08_0000_0000_0000),
        "right-padded"
    );
}

#[test]
fn measured_fraction_matches_the_percentage() {
    // Seeded ids; tolerance of five standard deviations of the binomial.
    for (pct, n) in [
        (0.01, 2_000_000u32),
        (1.0, 200_000),
        (50.0, 50_000),
        (100.0, 10_000),
    ] {
        let s = sampler(&format!(r#"{{"randomSamplingPercentage": {pct}}}"#));
        let mut ids = IdGenerator::from_seed(42);
        let h = HeaderMap::new();
        let req = RequestInfo {
            method: "GET",
            path: "/",
            host: "",
            headers: &h,
        };
        let sampled = (0..n)
            .filter(|_| {
                s.decide(ids.trace_id(), &ParentInfo::default(), &req, 0)
                    .sampled
            })
            .count() as f64;
        let p = pct / 100.0;
        let expected = p * f64::from(n);
        let tolerance = 5.0 * (expected * (1.0 - p)).sqrt();
        assert!(
            (sampled - expected).abs() <= tolerance,
            "{pct}%: {sampled} sampled of {n}, expected {expected} ± {tolerance}"
        );
    }
}

#[test]
fn a_higher_percentage_samples_a_superset() {
    let percentages = [0.01, 0.1, 1.0, 5.0, 10.0, 33.33, 50.0, 99.99, 100.0];
    let samplers: Vec<Sampler> = percentages
        .iter()
        .map(|p| sampler(&format!(r#"{{"randomSamplingPercentage": {p}}}"#)))
        .collect();
    let mut ids = IdGenerator::from_seed(9);
    let h = HeaderMap::new();
    let req = RequestInfo {
        method: "GET",
        path: "/",
        host: "",
        headers: &h,
    };
    for _ in 0..20_000 {
        let t = ids.trace_id();
        let decisions: Vec<bool> = samplers
            .iter()
            .map(|s| s.decide(t, &ParentInfo::default(), &req, 0).sampled)
            .collect();
        assert!(
            decisions.windows(2).all(|w| !w[0] || w[1]),
            "{t:?}: sampled at a lower percentage but not a higher one: {decisions:?}"
        );
    }
}

#[test]
fn the_rate_cap_refills_over_time() {
    let s = sampler(r#"{"randomSamplingPercentage": 100, "sampling": {"maxTracesPerSecond": 2}}"#);
    let h = HeaderMap::new();
    let req = RequestInfo {
        method: "GET",
        path: "/",
        host: "",
        headers: &h,
    };
    let at = |now| {
        s.decide(
            trace_with_randomness(HIGH),
            &ParentInfo::default(),
            &req,
            now,
        )
        .sampled
    };
    assert_eq!(
        [at(SEC), at(SEC), at(SEC)],
        [true, true, false],
        "burst of one second's worth"
    );
    assert!(!at(SEC + SEC / 4), "a quarter second adds half a token");
    assert!(at(SEC + SEC / 2), "half a second adds one");
    assert!(!at(SEC / 2), "a clock stepping back mints nothing");
    assert!(
        at(10 * SEC) && at(10 * SEC) && !at(10 * SEC),
        "refill is capped at the burst"
    );
}

#[test]
#[rustfmt::skip]
fn an_override_rule_decides_whatever_the_parent_said() {
    const QUARTER: &str = r#"{"sampling": {"rules": [{"match": {"path": {"prefix": "/b/"}}, "sample": 25, "parent": "override"}]}}"#;
    const ALWAYS: &str = r#"{"sampling": {"rules": [{"sample": "always", "parent": "override"}]}}"#;
    const NEVER: &str = r#"{"sampling": {"rules": [{"sample": "never", "parent": "override"}], "forceHeader": "x-force"}}"#;
    const FOLLOW: &str = r#"{"sampling": {"rules": [{"sample": "never"}]}}"#;
    const UNTRUSTED: &str = r#"{"randomSamplingPercentage": 0, "sampling": {"trustIncoming": false, "rules": [{"sample": "always", "parent": "override"}]}}"#;
    let (yes, no) = (Some(true), Some(false));
    // 25% is T = 0xc0000000000000: `th:c`.
    type Row<'a> = (&'a str, Option<bool>, Option<&'a str>, u64, &'a str, &'a [(&'a str, &'a str)], (bool, Reason, Option<&'a str>, bool), &'a str);
    let cases: [Row<'_>; 12] = [
        (QUARTER,   yes,  Some("th:0"), HIGH, "/b/1", &[],              (true,  Reason::Rule,   Some("th:c"), false), "parent at 100%, lower rule, R ≥ T: kept, th raised for the subtree"),
        (QUARTER,   yes,  Some("th:0"), HALF, "/b/1", &[],              (false, Reason::Rule,   None,         false), "parent at 100%, lower rule, R < T: a consistent subset is dropped"),
        (QUARTER,   no,   None,         HIGH, "/b/1", &[],              (true,  Reason::Rule,   Some("th:c"), true),  "unsampled parent, R ≥ T: recording starts here, mid-trace"),
        (QUARTER,   no,   None,         HALF, "/b/1", &[],              (false, Reason::Rule,   None,         false), "unsampled parent, R < T: stays unsampled"),
        (QUARTER,   None, None,         HIGH, "/b/1", &[],              (true,  Reason::Rule,   Some("th:c"), false), "no incoming decision: an ordinary root, not mid-trace"),
        (QUARTER,   yes,  Some("th:0"), HALF, "/a/1", &[],              (true,  Reason::Parent, Some("th:0"), false), "the rule does not match: the parent is followed"),
        (QUARTER,   no,   Some("rv:ffffffffffffff"), 0, "/b/1", &[],    (true,  Reason::Rule,   Some("th:c;rv:ffffffffffffff"), true), "explicit rv is the randomness"),
        (ALWAYS,    no,   None,         0,    "/x",   &[],              (true,  Reason::Rule,   Some("th:0"), true),  "always: every request from here down"),
        (NEVER,     yes,  Some("th:0"), HIGH, "/x",   &[],              (false, Reason::Rule,   None,         false), "never: a chatty API records nothing, even in sampled traces"),
        (NEVER,     yes,  None,         HIGH, "/x",   &[("x-force", "1")], (true, Reason::Forced, None,       false), "the force header still wins: an explicit debug request"),
        (FOLLOW,    yes,  None,         HIGH, "/x",   &[],              (true,  Reason::Parent, None,         false), "a rule without override does not cut a sampled trace"),
        (UNTRUSTED, no,   None,         0,    "/x",   &[],              (true,  Reason::Rule,   Some("th:0"), false), "untrusted parent: the rule decides as a local rule, nothing mid-trace"),
    ];
    for (config, sampled, ot, randomness, path, hdrs, want, why) in cases {
        let s = sampler(config);
        let h = headers(hdrs);
        let req = RequestInfo { method: "GET", path, host: "b.default:9080", headers: &h };
        let parent = ParentInfo { sampled, ot, ..ParentInfo::default() };
        let d = s.decide(trace_with_randomness(randomness), &parent, &req, SEC);
        assert_eq!((d.sampled, d.reason, d.ot.as_deref(), d.starts_mid_trace), want, "{why}");
    }
}

#[test]
#[rustfmt::skip]
fn the_latency_threshold_comes_from_the_first_matching_rule_or_the_global_key() {
    const CONFIG: &str = r#"{"sampling": {"captureSlowerThan": "2s", "rules": [{"match": {"path": {"prefix": "/slow/"}}, "sample": 0, "captureSlowerThan": "10s"}, {"match": {"path": {"prefix": "/fast/"}}, "sample": 0}]}}"#;
    let cases = [
        (CONFIG, Some(true), "/slow/1", Some(10 * SEC), "the rule's own threshold, even when a parent decides"),
        (CONFIG, None,       "/fast/1", Some(2 * SEC),  "a matching rule without one: the global threshold"),
        (CONFIG, None,       "/other",  Some(2 * SEC),  "no rule matches: the global threshold"),
        ("{}",   Some(false), "/x",     None,           "latency capture is off by default"),
    ];
    for (config, sampled, path, want, why) in cases {
        let h = HeaderMap::default();
        let req = RequestInfo { method: "GET", path, host: "b:9080", headers: &h };
        let parent = ParentInfo { sampled, ..ParentInfo::default() };
        let d = sampler(config).decide(trace_with_randomness(HIGH), &parent, &req, SEC);
        assert_eq!(d.capture_slower_than, want, "{why}");
    }
}
