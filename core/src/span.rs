//! A finished span, as the proxy recorded it: OpenTelemetry's span data model (OTel
//! specification, "Tracing API: Span") restricted to what a proxy knows.

use crate::config::LimitsConfig;
use crate::context::SpanContext;
use crate::ids::SpanId;
use std::borrow::Cow;

/// Attribute keys: semantic-convention names are static (no allocation per span), custom tags
/// owned.
pub(crate) type AttrKey = Cow<'static, str>;

/// OTel SpanKind: the proxy is the SERVER side of an inbound call, the CLIENT of an outbound one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanKind {
    #[default]
    Server,
    Client,
}

/// The attribute value types spans need (OTel "Common: Attribute").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// OTel span status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub context: SpanContext,
    /// The parent span id (the remote caller's or the app's span); `None` for a trace root.
    pub parent: Option<SpanId>,
    /// The `tracestate` sent on with this span's context (W3C §3.3), empty when none.
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Set through [`Span::set_attribute`] (which keeps `key_bits`), never pushed directly.
    pub attributes: Vec<(AttrKey, AttrValue)>,
    /// One bit per attribute key present, by [`key_bit`]: a key no attribute has yet — nearly
    /// every call, ~40 per span — is appended without scanning for a duplicate (that scan was
    /// quadratic in the span's attributes).
    key_bits: u128,
    /// Attributes refused by `limits.maxAttributes` (OTel "Attribute Limits": count, not fail).
    pub dropped_attributes: u32,
    pub status: StatusCode,
    pub status_message: String,
    /// Whose span it is when not this proxy's workload's: a waypoint records spans for the
    /// source and destination services, each exported under its own resource. `None`: the
    /// proxy's own resource.
    pub resource: Option<PeerResource>,
}

/// Room for a span's attributes from the start: a default sidecar span carries 35, a gRPC one
/// a few more; growing from a smaller vector (16 before) copied them twice per span.
const SPAN_ATTRIBUTES: usize = 48;

/// The resource of a span recorded on behalf of another workload (a waypoint's source and
/// destination): the parts that tell services apart; the rest is the proxy's own resource
/// (see [`crate::resource::peer_resource`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerResource {
    /// `service.name`, under the configured `tracingServiceName` mode.
    pub service_name: String,
    pub namespace: String,
    /// Istio's canonical revision (`service.version`).
    pub version: String,
    /// Istio's cluster id (`k8s.cluster.name`).
    pub cluster: String,
}

impl Span {
    pub(crate) fn new(
        context: SpanContext,
        parent: Option<SpanId>,
        trace_state: String,
        name: String,
        kind: SpanKind,
        start_unix_nanos: u64,
        end_unix_nanos: u64,
    ) -> Span {
        Span {
            context,
            parent,
            trace_state,
            name,
            kind,
            start_unix_nanos,
            end_unix_nanos,
            attributes: Vec::with_capacity(SPAN_ATTRIBUTES),
            key_bits: 0,
            dropped_attributes: 0,
            status: StatusCode::Unset,
            status_message: String::new(),
            resource: None,
        }
    }

    /// Sets an attribute within the limits (OTel "Attribute Limits"): a string longer than
    /// `maxAttributeLength` is cut at a character boundary; beyond `maxAttributes` the attribute
    /// is dropped and counted. Setting a key again replaces its value.
    pub(crate) fn set_attribute(
        &mut self,
        key: impl Into<AttrKey>,
        value: AttrValue,
        limits: &LimitsConfig,
    ) {
        let key = key.into();
        let value = match value {
            AttrValue::Str(s) => AttrValue::Str(truncate(s, limits.max_attribute_length)),
            other => other,
        };
        let bit = key_bit(&key);
        let slot = if self.key_bits & bit != 0 {
            self.attributes.iter_mut().find(|(k, _)| *k == key)
        } else {
            None
        };
        if let Some(slot) = slot {
            slot.1 = value;
        } else if self.attributes.len() < limits.max_attributes {
            self.key_bits |= bit;
            self.attributes.push((key, value));
        } else {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
        }
    }
}

