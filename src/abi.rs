//! The proxy-wasm ABI (v0.2.1) as meshtrace uses it, both ways, with nothing that can trap.
//!
//! Host calls: every one the plugin makes is declared once here (`host_calls!`, which gives the
//! wasm32 import and the native fake), with typed map, buffer and metric kinds, returning the raw
//! `u32` status, and wrapped into a `Result<_, HostError>` carrying that status. The SDK's
//! wrappers `panic!` on a status they did not expect (and declare the status as a Rust enum, so a
//! number outside it is undefined behaviour); a panic traps the VM and ends tracing on that
//! worker, so the plugin no longer links the SDK at all.
//!
//! Callbacks: [`exports`] are the `proxy_on_*` functions the host calls, handed to
//! [`crate::filter`]; only those meshtrace implements exist, so Envoy makes no needless trip into
//! the VM. Buffers the host returns were allocated through our `proxy_on_memory_allocate` and
//! are owned by us from then on.
//!
//! Off wasm32 (native unit tests), the host is a fake whose every call answers a status the test
//! chooses ([`fake::answer`]): the seam that shows no status traps the plugin.

use meshtrace_core::host::HostError;
use std::ptr::{null, null_mut};

/// `WasmResult` values the plugin tells apart.
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
}

/// `MapType`: which header map a call reads or writes. A type of its own, as are
/// [`BufferType`] and [`MetricType`], so that a buffer's number cannot be passed where a map's is
/// expected (both are small integers in the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct MapType(u32);

/// The header maps the plugin uses.
pub mod map {
    use super::MapType;
    pub const REQUEST_HEADERS: MapType = MapType(0);
    pub const RESPONSE_HEADERS: MapType = MapType(2);
    pub const RESPONSE_TRAILERS: MapType = MapType(3);
    pub const HTTP_CALL_RESPONSE_HEADERS: MapType = MapType(6);
    pub const HTTP_CALL_RESPONSE_TRAILERS: MapType = MapType(7);
}

/// `BufferType`: which buffer [`buffer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct BufferType(u32);

/// The buffers the plugin reads.
pub mod buffer {
    use super::BufferType;
    pub const HTTP_CALL_RESPONSE_BODY: BufferType = BufferType(4);
    pub const PLUGIN_CONFIGURATION: BufferType = BufferType(7);
}

/// `LogLevel`.
pub mod level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

/// `MetricType`: what [`define_metric`] defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct MetricType(u32);

/// The metric types the plugin defines.
pub mod metric {
    use super::MetricType;
    pub const COUNTER: MetricType = MetricType(0);
    pub const GAUGE: MetricType = MetricType(1);
}

/// Declares host calls once and gives both builds: on wasm32 the imports from `$module`; off it,
/// a native stand-in of the same signature that answers [`fake::answer`]'s status and writes
/// nothing back. The kinds above are `repr(transparent)` over `u32`, so they cross the ABI as
/// the `u32` the host expects.
macro_rules! host_calls {
    ($module:literal: $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = $module)]
        extern "C" {
            $(pub fn $name($($arg: $ty),*) -> u32;)*
        }
        $(
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables)]
            pub unsafe fn $name($($arg: $ty),*) -> u32 {
                $crate::abi::fake::status()
            }
        )*
    };
}

/// Every call the plugin makes to its host, each returning the raw status.
#[allow(clippy::too_many_arguments, clippy::missing_safety_doc)]
mod sys {
    use super::{BufferType, MapType, MetricType};

