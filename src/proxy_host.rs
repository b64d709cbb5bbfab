//! [`Host`] over proxy-wasm host calls. Every call's error is absorbed here: a failed host call
//! means "absent", never a panic (the SDK's trait helpers unwrap, so we call `hostcalls` directly).

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

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
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
