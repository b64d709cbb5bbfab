use super::ot::{format_threshold, parse_threshold};
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

const LOW: u64 = 0x00_0000_0000_0001;
const HIGH: u64 = 0xff_ffff_ffff_ffff;
const HALF: u64 = 0x80_0000_0000_0000;

/// What a decision must come out as: sampled or not, why, the `ot` tracestate value sent on,
/// and whether recording starts here, mid-trace.
#[derive(Debug, PartialEq)]
struct Want<'a> {
    sampled: bool,
    reason: Reason,
    ot: Option<&'a str>,
    starts_mid_trace: bool,
}

fn sampled(reason: Reason, ot: Option<&str>) -> Want<'_> {
    Want {
        sampled: true,
        reason,
        ot,
        starts_mid_trace: false,
    }
}

fn unsampled(reason: Reason, ot: Option<&str>) -> Want<'_> {
    Want {
        sampled: false,
        ..sampled(reason, ot)
    }
}

impl Want<'_> {
    fn mid_trace(self) -> Self {
        Want {
            starts_mid_trace: true,
            ..self
        }
    }
}

impl Decision {
    fn as_want(&self) -> Want<'_> {
        Want {
            sampled: self.sampled,
            reason: self.reason,
            ot: self.ot.as_deref(),
            starts_mid_trace: self.starts_mid_trace,
        }
    }
}

/// The request a row sends: `GET /reviews/1` to `reviews.default:9080`, unless it says otherwise.
#[derive(Clone, Copy)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

const GET: Request<'static> = Request {
    method: "GET",
    path: "/reviews/1",
    headers: &[],
};

fn path(path: &str) -> Request<'_> {
    Request { path, ..GET }
}

fn with_headers<'a>(headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
    Request { headers, ..GET }
}

/// One decision: the parent's view, the trace id's randomness, the request, what must come out,
/// why, and the configuration (last: the longest column).
type Row<'a> = (ParentInfo<'a>, u64, Request<'a>, Want<'a>, &'a str, &'a str);

fn run(rows: &[Row<'_>]) {
    for (parent, randomness, request, want, why, config) in rows {
        let h = headers(request.headers);
        let req = RequestInfo {
            method: request.method,
            path: request.path,
            host: "reviews.default:9080",
            headers: &h,
        };
        let d = sampler(config).decide(trace_with_randomness(*randomness), parent, &req, SEC);
        assert_eq!(d.as_want(), *want, "{why}");
    }
}

/// `GET /` with no host: the request of the statistical tests, where only the trace id varies.
fn bare_get(headers: &HeaderMap) -> RequestInfo<'_> {
    RequestInfo {
        method: "GET",
        path: "/",
        host: "",
        headers,
    }
}

const NO_PARENT: ParentInfo<'static> = ParentInfo {
    sampled: None,
    debug: false,
    ot: None,
    local_randomness: None,
};
const PARENT_YES: ParentInfo<'static> = ParentInfo {
    sampled: Some(true),
    ..NO_PARENT
};
const PARENT_NO: ParentInfo<'static> = ParentInfo {
    sampled: Some(false),
    ..NO_PARENT
};

