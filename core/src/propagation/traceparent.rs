//! The `traceparent` header (W3C Trace Context Level 2 §3.2).

use crate::context::{SpanContext, TraceFlags};
use crate::ids::{decode_hex_lower, write_hex, SpanId, TraceId, TRACE_ID_LEN};

/// Bytes of a version-00 `traceparent` (§3.2.2: `version-traceid-parentid-flags` is
/// 2 + 1 + 32 + 1 + 16 + 1 + 2).
pub const LEN: usize = 55;
/// Where version 00 holds the trace id and the parent id, in hex (§3.2.2:
/// `version "-" trace-id "-" parent-id "-" trace-flags`); a later version starts the same way.
pub const TRACE_ID_HEX: std::ops::Range<usize> = 3..35;
pub const PARENT_ID_HEX: std::ops::Range<usize> = 36..52;
/// §3.2.2.1: version `ff` is forbidden.
const INVALID_VERSION: u8 = 0xff;

/// Why an incoming `traceparent` was rejected (every reason restarts the trace, §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceparentError {
    /// Shorter than version 00's 55 characters, or fields not where §3.2.2 puts them.
    Malformed,
    /// Version is not two lowercase hex digits, or is `ff` (§3.2.2.1).
    BadVersion,
    /// Version 00 with anything after the flags (§3.2.2.1: exactly 55 characters).
    TrailingData,
    /// A future version whose flags are not followed by `-` or the end (§3.2.4).
    FutureVersionMalformed,
    /// Trace id not 32 lowercase hex digits, or all zeros (§3.2.2.3).
    BadTraceId,
    /// Parent id not 16 lowercase hex digits, or all zeros (§3.2.2.4).
    BadParentId,
    /// Flags not two lowercase hex digits (§3.2.2.5).
    BadFlags,
    /// Several `traceparent` values that disagree (§3.2: a single context is required).
    Conflicting,
}

/// Parses one `traceparent` value. Optional whitespace around the value is the HTTP field's,
/// not the header's (RFC 9110 §5.5), so it is trimmed first.
pub fn parse(value: &str) -> Result<SpanContext, TraceparentError> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < LEN {
        return Err(TraceparentError::Malformed);
    }
    let field = |at: std::ops::Range<usize>| v.get(at).unwrap_or_default();
    let dash = |at: usize| v.get(at) == Some(&b'-');
    if !(dash(2) && dash(35) && dash(52)) {
        return Err(TraceparentError::Malformed);
    }
    let mut version = [0u8; 1];
    if !decode_hex_lower(field(0..2), &mut version) || version[0] == INVALID_VERSION {
        return Err(TraceparentError::BadVersion);
    }
    if v.len() > LEN {
        if version[0] == 0 {
            return Err(TraceparentError::TrailingData);
        }
        // §3.2.4 (versioning): a higher version is parsed for its first four fields; what
        // follows must start with `-`.
        if !dash(LEN) {
            return Err(TraceparentError::FutureVersionMalformed);
        }
    }
    let mut trace = [0u8; 16];
    if !decode_hex_lower(field(TRACE_ID_HEX), &mut trace) {
        return Err(TraceparentError::BadTraceId);
    }
    let trace_id = TraceId(trace);
    if !trace_id.is_valid() {
        return Err(TraceparentError::BadTraceId);
    }
    let mut span = [0u8; 8];
    if !decode_hex_lower(field(PARENT_ID_HEX), &mut span) {
        return Err(TraceparentError::BadParentId);
    }
    let span_id = SpanId(span);
    if !span_id.is_valid() {
        return Err(TraceparentError::BadParentId);
    }
    let mut flags = [0u8; 1];
    if !decode_hex_lower(field(53..LEN), &mut flags) {
        return Err(TraceparentError::BadFlags);
    }
    Ok(SpanContext {
        trace_id,
        span_id,
        flags: TraceFlags(flags[0]),
    })
}

/// Parses every `traceparent` value of a request: identical repeats are one context, different
/// ones conflict. Values joined with commas by an intermediary count as repeats.
pub fn parse_all<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Option<Result<SpanContext, TraceparentError>> {
    let mut found: Option<Result<SpanContext, TraceparentError>> = None;
    for value in values.flat_map(|v| v.split(',')) {
        let this = parse(value);
        found = match found {
            None => Some(this),
            Some(prev) if prev == this => Some(prev),
            Some(_) => return Some(Err(TraceparentError::Conflicting)),
        };
    }
    found
}

/// Version 00, which is what we emit (§3.2.4: "send the version this implementation knows").
/// Only the flags we understand are written (§3.2.2.5).
pub fn format(context: &SpanContext) -> String {
    write(context, &mut [0; LEN]).to_string()
}

