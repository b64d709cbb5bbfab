//! The native adapter under a fake Envoy: this test binary defines every
//! `envoy_dynamic_module_callback_*` the module imports (so it links against them instead of
//! Envoy's), records each call, and can make each one fail or answer garbage. The tests drive the
//! module's `envoy_dynamic_module_on_*` hooks the way Envoy's HTTP filter does
//! (`source/extensions/filters/http/dynamic_modules/filter.cc`): configuration, streams, the
//! configuration scheduler, callout answers, destruction.
//!
//! - **Faults** (`every_fault_*`, `config_*`, `huge_*`, `updates_*`): every callback failing,
//!   malformed buffers (null pointers with lengths, impossible lengths, bytes that are not UTF-8),
//!   huge inputs and configuration changes mid-traffic. The module must let every request through
//!   and no panic may reach the boundary ([`PANICS`] stays 0; one reaching `extern "C"` would
//!   abort this process).
//! - **The native meter** (`meter_*`): callbacks into Envoy per request, deterministic, for the
//!   cases of the Wasm meter (tests/meter); gated by tests/meter/native_budget.json.
#![allow(clippy::missing_safety_doc)]
// A test binary: its helpers may unwrap and index (clippy.toml allows it in #[test]s only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod fake;

use fake::*;
use meshtrace_native::abi::{EnvoyBuffer, EnvoyHeader};
use meshtrace_native::exports::*;
use meshtrace_native::filter::{EVENT_TICK, LIVE_CONFIGS, PANICS};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

// ---------------------------------------------------------------------------------------------
// Faults.

#[test]
fn every_fault_lets_every_request_through_without_a_panic() {
    let _turn = serial();
    for fault in ALL_FAULTS {
        with(|f| f.fault = None);
        let config = new_config(&config_json(
            r#", "randomSamplingPercentage": 100, "exporter": {"maxBatchSize": 2}"#,
        ))
        .expect("a good configuration is accepted");
        with(|f| f.fault = Some(fault));
        set_attributes();
        for headers in [
            basic_headers(),
            [
                basic_headers(),
                vec![
                    ("traceparent", TRACEPARENT),
                    ("tracestate", "a=1"),
                    ("baggage", "k=v"),
                ],
            ]
            .concat(),
        ] {
            for status in ["200", "503", "not-a-status", ""] {
                request(&config, &headers, status);
            }
        }
        config.tick();
        config.answer_callouts(b"200", 0);
        config.answer_callouts(b"", 1);
        config.tick();
        config.destroy();
        assert_eq!(
            PANICS.load(Ordering::Relaxed),
            0,
            "{fault:?}: no panic anywhere"
        );
    }
    with(|f| f.fault = None);
}

