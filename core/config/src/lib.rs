//! The plugin configuration: a WasmPlugin's `pluginConfig`, as JSON.
//!
//! Names follow Istio where Istio has one (`randomSamplingPercentage`, `tracingServiceName`,
//! `customTags`); the rest is grouped under `sampling`, `propagation` and `exporter`. Every key has
//! a default, so `{}` (or an empty configuration) is valid. Unknown keys are rejected so a typo is
//! reported at `on_configure` instead of silently ignored. These names are a public contract:
//! keep them stable.

use std::fmt;
use std::time::Duration;

/// A configuration value written as one of a fixed set of names (`"grpc"`, `"templatedPath"`):
/// the names live on the type, and the reader (`read.rs` `choice`), error messages and the
/// reference take them from here.
pub trait Named: Copy + 'static {
    /// Every value, in the order an error message lists them.
    const ALL: &'static [Self];
    /// Its name in the `pluginConfig`.
    fn name(self) -> &'static str;
}

/// `named!(Enum { Variant => "name", ... })`: [`Named`] for an enum, one line per variant (a
/// variant left out does not compile).
macro_rules! named {
    ($enum:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Named for $enum {
            const ALL: &'static [Self] = &[$($enum::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name),+
                }
            }
        }
    };
}

/// Default OTLP/HTTP collector cluster, named the way Istio names outbound clusters, for the
/// collector of the seed walkthrough (`opentelemetry-collector` in `observability`).
pub const DEFAULT_COLLECTOR_CLUSTER: &str =
    "outbound|4318||opentelemetry-collector.observability.svc.cluster.local";

/// Parsed, validated configuration. Built once per `on_configure` and shared, never cloned per
/// request.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Istio's `randomSamplingPercentage`: chance (0–100, 0.01 steps) that a new trace is sampled.
    pub random_sampling_percentage: f64,
    /// Istio's `tracingServiceName` mode.
    pub tracing_service_name: ServiceNameMode,
    /// An explicit service name; overrides `tracingServiceName` when set.
    pub service_name: Option<String>,
    /// Which side of the workload this proxy's spans describe.
    pub role: RoleSetting,
    /// Istio-style custom tags added to every span: name → source, sorted by name, each once
    /// (a JSON object's keys). A list, not a map: read once, only iterated.
    pub custom_tags: Vec<(String, CustomTag)>,
    /// How span names are made (bounded in every mode).
    pub span_name: SpanNameMode,
    /// Envoy's `spawn_upstream_span`: a CLIENT child of this proxy's span, whose id is sent
    /// upstream. `None` (auto): on at gateways, as Istio configures it
    /// (`pilot/pkg/networking/core/tracing.go` `configureFromProviderConfig`: `startChildSpan`).
    pub spawn_upstream_span: Option<bool>,
    /// What a waypoint (ambient mode) records for each request.
    pub waypoint: WaypointConfig,
    /// Which attributes spans carry beyond the OTel semantic conventions.
    pub attributes: AttributesConfig,
    /// Extra resource attributes, as `OTEL_RESOURCE_ATTRIBUTES` would give them: name → value,
    /// sorted by name, each once.
    pub resource_attributes: Vec<(String, String)>,
    pub sampling: SamplingConfig,
    pub propagation: PropagationConfig,
    pub exporter: ExporterConfig,
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            random_sampling_percentage: 1.0,
            tracing_service_name: ServiceNameMode::default(),
            service_name: None,
            role: RoleSetting::Auto,
            custom_tags: Vec::new(),
            span_name: SpanNameMode::default(),
            spawn_upstream_span: None,
            waypoint: WaypointConfig::default(),
            attributes: AttributesConfig::default(),
            resource_attributes: Vec::new(),
            sampling: SamplingConfig::default(),
            propagation: PropagationConfig::default(),
            exporter: ExporterConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Istio's `tracingServiceName` (ProxyConfig) modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceNameMode {
    #[default]
    AppLabelAndNamespace,
    CanonicalNameOnly,
    CanonicalNameAndNamespace,
}

named!(ServiceNameMode {
    AppLabelAndNamespace => "APP_LABEL_AND_NAMESPACE",
    CanonicalNameOnly => "CANONICAL_NAME_ONLY",
    CanonicalNameAndNamespace => "CANONICAL_NAME_AND_NAMESPACE",
});

/// Role of the proxy's span: `auto` derives it from the listener direction (and gateway node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleSetting {
    #[default]
    Auto,
    Server,
    Client,
}

