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

use meshtrace_native::abi::{EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};
use meshtrace_native::exports::*;
use meshtrace_native::filter::{EVENT_BATCH_READY, EVENT_TICK, LIVE_CONFIGS, PANICS};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------------------------
// The fake Envoy: one per test thread.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// Every callback fails: false, 0, null, an error result.
    AllFail,
    /// Success, with null pointers and non-zero lengths.
    NullBuffers,
    /// Success, with lengths no allocation can have.
    HugeLengths,
    /// Success, with bytes that are not UTF-8.
    InvalidUtf8,
    /// Header counts beyond any limit.
    HugeCounts,
    /// Integers at the edge of their type.
    GarbageInts,
}

const ALL_FAULTS: [Fault; 7] = [
    Fault::None,
    Fault::AllFail,
    Fault::NullBuffers,
    Fault::HugeLengths,
    Fault::InvalidUtf8,
    Fault::HugeCounts,
    Fault::GarbageInts,
];

#[derive(Default)]
struct Fake {
    fault: Option<Fault>,
    request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
    attrs_text: BTreeMap<u32, Vec<u8>>,
    attrs_int: BTreeMap<u32, u64>,
    stats: Vec<(String, u64)>,
    callouts: Vec<(u64, String, usize)>,
    calls: BTreeMap<&'static str, u64>,
    logs: Vec<String>,
    /// Bytes handed to the module, kept valid until the next hook.
    arena: Vec<Vec<u8>>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// Scheduler commits from any thread (the module's tick thread too).
static COMMITS: AtomicU64 = AtomicU64::new(0);

fn with<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

fn fault() -> Fault {
    with(|f| f.fault.unwrap_or(Fault::None))
}

fn count(name: &'static str) {
    with(|f| *f.calls.entry(name).or_default() += 1);
}

unsafe fn bytes_of(b: ModuleBuffer) -> Vec<u8> {
    if b.ptr.is_null() {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }.to_vec()
}

/// Hands `value` to the module as Envoy would, or the fault's version of it.
fn answer(value: &[u8]) -> EnvoyBuffer {
    match fault() {
        Fault::NullBuffers => EnvoyBuffer {
            ptr: std::ptr::null(),
            len: 7,
        },
        Fault::HugeLengths => EnvoyBuffer {
            ptr: b"x".as_ptr(),
            len: usize::MAX - 3,
        },
        Fault::InvalidUtf8 => keep(vec![0xff, 0xfe, b'a', 0xc3]),
        _ => keep(value.to_vec()),
    }
}

fn keep(bytes: Vec<u8>) -> EnvoyBuffer {
    with(|f| {
        f.arena.push(bytes);
        let b = f
            .arena
            .last()
            .map(|b| (b.as_ptr(), b.len()))
            .unwrap_or((std::ptr::null(), 0));
        EnvoyBuffer { ptr: b.0, len: b.1 }
    })
}

fn ok(v: bool) -> u8 {
    u8::from(v && fault() != Fault::AllFail)
}

const REQUEST: u32 = 0;
const RESPONSE: u32 = 2;

fn map_of(f: &mut Fake, kind: u32) -> Option<&mut Vec<(Vec<u8>, Vec<u8>)>> {
    match kind {
        REQUEST => Some(&mut f.request_headers),
        RESPONSE => Some(&mut f.response_headers),
        _ => None,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_log(_level: u32, message: ModuleBuffer) {
    count("log");
    let text = String::from_utf8_lossy(&unsafe { bytes_of(message) }).into_owned();
    with(|f| f.logs.push(text));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log_enabled(level: u32) -> u8 {
    count("log_enabled");
    u8::from(level >= 2) // info and above, as Envoy's default
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _filter: *mut c_void,
    kind: u32,
) -> usize {
    count("get_headers_size");
    match fault() {
        Fault::AllFail => 0,
        Fault::HugeCounts => 1 << 40,
        _ => with(|f| map_of(f, kind).map_or(0, |m| m.len())),
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _filter: *mut c_void,
    kind: u32,
    out: *mut EnvoyHeader,
) -> u8 {
    count("get_headers");
    let pairs = with(|f| map_of(f, kind).cloned().unwrap_or_default());
    for (i, (k, v)) in pairs.iter().enumerate() {
        let (k, v) = (answer(k), answer(v));
        unsafe {
            *out.add(i) = EnvoyHeader {
                key_ptr: k.ptr,
                key_len: k.len,
                value_ptr: v.ptr,
                value_len: v.len,
            }
        };
    }
    ok(true)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: *mut c_void,
    kind: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> u8 {
    count("get_header");
    let key = unsafe { bytes_of(key) };
    let values: Vec<Vec<u8>> = with(|f| {
        map_of(f, kind)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    });
    if !optional_size.is_null() {
        unsafe { *optional_size = values.len() };
    }
    match values.get(index) {
        Some(v) => {
            unsafe { *result = answer(v) };
            ok(true)
        }
        None => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: *mut c_void,
    kind: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> u8 {
    count("set_header");
    let (key, remove) = (unsafe { bytes_of(key) }, value.ptr.is_null());
    let value = unsafe { bytes_of(value) };
    with(|f| {
        if let Some(m) = map_of(f, kind) {
            m.retain(|(k, _)| *k != key);
            if !remove {
                m.push((key, value));
            }
        }
    });
    ok(true)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
    _filter: *mut c_void,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> u8 {
    count("set_filter_state_bytes");
    let (k, v) = unsafe { (bytes_of(key), bytes_of(value)) };
    with(|f| f.filter_state.insert(k, v));
    ok(true)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
    _filter: *mut c_void,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
) -> u8 {
    count("get_filter_state_bytes");
    let key = unsafe { bytes_of(key) };
    match with(|f| f.filter_state.get(&key).cloned()) {
        Some(v) => {
            unsafe { *result = answer(&v) };
            ok(true)
        }
        None => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    _filter: *mut c_void,
    id: u32,
    result: *mut EnvoyBuffer,
) -> u8 {
    count("get_attribute_string");
    match with(|f| f.attrs_text.get(&id).cloned()) {
        Some(v) => {
            unsafe { *result = answer(&v) };
            ok(true)
        }
        None => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
    _filter: *mut c_void,
    id: u32,
    result: *mut u64,
) -> u8 {
    count("get_attribute_int");
    let value = match fault() {
        Fault::GarbageInts => Some(u64::MAX),
        _ => with(|f| f.attrs_int.get(&id).copied()),
    };
    match value {
        Some(v) => {
            unsafe { *result = v };
            ok(true)
        }
        None => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_metadata_string(
    _filter: *mut c_void,
    _source: u32,
    _ns: ModuleBuffer,
    _key: ModuleBuffer,
    result: *mut EnvoyBuffer,
) -> u8 {
    count("get_metadata_string");
    unsafe { *result = answer(b"reviews-v2;default;reviews;v2;Kubernetes") };
    ok(fault() != Fault::None)
}

unsafe fn define(name: ModuleBuffer, id: *mut usize) -> u32 {
    let name = String::from_utf8_lossy(&unsafe { bytes_of(name) }).into_owned();
    if fault() == Fault::AllFail {
        return 1;
    }
    with(|f| {
        f.stats.push((name, 0));
        unsafe { *id = f.stats.len() - 1 };
    });
    0
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: *mut c_void,
    name: ModuleBuffer,
    _labels: *mut ModuleBuffer,
    _labels_len: usize,
    id: *mut usize,
) -> u32 {
    count("define_counter");
    unsafe { define(name, id) }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    _config: *mut c_void,
    name: ModuleBuffer,
    _labels: *mut ModuleBuffer,
    _labels_len: usize,
    id: *mut usize,
) -> u32 {
    count("define_gauge");
    unsafe { define(name, id) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _config: *mut c_void,
    id: usize,
    _labels: *mut ModuleBuffer,
    _labels_len: usize,
    value: u64,
) -> u32 {
    count("increment_counter");
    with(|f| match f.stats.get_mut(id) {
        Some(s) => {
            s.1 += value;
            0
        }
        None => 1,
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
    _config: *mut c_void,
    id: usize,
    _labels: *mut ModuleBuffer,
    _labels_len: usize,
    value: u64,
) -> u32 {
    count("set_gauge");
    with(|f| match f.stats.get_mut(id) {
        Some(s) => {
            s.1 = value;
            0
        }
        None => 1,
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _config: *mut c_void,
    callout_id: *mut u64,
    cluster: ModuleBuffer,
    _headers: *mut ModuleHeader,
    _headers_size: usize,
    body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    count("http_callout");
    if fault() == Fault::AllFail {
        return 2; // ClusterNotFound
    }
    let cluster = String::from_utf8_lossy(&unsafe { bytes_of(cluster) }).into_owned();
    with(|f| {
        let id = f.callouts.len() as u64 + 1;
        f.callouts.push((id, cluster, body.len));
        unsafe { *callout_id = id };
    });
    0
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
    config: *mut c_void,
    stream_id: *mut u64,
    cluster: ModuleBuffer,
    headers: *mut ModuleHeader,
    headers_size: usize,
    body: ModuleBuffer,
    _end_stream: bool,
    timeout_ms: u64,
) -> u32 {
    count("start_http_stream");
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_http_callout(
            config,
            stream_id,
            cluster,
            headers,
            headers_size,
            body,
            timeout_ms,
        )
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _config: *mut c_void,
) -> *mut c_void {
    count("scheduler_new");
    if fault() == Fault::AllFail {
        return std::ptr::null_mut();
    }
    Box::into_raw(Box::new(0u64)).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _scheduler: *mut c_void,
    _event: u64,
) {
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    scheduler: *mut c_void,
) {
    count("scheduler_delete");
    if !scheduler.is_null() {
        drop(unsafe { Box::from_raw(scheduler.cast::<u64>()) });
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the module as Envoy does.

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The module's hubs are process-wide (a retired one is adopted by a live one): the tests take
/// turns so that each sees only its own configurations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configuration: its (fake) Envoy pointer and the module's.
struct Config {
    envoy: *mut c_void,
    module: *const c_void,
}

fn fake_ptr() -> *mut c_void {
    (NEXT.fetch_add(1, Ordering::Relaxed) as usize * 64) as *mut c_void
}

/// A configuration unique to the test (configurations of equal content share a hub).
fn config_json(extra: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(r#"{{"resourceAttributes": {{"test.n": "{n}"}}{extra}}}"#)
}

/// The module as Envoy loads it: `on_program_init` once (the logger, the version line).
fn load() {
    static LOADED: std::sync::Once = std::sync::Once::new();
    LOADED.call_once(|| {
        let abi = envoy_dynamic_module_on_program_init();
        assert!(!abi.is_null(), "the module accepts being loaded");
        let abi = unsafe { std::ffi::CStr::from_ptr(abi) };
        assert_eq!(abi.to_str().unwrap(), "v0.2.0", "the ABI it was built for");
    });
}

fn new_config(json: &str) -> Option<Config> {
    load();
    let envoy = fake_ptr();
    let name = b"meshtrace";
    let module = unsafe {
        envoy_dynamic_module_on_http_filter_config_new(
            envoy,
            EnvoyBuffer {
                ptr: name.as_ptr(),
                len: name.len(),
            },
            EnvoyBuffer {
                ptr: json.as_ptr(),
                len: json.len(),
            },
        )
    };
    (!module.is_null()).then_some(Config { envoy, module })
}

impl Config {
    /// What a worker's commit does when a batch's worth of spans waits.
    fn wake(&self) {
        unsafe {
            envoy_dynamic_module_on_http_filter_config_scheduled(
                self.envoy,
                self.module,
                EVENT_BATCH_READY,
            )
        };
    }

    fn tick(&self) {
        unsafe {
            envoy_dynamic_module_on_http_filter_config_scheduled(
                self.envoy,
                self.module,
                EVENT_TICK,
            )
        };
    }

    fn answer_callouts(&self, status: &[u8], result: u32) {
        let pending = with(|f| std::mem::take(&mut f.callouts));
        for (id, _, _) in pending {
            let (k, v) = (b":status", status);
            let headers = [EnvoyHeader {
                key_ptr: k.as_ptr(),
                key_len: k.len(),
                value_ptr: v.as_ptr(),
                value_len: v.len(),
            }];
            unsafe {
                envoy_dynamic_module_on_http_filter_config_http_callout_done(
                    self.envoy,
                    self.module,
                    id,
                    result,
                    headers.as_ptr(),
                    headers.len(),
                    std::ptr::null(),
                    0,
                )
            };
        }
    }

    fn destroy(self) {
        unsafe { envoy_dynamic_module_on_http_filter_config_destroy(self.module) };
    }
}

/// One stream through the hooks, with these request headers; the response's status.
struct Stream {
    envoy: *mut c_void,
    module: *const c_void,
}

impl Stream {
    fn start(config: &Config, headers: &[(&str, &str)]) -> Stream {
        with(|f| {
            f.arena.clear();
            f.request_headers = headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            f.response_headers.clear();
            f.filter_state.clear();
        });
        let envoy = fake_ptr();
        let module = unsafe { envoy_dynamic_module_on_http_filter_new(config.module, envoy) };
        assert!(
            !module.is_null(),
            "a null filter would make Envoy close the stream"
        );
        let status =
            unsafe { envoy_dynamic_module_on_http_filter_request_headers(envoy, module, 1) };
        assert_eq!(status, 0, "Continue");
        Stream { envoy, module }
    }

    fn finish(self, status: &str) {
        with(|f| {
            f.arena.clear();
            f.response_headers = vec![(b":status".to_vec(), status.as_bytes().to_vec())];
        });
        unsafe {
            assert_eq!(
                envoy_dynamic_module_on_http_filter_response_headers(self.envoy, self.module, 0),
                0
            );
            assert_eq!(
                envoy_dynamic_module_on_http_filter_response_body(self.envoy, self.module, 1),
                0
            );
            envoy_dynamic_module_on_http_filter_stream_complete(self.envoy, self.module);
            envoy_dynamic_module_on_http_filter_destroy(self.module);
        }
    }
}

fn request(config: &Config, headers: &[(&str, &str)], status: &str) {
    Stream::start(config, headers).finish(status);
}

fn stat(name: &str) -> u64 {
    with(|f| {
        f.stats
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    })
}

fn set_attributes() {
    with(|f| {
        f.attrs_text.insert(
            57,
            b"outbound|9080||reviews.default.svc.cluster.local".to_vec(),
        );
        f.attrs_text.insert(61, b"default".to_vec());
        f.attrs_text.insert(10, b"HTTP/1.1".to_vec());
        f.attrs_text.insert(16, b"via_upstream".to_vec());
        f.attrs_text.insert(24, b"10.0.0.1:5555".to_vec());
        f.attrs_text.insert(41, b"10.0.0.2:9080".to_vec());
        f.attrs_int.insert(59, 2);
        f.attrs_int.insert(17, 0);
        f.attrs_int.insert(13, 120);
        f.attrs_int.insert(21, 4000);
    });
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn basic_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":path", "/productpage"),
        (":authority", "productpage:9080"),
        (":scheme", "http"),
        ("user-agent", "test"),
    ]
}

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
