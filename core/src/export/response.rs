//! What a collector's answer says: delivered, worth a retry, or rejected for good (OTLP
//! specification, "OTLP/HTTP Response" and "OTLP/gRPC Response"), and which spans a partial
//! success names.

use crate::otlp;
use prost::Message;
use std::time::Duration;

/// Bytes of a collector's answer read at most (an `ExportTraceServiceResponse` is small).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// gRPC status codes OTLP/gRPC lists as retryable: CANCELLED, DEADLINE_EXCEEDED,
/// RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS.
const GRPC_RETRYABLE: [u32; 7] = [1, 4, 8, 10, 11, 14, 15];
/// HTTP statuses OTLP/HTTP lists as retryable.
const HTTP_RETRYABLE: [u16; 4] = [429, 502, 503, 504];

/// What the host reported about an export request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportResponse<'a> {
    /// HTTP status; `None` when no response arrived (connection failure, timeout).
    pub status: Option<u16>,
    /// `grpc-status` from the trailers (or a trailers-only response's headers).
    pub grpc_status: Option<u32>,
    pub retry_after: Option<&'a str>,
    /// The answer's body (at most [`MAX_RESPONSE_BODY`] bytes): an `ExportTraceServiceResponse`,
    /// for gRPC in its 5-byte length-prefixed message frame.
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    Retry,
    Rejected,
}

impl ExportResponse<'_> {
    pub(crate) fn outcome(&self, grpc: bool) -> Delivery {
        match (self.status, grpc) {
            (None, _) => Delivery::Retry,
            (Some(200), true) => match self.grpc_status {
                Some(0) => Delivery::Delivered,
                Some(code) if GRPC_RETRYABLE.contains(&code) => Delivery::Retry,
                // A 200 without grpc-status is not a gRPC answer (wrong port, a proxy page).
                _ => Delivery::Rejected,
            },
            (Some(200..=299), false) => Delivery::Delivered,
            // Also for gRPC: Envoy answers with these when the collector is unreachable.
            (Some(code), _) if HTTP_RETRYABLE.contains(&code) => Delivery::Retry,
            (Some(_), _) => Delivery::Rejected,
        }
    }

    /// The collector's `Retry-After`, when it gave delay-seconds.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.retry_after.and_then(parse_retry_after)
    }

    /// The `partial_success` of a successful answer (OTLP "Partial Success"), if it has one.
    /// An answer that is not a decodable `ExportTraceServiceResponse` is a full success: the
    /// status already said the request was accepted.
    pub(crate) fn partial_success(&self, grpc: bool) -> Option<otlp::ExportTracePartialSuccess> {
        let message = if grpc {
            grpc_message(self.body)?
        } else {
            self.body
        };
        otlp::ExportTraceServiceResponse::decode(message)
            .ok()?
            .partial_success
    }
}

/// RFC 9110 §10.2.3 `Retry-After` as delay-seconds; an HTTP-date falls back to our back-off.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)))
}

/// The message of a gRPC response body ("gRPC over HTTP2", Length-Prefixed-Message): a
/// compressed-flag byte, a 4-byte big-endian length, the message. We never ask for compression,
/// so a compressed message is not decoded.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (compressed == 0).then(|| message.get(..len)).flatten()
}