named!(RoleSetting { Auto => "auto", Server => "server", Client => "client" });

/// `spanName`: how a span is named. Every mode has bounded cardinality; a request Envoy answered
/// itself with no route (`NR`) never has its path in the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanNameMode {
    /// Istio's route decorator, `host:port/*` (`pilot/pkg/networking/core/route/route.go`
    /// `GetRouteOperation`, `telemetry.TraceOperation`): what Istio's tracer names spans and
    /// what Kiali's `operationSpanFilter` matches.
    #[default]
    Istio,
    /// OTel HTTP semantic conventions, "Name": `{method} {route}` for a named route, else
    /// `{method}`.
    Route,
    /// `{method} {path}` with id-like segments replaced by `{id}`, at most 8 segments
    /// (`MAX_TEMPLATED_SEGMENTS` in `naming/span_name.rs`).
    TemplatedPath,
}

named!(SpanNameMode { Istio => "istio", Route => "route", TemplatedPath => "templatedPath" });

/// `waypoint.spans`: what a waypoint records per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaypointSpans {
    /// What two sidecars would have recorded: a CLIENT span for the source workload (skipped
    /// when the caller's own proxy recorded it) and a SERVER span for the destination service,
    /// each in its service's resource, so service graphs draw source → destination edges.
    #[default]
    Pair,
    /// Istio's waypoint span: one SERVER span named after the waypoint itself.
    Proxy,
}

named!(WaypointSpans { Pair => "pair", Proxy => "proxy" });

/// `waypoint`: settings that apply only where the node id says `waypoint~` (ambient mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaypointConfig {
    pub spans: WaypointSpans,
}

/// `attributes.urlQuery`: what of the query string reaches `url.query`, `url.full` and
/// `http.url` (OTel semconv `url.query`: sensitive values SHOULD be redacted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlQueryMode {
    /// Not recorded.
    Omit,
    /// Keys kept, every value replaced by `REDACTED`.
    #[default]
    Redact,
    /// As the client sent it (Envoy's `http.url` does this).
    Full,
}

named!(UrlQueryMode { Omit => "omit", Redact => "redact", Full => "full" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributesConfig {
    /// Istio's and Envoy's legacy tags that duplicate a semantic-convention attribute
    /// (`http.method`, `http.status_code`, `http.url`, `peer.address`, `request_size`, …).
    /// Tags with no semantic-convention equivalent (`node_id`, `istio.*`, `response_flags`,
    /// `upstream_cluster`, …) are always set: Kiali and saved queries need them.
    pub istio_compat: bool,
    pub url_query: UrlQueryMode,
}

impl Default for AttributesConfig {
    fn default() -> Self {
        AttributesConfig {
            istio_compat: true,
            url_query: UrlQueryMode::default(),
        }
    }
}

/// One Istio custom tag: exactly one of `literal`, `environment`, `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomTag {
    Literal {
        value: String,
    },
    Environment {
        name: String,
        default_value: Option<String>,
    },
    Header {
        name: String,
        default_value: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Honour a valid incoming sampled flag and force header (parent-based sampling).
    pub trust_incoming: bool,
    /// Request header that forces sampling when present (and trusted).
    pub force_header: Option<String>,
    /// Per-worker cap on new sampled traces per second; `None` is unlimited.
    pub max_traces_per_second: Option<f64>,
    /// Never sample Kubernetes probe and scrape paths (`/healthz`, `/ready`, …) unless a rule says
    /// otherwise.
    pub skip_probes: bool,
    /// First matching rule decides; see [`SamplingRule`].
    pub rules: Vec<SamplingRule>,
    /// `captureErrors`: an unsampled request that ends in one of these errors is recorded anyway
    /// (error capture); `None` (`false`) turns it off.
    pub capture_errors: Option<CaptureErrors>,
    /// `captureSlowerThan`: an unsampled request slower than this is recorded anyway (latency
    /// capture); `None` is off. A rule may set its own.
    pub capture_slower_than: Option<Duration>,
    /// `maxCapturedPerSecond`: per-worker cap on captured spans (a token bucket, bursts of one
    /// second's worth), separate from `maxTracesPerSecond`.
    pub max_captured_per_second: f64,
}

/// Which responses count as errors for error capture. A request that got no response at all
/// (reset, timeout before headers), an Envoy local reply with response flags (4xx/5xx) and, for
/// gRPC, a server-fault status are always errors; `statuses` adds HTTP statuses for every span,
/// `client_statuses` for CLIENT spans only (the span's kind is read only when one matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureErrors {
    pub statuses: Vec<StatusClass>,
    pub client_statuses: Vec<StatusClass>,
}

impl Default for CaptureErrors {
    fn default() -> Self {
        CaptureErrors {
            statuses: vec![StatusClass::Class(5)],
            client_statuses: Vec::new(),
        }
    }
}

/// `"5xx"` (a class: the hundreds digit) or `"429"` (one status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Class(u16),
    Code(u16),
}

