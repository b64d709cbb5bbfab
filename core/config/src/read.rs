//! From parsed JSON to the configuration types, one key at a time, so that every error names the
//! key a user must fix (`exporter.headers[0].name`) and unknown keys are refused.
//!
//! serde_json parses; this module only maps its `Value` tree. Deriving `Deserialize` instead,
//! with serde_path_to_error for the key paths, monomorphised a visitor and a path-tracking
//! wrapper per type: about a third of the plugin's code, in a module every pod downloads and
//! every VM compiles, for a function that runs once per configuration.

use super::{
    AttributesConfig, CaptureErrors, Config, ConfigError, ContextValue, CustomTag, ExporterConfig,
    HeaderMatch, HeaderValue, LimitsConfig, Named, PathMatch, PropagationConfig, RuleAction,
    RuleMatch, SamplingConfig, SamplingRule, StatusClass, WaypointConfig,
};
use serde_json::{Map, Value};
use std::time::Duration;

type Result<T> = std::result::Result<T, ConfigError>;

/// A JSON object at `path`, every key of which is known.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Object<'a> {
    fn new(value: &'a Value, path: String, known: &[&str]) -> Result<Object<'a>> {
        let Some(map) = value.as_object() else {
            return Err(expected(&path, value, "an object"));
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ConfigError {
                key: join(&path, unknown),
                message: format!("unknown key, expected one of {}", quoted(known)),
            });
        }
        Ok(Object { map, path })
    }

    /// The value of `key` and its path; `None` when the key is absent or null (JSON null asks
    /// for the default, as it does for Istio's fields).
    fn get(&self, key: &str) -> Option<(&'a Value, String)> {
        self.map
            .get(key)
            .filter(|v| !v.is_null())
            .map(|v| (v, join(&self.path, key)))
    }

    /// Reads `key` with `read`: a `dyn` function, so there is one copy of this code per result
    /// type rather than per call site (this runs once per configuration: size over speed).
    fn read<T>(&self, key: &str, read: &dyn Fn(&'a Value, &str) -> Result<T>) -> Result<Option<T>> {
        self.get(key).map(|(v, path)| read(v, &path)).transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        self.read(key, &string)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.read(key, &|v, path| {
            v.as_bool()
                .ok_or_else(|| expected(path, v, "true or false"))
        })
    }

    fn number(&self, key: &str) -> Result<Option<f64>> {
        self.read(key, &number)
    }

    fn count<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>> {
        self.read(key, &|v, path| {
            v.as_u64()
                .and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| expected(path, v, "a whole number, 0 or more"))
        })
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>> {
        self.read(key, &|v, path| {
            let text = string(v, path)?;
            parse_duration(&text).ok_or_else(|| ConfigError {
                key: path.to_string(),
                message: format!("`{text}` is not a duration like \"5s\", \"0.5s\" or \"250ms\""),
            })
        })
    }

    fn list<T>(
        &self,
        key: &str,
        item: &dyn Fn(&'a Value, &str) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        self.read(key, &|v, path| {
            let items = v.as_array().ok_or_else(|| expected(path, v, "a list"))?;
            items
                .iter()
                .enumerate()
                .map(|(i, x)| item(x, &format!("{path}[{i}]")))
                .collect()
        })
    }

    /// A JSON object used as a map from names to values: `(name, value)` pairs in the object's
    /// order (serde_json's `Map` is sorted, keys once). A `Vec`, not a `BTreeMap`: the result is
    /// only iterated, and each `BTreeMap` value type brought ~5 KB of tree code into the module.
    fn map<T>(
        &self,
        key: &str,
        value: &dyn Fn(&'a Value, &str) -> Result<T>,
    ) -> Result<Option<Vec<(String, T)>>> {
        self.read(key, &|v, path| {
            let map = v
                .as_object()
                .ok_or_else(|| expected(path, v, "an object"))?;
            let mut out = Vec::with_capacity(map.len());
            for (name, x) in map {
                out.push((name.clone(), value(x, &join(path, name))?));
            }
            Ok(out)
        })
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn expected(path: &str, v: &Value, what: &str) -> ConfigError {
    ConfigError {
        key: path.to_string(),
        message: format!("expected {what}, got {}", kind(v)),
    }
}

fn string(v: &Value, path: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| expected(path, v, "a string"))
}

fn number(v: &Value, path: &str) -> Result<f64> {
    v.as_f64().ok_or_else(|| expected(path, v, "a number"))
}

/// One of a fixed set of names.
/// A value of `T` by its name (see [`Named`]).
fn choice<T: Named>(v: &Value, path: &str) -> Result<T> {
    let index = choose(v, path, &|i| T::ALL.get(i).map(|t| t.name()))?;
    T::ALL
        .get(index)
        .copied()
        .ok_or_else(|| expected(path, v, "a known name"))
}

/// The index of the name `v` among `name_at(0)`, `name_at(1)`, … (the part of [`choice`] that
/// is the same for every type, compiled once).
fn choose(v: &Value, path: &str, name_at: &dyn Fn(usize) -> Option<&'static str>) -> Result<usize> {
    let name = v.as_str().ok_or_else(|| expected(path, v, "a string"))?;
    let names: Vec<&str> = (0..).map_while(name_at).collect();
    names
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| ConfigError {
            key: path.to_string(),
            message: format!("unknown value `{name}`, expected one of {}", quoted(&names)),
        })
}