#[test]
fn config_that_is_not_valid_is_rejected_with_one_error_naming_the_key() {
    let _turn = serial();
    #[rustfmt::skip]
    let cases: [(&[u8], Option<&str>, &str); 6] = [
        (br#"{"randomSamplingPercentage": 150}"#, Some("randomSamplingPercentage"),         "out of range"),
        (br#"{"exporter": {"protocoll": "grpc"}}"#, Some("exporter.protocoll"),             "unknown key"),
        (b"{\"randomSamplingPercentage\": 10,",       Some("invalid meshtrace configuration"), "malformed JSON"),
        (b"\xff\xfe\x00garbage",                     Some("meshtrace"),                      "not UTF-8, not JSON"),
        (b"[1, 2]",                                   Some("must be a JSON object"),            "not an object"),
        (&[b' '; 1 << 20],                            None,                                     "a megabyte of spaces: the empty configuration"),
    ];
    load();
    for (bytes, key, reason) in cases {
        let envoy = fake_ptr();
        let name = b"meshtrace";
        let before = with(|f| f.logs.len());
        let module = unsafe {
            envoy_dynamic_module_on_http_filter_config_new(
                envoy,
                EnvoyBuffer {
                    ptr: name.as_ptr(),
                    len: name.len(),
                },
                EnvoyBuffer {
                    ptr: bytes.as_ptr(),
                    len: bytes.len(),
                },
            )
        };
        let logs: Vec<String> = with(|f| f.logs[before..].to_vec());
        match key {
            Some(key) => {
                assert!(module.is_null(), "{reason}: rejected");
                assert!(
                    logs.iter().any(|l| l.contains(key)),
                    "{reason}: an error naming {key}: {logs:?}"
                );
            }
            None => {
                assert!(!module.is_null(), "{reason}: accepted");
                unsafe { envoy_dynamic_module_on_http_filter_config_destroy(module) };
            }
        }
    }
    // Null and impossible buffers from Envoy: the empty configuration (valid), never a read.
    for config in [
        EnvoyBuffer {
            ptr: std::ptr::null(),
            len: 99,
        },
        EnvoyBuffer {
            ptr: b"{}".as_ptr(),
            len: usize::MAX,
        },
    ] {
        let module = unsafe {
            envoy_dynamic_module_on_http_filter_config_new(
                fake_ptr(),
                EnvoyBuffer {
                    ptr: std::ptr::null(),
                    len: 3,
                },
                config,
            )
        };
        assert!(!module.is_null(), "read as the empty configuration");
        unsafe { envoy_dynamic_module_on_http_filter_config_destroy(module) };
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn hooks_given_null_or_inert_pointers_do_nothing() {
    let _turn = serial();
    unsafe {
        assert_eq!(
            envoy_dynamic_module_on_http_filter_request_headers(
                std::ptr::null_mut(),
                std::ptr::null(),
                1
            ),
            0
        );
        envoy_dynamic_module_on_http_filter_stream_complete(std::ptr::null_mut(), std::ptr::null());
        envoy_dynamic_module_on_http_filter_destroy(std::ptr::null());
        envoy_dynamic_module_on_http_filter_config_destroy(std::ptr::null());
        envoy_dynamic_module_on_http_filter_config_scheduled(
            std::ptr::null_mut(),
            std::ptr::null(),
            EVENT_TICK,
        );
        let filter =
            envoy_dynamic_module_on_http_filter_new(std::ptr::null(), std::ptr::null_mut());
        assert!(
            !filter.is_null(),
            "no configuration: an inert filter, not a closed stream"
        );
        assert_eq!(
            envoy_dynamic_module_on_http_filter_request_headers(std::ptr::null_mut(), filter, 0),
            0
        );
        envoy_dynamic_module_on_http_filter_stream_complete(std::ptr::null_mut(), filter);
        envoy_dynamic_module_on_http_filter_destroy(filter);
        envoy_dynamic_module_on_http_filter_config_http_callout_done(
            std::ptr::null_mut(),
            std::ptr::null(),
            1,
            77,
            std::ptr::null(),
            5,
            std::ptr::null(),
            9,
        );
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn huge_inputs_are_traced_or_refused_never_a_panic() {
    let _turn = serial();
    let config = new_config(&config_json(r#", "randomSamplingPercentage": 100"#)).unwrap();
    set_attributes();
    let long = "x".repeat(64 * 1024);
    let many: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("x-h{i}"), format!("{i}")))
        .collect();
    let mut headers: Vec<(&str, &str)> = basic_headers();
    headers.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    headers.push(("traceparent", &long));
    headers.push(("tracestate", &long));
    headers.push(("baggage", &long));
    headers.push(("x-request-id", &long));
    request(&config, &headers, "200");
    let forwarded = with(|f| {
        f.request_headers
            .iter()
            .filter(|(k, _)| k == b"traceparent")
            .count()
    });
    assert_eq!(
        forwarded, 1,
        "an invalid traceparent is replaced by one valid header"
    );
    config.tick();
    config.destroy();
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn updates_mid_traffic_lose_nothing_uncounted() {
    let _turn = serial();
    // Streams of a configuration outlive it being replaced (Envoy keeps the old configuration
    // until its last stream ends), then the old one is destroyed with callouts pending.
    let live = LIVE_CONFIGS.load(Ordering::Relaxed);
    let a = new_config(&config_json(
        r#", "randomSamplingPercentage": 100, "exporter": {"maxBatchSize": 3}"#,
    ))
    .unwrap();
    set_attributes();
    let in_flight: Vec<Stream> = (0..5)
        .map(|_| Stream::start(&a, &basic_headers()))
        .collect();
    for _ in 0..4 {
        request(&a, &basic_headers(), "200");
    }
    let b = new_config(&config_json(r#", "randomSamplingPercentage": 100"#)).unwrap();
    for s in in_flight {
        s.finish("200");
    }
    a.tick();
    let sent_by_a = with(|f| f.callouts.len());
    assert!(sent_by_a > 0, "a sent batches");
    a.destroy(); // its callouts are cancelled by Envoy: no answer will come
    with(|f| f.callouts.clear());
    b.tick(); // b adopts a's exporter: retries the cancelled batches, drains the rest
    let resent = with(|f| f.callouts.len());
    assert!(resent > 0, "the cancelled batches are sent again through b");
    b.answer_callouts(b"200", 0);
    b.tick();
    assert_eq!(stat("meshtrace_spans_recorded"), 9, "every span recorded");
    assert_eq!(
        stat("meshtrace_spans_exported") + stat("meshtrace_spans_dropped_shutdown"),
        9,
        "exported or counted lost"
    );
    assert_eq!(
        stat("meshtrace_spans_exported"),
        9,
        "a live configuration sent them all"
    );
    b.destroy();
    assert_eq!(
        LIVE_CONFIGS.load(Ordering::Relaxed),
        live,
        "every configuration destroyed"
    );
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn the_last_configuration_counts_what_it_could_not_send() {
    let _turn = serial();
    let a = new_config(&config_json(r#", "randomSamplingPercentage": 100"#)).unwrap();
    set_attributes();
    for _ in 0..3 {
        request(&a, &basic_headers(), "200");
    }
    a.destroy();
    // No other configuration alive: no one can send them.
    let recorded = stat("meshtrace_spans_recorded");
    let lost = stat("meshtrace_spans_dropped_shutdown");
    assert_eq!((recorded, lost), (3, 3), "recorded, and counted lost");
}

#[test]
fn the_queue_depth_gauge_stays_within_max_queue_size() {
    let _turn = serial();
    // A collector that never answers: four batches of one go out, then the queue fills.
    let config = new_config(&config_json(
        r#", "randomSamplingPercentage": 100, "exporter": {"maxQueueSize": 4, "maxBatchSize": 1}"#,
    ))
    .unwrap();
    set_attributes();
    for _ in 0..8 {
        request(&config, &basic_headers(), "200");
    }
    config.tick();
    for _ in 0..5 {
        request(&config, &basic_headers(), "200");
    }
    // A worker hands a span over while the tick is between taking the channel and setting the
    // gauge (here: while it flushes the counters). CI once saw 51 with a queue of 50.
    let worker = config.clone();
    at_next_counter(move || request(&worker, &basic_headers(), "200"));
    config.tick();
    assert_eq!(
        stat("meshtrace_queue_depth"),
        4,
        "a full queue, and no more"
    );
    config.tick();
    assert_eq!(
        stat("meshtrace_queue_depth"),
        4,
        "the late span took the oldest one's place"
    );
    assert_eq!(stat("meshtrace_spans_recorded"), 14);
    assert_eq!(
        stat("meshtrace_spans_dropped_queue_full"),
        14 - 4 - 4,
        "all but the four in flight and the four queued, dropped oldest first"
    );
    config.destroy();
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------------
// The native meter: callbacks into Envoy per request, per case.

struct MeterCase {
    name: &'static str,
    config: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: &'static str,
}

const METER_CASES: [MeterCase; 5] = [
    MeterCase {
        name: "unsampled_0pct",
        config: r#", "randomSamplingPercentage": 0"#,
        headers: &[],
        status: "200",
    },
    MeterCase {
        name: "w3c_parent_unsampled",
        config: r#", "randomSamplingPercentage": 100"#,
        headers: &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )],
        status: "200",
    },
    MeterCase {
        name: "sampled_100_export",
        config: r#", "randomSamplingPercentage": 100, "exporter": {"maxBatchSize": 64}"#,
        headers: &[],
        status: "200",
    },
    MeterCase {
        name: "b3_input",
        config: r#", "randomSamplingPercentage": 0"#,
        headers: &[
            ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
            ("x-b3-spanid", "b7ad6b7169203331"),
            ("x-b3-sampled", "0"),
        ],
        status: "200",
    },
    // Every error captured (a cap no run reaches): the count does not depend on the clock.
    MeterCase {
        name: "error_capture",
        config: r#", "randomSamplingPercentage": 0, "sampling": {"maxCapturedPerSecond": 1000000}"#,
        headers: &[],
        status: "503",
    },
];

/// Callbacks per request over `n` requests (ticks and callouts included, amortised).
fn meter(case: &MeterCase, n: u64) -> (f64, BTreeMap<&'static str, u64>) {
    let config = new_config(&config_json(case.config)).unwrap();
    set_attributes();
    let headers: Vec<(&str, &str)> = [basic_headers(), case.headers.to_vec()].concat();
    with(|f| f.calls.clear());
    for i in 0..n {
        request(&config, &headers, case.status);
        if i % 50 == 49 {
            config.tick();
            config.answer_callouts(b"200", 0);
        }
    }
    let calls = with(|f| std::mem::take(&mut f.calls));
    config.destroy();
    let total: u64 = calls.values().sum();
    (total as f64 / n as f64, calls)
}

#[test]
fn meter_callbacks_per_request_stay_within_the_budget() {
    let _turn = serial();
    let budget: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/meter/native_budget.json")).unwrap();
    let n = 1000;
    let mut report = String::new();
    for case in &METER_CASES {
        let (per_request, calls) = meter(case, n);
        let detail: Vec<String> = calls
            .iter()
            .map(|(k, v)| format!("{k} {:.3}", *v as f64 / n as f64))
            .collect();
        report.push_str(&format!(
            "{:<22} {per_request:>7.3} callbacks/request  ({})\n",
            case.name,
            detail.join(", ")
        ));
        let max = budget["cases"][case.name]["max_callbacks_per_request"]
            .as_f64()
            .unwrap_or_else(|| {
                panic!("{}: no budget in tests/meter/native_budget.json", case.name)
            });
        assert!(
            per_request <= max + 1e-9,
            "{}: {per_request:.3} callbacks per request, budget {max}\n{report}",
            case.name
        );
    }
    let listed = budget["cases"].as_object().unwrap().len();
    assert_eq!(
        listed,
        METER_CASES.len(),
        "native_budget.json lists exactly the meter's cases"
    );
    println!("native meter ({n} requests per case):\n{report}");
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn grpc_exports_read_their_status_from_the_streams_trailers() {
    let _turn = serial();
    let config = new_config(&config_json(
        r#", "randomSamplingPercentage": 100, "exporter": {"protocol": "grpc", "maxBatchSize": 2}"#,
    ))
    .unwrap();
    set_attributes();
    let stream = |id: u64, status: &[u8], grpc: Option<&[u8]>, reset: bool| unsafe {
        let (k, v) = (b":status", status);
        let headers = [EnvoyHeader {
            key_ptr: k.as_ptr(),
            key_len: k.len(),
            value_ptr: v.as_ptr(),
            value_len: v.len(),
        }];
        envoy_dynamic_module_on_http_filter_config_http_stream_headers(
            config.envoy,
            config.module,
            id,
            headers.as_ptr(),
            1,
            0,
        );
        let frame = [0u8; 5]; // an empty ExportTraceServiceResponse, gRPC-framed
        let body = [
            EnvoyBuffer {
                ptr: frame.as_ptr(),
                len: 5,
            },
            EnvoyBuffer {
                ptr: std::ptr::null(),
                len: 3,
            },
        ];
        envoy_dynamic_module_on_http_filter_config_http_stream_data(
            config.envoy,
            config.module,
            id,
            body.as_ptr(),
            2,
            0,
        );
        if let Some(g) = grpc {
            let (k, v) = (b"grpc-status", g);
            let trailers = [EnvoyHeader {
                key_ptr: k.as_ptr(),
                key_len: k.len(),
                value_ptr: v.as_ptr(),
                value_len: v.len(),
            }];
            envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
                config.envoy,
                config.module,
                id,
                trailers.as_ptr(),
                1,
            );
        }
        if reset {
            envoy_dynamic_module_on_http_filter_config_http_stream_reset(
                config.envoy,
                config.module,
                id,
                0,
            );
        } else {
            envoy_dynamic_module_on_http_filter_config_http_stream_complete(
                config.envoy,
                config.module,
                id,
            );
        }
    };
    request(&config, &basic_headers(), "200"); // a SERVER span: one per request here
    request(&config, &basic_headers(), "200");
    config.wake();
    let sent = with(|f| std::mem::take(&mut f.callouts));
    assert_eq!(sent.len(), 1, "a full batch of 2 leaves at once");
    assert_eq!(
        with(|f| f.calls.get("start_http_stream").copied()),
        Some(1),
        "as a stream"
    );
    stream(sent[0].0, b"200", Some(b"0"), false);
    config.tick();
    assert_eq!(
        stat("meshtrace_spans_exported"),
        2,
        "grpc-status 0 in the trailers: delivered"
    );
    request(&config, &basic_headers(), "200");
    request(&config, &basic_headers(), "200");
    config.wake();
    let sent = with(|f| std::mem::take(&mut f.callouts));
    stream(sent[0].0, b"200", Some(b"14"), false); // UNAVAILABLE: retryable
    stream(999, b"200", Some(b"0"), false); // a stream the module never started: ignored
    config.tick();
    assert_eq!(stat("meshtrace_export_failures"), 1);
    assert_eq!(
        stat("meshtrace_spans_dropped_export_failed"),
        0,
        "kept for a retry"
    );
    config.destroy();
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

/// A deterministic generator for the randomized runs (xorshift64*): the same seed, the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn text(&mut self, max: usize) -> String {
        const PIECES: [&str; 12] = [
            "00",
            "-",
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            "01",
            "ff",
            "=",
            ",",
            "é",
            "\u{7f}",
            " ",
            "x",
        ];
        (0..self.below(max + 1))
            .map(|_| self.pick(&PIECES))
            .collect()
    }
}

/// Random hook sequences under random faults — the fuzz target's loop (tests/fuzz
/// `native_hooks`), seeded, in every `cargo test`: every request continues, no panic.
#[test]
fn random_requests_configurations_and_answers_never_panic() {
    let _turn = serial();
    const NAMES: [&str; 12] = [
        "traceparent",
        "tracestate",
        "baggage",
        "x-request-id",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-parentspanid",
        "x-meshtrace-force",
        ":path",
        "x-junk",
    ];
    const CONFIGS: [&str; 5] = [
        r#", "randomSamplingPercentage": 100, "exporter": {"maxBatchSize": 3}"#,
        r#", "randomSamplingPercentage": 50, "propagation": {"traceResponse": true, "responseRequestId": true}"#,
        r#", "randomSamplingPercentage": 0, "sampling": {"maxCapturedPerSecond": 1000}"#,
        r#", "randomSamplingPercentage": 100, "exporter": {"protocol": "grpc", "maxBatchSize": 2}"#,
        r#", "propagation": {"inject": ["b3", "tracecontext"]}, "randomSamplingPercentage": 100"#,
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut configs: Vec<Config> = Vec::new();
    for round in 0..3000 {
        with(|f| f.fault = None);
        if configs.is_empty() || rng.below(50) == 0 {
            configs.push(new_config(&config_json(rng.pick(&CONFIGS))).unwrap());
        }
        if configs.len() > 1 && rng.below(60) == 0 {
            let at = rng.below(configs.len());
            configs.swap_remove(at).destroy();
        }
        let config = &configs[rng.below(configs.len())];
        set_attributes();
        with(|f| f.fault = Some(rng.pick(&ALL_FAULTS)));
        let mut headers: Vec<(String, String)> = basic_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for _ in 0..rng.below(6) {
            headers.push((rng.pick(&NAMES).to_string(), rng.text(12)));
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let status = rng.pick(&["200", "404", "503", "0", "x"]);
        request(config, &pairs, status);
        match rng.below(8) {
            0 => config.tick(),
            1 => config.wake(),
            2 => config.answer_callouts(
                rng.pick(&[&b"200"[..], &b"503"[..], &b"429"[..], &b""[..], &b"abc"[..]]),
                rng.below(3) as u32,
            ),
            _ => {}
        }
        assert_eq!(PANICS.load(Ordering::Relaxed), 0, "round {round}");
    }
    with(|f| f.fault = None);
    for config in configs {
        config.tick();
        config.destroy();
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

#[test]
fn a_push_right_after_traffic_counts_each_span_once() {
    let _turn = serial();
    // Counts still pending in the retiring configuration (no tick since the traffic) are
    // counted once, by it, not again by the configuration that sends its spans.
    let a = new_config(&config_json(r#", "randomSamplingPercentage": 100"#)).unwrap();
    set_attributes();
    for _ in 0..7 {
        request(&a, &basic_headers(), "200");
    }
    a.wake(); // the spans reach the exporter: recorded, counted in its pending counts
    let b = new_config(&config_json(r#", "randomSamplingPercentage": 100"#)).unwrap();
    a.destroy();
    b.tick();
    b.answer_callouts(b"200", 0);
    b.tick();
    assert_eq!(
        stat("meshtrace_spans_recorded"),
        7,
        "each span counted once"
    );
    assert_eq!(stat("meshtrace_spans_exported"), 7);
    b.destroy();
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

/// The request's context is published as filter state under the Wasm plugin's names
/// (`wasm.meshtrace.*`, what `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%` reads), each key
/// put together without an allocation (native/src/host.rs, `set_property`).
#[test]
fn context_is_published_as_filter_state_under_the_wasm_plugins_names() {
    let _turn = serial();
    // Every value (the default publishes the two ids: issue 24).
    let c = new_config(&config_json(
        r#", "randomSamplingPercentage": 0, "propagation": {"publishContext":
            ["trace_id", "span_id", "parent_span_id", "sampled", "request_id"]}"#,
    ))
    .unwrap();
    let mut headers = basic_headers();
    headers.push(("traceparent", TRACEPARENT));
    let stream = Stream::start(&c, &headers);
    let state = with(|f| f.filter_state.clone());
    stream.finish("200");
    c.destroy();
    let text = |k: &str| {
        state
            .get(k.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    #[rustfmt::skip]
    let cases = [
        ("wasm.meshtrace.trace_id", Some("0af7651916cd43dd8448eb211c80319c"), "the parent's trace"),
        ("wasm.meshtrace.parent_span_id", Some("b7ad6b7169203331"), "the parent's span"),
        ("wasm.meshtrace.sampled", Some("true"), "the parent's flag (parent-based)"),
    ];
    for (key, want, reason) in cases {
        assert_eq!(text(key).as_deref(), want, "{key}: {reason}");
    }
    assert!(
        text("wasm.meshtrace.span_id").is_some_and(|s| s.len() == 16),
        "a span id of our own"
    );
    assert!(
        state.keys().all(|k| k.starts_with(b"wasm.meshtrace.")),
        "only meshtrace's names: {:?}",
        state
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
}

/// The default publishes the two ids only (issue 24): the sampled flag and the request id are in
/// `%REQ(TRACEPARENT)%` and `%REQ(X-REQUEST-ID)%` already; the same default as the Wasm plugin.
#[test]
fn the_default_publishes_the_two_ids() {
    let _turn = serial();
    let c = new_config(&config_json(r#", "randomSamplingPercentage": 0"#)).unwrap();
    let mut headers = basic_headers();
    headers.push(("traceparent", TRACEPARENT));
    let stream = Stream::start(&c, &headers);
    let state = with(|f| f.filter_state.clone());
    stream.finish("200");
    c.destroy();
    let mut keys: Vec<String> = state
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["wasm.meshtrace.span_id", "wasm.meshtrace.trace_id"]);
}

type Header = (&'static str, &'static str);

/// Headers the request does not carry are added (Envoy's `addCopy`, no scan for old values),
/// headers it carries are replaced (`setCopy`): either way the upstream sees exactly one
/// `traceparent` and one `x-request-id`, ours.
#[test]
fn injected_headers_are_added_when_absent_and_replaced_when_present() {
    let _turn = serial();
    let c = new_config(&config_json(r#", "randomSamplingPercentage": 0"#)).unwrap();
    let mut with_parent = basic_headers();
    with_parent.push(("traceparent", TRACEPARENT));
    #[rustfmt::skip]
    let cases: [(&[Header], &str, &str); 2] = [
        (&basic_headers(), "add_header", "no traceparent, no x-request-id: both added"),
        (&with_parent, "set_header", "a traceparent: replaced (x-request-id added)"),
    ];
    for (headers, call, reason) in cases {
        with(|f| f.calls.clear());
        let stream = Stream::start(&c, headers);
        let (sent, calls) = with(|f| (f.request_headers.clone(), f.calls.clone()));
        stream.finish("200");
        for name in ["traceparent", "x-request-id"] {
            let n = sent.iter().filter(|(k, _)| k == name.as_bytes()).count();
            assert_eq!(n, 1, "{reason}: one {name}");
        }
        let ours = sent.iter().find(|(k, _)| k == b"traceparent").unwrap();
        assert_ne!(
            ours.1,
            TRACEPARENT.as_bytes(),
            "{reason}: our span id sent on"
        );
        assert!(calls.contains_key(call), "{reason}: {call} used, {calls:?}");
    }
    c.destroy();
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

/// Error capture reads the response's `:status` in Envoy's buffer (no copy): a 5xx at 0%
/// sampling is captured, and so is a stream with no readable status (no response sent), the
/// rest is not — as when the status was read as a copy.
#[test]
fn the_response_status_read_in_place_decides_capture() {
    let _turn = serial();
    #[rustfmt::skip]
    let cases = [
        ("503", 1, "a server error is captured"),
        (" 503 ", 1, "surrounding whitespace is not the status"),
        ("200", 0, "a success is not"),
        ("404", 0, "a client error is not (a SERVER span)"),
        ("5x3", 1, "not a number: read as no response, which is an error"),
        ("", 1, "empty: the same"),
    ];
    for (status, captured, reason) in cases {
        let c = new_config(&config_json(
            r#", "randomSamplingPercentage": 0, "sampling": {"maxCapturedPerSecond": 1000000}"#,
        ))
        .unwrap();
        set_attributes();
        let before = stat("meshtrace_spans_captured_error");
        request(&c, &basic_headers(), status);
        c.tick();
        assert_eq!(
            stat("meshtrace_spans_captured_error") - before,
            captured,
            "{status:?}: {reason}"
        );
        c.destroy();
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0);
}

/// A driver for instruction counts, not a check: `n` (MESHTRACE_DRIVE_N, default 10,000)
/// requests of one meter case (MESHTRACE_DRIVE_CASE, default `unsampled_0pct`) through the
/// hooks, for `valgrind --tool=callgrind` (BENCHMARKS.md, "Native adapter (issue 23)").
#[test]
#[ignore]
fn drive_requests_for_an_instruction_count() {
    let _turn = serial();
    let n: u64 = std::env::var("MESHTRACE_DRIVE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let name = std::env::var("MESHTRACE_DRIVE_CASE").unwrap_or_else(|_| "unsampled_0pct".into());
    let case = METER_CASES.iter().find(|c| c.name == name).unwrap();
    let (per_request, _) = meter(case, n);
    println!("{name}: {n} requests, {per_request:.3} callbacks per request");
}