impl StatusClass {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusClass::Class(hundreds) => status / 100 == hundreds,
            StatusClass::Code(code) => status == code,
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            trust_incoming: true,
            force_header: Some("x-envoy-force-trace".to_string()),
            max_traces_per_second: None,
            skip_probes: true,
            rules: Vec::new(),
            capture_errors: Some(CaptureErrors::default()),
            capture_slower_than: None,
            max_captured_per_second: 100.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRule {
    pub matcher: RuleMatch,
    /// `always`, `never`, or a percentage.
    pub sample: RuleAction,
    /// `parent`: whether a trusted incoming decision still wins (`follow`) or this rule decides
    /// whatever the incoming flag says (`override`, mid-chain sampling).
    pub parent: ParentMode,
    /// `captureSlowerThan` for the requests this rule matches (else the global one).
    pub capture_slower_than: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentMode {
    #[default]
    Follow,
    Override,
}

named!(ParentMode { Follow => "follow", Override => "override" });

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleMatch {
    pub method: Option<String>,
    pub path: Option<PathMatch>,
    pub host: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// A header that must be present, and equal `value` when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleAction {
    Keyword(RuleKeyword),
    Percentage(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKeyword {
    Always,
    Never,
}

named!(RuleKeyword { Always => "always", Never => "never" });

/// Context propagation formats, named as `OTEL_PROPAGATORS` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Propagator {
    Tracecontext,
    B3,
    B3multi,
    Baggage,
}

named!(Propagator {
    Tracecontext => "tracecontext",
    B3 => "b3",
    B3multi => "b3multi",
    Baggage => "baggage",
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagationConfig {
    /// Formats read from incoming requests, in priority order.
    pub extract: Vec<Propagator>,
    /// Formats written to the request sent on.
    pub inject: Vec<Propagator>,
    /// Forward a well-formed incoming `x-request-id`; `false` always generates one (edge gateways).
    pub trust_incoming_request_id: bool,
    /// The request's context published as filter state for access logs and other filters, in
    /// [`ContextValue::ALL`] order, each at most once; empty publishes nothing.
    pub publish_context: Vec<ContextValue>,
    /// Return the context to the caller as the W3C trace context metric of `server-timing`
    /// (`trace;desc=00-{trace-id}-{span-id}-{flags}`, w3c/trace-context
    /// spec/21-http_response_header_format.md since #560), appended to the response's own.
    pub trace_response: bool,
    /// Send the `traceresponse` header of earlier Trace Context Level 2 drafts, which #560
    /// replaced: compatibility for clients built on them, on its own or beside the metric.
    pub trace_response_header: bool,
    /// Return the request's `x-request-id` to the caller.
    pub response_request_id: bool,
}

/// One value of the request's context that `propagation.publishContext` can publish. The
/// property names are a contract (access-log formats and other filters read them): never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContextValue {
    TraceId,
    SpanId,
    ParentSpanId,
    Sampled,
    RequestId,
}

// The names in `propagation.publishContext`, in the order they are published.
named!(ContextValue {
    TraceId => "trace_id",
    SpanId => "span_id",
    ParentSpanId => "parent_span_id",
    Sampled => "sampled",
    RequestId => "request_id",
});

impl ContextValue {
    /// The property path, one segment: Envoy stores it as filter state `wasm.<path>`
    /// (envoy source/extensions/common/wasm/context.cc, `Context::setProperty`), which an access
    /// log reads as `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%`. A path of two segments
    /// would be joined with a NUL byte into a key no format string can name.
    pub fn property(self) -> &'static str {
        match self {
            ContextValue::TraceId => "meshtrace.trace_id",
            ContextValue::SpanId => "meshtrace.span_id",
            ContextValue::ParentSpanId => "meshtrace.parent_span_id",
            ContextValue::Sampled => "meshtrace.sampled",
            ContextValue::RequestId => "meshtrace.request_id",
        }
    }
}

impl Default for PropagationConfig {
    fn default() -> Self {
        PropagationConfig {
            extract: vec![
                Propagator::Tracecontext,
                Propagator::B3,
                Propagator::B3multi,
                Propagator::Baggage,
            ],
            inject: vec![Propagator::Tracecontext, Propagator::Baggage],
            trust_incoming_request_id: true,
            publish_context: ContextValue::ALL.to_vec(),
            trace_response: false,
            trace_response_header: false,
            response_request_id: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportProtocol {
    #[default]
    HttpProtobuf,
    Grpc,
    None,
}

named!(ExportProtocol { HttpProtobuf => "http/protobuf", Grpc => "grpc", None => "none" });

/// A static header sent with every export request (Istio's `headers` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExporterConfig {
    pub protocol: ExportProtocol,
    /// Envoy cluster that reaches the collector.
    pub cluster: String,
    /// `:authority` of export requests; defaults to the cluster's host part.
    pub authority: Option<String>,
    /// OTLP/HTTP path.
    pub path: String,
    /// Export request timeout, as a protobuf-JSON duration (`"5s"`, `"0.5s"`, `"250ms"`).
    pub timeout: Duration,
    pub headers: Vec<HeaderValue>,
    /// Spans per export request.
    pub max_batch_size: usize,
    /// How often a partial batch is flushed.
    pub flush_interval: Duration,
    /// Spans held per worker while the collector is slow or down; the oldest are dropped beyond.
    pub max_queue_size: usize,
    /// Attempts after the first for a retryable failure.
    pub max_retries: u32,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            protocol: ExportProtocol::HttpProtobuf,
            cluster: DEFAULT_COLLECTOR_CLUSTER.to_string(),
            authority: None,
            path: "/v1/traces".to_string(),
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
            max_batch_size: 512,
            flush_interval: Duration::from_secs(1),
            max_queue_size: 2048,
            max_retries: 3,
        }
    }
}

impl ExporterConfig {
    /// `:authority` for export requests: the configured one, else the host of an Istio-style
    /// cluster name (`outbound|4318||collector.ns.svc.cluster.local`), else the cluster name.
    pub fn effective_authority(&self) -> &str {
        if let Some(a) = &self.authority {
            return a;
        }
        // The text after the last `||`, by a plain scan (no substring-search code in the module).
        let last = self.cluster.as_bytes().windows(2).rposition(|w| w == b"||");
        match last.and_then(|i| self.cluster.get(i + 2..)) {
            Some(host) if !host.is_empty() => host,
            _ => &self.cluster,
        }
    }
}

/// Bounds that keep a hostile or careless client from inflating span cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest attribute value kept, in bytes; longer values are cut at a character boundary.
    pub max_attribute_length: usize,
    /// Most attributes on one span.
    pub max_attributes: usize,
    /// Largest export request body, in bytes.
    pub max_batch_bytes: usize,
    /// Longest span name, in bytes (cut at a character boundary).
    pub max_span_name_length: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_attribute_length: 256,
            // OTel SDK's default attribute count limit (OTEL_ATTRIBUTE_COUNT_LIMIT).
            max_attributes: 128,
            max_batch_bytes: 1 << 20,
            max_span_name_length: 128,
        }
    }
}

