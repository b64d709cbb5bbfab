//! The fake Envoy of native/tests/fake_envoy.rs (and of the native fuzz target): it defines
//! every `envoy_dynamic_module_callback_*` the module imports, records each call, and can make
//! each one fail or answer garbage; helpers drive the module's hooks as Envoy's HTTP filter does.
#![allow(dead_code, clippy::missing_safety_doc)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshtrace_native::abi::{EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};
use meshtrace_native::exports::*;
use meshtrace_native::filter::{EVENT_BATCH_READY, EVENT_TICK};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------------------------
// The fake Envoy: one per test thread.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
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

pub(crate) const ALL_FAULTS: [Fault; 7] = [
    Fault::None,
    Fault::AllFail,
    Fault::NullBuffers,
    Fault::HugeLengths,
    Fault::InvalidUtf8,
    Fault::HugeCounts,
    Fault::GarbageInts,
];

#[derive(Default)]
pub(crate) struct Fake {
    pub(crate) fault: Option<Fault>,
    pub(crate) request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) attrs_text: BTreeMap<u32, Vec<u8>>,
    pub(crate) attrs_int: BTreeMap<u32, u64>,
    pub(crate) stats: Vec<(String, u64)>,
    pub(crate) callouts: Vec<(u64, String, usize)>,
    pub(crate) calls: BTreeMap<&'static str, u64>,
    pub(crate) logs: Vec<String>,
    /// Bytes handed to the module, kept valid until the next hook.
    pub(crate) arena: Vec<Vec<u8>>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    /// Runs inside the next `increment_counter`: what another thread does while the main
    /// thread's tick is between two of its steps.
    static AT_NEXT_COUNTER: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
}

/// `f` runs inside the module's next `increment_counter` call (once).
pub(crate) fn at_next_counter(f: impl FnOnce() + 'static) {
    AT_NEXT_COUNTER.with(|hook| *hook.borrow_mut() = Some(Box::new(f)));
}

/// Scheduler commits from any thread (the module's tick thread too).
pub(crate) static COMMITS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn with<T>(f: impl FnOnce(&mut Fake) -> T) -> T {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

pub(crate) fn fault() -> Fault {
    with(|f| f.fault.unwrap_or(Fault::None))
}

pub(crate) fn count(name: &'static str) {
    with(|f| *f.calls.entry(name).or_default() += 1);
}

unsafe fn bytes_of(b: ModuleBuffer) -> Vec<u8> {
    if b.ptr.is_null() {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }.to_vec()
}

/// Hands `value` to the module as Envoy would, or the fault's version of it.
pub(crate) fn answer(value: &[u8]) -> EnvoyBuffer {
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

pub(crate) fn keep(bytes: Vec<u8>) -> EnvoyBuffer {
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

pub(crate) fn ok(v: bool) -> u8 {
    u8::from(v && fault() != Fault::AllFail)
}

pub(crate) const REQUEST: u32 = 0;
pub(crate) const RESPONSE: u32 = 2;

pub(crate) fn map_of(f: &mut Fake, kind: u32) -> Option<&mut Vec<(Vec<u8>, Vec<u8>)>> {
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
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _filter: *mut c_void,
    kind: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> u8 {
    count("add_header");
    let (key, value) = (unsafe { bytes_of(key) }, unsafe { bytes_of(value) });
    with(|f| {
        if let Some(m) = map_of(f, kind) {
            m.push((key, value));
        }
    });
    ok(true)
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
    if let Some(hook) = AT_NEXT_COUNTER.with(|hook| hook.borrow_mut().take()) {
        hook();
    }
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

pub(crate) static NEXT: AtomicU64 = AtomicU64::new(1);

/// The module's hubs are process-wide (a retired one is adopted by a live one): the tests take
/// turns so that each sees only its own configurations.
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A configuration: its (fake) Envoy pointer and the module's.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) envoy: *mut c_void,
    pub(crate) module: *const c_void,
}

pub(crate) fn fake_ptr() -> *mut c_void {
    (NEXT.fetch_add(1, Ordering::Relaxed) as usize * 64) as *mut c_void
}

/// A configuration unique to the test (configurations of equal content share a hub).
pub(crate) fn config_json(extra: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(r#"{{"resourceAttributes": {{"test.n": "{n}"}}{extra}}}"#)
}

/// The module as Envoy loads it: `on_program_init` once (the logger, the version line).
pub(crate) fn load() {
    static LOADED: std::sync::Once = std::sync::Once::new();
    LOADED.call_once(|| {
        let abi = envoy_dynamic_module_on_program_init();
        assert!(!abi.is_null(), "the module accepts being loaded");
        let abi = unsafe { std::ffi::CStr::from_ptr(abi) };
        assert_eq!(abi.to_str().unwrap(), "v0.2.0", "the ABI it was built for");
    });
}

pub(crate) fn new_config(json: &str) -> Option<Config> {
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
    pub(crate) fn wake(&self) {
        unsafe {
            envoy_dynamic_module_on_http_filter_config_scheduled(
                self.envoy,
                self.module,
                EVENT_BATCH_READY,
            )
        };
    }

    pub(crate) fn tick(&self) {
        unsafe {
            envoy_dynamic_module_on_http_filter_config_scheduled(
                self.envoy,
                self.module,
                EVENT_TICK,
            )
        };
    }

    pub(crate) fn answer_callouts(&self, status: &[u8], result: u32) {
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

    pub(crate) fn destroy(self) {
        unsafe { envoy_dynamic_module_on_http_filter_config_destroy(self.module) };
    }
}

/// One stream through the hooks, with these request headers; the response's status.
pub(crate) struct Stream {
    envoy: *mut c_void,
    module: *const c_void,
}

impl Stream {
    pub(crate) fn start(config: &Config, headers: &[(&str, &str)]) -> Stream {
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

    pub(crate) fn finish(self, status: &str) {
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

pub(crate) fn request(config: &Config, headers: &[(&str, &str)], status: &str) {
    Stream::start(config, headers).finish(status);
}

pub(crate) fn stat(name: &str) -> u64 {
    with(|f| {
        f.stats
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    })
}

pub(crate) fn set_attributes() {
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

pub(crate) const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

pub(crate) fn basic_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":path", "/productpage"),
        (":authority", "productpage:9080"),
        (":scheme", "http"),
        ("user-agent", "test"),
    ]
}
