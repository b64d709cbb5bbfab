//! Zipkin B3 propagation (openzipkin/b3-propagation): the single `b3` header and the multi
//! `x-b3-*` headers, so apps that only speak B3 join W3C traces and vice versa.

use crate::context::{SpanContext, TraceFlags};
use crate::ids::{decode_hex_lower, push_hex, SpanId, TraceId};

pub(crate) const SINGLE: &str = "b3";
pub(crate) const TRACE_ID: &str = "x-b3-traceid";
pub(crate) const SPAN_ID: &str = "x-b3-spanid";
pub(crate) const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub(crate) const SAMPLED: &str = "x-b3-sampled";
pub(crate) const FLAGS: &str = "x-b3-flags";
/// Every multi-header name, for removal of a stale context.
pub const MULTI_HEADERS: [&str; 5] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];

/// What a B3 carrier said: a context and/or a sampling decision ("b3: 0" carries only the
/// decision), and the debug flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct B3 {
    pub context: Option<SpanContext>,
    /// `None` is B3's "defer": the receiver decides.
    pub sampled: Option<bool>,
    pub debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Error {
    /// Trace id not 16 or 32 lowercase hex digits, or all zeros.
    BadTraceId,
    /// Span id not 16 lowercase hex digits, or all zeros.
    BadSpanId,
    /// Sampling state not `0`, `1` or `d` (multi: `0`, `1`, `true`, `false`).
    BadSamplingState,
    /// Wrong number of fields, or a trace id without a span id.
    Malformed,
}

/// "TraceId: 64 or 128-bit, encoded as 16 or 32 lower-hex characters." A 64-bit id is the
/// right half of a 128-bit one (left-padded with zeros) when bridged to W3C.
fn trace_id(s: &str) -> Result<TraceId, B3Error> {
    let mut out = [0u8; 16];
    let ok = match s.len() {
        32 => decode_hex_lower(s.as_bytes(), &mut out),
        16 => out
            .get_mut(8..)
            .is_some_and(|tail| decode_hex_lower(s.as_bytes(), tail)),
        _ => false,
    };
    let id = TraceId(out);
    if ok && id.is_valid() {
        Ok(id)
    } else {
        Err(B3Error::BadTraceId)
    }
}

fn span_id(s: &str) -> Result<SpanId, B3Error> {
    SpanId::from_hex(s)
        .filter(SpanId::is_valid)
        .ok_or(B3Error::BadSpanId)
}

fn context(trace: &str, span: &str, sampled: Option<bool>) -> Result<SpanContext, B3Error> {
    let flags = TraceFlags(0).with_sampled(sampled == Some(true));
    Ok(SpanContext {
        trace_id: trace_id(trace)?,
        span_id: span_id(span)?,
        flags,
    })
}

/// "Single header": `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or only a
/// sampling state (`0`, `1`, `d`).
pub fn parse_single(value: &str) -> Result<B3, B3Error> {
    let value = value.trim_matches([' ', '\t']);
    let state = |s: &str| match s {
        "0" => Ok((Some(false), false)),
        "1" => Ok((Some(true), false)),
        // Debug implies an accept decision.
        "d" => Ok((Some(true), true)),
        _ => Err(B3Error::BadSamplingState),
    };
    let fields: Vec<&str> = value.split('-').collect();
    match fields.as_slice() {
        [only] => {
            let (sampled, debug) = state(only)?;
            Ok(B3 {
                context: None,
                sampled,
                debug,
            })
        }
        [trace, span] => Ok(B3 {
            context: Some(context(trace, span, None)?),
            sampled: None,
            debug: false,
        }),
        [trace, span, st] | [trace, span, st, _] => {
            if let [_, _, _, parent] = fields.as_slice() {
                span_id(parent)?;
            }
            let (sampled, debug) = state(st)?;
            Ok(B3 {
                context: Some(context(trace, span, sampled)?),
                sampled,
                debug,
            })
        }
        _ => Err(B3Error::Malformed),
    }
}

/// "Multiple headers": `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`. `None` when
/// none of them is present.
pub fn parse_multi<'a>(header: &dyn Fn(&str) -> Option<&'a str>) -> Option<Result<B3, B3Error>> {
    let trace = header(TRACE_ID);
    let span = header(SPAN_ID);
    let sampled = header(SAMPLED);
    let flags = header(FLAGS);
    if trace.is_none() && span.is_none() && sampled.is_none() && flags.is_none() {
        return None;
    }
    Some(multi(trace, span, sampled, flags))
}