/// An object with exactly one of the `known` keys, as Istio writes its oneofs:
/// `{"literal": {...}}`.
fn one_of<'a>(v: &'a Value, path: &str, known: &[&str]) -> Result<(&'a str, &'a Value, String)> {
    let object = Object::new(v, path.to_string(), known)?;
    let mut entries = object.map.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Ok((key.as_str(), value, join(path, key))),
        _ => Err(ConfigError {
            key: path.to_string(),
            message: format!("expected exactly one of {}", quoted(known)),
        }),
    }
}

/// Protobuf-JSON durations as Istio writes them (`"5s"`, `"0.25s"`), plus `"250ms"`; at most a
/// day. Integer arithmetic only: no float parsing in the plugin for this.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (number, unit_nanos) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000_000u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000_000_000u64)
    } else {
        return None;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) {
        return None;
    }
    let mut nanos = whole.parse::<u64>().ok()?.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        nanos = nanos.checked_add(u64::from(digit - b'0') * scale)?;
    }
    (nanos <= 86_400 * 1_000_000_000).then(|| Duration::from_nanos(nanos))
}

impl Config {
    pub(super) fn from_json(v: &Value) -> Result<Config> {
        let o = Object::new(
            v,
            String::new(),
            &[
                "randomSamplingPercentage",
                "tracingServiceName",
                "serviceName",
                "role",
                "customTags",
                "spanName",
                "spawnUpstreamSpan",
                "waypoint",
                "attributes",
                "resourceAttributes",
                "sampling",
                "propagation",
                "exporter",
                "limits",
                // Read by Config::parse_for, merged over the rest at gateways.
                "gateway",
            ],
        )
        .map_err(|e| match v {
            Value::Object(_) => e,
            _ => ConfigError {
                key: String::new(),
                message: "must be a JSON object".to_string(),
            },
        })?;
        let d = Config::default();
        Ok(Config {
            random_sampling_percentage: o
                .number("randomSamplingPercentage")?
                .unwrap_or(d.random_sampling_percentage),
            tracing_service_name: o
                .read("tracingServiceName", &choice)?
                .unwrap_or(d.tracing_service_name),
            service_name: o.string("serviceName")?,
            role: o.read("role", &choice)?.unwrap_or(d.role),
            custom_tags: o.map("customTags", &custom_tag)?.unwrap_or_default(),
            span_name: o.read("spanName", &choice)?.unwrap_or(d.span_name),
            spawn_upstream_span: o.bool("spawnUpstreamSpan")?,
            waypoint: o
                .read("waypoint", &WaypointConfig::from_json)?
                .unwrap_or(d.waypoint),
            attributes: o
                .read("attributes", &AttributesConfig::from_json)?
                .unwrap_or(d.attributes),
            resource_attributes: o.map("resourceAttributes", &string)?.unwrap_or_default(),
            sampling: o
                .read("sampling", &SamplingConfig::from_json)?
                .unwrap_or(d.sampling),
            propagation: o
                .read("propagation", &PropagationConfig::from_json)?
                .unwrap_or(d.propagation),
            exporter: o
                .read("exporter", &ExporterConfig::from_json)?
                .unwrap_or(d.exporter),
            limits: o
                .read("limits", &LimitsConfig::from_json)?
                .unwrap_or(d.limits),
        })
    }
}

