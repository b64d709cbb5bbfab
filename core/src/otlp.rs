//! The OTLP trace messages meshtrace sends (opentelemetry-proto v1: `collector/trace/v1`,
//! `trace/v1`, `resource/v1`, `common/v1`), declared with `prost` derives. Only the fields a proxy
//! fills are declared; field numbers and types are those of the `.proto` files, so any OTLP
//! receiver decodes them (tests decode with an independent implementation).

use crate::span::{self, AttrValue, SpanKind, StatusCode};
use prost::encoding::{encoded_len_varint, WireType};
use prost::Message;

/// `ExportTraceServiceRequest` (collector/trace/v1/trace_service.proto).
#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ExportTraceServiceResponse`: an empty message or a partial success.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// `Span.SpanKind`: 2 SERVER, 3 CLIENT.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// `SpanFlags`: W3C trace flags in bits 0–7, and whether the parent is remote (bits 8, 9).
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// `Status.StatusCode`: 0 UNSET, 1 OK, 2 ERROR.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` and `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

pub(crate) const SPAN_KIND_SERVER: i32 = 2;
pub(crate) const SPAN_KIND_CLIENT: i32 = 3;

pub(crate) fn key_value(key: String, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
    }
}

pub fn resource(attributes: Vec<(String, AttrValue)>) -> Resource {
    Resource {
        attributes: attributes
            .into_iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        dropped_attributes_count: 0,
    }
}

impl From<span::Span> for Span {
    fn from(s: span::Span) -> Span {
        // The parent of a proxy span always lives in another process (the caller, or the app
        // behind this sidecar), so a parent is a remote parent.
        let remote = if s.parent.is_some() { IS_REMOTE } else { 0 };
        Span {
            trace_id: s.context.trace_id.0.to_vec(),
            span_id: s.context.span_id.0.to_vec(),
            trace_state: s.trace_state,
            parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            name: s.name,
            kind: match s.kind {
                SpanKind::Server => SPAN_KIND_SERVER,
                SpanKind::Client => SPAN_KIND_CLIENT,
            },
            start_time_unix_nano: s.start_unix_nanos,
            end_time_unix_nano: s.end_unix_nanos,
            attributes: s
                .attributes
                .into_iter()
                .map(|(k, v)| key_value(k.into_owned(), v))
                .collect(),
            dropped_attributes_count: s.dropped_attributes,
            status: match s.status {
                StatusCode::Unset => None,
                StatusCode::Ok => Some(Status {
                    message: String::new(),
                    code: 1,
                }),
                StatusCode::Error => Some(Status {
                    message: s.status_message,
                    code: 2,
                }),
            },
            flags: u32::from(s.context.flags.0) | HAS_IS_REMOTE | remote,
        }
    }
}

/// Encodes a finished span straight into OTLP `Span` bytes — the same bytes prost gives for
/// `Span::from(span)` (a test holds them equal) without building the message first: no copy of
/// the ids, keys or values. Fields go in tag order and proto3 defaults are left out, as prost does.
pub(crate) fn encode_span(s: &span::Span, buf: &mut Vec<u8>) {
    put_len_delimited(1, &s.context.trace_id.0, buf);
    put_len_delimited(2, &s.context.span_id.0, buf);
    put_len_delimited(3, s.trace_state.as_bytes(), buf);
    if let Some(parent) = &s.parent {
        put_len_delimited(4, &parent.0, buf);
    }
    put_len_delimited(5, s.name.as_bytes(), buf);
    let kind = match s.kind {
        SpanKind::Server => SPAN_KIND_SERVER,
        SpanKind::Client => SPAN_KIND_CLIENT,
    };
    put_varint_field(6, kind as u64, buf);
    put_fixed64(7, s.start_unix_nanos, buf);
    put_fixed64(8, s.end_unix_nanos, buf);
    for (key, value) in &s.attributes {
        let value_len = any_value_len(value);
        // KeyValue { key = 1; value = 2 }
        put_field_header(9, field_len(key.len()) + field_len(value_len), buf);
        put_len_delimited(1, key.as_bytes(), buf);
        put_field_header(2, value_len, buf);
        put_any_value(value, buf);
    }
    put_varint_field(10, u64::from(s.dropped_attributes), buf);
    let code = match s.status {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    };
    if code != 0 {
        // Status { message = 2; code = 3 }; the message only accompanies an error.
        let message: &[u8] = if code == 2 {
            s.status_message.as_bytes()
        } else {
            &[]
        };
        let len = opt_field_len(message.len()) + 1 + encoded_len_varint(code);
        put_field_header(15, len, buf);
        put_len_delimited(2, message, buf);
        put_varint_field(3, code, buf);
    }
    let remote = if s.parent.is_some() { IS_REMOTE } else { 0 };
    put_key(16, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&(u32::from(s.context.flags.0) | HAS_IS_REMOTE | remote).to_le_bytes());
}