/// A key's bit in [`Span::key_bits`]: its length and three of its bytes, enough to tell apart
/// most of the semantic-convention keys a span carries (`http.request.method`, `peer.address`…).
fn key_bit(key: &str) -> u128 {
    let b = key.as_bytes();
    let at = |i: usize| u32::from(b.get(i).copied().unwrap_or(0));
    let len = b.len();
    let h = (len as u32)
        .wrapping_mul(31)
        .wrapping_add(at(0).wrapping_mul(7))
        .wrapping_add(at(len / 2).wrapping_mul(13))
        .wrapping_add(at(len.wrapping_sub(1)));
    1u128 << (h % 128)
}

/// Cuts `s` to at most `max` bytes without splitting a UTF-8 character.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::TraceFlags;
    use crate::ids::TraceId;

    fn span() -> Span {
        let ctx = SpanContext {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            flags: TraceFlags(1),
        };
        Span::new(
            ctx,
            None,
            String::new(),
            "GET /".into(),
            SpanKind::Server,
            1,
            2,
        )
    }

    #[test]
    fn attributes_respect_the_limits() {
        let limits = LimitsConfig {
            max_attribute_length: 16,
            max_attributes: 2,
            ..LimitsConfig::default()
        };
        let mut s = span();
        s.set_attribute("a", AttrValue::Str("x".repeat(100)), &limits);
        s.set_attribute("b", AttrValue::Int(1), &limits);
        s.set_attribute("c", AttrValue::Bool(true), &limits);
        s.set_attribute("b", AttrValue::Int(2), &limits);
        assert_eq!(
            s.attributes,
            vec![
                ("a".into(), AttrValue::Str("x".repeat(16))),
                ("b".into(), AttrValue::Int(2))
            ]
        );
        assert_eq!(
            s.dropped_attributes, 1,
            "the third attribute is dropped and counted"
        );
    }

    /// A key set again replaces its value wherever it sits, whatever the key filter says, and
    /// distinct keys are all kept.
    #[test]
    fn setting_a_key_again_replaces_it_among_many() {
        let limits = LimitsConfig::default();
        let mut s = span();
        let keys: Vec<String> = (0..60)
            .map(|i| format!("key.{i}.{}", "x".repeat(i % 7)))
            .collect();
        for k in &keys {
            s.set_attribute(k.clone(), AttrValue::Int(1), &limits);
        }
        for k in keys.iter().rev() {
            s.set_attribute(k.clone(), AttrValue::Int(2), &limits);
        }
        s.set_attribute("http.request.method", AttrValue::Str("GET".into()), &limits);
        s.set_attribute(
            String::from("http.request.method"),
            AttrValue::Str("PUT".into()),
            &limits,
        );
        let n = keys.len().min(limits.max_attributes);
        assert_eq!(s.attributes.len(), (n + 1).min(limits.max_attributes));
        assert!(
            s.attributes
                .iter()
                .take(n)
                .all(|(_, v)| *v == AttrValue::Int(2)),
            "replaced"
        );
        if n < limits.max_attributes {
            assert_eq!(
                s.attributes.last(),
                Some(&("http.request.method".into(), AttrValue::Str("PUT".into()))),
                "a static key and an owned one with the same text are one attribute"
            );
        }
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let cases = [
            ("héllo", 2, "h", "é is two bytes: cut before it"),
            ("héllo", 3, "hé", "cut after it"),
            ("abc", 3, "abc", "at the limit: unchanged"),
            ("日本語", 4, "日", "three-byte characters"),
            ("", 0, "", "empty"),
        ];
        for (input, max, want, why) in cases {
            assert_eq!(truncate(input.to_string(), max), want, "{why}");
        }
    }
}