fn custom_tag(v: &Value, path: &str) -> Result<CustomTag> {
    let (kind, body, path) = one_of(v, path, &["literal", "environment", "header"])?;
    Ok(match kind {
        "literal" => {
            let o = Object::new(body, path, &["value"])?;
            CustomTag::Literal {
                value: required(o.string("value")?, &o, "value")?,
            }
        }
        "environment" => {
            let o = Object::new(body, path, &["name", "defaultValue"])?;
            CustomTag::Environment {
                name: required(o.string("name")?, &o, "name")?,
                default_value: o.string("defaultValue")?,
            }
        }
        _ => {
            let o = Object::new(body, path, &["name", "defaultValue"])?;
            CustomTag::Header {
                name: required(o.string("name")?, &o, "name")?,
                default_value: o.string("defaultValue")?,
            }
        }
    })
}

fn required<T>(value: Option<T>, o: &Object<'_>, key: &str) -> Result<T> {
    value.ok_or_else(|| ConfigError {
        key: join(&o.path, key),
        message: "is required".to_string(),
    })
}

impl SamplingConfig {
    fn from_json(v: &Value, path: &str) -> Result<SamplingConfig> {
        let o = Object::new(
            v,
            path.to_string(),
            &[
                "trustIncoming",
                "forceHeader",
                "maxTracesPerSecond",
                "skipProbes",
                "rules",
                "captureErrors",
                "captureSlowerThan",
                "maxCapturedPerSecond",
            ],
        )?;
        let d = SamplingConfig::default();
        Ok(SamplingConfig {
            trust_incoming: o.bool("trustIncoming")?.unwrap_or(d.trust_incoming),
            // Absent: the default header; null: no force header at all.
            force_header: match o.map.get("forceHeader") {
                None => d.force_header,
                Some(Value::Null) => None,
                Some(_) => o.string("forceHeader")?,
            },
            max_traces_per_second: o.number("maxTracesPerSecond")?,
            skip_probes: o.bool("skipProbes")?.unwrap_or(d.skip_probes),
            rules: o
                .list("rules", &SamplingRule::from_json)?
                .unwrap_or_default(),
            capture_errors: o
                .read("captureErrors", &CaptureErrors::from_json)?
                .unwrap_or(d.capture_errors),
            capture_slower_than: o.duration("captureSlowerThan")?,
            max_captured_per_second: o
                .number("maxCapturedPerSecond")?
                .unwrap_or(d.max_captured_per_second),
        })
    }
}

impl CaptureErrors {
    /// `true` (the defaults), `false` (off) or `{"statuses": [...], "clientStatuses": [...]}`.
    fn from_json(v: &Value, path: &str) -> Result<Option<CaptureErrors>> {
        if let Some(on) = v.as_bool() {
            return Ok(on.then(CaptureErrors::default));
        }
        let o = Object::new(v, path.to_string(), &["statuses", "clientStatuses"])?;
        let d = CaptureErrors::default();
        Ok(Some(CaptureErrors {
            statuses: o.list("statuses", &status_class)?.unwrap_or(d.statuses),
            client_statuses: o
                .list("clientStatuses", &status_class)?
                .unwrap_or(d.client_statuses),
        }))
    }
}