/// At least the bytes [`encode_span`] writes: every field at its largest key and length prefix.
fn span_len_bound(s: &span::Span) -> usize {
    // ids (16 + 8 + 8), two timestamps, kind, dropped count, flags, status code: 64 with keys;
    // 3 more bytes of key and length for each string field.
    let strings = s.trace_state.len() + s.name.len() + s.status_message.len() + 12;
    let attributes: usize = s
        .attributes
        .iter()
        .map(|(k, v)| {
            k.len()
                + 16
                + match v {
                    AttrValue::Str(v) => v.len(),
                    AttrValue::Bool(_) | AttrValue::Int(_) => 10,
                }
        })
        .sum();
    96 + strings + attributes
}

fn any_value_len(value: &AttrValue) -> usize {
    match value {
        AttrValue::Str(v) => field_len(v.len()),
        AttrValue::Bool(_) => 2,
        AttrValue::Int(i) => 1 + encoded_len_varint(*i as u64),
    }
}

fn put_any_value(value: &AttrValue, buf: &mut Vec<u8>) {
    // AnyValue oneof: string_value = 1, bool_value = 2, int_value = 3 (a set oneof member is
    // always written, even when it holds its type's default).
    match value {
        AttrValue::Str(v) => {
            put_field_header(1, v.len(), buf);
            buf.extend_from_slice(v.as_bytes());
        }
        AttrValue::Bool(b) => {
            put_key(2, WireType::Varint, buf);
            buf.push(u8::from(*b));
        }
        AttrValue::Int(i) => {
            put_key(3, WireType::Varint, buf);
            put_varint(*i as u64, buf);
        }
    }
}

/// A length-delimited field, left out when empty (proto3 default).
fn put_len_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_field_header(tag, bytes.len(), buf);
        buf.extend_from_slice(bytes);
    }
}

fn put_varint_field(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        put_key(tag, WireType::Varint, buf);
        put_varint(value, buf);
    }
}

fn put_fixed64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        put_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn opt_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        field_len(len)
    }
}

/// Builds export requests from spans encoded once, when they are queued: a batch is the
/// pre-encoded resource and scope framed around the queued span bytes, with no re-encoding.
/// Spans recorded for other services (a waypoint's source and destination) carry their own
/// encoded resource; a batch holds one `ResourceSpans` per resource (OTLP `trace.proto`:
/// "A collection of ScopeSpans from a Resource"), in the order each first appears.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

/// The same encoded resource: spans of one service share its bytes (the exporter's cache), so
/// the address tells, without comparing the bytes for every span of a batch.
pub fn same_resource(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}

/// Bytes a length-delimited field of `len` bytes takes, key included (tags here are < 16).
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_field_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

/// A field's key (protobuf encoding, "Message Structure": field number and wire type).
fn put_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

/// A base-128 varint (protobuf encoding, "Base 128 Varints"), byte by byte into the `Vec`:
/// prost's `encode_varint` goes through `BufMut`, one slice copy per byte.
fn put_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

impl BatchEncoder {
    pub fn new(resource: &Resource, scope: &InstrumentationScope) -> BatchEncoder {
        BatchEncoder {
            resource: resource.encode_to_vec(),
            scope: scope.encode_to_vec(),
        }
    }

    /// A resource of its own, encoded once (a waypoint's peer services).
    pub fn encode_resource(attributes: Vec<(String, AttrValue)>) -> Vec<u8> {
        resource(attributes).encode_to_vec()
    }