#[test]
#[rustfmt::skip]
fn decision_table_one_reason_per_row() {
    use Reason::*;
    const P0: &str = r#"{"randomSamplingPercentage": 0}"#;
    const P50: &str = r#"{"randomSamplingPercentage": 50}"#;
    const P100: &str = r#"{"randomSamplingPercentage": 100}"#;
    const UNTRUSTED: &str = r#"{"randomSamplingPercentage": 50, "sampling": {"trustIncoming": false}}"#;
    const TENANT_GOLD: &str = r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"headers": [{"name": "x-tenant", "value": "gold"}]}, "sample": "always"}]}}"#;
    const CAP_0: &str = r#"{"randomSamplingPercentage": 100, "sampling": {"maxTracesPerSecond": 0}}"#;
    let b3_debug = ParentInfo { debug: true, ..PARENT_NO };
    let force = with_headers(&[("x-envoy-force-trace", "1")]);
    let kube_probe = Request { path: "/", headers: &[("user-agent", "kube-probe/1.31")], ..GET };
    let post = Request { method: "POST", ..GET };
    run(&[
        (NO_PARENT,  HIGH,     GET,                          sampled(Percentage, Some("th:fd70a3d70a3d71")), "default 1%: high randomness sampled, th written", "{}"),
        (NO_PARENT,  HALF,     GET,                          unsampled(Percentage, None),   "default 1%: mid randomness not sampled",           "{}"),
        (NO_PARENT,  0,        GET,                          sampled(Percentage, Some("th:0")), "100% samples even R = 0",                      P100),
        (NO_PARENT,  HIGH,     GET,                          unsampled(Percentage, None),   "0% never samples",                                 P0),
        (NO_PARENT,  HALF,     GET,                          sampled(Percentage, Some("th:8")), "R = T is sampled (R ≥ T)",                     P50),
        (NO_PARENT,  HALF - 1, GET,                          unsampled(Percentage, None),   "R just below T",                                   P50),
        (PARENT_YES, LOW,      GET,                          sampled(Parent, None),         "a sampled parent is honoured at 0%",               P0),
        (PARENT_NO,  HIGH,     GET,                          unsampled(Parent, None),       "an unsampled parent is honoured at 100%",          P100),
        (PARENT_YES, LOW,      GET,                          unsampled(Percentage, None),   "untrusted: the client's sampled flag is ignored",  UNTRUSTED),
        (PARENT_NO,  HIGH,     GET,                          sampled(Percentage, Some("th:8")), "untrusted: decided locally, trace id kept",    UNTRUSTED),
        (NO_PARENT,  LOW,      force,                        sampled(Forced, None),         "force header",                                     P0),
        (NO_PARENT,  LOW,      force,                        unsampled(Percentage, None),   "force header not trusted at the edge",             r#"{"randomSamplingPercentage": 0, "sampling": {"trustIncoming": false}}"#),
        (NO_PARENT,  LOW,      with_headers(&[("x-debug", "")]), sampled(Forced, None),     "configured force header",                          r#"{"randomSamplingPercentage": 0, "sampling": {"forceHeader": "x-debug"}}"#),
        (b3_debug,   LOW,      GET,                          sampled(Forced, None),         "B3 debug wins over the parent's flag",             P0),
        (NO_PARENT,  HIGH,     path("/healthz"),             unsampled(Probe, None),        "probe path",                                       P100),
        (NO_PARENT,  HIGH,     path("/app-health/reviews/livez"), unsampled(Probe, None),   "Istio-rewritten app probe",                        P100),
        (NO_PARENT,  HIGH,     kube_probe,                   unsampled(Probe, None),        "probe user agent",                                 P100),
        (NO_PARENT,  HIGH,     path("/metrics?x=1"),         unsampled(Probe, None),        "scrape with a query string",                       P100),
        (NO_PARENT,  HIGH,     path("/healthz"),             sampled(Percentage, Some("th:0")), "probes sampled when skipProbes is off",        r#"{"randomSamplingPercentage": 100, "sampling": {"skipProbes": false}}"#),
        (NO_PARENT,  LOW,      path("/api/checkout"),        sampled(Rule, Some("th:0")),   "rule always",                                      r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"prefix": "/api/"}}, "sample": "always"}]}}"#),
        (NO_PARENT,  HIGH,     path("/static/x.css"),        unsampled(Rule, None),         "rule never",                                       r#"{"randomSamplingPercentage": 100, "sampling": {"rules": [{"match": {"path": {"prefix": "/static/"}}, "sample": "never"}]}}"#),
        (NO_PARENT,  HIGH,     path("/api"),                 sampled(Rule, Some("th:8")),   "rule percentage writes its own threshold",         r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/api"}}, "sample": 50}]}}"#),
        (NO_PARENT,  HIGH,     path("/api/x"),               unsampled(Percentage, None),   "exact path does not match a longer path",          r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/api"}}, "sample": "always"}]}}"#),
        (NO_PARENT,  LOW,      post,                         sampled(Rule, Some("th:0")),   "method rule",                                      r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"method": "POST"}, "sample": "always"}]}}"#),
        (NO_PARENT,  LOW,      GET,                          sampled(Rule, Some("th:0")),   "host rule ignores the port",                       r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"host": "reviews.default"}, "sample": "always"}]}}"#),
        (NO_PARENT,  LOW,      with_headers(&[("x-tenant", "gold")]), sampled(Rule, Some("th:0")), "header value rule",                         TENANT_GOLD),
        (NO_PARENT,  LOW,      with_headers(&[("x-tenant", "free")]), unsampled(Percentage, None), "header value differs",                      TENANT_GOLD),
        (NO_PARENT,  LOW,      path("/healthz"),             sampled(Rule, Some("th:0")),   "a rule overrides the probe default",               r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"exact": "/healthz"}}, "sample": "always"}]}}"#),
        (NO_PARENT,  LOW,      path("/a"),                   unsampled(Rule, None),         "first matching rule wins",                         r#"{"randomSamplingPercentage": 0, "sampling": {"rules": [{"match": {"path": {"prefix": "/a"}}, "sample": "never"}, {"sample": "always"}]}}"#),
        (NO_PARENT,  HIGH,     GET,                          unsampled(Cap, None),          "a zero cap stops every local decision",            CAP_0),
        (PARENT_YES, HIGH,     GET,                          sampled(Parent, None),         "the cap does not break traces started upstream",   CAP_0),
    ]);
}