/// Why a configuration was rejected; the message names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid meshtrace configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid meshtrace configuration at `{}`: {}",
                self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a configuration. Empty input (or only whitespace) gives the defaults.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::parse_for(bytes, false)
    }

    /// The configuration as the proxy applies it: at a gateway (`gateway`: Istio node id
    /// `router~…`), the `gateway` block is merged over the rest — objects key by key, other
    /// values replaced. One WasmPlugin in Istio's root namespace reaches every gateway too, and
    /// Istio cannot exclude them (`pilot/pkg/model/policyattachment.go`: a selector only selects;
    /// gateway listeners match `CLIENT` mode like a sidecar's outbound ones), so an
    /// internet-facing gateway gets its untrusting settings here. The block is checked on every
    /// proxy, so a mistake in it is refused everywhere, its errors named `gateway.…`.
    pub fn parse_for(bytes: &[u8], gateway: bool) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| err("", "is not UTF-8"))?;
        // `Value: FromStr` is compiled once, inside serde_json; syntax errors say where.
        let mut value: serde_json::Value =
            text.parse().map_err(|e: serde_json::Error| ConfigError {
                key: String::new(),
                message: e.to_string(),
            })?;
        // Taken out by value (a null left in its place reads as absent): cheaper in code size
        // than removing the key from serde_json's map.
        let overrides = value.get_mut(GATEWAY_KEY).map(serde_json::Value::take);
        let config = Config::from_json(&value)?;
        config.validate()?;
        let Some(overrides) = overrides else {
            return Ok(config);
        };
        if !overrides.is_object() {
            return Err(err(GATEWAY_KEY, "must be an object of configuration keys"));
        }
        if overrides.get(GATEWAY_KEY).is_some() {
            return Err(err(
                "gateway.gateway",
                "is not allowed: gateway blocks do not nest",
            ));
        }
        merge(&mut value, overrides);
        // The rest parsed: whatever fails now came from the block.
        let at_gateway = Config::from_json(&value)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| ConfigError {
                key: if e.key.is_empty() {
                    GATEWAY_KEY.to_string()
                } else {
                    format!("{GATEWAY_KEY}.{}", e.key)
                },
                message: e.message,
            })?;
        Ok(if gateway { at_gateway } else { config })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_percentage("randomSamplingPercentage", self.random_sampling_percentage)?;
        for (i, rule) in self.sampling.rules.iter().enumerate() {
            if let RuleAction::Percentage(p) = rule.sample {
                check_percentage(&format!("sampling.rules[{i}].sample"), p)?;
            }
        }
        if let Some(rate) = self.sampling.max_traces_per_second {
            check_rate("sampling.maxTracesPerSecond", rate)?;
        }
        check_rate(
            "sampling.maxCapturedPerSecond",
            self.sampling.max_captured_per_second,
        )?;
        if let Some(h) = &self.sampling.force_header {
            check_header_name("sampling.forceHeader", h)?;
        }
        if let Some(name) = &self.service_name {
            if name.is_empty() {
                return Err(err("serviceName", "must not be empty"));
            }
        }
        for (i, h) in self.exporter.headers.iter().enumerate() {
            check_header_name(&format!("exporter.headers[{i}].name"), &h.name)?;
        }
        let ex = &self.exporter;
        if ex.protocol != ExportProtocol::None && ex.cluster.is_empty() {
            return Err(err(
                "exporter.cluster",
                "must name the Envoy cluster of the collector",
            ));
        }
        if !ex.path.starts_with('/') {
            return Err(err("exporter.path", "must start with `/`"));
        }
        if ex.timeout.is_zero() {
            return Err(err("exporter.timeout", "must be greater than zero"));
        }
        if ex.flush_interval < Duration::from_millis(10) {
            return Err(err("exporter.flushInterval", "must be at least 10ms"));
        }
        if ex.max_batch_size == 0 {
            return Err(err("exporter.maxBatchSize", "must be at least 1"));
        }
        if ex.max_queue_size < ex.max_batch_size {
            return Err(err(
                "exporter.maxQueueSize",
                "must be at least exporter.maxBatchSize",
            ));
        }
        if self.limits.max_attribute_length < 16 {
            return Err(err("limits.maxAttributeLength", "must be at least 16"));
        }
        if self.limits.max_span_name_length < 16 {
            return Err(err("limits.maxSpanNameLength", "must be at least 16"));
        }
        if self.limits.max_batch_bytes < 1024 {
            return Err(err("limits.maxBatchBytes", "must be at least 1024"));
        }
        Ok(())
    }
}

/// The top-level key of the gateway overrides (see [`Config::parse_for`]).
const GATEWAY_KEY: &str = "gateway";

/// Merges `over` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn err(key: &str, message: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn check_percentage(key: &str, p: f64) -> Result<(), ConfigError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(err(key, "must be between 0 and 100"))
    }
}

fn check_rate(key: &str, per_second: f64) -> Result<(), ConfigError> {
    if per_second.is_finite() && per_second >= 0.0 {
        Ok(())
    } else {
        Err(err(key, "must be a non-negative number"))
    }
}

/// A percentage (0.01 steps) for messages, without float formatting (which would add 20 KB of
/// wasm for one log line): `12.5`, `0.01`, `100`.
pub fn percentage(p: f64) -> String {
    let hundredths = (p.clamp(0.0, 100.0) * 100.0).round() as u64;
    let (whole, fraction) = (hundredths / 100, hundredths % 100);
    match fraction {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

/// RFC 9110 §5.1: a field name is a token; Envoy stores them lowercase.
fn check_header_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(key, "must be a lowercase HTTP header name"))
    }
}

mod read;

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod tests;