    /// One span as it will sit in the batch, in one allocation: a recorded sidecar span is
    /// ~1.3 KB, so a fixed 512 bytes grew twice.
    pub fn encode_span(span: &span::Span) -> Vec<u8> {
        let mut buf = Vec::with_capacity(span_len_bound(span));
        encode_span(span, &mut buf);
        buf
    }

    /// Bytes a span of `len` encoded bytes adds to its `ResourceSpans`.
    pub(crate) fn span_cost(len: usize) -> usize {
        field_len(len)
    }

    fn scope_spans_len(&self, spans_len: usize) -> usize {
        field_len(self.scope.len()) + spans_len
    }

    /// `resource`: `None` for this proxy's own.
    fn resource_spans_len(&self, resource: Option<&[u8]>, spans_len: usize) -> usize {
        field_len(resource.unwrap_or(&self.resource).len())
            + field_len(self.scope_spans_len(spans_len))
            + field_len(SCHEMA_URL.len())
    }

    /// Bytes one `ResourceSpans` (key included) takes in a request, for spans costing
    /// `spans_len` in total (see [`Self::span_cost`]); a request is the sum over its resources.
    pub(crate) fn group_len(&self, resource: Option<&[u8]>, spans_len: usize) -> usize {
        field_len(self.resource_spans_len(resource, spans_len))
    }

    /// Exact bytes of a request of own-resource spans costing `spans_len` in total.
    pub fn request_len(&self, spans_len: usize) -> usize {
        self.group_len(None, spans_len)
    }

    /// An `ExportTraceServiceRequest` of own-resource spans (see [`Self::encode_grouped`]).
    pub fn encode<'a>(
        &self,
        spans: impl Iterator<Item = &'a [u8]> + Clone,
        grpc_frame: bool,
    ) -> Vec<u8> {
        self.encode_grouped(spans.map(|s| (None, s)), grpc_frame)
    }

    /// An `ExportTraceServiceRequest` holding `spans` (each from [`Self::encode_span`], with
    /// its resource, `None` for the proxy's own), one `ResourceSpans` per resource; with
    /// `grpc_frame`, preceded by gRPC's length prefix (uncompressed flag, 4-byte big-endian
    /// length: "gRPC over HTTP2", Length-Prefixed-Message).
    pub fn encode_grouped<'a>(
        &self,
        spans: impl Iterator<Item = (Option<&'a [u8]>, &'a [u8])> + Clone,
        grpc_frame: bool,
    ) -> Vec<u8> {
        let mut groups: Vec<(Option<&[u8]>, usize)> = Vec::new();
        for (resource, span) in spans.clone() {
            match groups.iter_mut().find(|(r, _)| same_resource(*r, resource)) {
                Some(group) => group.1 += field_len(span.len()),
                None => groups.push((resource, field_len(span.len()))),
            }
        }
        let len: usize = groups.iter().map(|(r, l)| self.group_len(*r, *l)).sum();
        let mut buf = Vec::with_capacity(len + 5);
        if grpc_frame {
            buf.push(0);
            buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        }
        for (resource, spans_len) in &groups {
            // ExportTraceServiceRequest.resource_spans = 1
            put_field_header(1, self.resource_spans_len(*resource, *spans_len), &mut buf);
            // ResourceSpans.resource = 1
            let encoded = resource.unwrap_or(&self.resource);
            put_field_header(1, encoded.len(), &mut buf);
            buf.extend_from_slice(encoded);
            // ResourceSpans.scope_spans = 2
            put_field_header(2, self.scope_spans_len(*spans_len), &mut buf);
            // ScopeSpans.scope = 1, then ScopeSpans.spans = 2 (repeated)
            put_field_header(1, self.scope.len(), &mut buf);
            buf.extend_from_slice(&self.scope);
            for (_, span) in spans.clone().filter(|(r, _)| same_resource(*r, *resource)) {
                put_field_header(2, span.len(), &mut buf);
                buf.extend_from_slice(span);
            }
            // ResourceSpans.schema_url = 3
            put_field_header(3, SCHEMA_URL.len(), &mut buf);
            buf.extend_from_slice(SCHEMA_URL.as_bytes());
        }
        buf
    }
}

/// The semantic conventions version our attribute names follow.
pub(crate) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.26.0";

#[cfg(test)]
mod tests;
