//! [`Host`] over proxy-wasm host calls. Every call's error is absorbed here: a failed host call
//! means "absent", never a panic (the SDK's trait helpers unwrap, so we call `hostcalls` directly).
//!
//! Header maps are read through the ABI itself ([`raw`]): the SDK's `get_map` and
//! `get_map_value` panic on a header value that is not UTF-8 — which any client can send
//! (RFC 9110 obs-text) — and on a map the host reports as unavailable. A panic traps the VM and
//! ends tracing on that worker, so that path must not exist.

use meshtrace_core::headers::HeaderMap;
use meshtrace_core::host::{Host, HostError, MetricKind, Outgoing};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType};
use std::time::UNIX_EPOCH;

#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl Host for ProxyHost {
    fn now_unix_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn request_headers(&self) -> HeaderMap {
        map_pairs(MapType::HttpRequestHeaders)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpResponseHeaders, name)
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpResponseTrailers, name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        let Outgoing::Http {
            cluster,
            headers,
            body,
            timeout,
        } = call;
        hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout)
            .map_err(|_| HostError)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, name).map_err(|_| HostError)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// Every pair of a header map; empty when the host has none to give.
pub fn map_pairs(map: MapType) -> HeaderMap {
    raw::header_map_pairs(map)
        .map(|bytes| HeaderMap::from_serialized(&bytes))
        .unwrap_or_default()
}

/// One header's first value, bytes that are not UTF-8 read as U+FFFD.
pub fn map_value(map: MapType, name: &str) -> Option<String> {
    raw::header_map_value(map, name).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The two header-map reads of the proxy-wasm ABI (v0.2.1), declared as the SDK declares them,
/// with every status the host may answer turned into `None`.
mod raw {
    use proxy_wasm::types::{MapType, Status};
    use std::ptr::null_mut;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
        fn proxy_get_header_map_value(
            map_type: MapType,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> Status;
    }

    pub fn header_map_pairs(map: MapType) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer and size for a buffer it allocated through this
        // module's `proxy_on_memory_allocate` (the SDK's), which `take` hands back to Rust.
        let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
        take(status, data, size)
    }

    pub fn header_map_value(map: MapType, name: &str) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: as for `header_map_pairs`; `name` outlives the call.
        let status = unsafe {
            proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
        };
        take(status, data, size)
    }

    fn take(status: Status, data: *mut u8, size: usize) -> Option<Vec<u8>> {
        match status {
            Status::Ok if data.is_null() => Some(Vec::new()),
            // SAFETY: on success `data` is a live allocation of `size` bytes made by the SDK's
            // allocator (a `Vec<u8>` with capacity `size`, forgotten), owned by us from now on.
            Status::Ok => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
            _ => None,
        }
    }
}
