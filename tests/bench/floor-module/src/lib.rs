//! The floor of an Envoy dynamic module (ABI v0.2.0, Envoy 1.40), loaded as `mtfloor`
//! (`libmtfloor.so`). Envoy resolves every HTTP filter hook of the ABI at configuration time
//! (`filter_config.cc`, `newDynamicModuleHttpFilterConfig`) and calls the stream's on every
//! request (`filter.cc`: new, request headers, response headers and body, stream complete,
//! destroy), so a module cannot cost less than this.
//!
//! `filter_config` picks what a stream does:
//! - `""`: nothing (the hooks return at once; one static filter object for every stream);
//! - `"calls"`: the callbacks the native adapter makes for an unsampled request (the request
//!   header map's size and pairs, a `traceparent` added — the request has none — two
//!   filter-state writes, the `:status` read at the end), with fixed values and no tracing
//!   logic: Envoy's share of the adapter's cost;
//! - letters naming some of them, to tell their costs apart: `h` the header map, `t` the
//!   `traceparent` write, `f` the two filter-state writes, `s` the `:status` read (`calls` is
//!   `htfs`).
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buf {
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key_ptr: *const u8,
    key_len: usize,
    value_ptr: *const u8,
    value_len: usize,
}

const NO_HEADER: Header = Header {
    key_ptr: std::ptr::null(),
    key_len: 0,
    value_ptr: std::ptr::null(),
    value_len: 0,
};

fn buf(b: &[u8]) -> Buf {
    Buf {
        ptr: b.as_ptr(),
        len: b.len(),
    }
}

extern "C" {
    fn envoy_dynamic_module_callback_http_get_headers_size(f: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        f: *mut c_void,
        kind: u32,
        out: *mut Header,
    ) -> u8;
    fn envoy_dynamic_module_callback_http_get_header(
        f: *mut c_void,
        kind: u32,
        key: Buf,
        out: *mut Buf,
        index: usize,
        size: *mut usize,
    ) -> u8;
    fn envoy_dynamic_module_callback_http_add_header(
        f: *mut c_void,
        kind: u32,
        key: Buf,
        value: Buf,
    ) -> u8;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        f: *mut c_void,
        key: Buf,
        value: Buf,
    ) -> u8;
}

const HEADERS: u8 = 1;
const TRACEPARENT: u8 = 2;
const FILTER_STATE: u8 = 4;
const STATUS: u8 = 8;

/// One static byte per mode: a configuration's (and each of its streams') pointer.
static MODES: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name: Buf,
    config: Buf,
) -> *const c_void {
    let text: &[u8] = if config.ptr.is_null() {
        b""
    } else {
        unsafe { std::slice::from_raw_parts(config.ptr, config.len) }
    };
    let text: &[u8] = if text == b"calls" { b"htfs" } else { text };
    let mode = text.iter().fold(0usize, |m, c| {
        m | match c {
            b'h' => HEADERS,
            b't' => TRACEPARENT,
            b'f' => FILTER_STATE,
            b's' => STATUS,
            _ => 0,
        } as usize
    });
    std::ptr::addr_of!(MODES[mode]).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_c: *const c_void) {}

/// The configuration's mode, handed to every stream as its filter pointer (no allocation).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _f: *mut c_void,
) -> *const c_void {
    if config.is_null() {
        std::ptr::addr_of!(MODES[0]).cast()
    } else {
        config
    }
}

unsafe fn mode(module: *const c_void) -> u8 {
    if module.is_null() {
        0
    } else {
        unsafe { *module.cast::<u8>() }
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    f: *mut c_void,
    module: *const c_void,
    _eos: u8,
) -> u32 {
    let mode = unsafe { mode(module) };
    if mode & HEADERS != 0 {
        let mut headers = [NO_HEADER; 64];
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(f, 0);
            if n <= headers.len() {
                envoy_dynamic_module_callback_http_get_headers(f, 0, headers.as_mut_ptr());
            }
        }
    }
    if mode & TRACEPARENT != 0 {
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                f,
                0,
                buf(b"traceparent"),
                buf(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            );
        }
    }
    if mode & FILTER_STATE != 0 {
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                f,
                buf(b"wasm.meshtrace.trace_id"),
                buf(b"0af7651916cd43dd8448eb211c80319c"),
            );
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                f,
                buf(b"wasm.meshtrace.span_id"),
                buf(b"b7ad6b7169203331"),
            );
        }
    }
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _f: *mut c_void,
    _m: *const c_void,
    _eos: u8,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _f: *mut c_void,
    _m: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _f: *mut c_void,
    _m: *const c_void,
    _eos: u8,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _f: *mut c_void,
    _m: *const c_void,
    _eos: u8,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _f: *mut c_void,
    _m: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    f: *mut c_void,
    module: *const c_void,
) {
    if unsafe { mode(module) } & STATUS != 0 {
        let mut value = Buf {
            ptr: std::ptr::null(),
            len: 0,
        };
        unsafe {
            envoy_dynamic_module_callback_http_get_header(
                f,
                2,
                buf(b":status"),
                &mut value,
                0,
                std::ptr::null_mut(),
            );
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_m: *const c_void) {}

macro_rules! nothing {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $ty),*) {}
    )*};
}

nothing! {
    envoy_dynamic_module_on_http_filter_http_callout_done(f: *mut c_void, m: *const c_void, id: u64, r: u32, h: *const Header, hn: usize, b: *const Buf, bn: usize);
    envoy_dynamic_module_on_http_filter_http_stream_headers(f: *mut c_void, m: *const c_void, id: u64, h: *const Header, hn: usize, e: u8);
    envoy_dynamic_module_on_http_filter_http_stream_data(f: *mut c_void, m: *const c_void, id: u64, d: *const Buf, dn: usize, e: u8);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(f: *mut c_void, m: *const c_void, id: u64, h: *const Header, hn: usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(f: *mut c_void, m: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(f: *mut c_void, m: *const c_void, id: u64, r: u32);
    envoy_dynamic_module_on_http_filter_scheduled(f: *mut c_void, m: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_config_scheduled(c: *mut c_void, m: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_config_http_callout_done(c: *mut c_void, m: *const c_void, id: u64, r: u32, h: *const Header, hn: usize, b: *const Buf, bn: usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_headers(c: *mut c_void, m: *const c_void, id: u64, h: *const Header, hn: usize, e: u8);
    envoy_dynamic_module_on_http_filter_config_http_stream_data(c: *mut c_void, m: *const c_void, id: u64, d: *const Buf, dn: usize, e: u8);
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers(c: *mut c_void, m: *const c_void, id: u64, h: *const Header, hn: usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_complete(c: *mut c_void, m: *const c_void, id: u64);
    envoy_dynamic_module_on_http_filter_config_http_stream_reset(c: *mut c_void, m: *const c_void, id: u64, r: u32);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(f: *mut c_void, m: *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(f: *mut c_void, m: *const c_void);
}