    host_calls! { "env":
        fn proxy_log(level: u32, data: *const u8, size: usize);
        fn proxy_get_log_level(level: *mut u32);
        fn proxy_get_current_time_nanoseconds(time: *mut u64);
        fn proxy_set_tick_period_milliseconds(period: u32);
        fn proxy_get_buffer_bytes(
            buffer: BufferType,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        );
        fn proxy_get_header_map_pairs(map: MapType, data: *mut *mut u8, size: *mut usize);
        fn proxy_get_header_map_value(
            map: MapType,
            key: *const u8,
            key_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        );
        fn proxy_replace_header_map_value(
            map: MapType,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        );
        fn proxy_add_header_map_value(
            map: MapType,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        );
        fn proxy_remove_header_map_value(map: MapType, key: *const u8, key_size: usize);
        fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        );
        fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        );
        fn proxy_http_call(
            upstream: *const u8,
            upstream_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            token: *mut u32,
        );
        fn proxy_define_metric(kind: MetricType, name: *const u8, size: usize, id: *mut u32);
        fn proxy_increment_metric(id: u32, offset: i64);
        fn proxy_record_metric(id: u32, value: u64);
        fn proxy_done();
        fn proxy_call_foreign_function(
            name: *const u8,
            name_size: usize,
            argument: *const u8,
            argument_size: usize,
            results: *mut *mut u8,
            results_size: *mut usize,
        );
    }

    // WASI's environment calls (errno 0 is success).
    host_calls! { "wasi_snapshot_preview1":
        fn environ_sizes_get(count: *mut usize, size: *mut usize);
        fn environ_get(environ: *mut *mut u8, buffer: *mut u8);
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub mod fake {
    use std::cell::Cell;

    thread_local! {
        static ANSWER: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes every host call of this thread answer `status` from now on.
    pub fn answer(status: u32) {
        ANSWER.with(|a| a.set(status));
    }

    pub(super) fn status() -> u32 {
        ANSWER.with(Cell::get)
    }
}

fn check(status: u32) -> Result<(), HostError> {
    match status {
        status::OK => Ok(()),
        other => Err(HostError(other)),
    }
}

/// A buffer the host returned: `None` for a null pointer.
///
/// # Safety
/// On `OK`, `data` is null or a live allocation of `size` bytes made by
/// [`exports::proxy_on_memory_allocate`] (a boxed slice of exactly `size` bytes, forgotten),
/// owned by us from now on.
unsafe fn take(status: u32, data: *mut u8, size: usize) -> Result<Option<Vec<u8>>, HostError> {
    check(status)?;
    if data.is_null() {
        return Ok(None);
    }
    Ok(Some(Vec::from_raw_parts(data, size, size)))
}

pub fn log(level: u32, message: &str) -> Result<(), HostError> {
    // SAFETY: the message outlives the call.
    check(unsafe { sys::proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn log_level() -> Result<u32, HostError> {
    let mut level = level::INFO;
    // SAFETY: the host writes one u32.
    check(unsafe { sys::proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub fn now_unix_nanos() -> Result<u64, HostError> {
    let mut nanos = 0;
    // SAFETY: the host writes one u64.
    check(unsafe { sys::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

pub fn set_tick_period(period: std::time::Duration) -> Result<(), HostError> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    check(unsafe { sys::proxy_set_tick_period_milliseconds(millis) })
}

/// Up to `max_size` bytes of a buffer from `start`; `None` when the host has none.
pub fn buffer(
    kind: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer and a size into our locals.
    let status =
        unsafe { sys::proxy_get_buffer_bytes(kind, start, max_size, &mut data, &mut size) };
    if status == status::NOT_FOUND {
        return Ok(None);
    }
    // SAFETY: `data` and `size` are the host's answer to this call, as `take` requires.
    unsafe { take(status, data, size) }
}

/// A header map in the host's serialized layout (read by `HeaderMap::from_serialized_vec`).
pub fn header_map_pairs(map: MapType) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer and a size into our locals; they are its answer to this
    // call, as `take` requires.
    unsafe {
        let status = sys::proxy_get_header_map_pairs(map, &mut data, &mut size);
        take(status, data, size)
    }
}

/// One header's value as bytes (any bytes a client sent); `None` when absent.
pub fn header_map_value(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `name` outlives the call; the host writes a pointer and a size into our locals.
    let status = unsafe {
        sys::proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    if status == status::NOT_FOUND {
        return Ok(None);
    }
    // Present but empty: the host may answer with a null pointer.
    // SAFETY: `data` and `size` are the host's answer to this call, as `take` requires.
    unsafe { take(status, data, size) }.map(|v| Some(v.unwrap_or_default()))
}

/// Sets (replacing every value) or, with `None`, removes a header.
pub fn set_header_map_value(
    map: MapType,
    name: &str,
    value: Option<&str>,
) -> Result<(), HostError> {
    // SAFETY: name and value outlive the call.
    check(unsafe {
        match value {
            Some(v) => sys::proxy_replace_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => sys::proxy_remove_header_map_value(map, name.as_ptr(), name.len()),
        }
    })
}

/// Adds one more value of a header, keeping those already there (a new field line).
pub fn add_header_map_value(map: MapType, name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: name and value outlive the call; the host copies them.
    check(unsafe {
        sys::proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Sets a property of the stream on a one-segment path (no NUL separators): Envoy keeps it as
/// filter state `wasm.NAME`, readable by access logs and other filters.
pub fn set_property(name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both slices outlive the call; the host copies them.
    check(unsafe {
        sys::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// A host property by path; `None` when the host has no such property.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let mut inline = [0u8; PATH_INLINE];
    let mut heap = Vec::new();
    let serialized = property_path(path, &mut inline, &mut heap);
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `serialized` outlives the call; the host writes a pointer and a size into our
    // locals.
    let status = unsafe {
        sys::proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size)
    };
    if status == status::NOT_FOUND {
        return Ok(None);
    }
    // SAFETY: `data` and `size` are the host's answer to this call, as `take` requires.
    unsafe { take(status, data, size) }
}

/// Room on the stack for a property path: every path the plugin reads but a node label with a
/// long name fits, so a read allocates nothing for its path.
const PATH_INLINE: usize = 96;

/// The ABI's form of a property path: its segments joined by NUL, written into `inline` when it
/// fits, else into `heap`.
fn property_path<'a>(
    path: &[&str],
    inline: &'a mut [u8; PATH_INLINE],
    heap: &'a mut Vec<u8>,
) -> &'a [u8] {
    let size = path
        .iter()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let serialized: &mut [u8] = match inline.get_mut(..size) {
        Some(room) => room,
        None => {
            heap.resize(size, 0);
            heap
        }
    };
    let mut at = 0;
    for segment in path {
        if let Some(dst) = serialized.get_mut(at..at + segment.len()) {
            dst.copy_from_slice(segment.as_bytes());
        }
        at += segment.len();
        // The separator.
        if let Some(nul) = serialized.get_mut(at) {
            *nul = 0;
        }
        at += 1;
    }
    serialized
}

/// Calls one of the host's foreign functions by name (Envoy: `expr_create`, `expr_evaluate`,
/// … in `source/extensions/common/wasm/foreign.cc`); its result, `None` when it returned none.
/// A host without the function answers `NOT_FOUND` (proxy-wasm-cpp-host `src/exports.cc`,
/// `call_foreign_function`).
pub fn call_foreign_function(name: &str, argument: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: see `take`; `name` and `argument` outlive the call.
    unsafe {
        let status = sys::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            argument.as_ptr(),
            argument.len(),
            &mut data,
            &mut size,
        );
        take(status, data, size)
    }
}

/// Starts an HTTP call to `cluster`; its answer arrives in `proxy_on_http_call_response` with
/// the returned token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: std::time::Duration,
) -> Result<u32, HostError> {
    let headers = meshtrace_core::headers::serialize(headers);
    let trailers = meshtrace_core::headers::serialize::<&str, &str>(&[]);
    let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0;
    // SAFETY: every buffer outlives the call; the host writes one u32.
    check(unsafe {
        sys::proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    })?;
    Ok(token)
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id = 0;
    // SAFETY: `name` outlives the call; the host writes one u32.
    check(unsafe { sys::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, delta: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { sys::proxy_increment_metric(id, delta) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { sys::proxy_record_metric(id, value) })
}

/// The environment a VM may see is small (the variables a WasmPlugin lists in `vmConfig.env`);
/// a host that claims more is not believed.
const MAX_ENVIRONMENT_BYTES: usize = 1 << 20;

/// One variable of the VM's environment (Envoy's `environment_variables`: the host variables a
/// WasmPlugin lists in `vmConfig.env`), read with WASI's own calls. `std::env::var` goes through
/// wasi-libc, whose environment set-up exits the VM (`_Exit(71)`) when the host refuses
/// `environ_sizes_get`; here a refusal is an absent variable.
pub fn env_var(name: &str) -> Option<String> {
    let (mut count, mut size) = (0usize, 0usize);
    // SAFETY: the host writes two sizes into our locals.
    if unsafe { sys::environ_sizes_get(&mut count, &mut size) } != 0
        || count == 0
        || size > MAX_ENVIRONMENT_BYTES
        || count > size
    {
        return None;
    }
    let mut entries = vec![null_mut::<u8>(); count];
    let mut buffer = vec![0u8; size];
    // SAFETY: `entries` holds `count` pointers and `buffer` `size` bytes, as the host asked.
    if unsafe { sys::environ_get(entries.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
        return None;
    }
    // `NAME=value` entries, each NUL-terminated, one after the other.
    buffer.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

/// Tells the host a root context that deferred its deletion in `proxy_on_done` is finished.
pub fn done() -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { sys::proxy_done() })
}

/// `log` records through `proxy_log`, at most at the host's level for this plugin (Envoy's
/// `wasm` log component), refreshed by [`refresh_log_level`]: a disabled level costs no
/// formatting and no host call.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => level::TRACE,
            log::Level::Debug => level::DEBUG,
            log::Level::Info => level::INFO,
            log::Level::Warn => level::WARN,
            log::Level::Error => level::ERROR,
        };
        let _ = log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Installs the logger (at info until [`refresh_log_level`]: the host refuses every `proxy_*`
/// call during `_initialize`) and a panic hook that reports through the host's log (a panic
/// should not happen; if one does, the proxy's log says where).
pub fn init_logging() {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let _ = log(level::CRITICAL, &info.to_string());
        }));
    }
    log::set_max_level(log::LevelFilter::Info);
}

/// Follows the host's log level (one host call; on the tick, so `--component-log-level
/// wasm:debug` takes effect without a new configuration). Info when the host does not say.
pub fn refresh_log_level() {
    let filter = match log_level() {
        Ok(level::TRACE) => log::LevelFilter::Trace,
        Ok(level::DEBUG) => log::LevelFilter::Debug,
        Ok(level::WARN) => log::LevelFilter::Warn,
        Ok(level::ERROR) => log::LevelFilter::Error,
        Ok(level::CRITICAL) => log::LevelFilter::Off,
        Ok(_) | Err(_) => log::LevelFilter::Info,
    };
    log::set_max_level(filter);
}

/// The callbacks Envoy calls. Each maps to one function of [`crate::filter`]; a callback not
/// listed here is not exported (and `build.sh`'s `PLUGIN_EXPORTS` lists exactly these).
#[cfg(target_arch = "wasm32")]
pub mod exports {
    use crate::filter;
    use std::mem::MaybeUninit;

    extern "C" {
        fn __wasm_call_ctors();
    }

    /// WASI reactor entry: static constructors, then the plugin's logger.
    #[no_mangle]
    pub extern "C" fn _initialize() {
        // SAFETY: called once by the host before any other export, as WASI reactors require.
        unsafe { __wasm_call_ctors() };
        super::init_logging();
    }

    #[no_mangle]
    pub extern "C" fn proxy_abi_version_0_2_1() {}

    /// The host's allocations in our memory (returned buffers): a boxed slice of exactly
    /// `size` bytes, which `take` turns back into a `Vec`.
    #[no_mangle]
    pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
        let memory: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(size);
        Box::into_raw(memory).cast::<u8>()
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
        filter::on_context_create(context_id, parent_id);
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_vm_start(root_id: u32, size: usize) -> u32 {
        u32::from(filter::on_vm_start(root_id, size))
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_configure(root_id: u32, size: usize) -> u32 {
        u32::from(filter::on_configure(root_id, size))
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_tick(root_id: u32) {
        filter::on_tick(root_id);
    }

    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(
        root_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        filter::on_http_call_response(root_id, token, headers, body_size, trailers);
    }

    /// 0: Continue.
    #[no_mangle]
    pub extern "C" fn proxy_on_request_headers(context_id: u32, headers: usize, eos: u32) -> u32 {
        filter::on_http_request_headers(context_id, headers, eos != 0);
        0
    }

    /// 0: Continue.
    #[no_mangle]
    pub extern "C" fn proxy_on_response_headers(context_id: u32, headers: usize, eos: u32) -> u32 {
        filter::on_http_response_headers(context_id, headers, eos != 0);
        0
    }

    /// 0: Continue. Envoy calls it only for a response with trailers (gRPC's status is there).
    #[no_mangle]
    pub extern "C" fn proxy_on_response_trailers(context_id: u32, trailers: usize) -> u32 {
        filter::on_http_response_trailers(context_id, trailers);
        0
    }

    /// Also the end of every stream: Envoy calls `proxy_on_done` and `proxy_on_delete` back to
    /// back (`Context::onDestroy` in `source/extensions/common/wasm/context.cc`), after the
    /// access log's `proxy_on_log` (`Context::log`). The plugin finishes the stream's span and
    /// frees its context here, and exports neither `proxy_on_log` nor `proxy_on_delete`:
    /// proxy-wasm-cpp-host skips a callback the module does not export (`ContextBase::onLog`,
    /// `onDelete` in `src/context.cc` return when `wasm_->on_log_` / `on_delete_` is null), two
    /// entries into the VM fewer per request.
    #[no_mangle]
    pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
        u32::from(filter::on_done(context_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[rustfmt::skip]
    fn a_property_path_is_its_segments_joined_by_nul() {
        let long = "l".repeat(PATH_INLINE);
        let cases: [(&[&str], Vec<u8>, &str); 4] = [
            (&["xds", "cluster_name"], b"xds\0cluster_name".to_vec(), "two segments"),
            (&["id"], b"id".to_vec(), "one segment, no separator"),
            (&[], Vec::new(), "no segment"),
            (&["metadata", "LABELS", &long], [&b"metadata\0LABELS\0"[..], long.as_bytes()].concat(), "longer than the stack's room"),
        ];
        for (path, want, why) in cases {
            let (mut inline, mut heap) = ([0xff; PATH_INLINE], Vec::new());
            assert_eq!(property_path(path, &mut inline, &mut heap), want.as_slice(), "{why}");
        }
    }

    /// Statuses a host may answer: every `WasmResult` and numbers outside the enum.
    const STATUSES: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 10, 0xffff_ffff];

    /// Whatever a host answers, no wrapper panics: an error carries the status, `NOT_FOUND` is
    /// "absent" where the ABI says so.
    #[test]
    fn no_status_the_host_answers_traps_the_plugin() {
        for s in STATUSES {
            fake::answer(s);
            let err = Err(HostError(s));
            let absent = if s == status::NOT_FOUND {
                Ok(None)
            } else {
                Err(HostError(s))
            };
            assert_eq!(log(level::INFO, "x"), err, "proxy_log {s}");
            assert_eq!(log_level(), Err(HostError(s)), "proxy_get_log_level {s}");
            assert_eq!(now_unix_nanos(), Err(HostError(s)), "current time {s}");
            assert_eq!(set_tick_period(Duration::from_millis(5)), err, "tick {s}");
            assert_eq!(
                buffer(buffer::PLUGIN_CONFIGURATION, 0, 9),
                absent,
                "buffer {s}"
            );
            assert_eq!(header_map_pairs(map::REQUEST_HEADERS), Err(HostError(s)));
            assert_eq!(
                header_map_value(map::REQUEST_HEADERS, "a"),
                absent,
                "value {s}"
            );
            assert_eq!(
                set_header_map_value(map::REQUEST_HEADERS, "a", Some("b")),
                err,
                "replace {s}"
            );
            assert_eq!(
                set_header_map_value(map::REQUEST_HEADERS, "a", None),
                err,
                "remove {s}"
            );
            assert_eq!(
                add_header_map_value(map::RESPONSE_HEADERS, "a", "b"),
                err,
                "add {s}"
            );
            assert_eq!(property(&["xds", "node"]), absent, "property {s}");
            let call = http_call("c", &[(":path", "/")], b"x", Duration::from_secs(1));
            assert_eq!(call, Err(HostError(s)), "http call {s}");
            assert_eq!(define_metric(metric::COUNTER, "m"), Err(HostError(s)));
            assert_eq!(increment_metric(1, 1), err, "increment {s}");
            assert_eq!(record_metric(1, 1), err, "record {s}");
            assert_eq!(done(), err, "done {s}");
            refresh_log_level();
            assert_eq!(
                log::max_level(),
                log::LevelFilter::Info,
                "level unknown: info"
            );
        }
        fake::answer(status::OK);
        assert_eq!(
            header_map_value(map::REQUEST_HEADERS, "a"),
            Ok(Some(Vec::new())),
            "present, empty"
        );
        assert_eq!(property(&["a"]), Ok(None), "no data: absent");
    }
}
