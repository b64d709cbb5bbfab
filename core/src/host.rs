//! The few things the core needs from the proxy, behind one small trait. The proxy-wasm adapter
//! implements it over host calls; `mock::MockHost` implements it for tests.

use crate::headers::HeaderMap;
use std::time::Duration;

/// A failed host call, with the status the host answered (proxy-wasm ABI `WasmResult`: 1 not
/// found, 2 bad argument, 3 serialization failure, 10 internal failure, … or any other number a
/// host may return). The core never panics on one: it degrades (no span, no export) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    /// `BadArgument`: what the proxy answers a call it refuses (e.g. an unknown cluster).
    pub const BAD_ARGUMENT: HostError = HostError(2);
}

/// Kinds of metric the proxy exposes (Envoy stats, Istio's Prometheus scrape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// An outgoing HTTP call to an Envoy cluster, made from the root context. OTLP/gRPC goes this way
/// too (gRPC over HTTP/2), so the exporter controls `:authority`: Envoy's own gRPC client would
/// send the Istio cluster name, which strict HTTP/2 servers reject as an authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    Http {
        cluster: &'a str,
        /// Pseudo-headers (`:method`, `:path`, `:authority`) included.
        headers: Vec<(&'a str, &'a str)>,
        body: &'a [u8],
        timeout: Duration,
    },
}

pub trait Host {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> u64;
    /// All request headers, in order, repeated names kept (one host call).
    fn request_headers(&self) -> HeaderMap;
    /// Sets (replacing every existing value) or, with `None`, removes a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// One response header (e.g. `:status`).
    fn response_header(&self, name: &str) -> Option<String>;
    /// Sets a response header, replacing every existing value (only in response headers).
    fn set_response_header(&self, name: &str, value: &str);
    /// One response trailer (e.g. `grpc-message`); hosts without trailers have none.
    fn response_trailer(&self, _name: &str) -> Option<String> {
        None
    }
    /// A host property (e.g. `["xds", "node", "metadata", "NAMESPACE"]`), raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets the request's property `name`, a path of ONE segment (`meshtrace.trace_id`): Envoy
    /// keeps it as filter state `wasm.<name>` for access logs and other filters. A failure is
    /// absorbed (no filter state), never a panic.
    fn set_property(&self, name: &str, value: &[u8]);
    /// Starts an outgoing call; the answer arrives later with the returned token.
    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError>;
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);
}

#[cfg(any(test, feature = "mock"))]
pub mod mock;