fn multi(
    trace: Option<&str>,
    span: Option<&str>,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Result<B3, B3Error> {
    // "Debug is encoded as X-B3-Flags: 1"; debug implies accept.
    let debug = flags.map(str::trim) == Some("1");
    let sampled = match sampled.map(str::trim) {
        None => None,
        // "Before this specification was written, some tracers propagated X-B3-Sampled as true
        // or false": accepted on input.
        Some("1") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        Some(_) => return Err(B3Error::BadSamplingState),
    };
    let sampled = if debug { Some(true) } else { sampled };
    let context = match (trace, span) {
        (Some(t), Some(s)) => Some(context(t.trim(), s.trim(), sampled)?),
        (None, None) => None,
        _ => return Err(B3Error::Malformed),
    };
    Ok(B3 {
        context,
        sampled,
        debug,
    })
}

/// The single header for a context we send on; a 64-bit-origin id is written in full
/// (128-bit), which every current B3 implementation reads.
pub fn format_single(ctx: &SpanContext) -> String {
    let mut s = String::with_capacity(51);
    push_hex(&mut s, &ctx.trace_id.0);
    s.push('-');
    push_hex(&mut s, &ctx.span_id.0);
    s.push_str(if ctx.flags.sampled() { "-1" } else { "-0" });
    s
}

/// The multi headers for a context we send on (set) and the ones to clear.
pub(crate) fn format_multi(ctx: &SpanContext) -> Vec<(&'static str, Option<String>)> {
    vec![
        (TRACE_ID, Some(ctx.trace_id.to_hex())),
        (SPAN_ID, Some(ctx.span_id.to_hex())),
        (
            SAMPLED,
            Some(if ctx.flags.sampled() { "1" } else { "0" }.to_string()),
        ),
        // Our span's parent is not ours to describe to the next hop; stale values must go.
        (PARENT_SPAN_ID, None),
        (FLAGS, None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T64: &str = "a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    /// (trace id, sampling decision, debug) or the error.
    type Summary = Result<(Option<String>, Option<bool>, bool), B3Error>;

    fn summary(r: Result<B3, B3Error>) -> Summary {
        r.map(|b| (b.context.map(|c| c.trace_id.to_hex()), b.sampled, b.debug))
    }

    #[test]
    fn single_header() {
        use B3Error::*;
        let padded = format!("{}{T64}", "0".repeat(16));
        let cases: Vec<(String, Summary, &str)> = vec![
            (
                format!("{T}-{S}-1"),
                Ok((Some(T.into()), Some(true), false)),
                "128-bit, sampled",
            ),
            (
                format!("{T}-{S}-0"),
                Ok((Some(T.into()), Some(false), false)),
                "not sampled",
            ),
            (
                format!("{T}-{S}-d"),
                Ok((Some(T.into()), Some(true), true)),
                "debug",
            ),
            (
                format!("{T}-{S}"),
                Ok((Some(T.into()), None, false)),
                "deferred decision",
            ),
            (
                format!("{T}-{S}-1-{S}"),
                Ok((Some(T.into()), Some(true), false)),
                "with parent",
            ),
            (
                format!("{T64}-{S}-1"),
                Ok((Some(padded), Some(true), false)),
                "64-bit id padded",
            ),
            ("0".into(), Ok((None, Some(false), false)), "deny only"),
            ("1".into(), Ok((None, Some(true), false)), "accept only"),
            ("d".into(), Ok((None, Some(true), true)), "debug only"),
            (
                format!("{}-{S}-1", T.to_uppercase()),
                Err(BadTraceId),
                "uppercase",
            ),
            (
                format!("{}-{S}-1", "0".repeat(32)),
                Err(BadTraceId),
                "zero trace id",
            ),
            (
                format!("{T}-{}-1", "0".repeat(16)),
                Err(BadSpanId),
                "zero span id",
            ),
            (
                format!("{}-{S}-1", &T[..20]),
                Err(BadTraceId),
                "odd-length trace id",
            ),
            (
                format!("{T}-{S}-2"),
                Err(BadSamplingState),
                "unknown sampling state",
            ),
            (format!("{T}-{S}-1-zz"), Err(BadSpanId), "bad parent id"),
            (
                format!("{T}-{S}-1-{S}-x"),
                Err(Malformed),
                "too many fields",
            ),
            (
                "true".into(),
                Err(BadSamplingState),
                "single header has no true/false",
            ),
            (String::new(), Err(BadSamplingState), "empty"),
        ];
        for (input, want, reason) in cases {
            assert_eq!(summary(parse_single(&input)), want, "{reason}: {input}");
        }
    }

    #[test]
    fn multi_headers() {
        use B3Error::*;
        type Row<'a> = ([Option<&'a str>; 4], Option<Summary>, &'a str);
        let cases: Vec<Row> = vec![
            ([None, None, None, None], None, "no B3 headers"),
            (
                [Some(T), Some(S), Some("1"), None],
                Some(Ok((Some(T.into()), Some(true), false))),
                "sampled",
            ),
            (
                [Some(T), Some(S), Some("true"), None],
                Some(Ok((Some(T.into()), Some(true), false))),
                "legacy true",
            ),
            (
                [Some(T), Some(S), None, Some("1")],
                Some(Ok((Some(T.into()), Some(true), true))),
                "debug flag",
            ),
            (
                [Some(T), Some(S), None, None],
                Some(Ok((Some(T.into()), None, false))),
                "deferred",
            ),
            (
                [None, None, Some("0"), None],
                Some(Ok((None, Some(false), false))),
                "decision only",
            ),
            (
                [Some(T), None, Some("1"), None],
                Some(Err(Malformed)),
                "trace id without span id",
            ),
            (
                [Some(T), Some(S), Some("yes"), None],
                Some(Err(BadSamplingState)),
                "bad sampled",
            ),
        ];
        for ([t, s, sampled, flags], want, reason) in cases {
            let lookup = move |name: &str| match name {
                TRACE_ID => t,
                SPAN_ID => s,
                SAMPLED => sampled,
                FLAGS => flags,
                _ => None,
            };
            assert_eq!(parse_multi(&lookup).map(summary), want, "{reason}");
        }
    }

    #[test]
    fn formats_round_trip() {
        let ctx = parse_single(&format!("{T}-{S}-1"))
            .unwrap()
            .context
            .unwrap();
        assert_eq!(format_single(&ctx), format!("{T}-{S}-1"));
        let multi = format_multi(&ctx);
        assert!(multi.contains(&(TRACE_ID, Some(T.to_string()))));
        assert!(multi.contains(&(SAMPLED, Some("1".to_string()))));
        assert!(multi.contains(&(PARENT_SPAN_ID, None)));
    }
}
