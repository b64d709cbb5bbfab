use super::read::parse_duration;
use super::*;

#[test]
fn empty_configuration_gives_documented_defaults() {
    for input in ["", "  \n", "{}"] {
        let c = Config::parse(input.as_bytes()).unwrap();
        assert_eq!(c, Config::default(), "input {input:?}");
    }
    let c = Config::default();
    assert_eq!(c.random_sampling_percentage, 1.0, "Istio's default is 1%");
    assert_eq!(
        c.tracing_service_name,
        ServiceNameMode::AppLabelAndNamespace
    );
    assert_eq!(c.exporter.protocol, ExportProtocol::HttpProtobuf);
    assert_eq!(c.exporter.cluster, DEFAULT_COLLECTOR_CLUSTER);
    assert_eq!(c.exporter.path, "/v1/traces");
    assert_eq!(
        c.exporter.effective_authority(),
        "opentelemetry-collector.observability.svc.cluster.local"
    );
}

#[test]
fn full_configuration_parses() {
    let json = r#"{
        "randomSamplingPercentage": 12.5,
        "tracingServiceName": "CANONICAL_NAME_ONLY",
        "serviceName": "shop",
        "role": "server",
        "customTags": {
            "team": {"literal": {"value": "payments"}},
            "pod": {"environment": {"name": "POD_NAME", "defaultValue": "unknown"}},
            "tenant": {"header": {"name": "x-tenant"}}
        },
        "resourceAttributes": {"deployment.environment.name": "prod"},
        "sampling": {
            "trustIncoming": false,
            "forceHeader": "x-force",
            "maxTracesPerSecond": 100,
            "skipProbes": false,
            "rules": [
                {"match": {"path": {"prefix": "/admin"}}, "sample": "never"},
                {"match": {"method": "POST", "headers": [{"name": "x-debug"}]}, "sample": "always"},
                {"match": {"host": "api.example.com"}, "sample": 50}
            ]
        },
        "propagation": {"extract": ["b3"], "inject": ["tracecontext", "b3multi"], "trustIncomingRequestId": false},
        "exporter": {"protocol": "grpc", "cluster": "outbound|4317||otel.obs.svc.cluster.local",
                     "timeout": "0.5s", "headers": [{"name": "authorization", "value": "Bearer x"}],
                     "maxBatchSize": 10, "flushInterval": "250ms", "maxQueueSize": 100, "maxRetries": 1},
        "limits": {"maxAttributeLength": 64, "maxAttributes": 16, "maxBatchBytes": 4096}
    }"#;
    let c = Config::parse(json.as_bytes()).unwrap();
    assert_eq!(c.random_sampling_percentage, 12.5);
    assert_eq!(c.tracing_service_name, ServiceNameMode::CanonicalNameOnly);
    assert_eq!(c.role, RoleSetting::Server);
    assert_eq!(
        c.custom_tags
            .iter()
            .find(|(name, _)| name == "pod")
            .map(|(_, tag)| tag),
        Some(&CustomTag::Environment {
            name: "POD_NAME".into(),
            default_value: Some("unknown".into())
        })
    );
    assert!(!c.sampling.trust_incoming);
    assert_eq!(c.sampling.rules.len(), 3);
    assert_eq!(
        c.sampling.rules[0].matcher.path,
        Some(PathMatch::Prefix("/admin".into()))
    );
    assert_eq!(
        c.sampling.rules[0].sample,
        RuleAction::Keyword(RuleKeyword::Never)
    );
    assert_eq!(c.sampling.rules[2].sample, RuleAction::Percentage(50.0));
    assert_eq!(
        c.propagation.inject,
        vec![Propagator::Tracecontext, Propagator::B3multi]
    );
    assert_eq!(c.exporter.protocol, ExportProtocol::Grpc);
    assert_eq!(c.exporter.timeout, Duration::from_millis(500));
    assert_eq!(c.exporter.flush_interval, Duration::from_millis(250));
    assert_eq!(
        c.exporter.effective_authority(),
        "otel.obs.svc.cluster.local"
    );
}