/// [`format`] into a buffer on the caller's stack: the request path sends it without a heap
/// allocation.
pub fn write<'a>(context: &SpanContext, buf: &'a mut [u8; LEN]) -> &'a str {
    let mut at = 0;
    let mut put = |part: &[u8]| {
        if let Some(dst) = buf.get_mut(at..at + part.len()) {
            dst.copy_from_slice(part);
            at += part.len();
        }
    };
    let mut hex = [0u8; 2 * TRACE_ID_LEN];
    put(b"00-");
    put(write_hex(&mut hex, &context.trace_id.0));
    put(b"-");
    put(write_hex(&mut hex, &context.span_id.0));
    put(b"-");
    put(write_hex(&mut hex, &[context.flags.known().0]));
    // Hex digits and dashes: ASCII, always UTF-8.
    std::str::from_utf8(buf.get(..at).unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    #[test]
    fn parse_follows_level_2() {
        use TraceparentError::*;
        let up = T.to_uppercase();
        let z32 = "0".repeat(32);
        let z16 = "0".repeat(16);
        let cases: Vec<(String, Result<u8, TraceparentError>, &str)> = vec![
            (format!("00-{T}-{S}-01"), Ok(0x01), "valid, sampled"),
            (format!("00-{T}-{S}-00"), Ok(0x00), "valid, not sampled"),
            (
                format!("00-{T}-{S}-03"),
                Ok(0x03),
                "sampled + random (Level 2)",
            ),
            (
                format!("00-{T}-{S}-ff"),
                Ok(0xff),
                "unknown flag bits parse; dropped on write",
            ),
            (
                format!(" \t00-{T}-{S}-01 "),
                Ok(0x01),
                "optional whitespace around the value",
            ),
            (
                format!("cc-{T}-{S}-01"),
                Ok(0x01),
                "future version, exactly 55 characters",
            ),
            (
                format!("cc-{T}-{S}-01-future-stuff"),
                Ok(0x01),
                "future version, more fields",
            ),
            (
                format!("cc-{T}-{S}-01.x"),
                Err(FutureVersionMalformed),
                "future: '-' after flags",
            ),
            (
                format!("00-{T}-{S}-01-"),
                Err(TrailingData),
                "version 00 is exactly 55 chars",
            ),
            (
                format!("ff-{T}-{S}-01"),
                Err(BadVersion),
                "version ff is forbidden",
            ),
            (format!("0g-{T}-{S}-01"), Err(BadVersion), "version not hex"),
            (
                format!("CC-{T}-{S}-01"),
                Err(BadVersion),
                "uppercase version",
            ),
            (
                format!("00-{up}-{S}-01"),
                Err(BadTraceId),
                "uppercase trace id",
            ),
            (
                format!("00-{z32}-{S}-01"),
                Err(BadTraceId),
                "all-zero trace id",
            ),
            (
                format!("00-{T}-{z16}-01"),
                Err(BadParentId),
                "all-zero parent id",
            ),
            (
                format!("00-{T}-{}-01", S.to_uppercase()),
                Err(BadParentId),
                "uppercase parent",
            ),
            (format!("00-{T}-{S}-0x"), Err(BadFlags), "flags not hex"),
            (format!("00-{T}-{S}-1"), Err(Malformed), "too short"),
            (format!("00_{T}_{S}_01"), Err(Malformed), "wrong separators"),
            (format!("00-{T}{S}--01"), Err(Malformed), "fields shifted"),
            (String::new(), Err(Malformed), "empty"),
            ("é".repeat(28), Err(Malformed), "non-ASCII never panics"),
        ];
        for (input, want, reason) in cases {
            let got = parse(&input).map(|c| c.flags.0);
            assert_eq!(got, want, "{reason}: {input:?}");
        }
    }

    #[test]
    fn repeated_headers_must_agree() {
        let a = format!("00-{T}-{S}-01");
        let b = format!("00-{}-{S}-01", "1".repeat(32));
        let cases: Vec<(Vec<&str>, Option<bool>, &str)> = vec![
            (vec![], None, "no header"),
            (vec![&a], Some(true), "one header"),
            (
                vec![&a, &a],
                Some(true),
                "identical repeats are one context",
            ),
            (vec![&a, &b], Some(false), "different repeats conflict"),
        ];
        for (values, want, reason) in cases {
            let got = parse_all(values.into_iter()).map(|r| r.is_ok());
            assert_eq!(got, want, "{reason}");
        }
        let joined = format!("{a},{b}");
        assert_eq!(
            parse_all([joined.as_str()].into_iter()),
            Some(Err(TraceparentError::Conflicting)),
            "comma-joined repeats are repeats"
        );
    }

    #[test]
    fn format_writes_version_00_and_known_flags_only() {
        let ctx = parse(&format!("cc-{T}-{S}-ff-x")).unwrap();
        assert_eq!(format(&ctx), format!("00-{T}-{S}-03"));
    }
}