#[test]
#[rustfmt::skip]
fn incoming_ot_values_are_kept_checked_or_erased() {
    use Reason::*;
    let parent = |sampled, ot| ParentInfo { sampled, ot: Some(ot), ..NO_PARENT };
    let untrusted = ParentInfo { sampled: Some(false), ot: Some("rv:ffffffffffffff"), local_randomness: Some(0), ..NO_PARENT };
    run(&[
        (parent(Some(true), "th:8"),                    HIGH, GET, sampled(Parent, Some("th:8")),                  "consistent parent threshold kept",                 "{}"),
        (parent(Some(true), "th:8"),                    LOW,  GET, sampled(Parent, None),                          "inconsistent th (R < T) erased, still sampled",    "{}"),
        (parent(Some(false), "th:8;rv:ffffffffffffff"), LOW,  GET, unsampled(Parent, Some("rv:ffffffffffffff")),   "unsampled: th erased, rv kept",                    "{}"),
        (parent(None, "rv:ffffffffffffff"),             LOW,  GET, sampled(Percentage, Some("th:fd70a3d70a3d71;rv:ffffffffffffff")), "explicit rv overrides the trace id's randomness", "{}"),
        (parent(None, "rv:00000000000000;x:y"),         HIGH, GET, unsampled(Percentage, Some("rv:00000000000000;x:y")), "unknown sub-keys preserved",          "{}"),
        (parent(None, "th:XYZ;rv:123"),                 LOW,  GET, sampled(Percentage, Some("th:0")),              "malformed th and rv dropped",                      r#"{"randomSamplingPercentage": 100}"#),
        (untrusted,                                     HIGH, GET, unsampled(Percentage, Some("rv:00000000000000")), "untrusted: the client's rv is replaced by ours", r#"{"randomSamplingPercentage": 50, "sampling": {"trustIncoming": false}}"#),
    ]);
}

#[test]
#[rustfmt::skip]
fn thresholds_match_the_specification_examples() {
    // OTel "TraceState: Probability Sampling", threshold examples (full precision).
    let cases = [
        (100.0, "0",              "always"),
        (50.0,  "8",              "one in two"),
        (25.0,  "c",              "one in four"),
        (12.5,  "e",              "one in eight"),
        (10.0,  "e6666666666666", "one in ten"),
        (1.0,   "fd70a3d70a3d71", "one in a hundred"),
        (0.01,  "fff972474538ef", "one in ten thousand"),
    ];
    for (pct, th, why) in cases {
        let t = threshold_for_percentage(pct).unwrap();
        assert_eq!(format_threshold(t), th, "{why}");
        assert_eq!(parse_threshold(th), Some(t), "{why}: round trip");
    }
    assert_eq!(threshold_for_percentage(0.0), None, "0%: no threshold, nothing is sampled");
    let bad = [
        ("",                "empty"),
        ("fffffffffffffff", "15 digits"),
        ("F",               "uppercase"),
        ("-1",              "sign"),
    ];
    for (th, why) in bad {
        assert_eq!(parse_threshold(th), None, "{why}");
    }
    assert_eq!(parse_threshold("08"), Some(0x08_0000_0000_0000), "right-padded");
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
        let req = bare_get(&h);
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
    let req = bare_get(&h);
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
    let req = bare_get(&h);
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
    use Reason::*;
    let parent = |sampled, ot| ParentInfo { sampled, ot, ..NO_PARENT };
    let at_100 = parent(Some(true), Some("th:0"));
    let forced = with_headers(&[("x-force", "1")]);
    // 25% is T = 0xc0000000000000: `th:c`.
    run(&[
        (at_100,                            HIGH, path("/b/1"), sampled(Rule, Some("th:c")),             "parent at 100%, lower rule, R ≥ T: kept, th raised for the subtree",      QUARTER),
        (at_100,                            HALF, path("/b/1"), unsampled(Rule, None),                   "parent at 100%, lower rule, R < T: a consistent subset is dropped",       QUARTER),
        (PARENT_NO,                         HIGH, path("/b/1"), sampled(Rule, Some("th:c")).mid_trace(), "unsampled parent, R ≥ T: recording starts here, mid-trace",              QUARTER),
        (PARENT_NO,                         HALF, path("/b/1"), unsampled(Rule, None),                   "unsampled parent, R < T: stays unsampled",                                QUARTER),
        (NO_PARENT,                         HIGH, path("/b/1"), sampled(Rule, Some("th:c")),             "no incoming decision: an ordinary root, not mid-trace",                   QUARTER),
        (at_100,                            HALF, path("/a/1"), sampled(Parent, Some("th:0")),           "the rule does not match: the parent is followed",                         QUARTER),
        (parent(Some(false), Some("rv:ffffffffffffff")), 0, path("/b/1"), sampled(Rule, Some("th:c;rv:ffffffffffffff")).mid_trace(), "explicit rv is the randomness", QUARTER),
        (PARENT_NO,                         0,    path("/x"),   sampled(Rule, Some("th:0")).mid_trace(), "always: every request from here down",                                    ALWAYS),
        (at_100,                            HIGH, path("/x"),   unsampled(Rule, None),                   "never: a chatty API records nothing, even in sampled traces",             NEVER),
        (PARENT_YES,                        HIGH, forced,       sampled(Forced, None),                   "the force header still wins: an explicit debug request",                  NEVER),
        (PARENT_YES,                        HIGH, path("/x"),   sampled(Parent, None),                   "a rule without override does not cut a sampled trace",                    FOLLOW),
        (PARENT_NO,                         0,    path("/x"),   sampled(Rule, Some("th:0")),             "untrusted parent: the rule decides as a local rule, nothing mid-trace",   UNTRUSTED),
    ]);
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