/// Each row's configuration is rejected with an error that names the key a user must fix:
/// (configuration, key, why).
fn assert_each_names_its_key(rows: &[(&str, &str, &str)]) {
    for (json, key, why) in rows {
        let e = Config::parse(json.as_bytes()).expect_err(why);
        assert!(
            e.to_string().contains(&format!("`{key}`")),
            "{why}: error {e} should name `{key}`"
        );
    }
}

#[test]
#[rustfmt::skip]
fn bad_configurations_name_the_key() {
    assert_each_names_its_key(&[
        (r#"{"randomSamplingPercentag": 1}"#,                                    "randomSamplingPercentag",       "typo in a top-level key"),
        (r#"{"randomSamplingPercentage": 101}"#,                                 "randomSamplingPercentage",      "above 100"),
        (r#"{"randomSamplingPercentage": -1}"#,                                  "randomSamplingPercentage",      "negative"),
        (r#"{"randomSamplingPercentage": "10"}"#,                                "randomSamplingPercentage",      "string, not number"),
        (r#"{"tracingServiceName": "APP_LABEL"}"#,                               "tracingServiceName",            "unknown mode"),
        (r#"{"role": "sidecar"}"#,                                               "role",                          "unknown role"),
        (r#"{"exporter": {"protocol": "http/json"}}"#,                           "exporter.protocol",             "unsupported protocol"),
        (r#"{"exporter": {"clustr": "x"}}"#,                                     "exporter.clustr",               "unknown nested key"),
        (r#"{"exporter": {"cluster": ""}}"#,                                     "exporter.cluster",              "empty cluster"),
        (r#"{"exporter": {"path": "v1/traces"}}"#,                               "exporter.path",                 "relative path"),
        (r#"{"exporter": {"timeout": "5"}}"#,                                    "exporter.timeout",              "duration without unit"),
        (r#"{"exporter": {"timeout": "0s"}}"#,                                   "exporter.timeout",              "zero timeout"),
        (r#"{"exporter": {"maxBatchSize": 0}}"#,                                 "exporter.maxBatchSize",         "empty batches"),
        (r#"{"exporter": {"maxQueueSize": 1}}"#,                                 "exporter.maxQueueSize",         "queue smaller than a batch"),
        (r#"{"exporter": {"headers": [{"name": "Bad Header", "value": "x"}]}}"#, "exporter.headers[0].name",      "not a header name"),
        (r#"{"sampling": {"rules": [{"sample": 200}]}}"#,                        "sampling.rules[0].sample",      "rule percentage above 100"),
        (r#"{"sampling": {"rules": [{"sample": "sometimes"}]}}"#,                "sampling.rules[0].sample",      "unknown rule action"),
        (r#"{"sampling": {"maxTracesPerSecond": -5}}"#,                          "sampling.maxTracesPerSecond",   "negative rate"),
        (r#"{"sampling": {"forceHeader": "X-Force"}}"#,                          "sampling.forceHeader",          "uppercase header name"),
        (r#"{"propagation": {"extract": ["jaeger"]}}"#,                          "propagation.extract[0]",        "unknown propagator"),
        (r#"{"propagation": {"publishContext": ["trace_id", "traceId"]}}"#,      "propagation.publishContext[1]", "unknown context value (the names are the property suffixes)"),
        (r#"{"propagation": {"traceResponse": "yes"}}"#,                         "propagation.traceResponse",     "traceResponse is a boolean"),
        (r#"{"propagation": {"traceResponseHeader": 1}}"#,                      "propagation.traceResponseHeader", "traceResponseHeader is a boolean"),
        (r#"{"serviceName": ""}"#,                                               "serviceName",                   "empty service name"),
        (r#"{"customTags": {"t": {"literal": {}}}}"#,                            "customTags.t.literal.value",    "literal without value"),
        (r#"{"limits": {"maxAttributeLength": 1}}"#,                             "limits.maxAttributeLength",     "too small to be useful"),
    ]);
}

#[test]
fn malformed_json_is_rejected_with_position() {
    for (json, reason) in [
        ("{", "truncated"),
        ("{} {}", "trailing data"),
        ("[]", "not an object"),
        ("\u{0}", "binary"),
    ] {
        let e = Config::parse(json.as_bytes()).expect_err(reason);
        assert!(
            e.to_string().starts_with("invalid meshtrace configuration"),
            "{reason}: {e}"
        );
    }
}

#[test]
#[rustfmt::skip]
fn durations_parse_as_istio_writes_them() {
    let cases = [
        ("5s",        Some(Duration::from_secs(5)),     "seconds"),
        ("0.25s",     Some(Duration::from_millis(250)), "fractional seconds"),
        ("250ms",     Some(Duration::from_millis(250)), "milliseconds"),
        ("5",         None,                             "no unit"),
        ("-1s",       None,                             "negative"),
        ("s",         None,                             "no number"),
        ("1e3s",      None,                             "exponent"),
        ("99999999s", None,                             "beyond a day"),
    ];
    for (input, want, reason) in cases {
        assert_eq!(parse_duration(input), want, "{reason}");
    }
}

/// The JSON reader's edges, one reason per row: (input, the error it must contain, or `None`
/// when the input is valid).
#[test]
#[rustfmt::skip]
fn reader_edges() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{"exporter": {"protocol": "thrift"}}"#,                                        Some("at `exporter.protocol`: unknown value `thrift`, expected one of `http/protobuf`, `grpc`, `none`"), "enums list what they accept"),
        (r#"{"exporter": {"clustr": "x"}}"#,                                               Some("at `exporter.clustr`: unknown key, expected one of `protocol`, `cluster`"),                        "unknown keys list the known ones"),
        (r#"{"exporter": {"maxBatchSize": 1.5}}"#,                                         Some("at `exporter.maxBatchSize`: expected a whole number, 0 or more, got a number"),                    "counts are whole numbers"),
        (r#"{"exporter": {"maxRetries": 5000000000}}"#,                                    Some("at `exporter.maxRetries`"),                                                                        "counts fit their type"),
        (r#"{"customTags": {"t": {"literal": {"value": "a"}, "header": {"name": "x"}}}}"#, Some("at `customTags.t`: expected exactly one of `literal`, `environment`, `header`"),                   "a custom tag has one source"),
        (r#"{"sampling": {"rules": [{"match": {"path": {}}, "sample": 1}]}}"#,             Some("at `sampling.rules[0].match.path`: expected exactly one of `exact`, `prefix`"),                    "a path match needs a kind"),
        (r#"{"sampling": {"rules": [{"match": {}}]}}"#,                                    Some("at `sampling.rules[0].sample`: is required"),                                                      "a rule says what to do"),
        (r#"{"propagation": {"extract": "tracecontext"}}"#,                                Some("at `propagation.extract`: expected a list, got a string"),                                         "lists are lists"),
        (r#"{"sampling": {"trustIncoming": "false"}}"#,                                    Some("at `sampling.trustIncoming`: expected true or false, got a string"),                               "booleans are not strings"),
        ("\u{ff}",                                                                         Some("invalid meshtrace configuration"),                                                                 "not UTF-8"),
        (r#"{"randomSamplingPercentage": null}"#,                                          None,                                                                                                    "null asks for the default"),
        (r#"{"sampling": {"forceHeader": null}}"#,                                         None,                                                                                                    "null turns the force header off"),
        (r#"{"exporter": {"timeout": "1.5s"}}"#,                                           None,                                                                                                    "fractional seconds"),
    ];
    for (json, want, why) in cases {
        match (Config::parse(json.as_bytes()), want) {
            (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{why}: {e}"),
            (Ok(_), None) => {}
            (got, _) => panic!("{why}: {got:?}"),
        }
    }
    let defaults = Config::parse(br#"{"randomSamplingPercentage": null}"#).unwrap();
    assert_eq!(defaults.random_sampling_percentage, 1.0);
    let off = Config::parse(br#"{"sampling": {"forceHeader": null}}"#).unwrap();
    assert_eq!(off.sampling.force_header, None);
    assert_eq!(Config::default().sampling.force_header.as_deref(), Some("x-envoy-force-trace"));
}

#[test]
fn percentages_print_as_written() {
    for (p, want) in [
        (1.0, "1"),
        (12.5, "12.5"),
        (0.01, "0.01"),
        (100.0, "100"),
        (33.33, "33.33"),
    ] {
        assert_eq!(percentage(p), want);
    }
}

#[test]
fn published_context_is_all_by_default_a_canonical_set_when_listed_and_none_when_empty() {
    use ContextValue::*;
    let publish = |json: &str| {
        Config::parse(json.as_bytes())
            .unwrap()
            .propagation
            .publish_context
    };
    #[rustfmt::skip]
    let cases: &[(&str, &[ContextValue], &str)] = &[
        ("{}", &[TraceId, SpanId, ParentSpanId, Sampled, RequestId], "all by default (issue 15)"),
        (r#"{"propagation": {"publishContext": []}}"#, &[], "an empty list publishes nothing"),
        (r#"{"propagation": {"publishContext": ["request_id", "trace_id", "trace_id"]}}"#, &[TraceId, RequestId], "listed values once each, in the fixed order"),
    ];
    for (json, want, why) in cases {
        assert_eq!(publish(json), *want, "{why}");
    }
    let c = Config::default();
    assert!(
        !c.propagation.trace_response,
        "traceresponse is off by default"
    );
    assert!(
        !c.propagation.trace_response_header,
        "the legacy traceresponse header is off by default"
    );
    assert!(
        !c.propagation.response_request_id,
        "x-request-id is not returned by default"
    );
}

#[test]
#[rustfmt::skip]
fn capture_and_override_keys_parse() {
    let d = SamplingConfig::default();
    assert_eq!(d.capture_errors, Some(CaptureErrors { statuses: vec![StatusClass::Class(5)], client_statuses: vec![] }), "errors captured by default: 5xx");
    assert_eq!((d.capture_slower_than, d.max_captured_per_second), (None, 100.0), "latency off, 100 captures/s per worker");
    let c = Config::parse(br#"{"sampling": {
        "captureErrors": {"statuses": ["5xx", "429"], "clientStatuses": ["4xx"]},
        "captureSlowerThan": "2s",
        "maxCapturedPerSecond": 10,
        "rules": [{"match": {"host": "b"}, "sample": 5, "parent": "override", "captureSlowerThan": "500ms"}]
    }}"#).unwrap();
    let s = &c.sampling;
    assert_eq!(s.capture_errors, Some(CaptureErrors {
        statuses: vec![StatusClass::Class(5), StatusClass::Code(429)],
        client_statuses: vec![StatusClass::Class(4)],
    }));
    assert_eq!(s.capture_slower_than, Some(Duration::from_secs(2)));
    assert_eq!(s.max_captured_per_second, 10.0);
    assert_eq!(s.rules[0].parent, ParentMode::Override);
    assert_eq!(s.rules[0].capture_slower_than, Some(Duration::from_millis(500)));
    let on = Config::parse(br#"{"sampling": {"captureErrors": true}}"#).unwrap();
    assert_eq!(on.sampling.capture_errors, d.capture_errors, "true: the defaults");
    let off = Config::parse(br#"{"sampling": {"captureErrors": false}}"#).unwrap();
    assert_eq!(off.sampling.capture_errors, None, "false: off");
    assert_eq!(Config::parse(br#"{"sampling": {"rules": [{"sample": 1}]}}"#).unwrap().sampling.rules[0].parent, ParentMode::Follow, "rules follow the parent by default");
}

#[test]
#[rustfmt::skip]
fn bad_capture_and_override_keys_name_the_key() {
    assert_each_names_its_key(&[
        (r#"{"sampling": {"captureErrors": "yes"}}"#,                              "sampling.captureErrors",                   "neither a boolean nor an object"),
        (r#"{"sampling": {"captureErrors": {"status": ["5xx"]}}}"#,                "sampling.captureErrors.status",            "typo in a key"),
        (r#"{"sampling": {"captureErrors": {"statuses": ["6xx"]}}}"#,              "sampling.captureErrors.statuses[0]",       "no such class"),
        (r#"{"sampling": {"captureErrors": {"statuses": ["99"]}}}"#,               "sampling.captureErrors.statuses[0]",       "not an HTTP status"),
        (r#"{"sampling": {"captureErrors": {"clientStatuses": [404]}}}"#,          "sampling.captureErrors.clientStatuses[0]", "a number, not a string"),
        (r#"{"sampling": {"captureSlowerThan": "2"}}"#,                            "sampling.captureSlowerThan",               "a duration needs a unit"),
        (r#"{"sampling": {"maxCapturedPerSecond": -1}}"#,                          "sampling.maxCapturedPerSecond",            "negative"),
        (r#"{"sampling": {"rules": [{"sample": 1, "parent": "ignore"}]}}"#,        "sampling.rules[0].parent",                 "follow or override only"),
        (r#"{"sampling": {"rules": [{"sample": 1, "captureSlowerThan": "1h"}]}}"#, "sampling.rules[0].captureSlowerThan",      "not a duration"),
        (r#"{"sampling": {"captureErrors": {"statuses": ["5x"]}}}"#,               "sampling.captureErrors.statuses[0]",       "too short"),
    ]);
}

/// Every value of every named setting is read from the name its type gives it ([`Named`]), and a
/// wrong name's error lists them all, in order.
#[test]
#[rustfmt::skip]
fn every_named_value_is_read_from_its_name() {
    fn check<T: Named + PartialEq + fmt::Debug>(json: &dyn Fn(&str) -> String, get: &dyn Fn(Config) -> T) {
        for &value in T::ALL {
            let text = json(&format!("\"{}\"", value.name()));
            assert_eq!(get(Config::parse(text.as_bytes()).unwrap()), value, "{text}");
        }
        let text = json("\"nope\"");
        let err = Config::parse(text.as_bytes()).unwrap_err().to_string();
        let names: Vec<String> = T::ALL.iter().map(|v| format!("`{}`", v.name())).collect();
        assert!(err.ends_with(&format!("expected one of {}", names.join(", "))), "{text}: {err}");
    }
    check(&|v| format!(r#"{{"tracingServiceName": {v}}}"#), &|c| c.tracing_service_name);
    check(&|v| format!(r#"{{"role": {v}}}"#), &|c| c.role);
    check(&|v| format!(r#"{{"spanName": {v}}}"#), &|c| c.span_name);
    check(&|v| format!(r#"{{"waypoint": {{"spans": {v}}}}}"#), &|c| c.waypoint.spans);
    check(&|v| format!(r#"{{"attributes": {{"urlQuery": {v}}}}}"#), &|c| c.attributes.url_query);
    check(&|v| format!(r#"{{"exporter": {{"protocol": {v}}}}}"#), &|c| c.exporter.protocol);
    check(&|v| format!(r#"{{"propagation": {{"extract": [{v}]}}}}"#), &|c| c.propagation.extract[0]);
    check(&|v| format!(r#"{{"propagation": {{"publishContext": [{v}]}}}}"#), &|c| c.propagation.publish_context[0]);
    check(&|v| format!(r#"{{"sampling": {{"rules": [{{"sample": 1, "parent": {v}}}]}}}}"#), &|c| c.sampling.rules[0].parent);
    check(&|v| format!(r#"{{"sampling": {{"rules": [{{"sample": {v}}}]}}}}"#), &|c| match c.sampling.rules[0].sample {
        RuleAction::Keyword(k) => k,
        RuleAction::Percentage(p) => panic!("a keyword, not {p}"),
    });
}
