//! Thin bindings to Envoy's dynamic-modules ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! ABI `v0.2.0`, Envoy 1.40), written by hand for only what meshtrace uses. Every prototype
//! mirrors its C declaration: buffers are passed by value as the header's two-word structs, so
//! the C calling convention places them exactly as Envoy expects.
//!
//! Two choices keep every answer from Envoy free of undefined behaviour: a C `bool` result is
//! read as a `u8` (any non-zero is true; a Rust `bool` holding 2 would be UB), and a C enum is a
//! `u32` (a Rust enum holding an unknown discriminant would be UB). [`envoy_str`] and
//! [`envoy_bytes`] are the only places a slice is made of an Envoy pointer and length.
//!
//! `tests/test_native.py::test_every_imported_callback_is_exported_by_envoy` checks each
//! `envoy_dynamic_module_callback_*` symbol of `dist/libmeshtrace.so` against `nm -D` of the
//! Envoy binary the tests run.

use std::ffi::c_void;

/// The ABI this module is built for (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy logs "Dynamic
/// module ABI version v0.2.0 matched" for it; from 1.38 a module built for Envoy X.Y also loads
/// in X.(Y+1) with a deprecation warning.
pub const ABI_VERSION: &str = "v0.2.0";
/// NUL-terminated, returned by `envoy_dynamic_module_on_program_init`.
pub const ABI_VERSION_C: &[u8] = b"v0.2.0\0";

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The null buffer: `set_header` removes the header.
    pub fn null() -> ModuleBuffer {
        ModuleBuffer {
            ptr: std::ptr::null(),
            len: 0,
        }
    }
}

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy, valid until the end of the
/// current event hook (or the next setter call).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl EnvoyBuffer {
    pub fn empty() -> EnvoyBuffer {
        EnvoyBuffer {
            ptr: std::ptr::null(),
            len: 0,
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_len: usize,
    pub value_ptr: *const u8,
    pub value_len: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_len: usize,
    pub value_ptr: *const u8,
    pub value_len: usize,
}

impl EnvoyHeader {
    pub fn empty() -> EnvoyHeader {
        EnvoyHeader {
            key_ptr: std::ptr::null(),
            key_len: 0,
            value_ptr: std::ptr::null(),
            value_len: 0,
        }
    }
}

/// The bytes of an Envoy buffer, or `None` for a null pointer. A length that no allocation can
/// have (above `isize::MAX`) is refused rather than trusted.
///
/// # Safety
/// `ptr` must be null or point at `len` readable bytes that outlive `'a` — what abi.h promises
/// for every buffer Envoy hands over, until the end of the current event hook.
pub unsafe fn envoy_bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    if len > isize::MAX as usize {
        return None;
    }
    // SAFETY: non-null, and the caller vouches for `len` readable bytes living for `'a`.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An Envoy buffer as text: bytes that are not UTF-8 read as U+FFFD (header values may carry
/// obs-text, RFC 9110 §5.5).
///
/// # Safety
/// As [`envoy_bytes`].
pub unsafe fn envoy_str(ptr: *const u8, len: usize) -> Option<String> {
    // SAFETY: forwarded contract.
    unsafe { envoy_bytes(ptr, len) }.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_type {
    pub const REQUEST_HEADER: u32 = 0;
    pub const RESPONSE_HEADER: u32 = 2;
    pub const RESPONSE_TRAILER: u32 = 3;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// `envoy_dynamic_module_type_metadata_source`.
pub mod metadata_source {
    /// The upstream host (LbEndpoint) metadata.
    pub const HOST: u32 = 3;
}

/// `envoy_dynamic_module_type_http_callout_init_result`.
pub mod callout_init {
    pub const SUCCESS: u32 = 0;
}

/// `envoy_dynamic_module_type_http_callout_result`.
pub mod callout_result {
    pub const SUCCESS: u32 = 0;
}

/// `envoy_dynamic_module_type_metrics_result`.
pub mod metrics_result {
    pub const SUCCESS: u32 = 0;
}

/// `envoy_dynamic_module_type_attribute_id`: the attributes of Envoy's attribute vocabulary
/// (docs "Attributes"), numbered as abi.h declares them.
pub mod attribute {
    pub const REQUEST_TIME: u32 = 8;
    pub const REQUEST_PROTOCOL: u32 = 10;
    pub const REQUEST_SIZE: u32 = 13;
    pub const RESPONSE_CODE: u32 = 15;
    pub const RESPONSE_CODE_DETAILS: u32 = 16;
    pub const RESPONSE_FLAGS: u32 = 17;
    pub const RESPONSE_GRPC_STATUS: u32 = 18;
    pub const RESPONSE_SIZE: u32 = 21;
    pub const SOURCE_ADDRESS: u32 = 24;
    pub const CONNECTION_URI_SAN_PEER_CERTIFICATE: u32 = 37;
    pub const UPSTREAM_ADDRESS: u32 = 41;
    pub const XDS_NODE: u32 = 56;
    pub const XDS_CLUSTER_NAME: u32 = 57;
    pub const XDS_LISTENER_DIRECTION: u32 = 59;
    pub const XDS_ROUTE_NAME: u32 = 61;
}

/// Pointers Envoy hands the module and takes back.
pub type FilterEnvoyPtr = *mut c_void;
pub type ConfigEnvoyPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;

// The callbacks Envoy exports, each as declared in abi.h. Keep this list and
// tests/test_native.py's expectation in step: the test reads the module's undefined symbols.
extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> u8;

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut EnvoyHeader,
    ) -> u8;
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> u8;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> u8;
    /// Adds a value, keeping the header's existing ones (abi.h at v1.40.0).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> u8;

    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> u8;
    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> u8;

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute_id: u32,
        result: *mut EnvoyBuffer,
    ) -> u8;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        attribute_id: u32,
        result: *mut u64,
    ) -> u8;
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: FilterEnvoyPtr,
        source: u32,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> u8;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
        config: ConfigEnvoyPtr,
        stream_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_milliseconds: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: SchedulerPtr,
    );
}

/// Every callback above, for the harness and the symbol test.
pub const IMPORTED: [&str; 20] = [
    "envoy_dynamic_module_callback_log",
    "envoy_dynamic_module_callback_log_enabled",
    "envoy_dynamic_module_callback_http_get_headers_size",
    "envoy_dynamic_module_callback_http_get_headers",
    "envoy_dynamic_module_callback_http_get_header",
    "envoy_dynamic_module_callback_http_set_header",
    "envoy_dynamic_module_callback_http_set_filter_state_bytes",
    "envoy_dynamic_module_callback_http_get_filter_state_bytes",
    "envoy_dynamic_module_callback_http_filter_get_attribute_string",
    "envoy_dynamic_module_callback_http_filter_get_attribute_int",
    "envoy_dynamic_module_callback_http_get_metadata_string",
    "envoy_dynamic_module_callback_http_filter_config_define_counter",
    "envoy_dynamic_module_callback_http_filter_config_define_gauge",
    "envoy_dynamic_module_callback_http_filter_config_increment_counter",
    "envoy_dynamic_module_callback_http_filter_config_set_gauge",
    "envoy_dynamic_module_callback_http_filter_config_http_callout",
    "envoy_dynamic_module_callback_http_filter_config_start_http_stream",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_new",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_commit",
    "envoy_dynamic_module_callback_http_filter_config_scheduler_delete",
];
