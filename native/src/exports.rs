//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`, abi.h "HTTP Filter Event Hooks").
//! Every one is a boundary: its body runs inside [`guard`], which catches a panic, counts it
//! ([`PANICS`], stat `meshtrace_native_panics`) and answers what lets the request go on
//! (Continue; a stream filter that does nothing) — a panic unwinding into Envoy would take
//! down the proxy and every connection in it. This needs the `native` profile
//! (`panic = "unwind"`); under `abort`, nothing could be caught.
//!
//! Every pointer from Envoy is checked before use: a null or the [`INERT`] filter is a stream
//! meshtrace does not trace; buffers become slices only through `abi::envoy_bytes`.
//!
//! The hooks are `unsafe`: their safety contract is abi.h's for each (pointers Envoy created or
//! this module returned, buffers valid until the hook returns), not restated on each one.
#![allow(clippy::missing_safety_doc)]

use crate::abi::{self, EnvoyBuffer, EnvoyHeader};
use crate::filter::{self, ModuleConfig, Stream, StreamEvent, PANICS};
use crate::logger;
use log::{info, warn};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

/// `Continue` for every `on_http_filter_*` status enum.
const CONTINUE: u32 = 0;

/// The filter handed to Envoy when a stream cannot be traced (its state could not be built, or
/// building it panicked): not null — null would make Envoy close the stream — and never
/// dereferenced. Every hook treats it as "nothing to do".
static INERT_BYTE: u8 = 0;
fn inert() -> *const c_void {
    std::ptr::addr_of!(INERT_BYTE).cast()
}

/// The hooks Envoy resolves, in abi.h's order; the harness and the symbol test read this list.
pub const HOOKS: [&str; 28] = [
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_config_scheduled",
    "envoy_dynamic_module_on_http_filter_config_http_callout_done",
    "envoy_dynamic_module_on_http_filter_config_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_data",
    "envoy_dynamic_module_on_http_filter_config_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_config_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
];

/// Runs a hook's body; a panic is caught, counted and answered with `fallback`.
fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            fallback
        }
    }
}

/// The module's configuration behind Envoy's pointer to it.
///
/// # Safety
/// `ptr` is null or what `on_http_filter_config_new` returned and `config_destroy` has not
/// freed yet (Envoy's contract).
unsafe fn config<'a>(ptr: *const c_void) -> Option<&'a ModuleConfig> {
    // SAFETY: forwarded contract.
    unsafe { ptr.cast::<ModuleConfig>().as_ref() }
}

/// The stream behind Envoy's pointer to it; `None` for null and [`inert`].
///
/// # Safety
/// `ptr` is null, [`inert`], or what `on_http_filter_new` returned and `destroy` has not freed
/// yet; Envoy calls one stream's hooks on its worker, one at a time.
unsafe fn stream<'a>(ptr: *const c_void) -> Option<&'a mut Stream> {
    if ptr == inert() {
        return None;
    }
    // SAFETY: forwarded contract.
    unsafe { ptr.cast::<Stream>().cast_mut().as_mut() }
}