/// `"5xx"`, `"4xx"` (a class) or `"429"` (one status), 100–599.
fn status_class(v: &Value, path: &str) -> Result<StatusClass> {
    match v.as_str().map(str::as_bytes) {
        Some(&[d @ b'1'..=b'5', b'x', b'x']) => Ok(StatusClass::Class(u16::from(d - b'0'))),
        Some(&[d @ b'1'..=b'5', t @ b'0'..=b'9', u @ b'0'..=b'9']) => Ok(StatusClass::Code(
            u16::from(d - b'0') * 100 + u16::from(t - b'0') * 10 + u16::from(u - b'0'),
        )),
        _ => Err(expected(path, v, "a status like \"5xx\" or \"429\"")),
    }
}

impl SamplingRule {
    fn from_json(v: &Value, path: &str) -> Result<SamplingRule> {
        let o = Object::new(
            v,
            path.to_string(),
            &["match", "sample", "parent", "captureSlowerThan"],
        )?;
        Ok(SamplingRule {
            matcher: o.read("match", &RuleMatch::from_json)?.unwrap_or_default(),
            sample: required(o.read("sample", &rule_action)?, &o, "sample")?,
            parent: o.read("parent", &choice)?.unwrap_or_default(),
            capture_slower_than: o.duration("captureSlowerThan")?,
        })
    }
}

fn rule_action(v: &Value, path: &str) -> Result<RuleAction> {
    if v.is_number() {
        return number(v, path).map(RuleAction::Percentage);
    }
    choice(v, path).map(RuleAction::Keyword)
}

impl RuleMatch {
    fn from_json(v: &Value, path: &str) -> Result<RuleMatch> {
        let o = Object::new(v, path.to_string(), &["method", "path", "host", "headers"])?;
        Ok(RuleMatch {
            method: o.string("method")?,
            path: o.read("path", &|v, p| {
                let (kind, value, p) = one_of(v, p, &["exact", "prefix"])?;
                let value = string(value, &p)?;
                Ok(if kind == "exact" {
                    PathMatch::Exact(value)
                } else {
                    PathMatch::Prefix(value)
                })
            })?,
            host: o.string("host")?,
            headers: o
                .list("headers", &|v, p| {
                    let h = Object::new(v, p.to_string(), &["name", "value"])?;
                    Ok(HeaderMatch {
                        name: required(h.string("name")?, &h, "name")?,
                        value: h.string("value")?,
                    })
                })?
                .unwrap_or_default(),
        })
    }
}

/// `propagation.publishContext`: a set of names, kept in [`ContextValue::ALL`] order, each once
/// (the host calls are a fixed sequence). Read by hand rather than with `Object::list`: a
/// generic list of one more type costs 3 KB of module for a line of configuration.
fn context_values(v: &Value, path: &str) -> Result<Vec<ContextValue>> {
    let items = v.as_array().ok_or_else(|| expected(path, v, "a list"))?;
    let mut listed = [false; ContextValue::ALL.len()];
    for (i, item) in items.iter().enumerate() {
        let value: ContextValue = choice(item, &format!("{path}[{i}]"))?;
        if let Some(flag) = listed.get_mut(value as usize) {
            *flag = true;
        }
    }
    Ok(ContextValue::ALL
        .iter()
        .copied()
        .zip(listed)
        .filter_map(|(value, on)| on.then_some(value))
        .collect())
}

