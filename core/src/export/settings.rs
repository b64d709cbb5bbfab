//! The exporter's settings, derived once per configuration from `exporter` and `limits` (what
//! OpenTelemetry's SDK splits into the batch span processor's `BatchConfig` and the exporter's
//! own options), then only read. The configuration crate has already validated the keys
//! (`Config::validate`: a batch of at least one span, a queue at least a batch, a timeout, a
//! flush interval of 10 ms or more); what is computed here is what every span or request would
//! otherwise compute again.

use crate::clock::nanos;
use crate::config::{ExportProtocol, ExporterConfig, LimitsConfig};
use std::time::Duration;

/// OTLP/gRPC: `TraceService/Export`, as gRPC over HTTP/2 ("gRPC over HTTP2" protocol spec).
pub(crate) const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const CONTENT_TYPE: &str = "application/x-protobuf";
const GRPC_CONTENT_TYPE: &str = "application/grpc";
const USER_AGENT: &str = concat!("meshtrace/", env!("CARGO_PKG_VERSION"));

/// The queue also holds at most this many batches' worth of bytes.
const QUEUE_BYTES_IN_BATCHES: usize = 4;
/// Captured spans wait apart, in at most this fraction of the queue's bounds.
const CAPTURED_SHARE: usize = 4;
/// Ticks are at least this frequent so full batches leave promptly under load.
const MAX_TICK: Duration = Duration::from_millis(200);
/// After a drain, answers are awaited this much longer than the export timeout (the host's
/// timer for the call fires at the timeout; its answer may come a tick later).
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct ExportSettings {
    /// OTLP/gRPC rather than OTLP/HTTP: the request's framing and how its answer reads.
    pub grpc: bool,
    /// The Envoy cluster of the collector.
    pub cluster: String,
    pub timeout: Duration,
    /// Every header of an export request, pseudo-headers first, then `exporter.headers`.
    pub request_headers: Vec<(String, String)>,
    /// Spans per request (`exporter.maxBatchSize`) and bytes per request (`limits.maxBatchBytes`).
    pub max_batch_size: usize,
    pub max_batch_bytes: usize,
    /// Sampled spans waiting (`exporter.maxQueueSize`), and their bytes.
    pub max_queue_size: usize,
    pub max_queue_bytes: usize,
    /// Captured spans waiting: a [`CAPTURED_SHARE`] of the queue's bounds, at least one span.
    pub max_captured: usize,
    pub max_captured_bytes: usize,
    /// Attempts after the first for a retryable failure.
    pub max_retries: u32,
    /// `exporter.flushInterval`, in nanoseconds.
    pub flush_interval: u64,
    /// How often the root context ticks.
    pub tick_period: Duration,
    /// After a drain, how long answers are awaited, in nanoseconds.
    pub drain_timeout: u64,
}

impl ExportSettings {
    pub fn new(config: &ExporterConfig, limits: &LimitsConfig) -> ExportSettings {
        let max_queue_bytes = limits
            .max_batch_bytes
            .saturating_mul(QUEUE_BYTES_IN_BATCHES);
        ExportSettings {
            grpc: config.protocol == ExportProtocol::Grpc,
            cluster: config.cluster.clone(),
            timeout: config.timeout,
            request_headers: request_headers(config),
            max_batch_size: config.max_batch_size,
            max_batch_bytes: limits.max_batch_bytes,
            max_queue_size: config.max_queue_size,
            max_queue_bytes,
            max_captured: (config.max_queue_size / CAPTURED_SHARE).max(1),
            max_captured_bytes: max_queue_bytes / CAPTURED_SHARE,
            max_retries: config.max_retries,
            flush_interval: nanos(config.flush_interval),
            tick_period: config.flush_interval.min(MAX_TICK),
            drain_timeout: nanos(config.timeout.saturating_add(DRAIN_MARGIN)),
        }
    }
}

/// OTLP/HTTP: a protobuf POST to `exporter.path` ("OTLP/HTTP Request"); OTLP/gRPC: a gRPC call
/// of `TraceService/Export` with its deadline ("gRPC over HTTP2": `te`, `grpc-timeout`).
fn request_headers(config: &ExporterConfig) -> Vec<(String, String)> {
    let authority = config.effective_authority();
    let mut headers: Vec<(&str, String)> = vec![(":method", "POST".into())];
    if config.protocol == ExportProtocol::Grpc {
        // Milliseconds as u64: formatting the u128 `as_millis` brought u128 printing (1.4 KB).
        let millis = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
        headers.extend([
            (":path", GRPC_PATH.into()),
            (":authority", authority.into()),
            ("content-type", GRPC_CONTENT_TYPE.into()),
            ("te", "trailers".into()),
            ("grpc-timeout", format!("{millis}m")),
        ]);
    } else {
        headers.extend([
            (":path", config.path.clone()),
            (":authority", authority.into()),
            ("content-type", CONTENT_TYPE.into()),
        ]);
    }
    headers.push(("user-agent", USER_AGENT.into()));
    let mut headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
    headers.extend(
        config
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone())),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    #[rustfmt::skip]
    fn bounds_are_derived_once_from_the_configuration() {
        const MIB: usize = 1 << 20;
        // (pluginConfig, max captured spans, max captured bytes, max queue bytes, tick, why)
        let cases = [
            ("{}",                                                      512, MIB, 4 * MIB, 200, "a quarter of the queue; four batches of bytes"),
            (r#"{"exporter": {"maxQueueSize": 3, "maxBatchSize": 1}}"#, 1,   MIB, 4 * MIB, 200, "at least one captured span"),
            (r#"{"limits": {"maxBatchBytes": 4096}}"#,                  512, 4096, 16384,  200, "bytes follow maxBatchBytes"),
            (r#"{"exporter": {"flushInterval": "50ms"}}"#,              512, MIB, 4 * MIB, 50,  "a short flush interval ticks as often"),
        ];
        for (json, captured, captured_bytes, queue_bytes, tick_ms, why) in cases {
            let config = Config::parse(json.as_bytes()).unwrap();
            let s = ExportSettings::new(&config.exporter, &config.limits);
            assert_eq!(s.max_captured, captured, "{why}");
            assert_eq!(s.max_captured_bytes, captured_bytes, "{why}");
            assert_eq!(s.max_queue_bytes, queue_bytes, "{why}");
            assert_eq!(s.tick_period, Duration::from_millis(tick_ms), "{why}");
        }
    }

    #[test]
    fn request_headers_are_built_once_in_order() {
        let names = |json: &str| {
            let config = Config::parse(json.as_bytes()).unwrap();
            ExportSettings::new(&config.exporter, &config.limits)
                .request_headers
                .into_iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect::<Vec<_>>()
        };
        let user_agent = format!("user-agent: {USER_AGENT}");
        assert_eq!(
            names(r#"{"exporter": {"headers": [{"name": "x-tenant", "value": "a"}]}}"#),
            [
                ":method: POST",
                ":path: /v1/traces",
                ":authority: opentelemetry-collector.observability.svc.cluster.local",
                "content-type: application/x-protobuf",
                &user_agent,
                "x-tenant: a",
            ],
            "OTLP/HTTP; configured headers last"
        );
        assert_eq!(
            names(r#"{"exporter": {"protocol": "grpc", "timeout": "1.5s"}}"#)[1..6],
            [
                &format!(":path: {GRPC_PATH}"),
                ":authority: opentelemetry-collector.observability.svc.cluster.local",
                "content-type: application/grpc",
                "te: trailers",
                "grpc-timeout: 1500m",
            ],
            "OTLP/gRPC with its deadline"
        );
    }
}
