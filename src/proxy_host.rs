//! [`Host`] over the plugin's own ABI layer ([`crate::abi`]). A failed host call means "absent"
//! here (the core degrades), never a panic; the calls that can fail visibly return the host's
//! status in a [`HostError`].
//!
//! Header values are read as bytes: any client can send a value that is not UTF-8 (RFC 9110
//! obs-text), which is read as U+FFFD rather than refused.

use crate::abi;
use meshtrace_core::headers::HeaderMap;
use meshtrace_core::host::{Host, HostError, MetricKind, Outgoing};

#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl Host for ProxyHost {
    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }

    fn request_headers(&self) -> HeaderMap {
        map_pairs(abi::map::REQUEST_HEADERS)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = abi::set_header_map_value(abi::map::REQUEST_HEADERS, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(abi::map::RESPONSE_HEADERS, name)
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let _ = abi::set_header_map_value(abi::map::RESPONSE_HEADERS, name, Some(value));
    }

    fn set_property(&self, name: &str, value: &[u8]) {
        let _ = abi::set_property(name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        map_value(abi::map::RESPONSE_TRAILERS, name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path).ok().flatten()
    }

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        let Outgoing::Http {
            cluster,
            headers,
            body,
            timeout,
        } = call;
        abi::http_call(cluster, &headers, body, timeout)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => abi::metric::COUNTER,
            MetricKind::Gauge => abi::metric::GAUGE,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = abi::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = abi::record_metric(id, value);
    }
}

/// Every pair of a header map; empty when the host has none to give.
pub fn map_pairs(map: u32) -> HeaderMap {
    abi::header_map_pairs(map)
        .ok()
        .flatten()
        .map(HeaderMap::from_serialized_vec)
        .unwrap_or_default()
}

/// One header's first value, bytes that are not UTF-8 read as U+FFFD.
pub fn map_value(map: u32, name: &str) -> Option<String> {
    abi::header_map_value(map, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}