impl PropagationConfig {
    fn from_json(v: &Value, path: &str) -> Result<PropagationConfig> {
        let o = Object::new(
            v,
            path.to_string(),
            &[
                "extract",
                "inject",
                "trustIncomingRequestId",
                "publishContext",
                "traceResponse",
                "traceResponseHeader",
                "responseRequestId",
            ],
        )?;
        let d = PropagationConfig::default();
        let publish_context = o.read("publishContext", &context_values)?;
        Ok(PropagationConfig {
            extract: o.list("extract", &choice)?.unwrap_or(d.extract),
            inject: o.list("inject", &choice)?.unwrap_or(d.inject),
            trust_incoming_request_id: o
                .bool("trustIncomingRequestId")?
                .unwrap_or(d.trust_incoming_request_id),
            publish_context: publish_context.unwrap_or(d.publish_context),
            trace_response: o.bool("traceResponse")?.unwrap_or(d.trace_response),
            trace_response_header: o
                .bool("traceResponseHeader")?
                .unwrap_or(d.trace_response_header),
            response_request_id: o
                .bool("responseRequestId")?
                .unwrap_or(d.response_request_id),
        })
    }
}

impl ExporterConfig {
    fn from_json(v: &Value, path: &str) -> Result<ExporterConfig> {
        let o = Object::new(
            v,
            path.to_string(),
            &[
                "protocol",
                "cluster",
                "authority",
                "path",
                "timeout",
                "headers",
                "maxBatchSize",
                "flushInterval",
                "maxQueueSize",
                "maxRetries",
            ],
        )?;
        let d = ExporterConfig::default();
        Ok(ExporterConfig {
            protocol: o.read("protocol", &choice)?.unwrap_or(d.protocol),
            cluster: o.string("cluster")?.unwrap_or(d.cluster),
            authority: o.string("authority")?,
            path: o.string("path")?.unwrap_or(d.path),
            timeout: o.duration("timeout")?.unwrap_or(d.timeout),
            headers: o
                .list("headers", &|v, p| {
                    let h = Object::new(v, p.to_string(), &["name", "value"])?;
                    Ok(HeaderValue {
                        name: required(h.string("name")?, &h, "name")?,
                        value: required(h.string("value")?, &h, "value")?,
                    })
                })?
                .unwrap_or_default(),
            max_batch_size: o.count("maxBatchSize")?.unwrap_or(d.max_batch_size),
            flush_interval: o.duration("flushInterval")?.unwrap_or(d.flush_interval),
            max_queue_size: o.count("maxQueueSize")?.unwrap_or(d.max_queue_size),
            max_retries: o.count("maxRetries")?.unwrap_or(d.max_retries),
        })
    }
}

impl AttributesConfig {
    fn from_json(v: &Value, path: &str) -> Result<AttributesConfig> {
        let o = Object::new(v, path.to_string(), &["istioCompat", "urlQuery"])?;
        let d = AttributesConfig::default();
        Ok(AttributesConfig {
            istio_compat: o.bool("istioCompat")?.unwrap_or(d.istio_compat),
            url_query: o.read("urlQuery", &choice)?.unwrap_or(d.url_query),
        })
    }
}

impl WaypointConfig {
    fn from_json(v: &Value, path: &str) -> Result<WaypointConfig> {
        let o = Object::new(v, path.to_string(), &["spans"])?;
        Ok(WaypointConfig {
            spans: o.read("spans", &choice)?.unwrap_or_default(),
        })
    }
}

impl LimitsConfig {
    fn from_json(v: &Value, path: &str) -> Result<LimitsConfig> {
        let o = Object::new(
            v,
            path.to_string(),
            &[
                "maxAttributeLength",
                "maxAttributes",
                "maxBatchBytes",
                "maxSpanNameLength",
            ],
        )?;
        let d = LimitsConfig::default();
        Ok(LimitsConfig {
            max_attribute_length: o
                .count("maxAttributeLength")?
                .unwrap_or(d.max_attribute_length),
            max_attributes: o.count("maxAttributes")?.unwrap_or(d.max_attributes),
            max_batch_bytes: o.count("maxBatchBytes")?.unwrap_or(d.max_batch_bytes),
            max_span_name_length: o
                .count("maxSpanNameLength")?
                .unwrap_or(d.max_span_name_length),
        })
    }
}