/// A slice of `len` items from Envoy, empty for a null pointer or an impossible length.
///
/// # Safety
/// `ptr` is null or points at `len` initialized items valid until the end of the hook.
unsafe fn envoy_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return &[];
    }
    // SAFETY: forwarded contract, length checked above.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard(abi::ABI_VERSION_C.as_ptr().cast(), || {
        logger::init();
        info!(
            "meshtrace {} ({}), native adapter for Envoy dynamic modules ABI {}: runs on the \
             Envoy release it was built for (1.40) and the next (1.41)",
            meshtrace_core::VERSION,
            option_env!("MESHTRACE_GIT_REV").unwrap_or("unknown revision"),
            abi::ABI_VERSION
        );
        abi::ABI_VERSION_C.as_ptr().cast()
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: abi::ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard(std::ptr::null(), || {
        // SAFETY: Envoy's buffers, valid during this hook.
        let bytes = unsafe { abi::envoy_bytes(config.ptr, config.len) }.unwrap_or_default();
        // SAFETY: as above.
        let name = unsafe { abi::envoy_str(name.ptr, name.len) }.unwrap_or_default();
        if name != "meshtrace" {
            warn!("meshtrace: filter_name is {name:?}; the contract names it \"meshtrace\"");
        }
        match filter::config_new(config_envoy, bytes) {
            Some(module) => Box::into_raw(Box::new(module)).cast_const().cast(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config_module: *const c_void,
) {
    guard((), || {
        if config_module.is_null() {
            return;
        }
        // SAFETY: returned by `config_new` as a `Box<ModuleConfig>`; Envoy destroys it once.
        let module = unsafe { Box::from_raw(config_module.cast::<ModuleConfig>().cast_mut()) };
        module.destroy();
    })
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_module: *const c_void,
    _filter_envoy: abi::FilterEnvoyPtr,
) -> *const c_void {
    guard(inert(), || {
        // SAFETY: Envoy's pointer to our configuration.
        let Some(config) = (unsafe { config(config_module) }) else {
            return inert();
        };
        match Stream::new(config) {
            Some(stream) => Box::into_raw(Box::new(stream)).cast_const().cast(),
            None => inert(),
        }
    })
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: abi::FilterEnvoyPtr,
    filter_module: *const c_void,
    _end_of_stream: u8,
) -> u32 {
    guard(CONTINUE, || {
        // SAFETY: Envoy's pointer to our stream.
        if let Some(s) = unsafe { stream(filter_module) } {
            s.on_request_headers(filter_envoy);
        }
        CONTINUE
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _end_of_stream: u8,
) -> u32 {
    guard(CONTINUE, || CONTINUE)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
) -> u32 {
    guard(CONTINUE, || CONTINUE)
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: abi::FilterEnvoyPtr,
    filter_module: *const c_void,
    _end_of_stream: u8,
) -> u32 {
    guard(CONTINUE, || {
        // SAFETY: Envoy's pointer to our stream.
        if let Some(s) = unsafe { stream(filter_module) } {
            s.on_response_headers(filter_envoy);
        }
        CONTINUE
    })
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _end_of_stream: u8,
) -> u32 {
    guard(CONTINUE, || CONTINUE)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
) -> u32 {
    guard(CONTINUE, || CONTINUE)
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: abi::FilterEnvoyPtr,
    filter_module: *const c_void,
) {
    guard((), || {
        // SAFETY: Envoy's pointer to our stream.
        if let Some(s) = unsafe { stream(filter_module) } {
            s.on_stream_complete(filter_envoy);
        }
    })
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *const c_void) {
    guard((), || {
        if filter_module.is_null() || filter_module == inert() {
            return;
        }
        // SAFETY: returned by `on_http_filter_new` as a `Box<Stream>`; destroyed once.
        drop(unsafe { Box::from_raw(filter_module.cast::<Stream>().cast_mut()) });
    })
}

/// Stream-level callouts and streams: meshtrace starts none (export is configuration-level).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: u8,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: u8,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
    _event_id: u64,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    event_id: u64,
) {
    guard((), || {
        // SAFETY: Envoy's pointer to our configuration.
        if let Some(config) = unsafe { config(config_module) } {
            config.hub.on_scheduled(event_id);
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard((), || {
        // SAFETY: Envoy's pointer to our configuration.
        let Some(config) = (unsafe { config(config_module) }) else {
            return;
        };
        // SAFETY: Envoy's arrays, valid until the end of this hook (null when empty).
        let headers = unsafe { envoy_slice(headers, headers_size) };
        // SAFETY: as above.
        let body = unsafe { envoy_slice(body_chunks, body_chunks_size) };
        config
            .hub
            .on_callout_done(config_envoy as usize, callout_id, result, headers, body);
    })
}

/// The configuration's gRPC export streams (`host::StreamAnswer`).
unsafe fn stream_event(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    event: StreamEvent<'_>,
) {
    // SAFETY: Envoy's pointer to our configuration.
    if let Some(config) = unsafe { config(config_module) } {
        config
            .hub
            .on_stream_event(config_envoy as usize, stream_id, event);
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    headers: *const EnvoyHeader,
    headers_size: usize,
    _end_stream: u8,
) {
    guard((), || {
        // SAFETY: Envoy's array, valid until the end of this hook.
        let headers = unsafe { envoy_slice(headers, headers_size) };
        // SAFETY: Envoy's pointers.
        unsafe {
            stream_event(
                config_envoy,
                config_module,
                stream_id,
                StreamEvent::Headers(headers),
            )
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    _end_stream: u8,
) {
    guard((), || {
        // SAFETY: Envoy's array, valid until the end of this hook.
        let data = unsafe { envoy_slice(data, data_count) };
        // SAFETY: Envoy's pointers.
        unsafe {
            stream_event(
                config_envoy,
                config_module,
                stream_id,
                StreamEvent::Data(data),
            )
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    trailers: *const EnvoyHeader,
    trailers_size: usize,
) {
    guard((), || {
        // SAFETY: Envoy's array, valid until the end of this hook.
        let trailers = unsafe { envoy_slice(trailers, trailers_size) };
        // SAFETY: Envoy's pointers.
        unsafe {
            stream_event(
                config_envoy,
                config_module,
                stream_id,
                StreamEvent::Headers(trailers),
            )
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
) {
    guard((), || {
        // SAFETY: Envoy's pointers.
        unsafe {
            stream_event(
                config_envoy,
                config_module,
                stream_id,
                StreamEvent::Complete,
            )
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    config_envoy: abi::ConfigEnvoyPtr,
    config_module: *const c_void,
    stream_id: u64,
    _reason: u32,
) {
    guard((), || {
        // SAFETY: Envoy's pointers.
        unsafe { stream_event(config_envoy, config_module, stream_id, StreamEvent::Reset) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
) {
    guard((), || ())
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: abi::FilterEnvoyPtr,
    _filter_module: *const c_void,
) {
    guard((), || ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside a hook is caught, counted, and answered with the fail-open value: the
    /// request goes on. (The shipped build is the `native` profile, `panic = "unwind"`;
    /// tests/test_build_sh.py checks the profile.)
    #[test]
    fn a_panic_in_a_hook_is_caught_counted_and_answered_with_continue() {
        let before = PANICS.load(Ordering::Relaxed);
        let status = guard(CONTINUE, || -> u32 { panic!("a bug in a hook") });
        assert_eq!(status, CONTINUE, "the request continues");
        assert_eq!(PANICS.load(Ordering::Relaxed), before + 1, "counted");
        assert_eq!(guard(7u32, || 3u32), 3, "no panic: the hook's own answer");
        assert!(!inert().is_null(), "the inert filter is never null");
    }
}
