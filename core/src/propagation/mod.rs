//! Context propagation: reading the trace context a request arrived with (W3C Trace Context,
//! B3, W3C Baggage) and writing the one it leaves with. Pure functions over header lists.
//!
//! The configured propagators are tried in order (as `OTEL_PROPAGATORS` composes them); the first
//! valid context wins. An invalid `traceparent` is recorded and, per W3C Trace Context §3.2.2,
//! never forwarded: the request continues with another format's context or a new trace.

pub mod b3;
pub mod baggage;
pub mod request_id;
pub mod traceparent;
pub mod tracestate;

pub(crate) use self::b3::B3Error;
pub(crate) use self::traceparent::TraceparentError;
pub use self::tracestate::{TraceState, TraceStateError};

use crate::config::Propagator;
use crate::context::SpanContext;
use crate::headers::HeaderMap;

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";
pub(crate) const BAGGAGE: &str = "baggage";

/// Why the incoming context was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Traceparent(TraceparentError),
    B3(B3Error),
}

/// The context a request arrived with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's span, when a valid context was found.
    pub parent: Option<SpanContext>,
    /// The format it came in.
    pub source: Option<Propagator>,
    /// The caller's vendor entries; empty unless the parent came from a valid `traceparent`
    /// (W3C Trace Context "Tracestate Header": tracestate without a valid traceparent is not
    /// parsed) and the header could be parsed.
    pub tracestate: TraceState,
    /// Why the caller's `tracestate` was discarded whole, if it was (the trace continues).
    pub tracestate_discarded: Option<TraceStateError>,
    /// Normalized incoming baggage, when `baggage` is extracted.
    pub baggage: Option<String>,
    /// The caller's sampling decision: the sampled flag of a W3C parent, or B3's explicit
    /// decision (B3 can carry one without ids, or defer with ids and no decision).
    pub sampling_hint: Option<bool>,
    /// B3 debug (`d`, `X-B3-Flags: 1`).
    pub debug: bool,
    /// The first invalid context seen, if any (counted; the trace restarts unless another
    /// format carried a valid one).
    pub invalid: Option<Invalid>,
}

/// Reads the request's context with the given propagators, in priority order. `headers` are
/// lowercase names as the proxy delivers them, repeated names kept.
pub fn extract(headers: &HeaderMap, propagators: &[Propagator]) -> Extracted {
    let values = |name: &'static str| headers.get_all(name);
    let first = |name: &str| headers.get(name);
    let mut out = Extracted::default();
    for propagator in propagators {
        if out.parent.is_some() {
            break;
        }
        match propagator {
            Propagator::Tracecontext => match traceparent::parse_all(values(TRACEPARENT)) {
                None => {}
                Some(Ok(ctx)) => {
                    out.parent = Some(ctx);
                    out.source = Some(Propagator::Tracecontext);
                    out.sampling_hint = Some(ctx.flags.sampled());
                    match TraceState::parse(values(TRACESTATE)) {
                        Ok(state) => out.tracestate = state,
                        Err(e) => out.tracestate_discarded = Some(e),
                    }
                }
                Some(Err(e)) => {
                    out.invalid.get_or_insert(Invalid::Traceparent(e));
                }
            },
            Propagator::B3 => {
                if let Some(value) = first(b3::SINGLE) {
                    apply_b3(&mut out, b3::parse_single(value), Propagator::B3);
                }
            }
            Propagator::B3multi => {
                if let Some(result) = b3::parse_multi(&first) {
                    apply_b3(&mut out, result, Propagator::B3multi);
                }
            }
            Propagator::Baggage => {}
        }
    }
    if propagators.contains(&Propagator::Baggage) {
        out.baggage = baggage::normalize(values(BAGGAGE));
    }
    out
}

/// Says at debug level what was discarded and why; nothing is formatted unless debug logging
/// is on (a `log` level check, no host call once the level is cached).
pub(crate) fn log_discarded(extracted: &Extracted) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    if let Some(invalid) = extracted.invalid {
        log::debug!("meshtrace: incoming trace context discarded: {invalid:?}");
    }
    if let Some(e) = extracted.tracestate_discarded {
        log::debug!("meshtrace: incoming tracestate discarded whole: {e:?}");
    }
}

fn apply_b3(out: &mut Extracted, result: Result<b3::B3, B3Error>, source: Propagator) {
    match result {
        Ok(b) => {
            // A decision-only header (`b3: 0`) informs sampling even without ids; the first
            // format that carried a decision keeps it.
            if out.sampling_hint.is_none() {
                out.sampling_hint = b.sampled;
                out.debug = b.debug;
            }
            if let Some(ctx) = b.context {
                out.parent = Some(ctx);
                out.source = Some(source);
                out.sampling_hint = b.sampled;
                out.debug = b.debug;
            }
        }
        Err(e) => {
            out.invalid.get_or_insert(Invalid::B3(e));
        }
    }
}

/// The headers to write on the request sent on, handed to `emit` one by one: `Some` sets
/// (replacing every value), `None` removes. Formats that are extracted but not injected are
/// removed, so no stale context that disagrees with ours reaches the next hop. (A callback, not a
/// returned `Vec`: one allocation less per request.)
pub fn inject(
    context: &SpanContext,
    tracestate: &TraceState,
    baggage: Option<&str>,
    inject: &[Propagator],
    extract: &[Propagator],
    mut emit: impl FnMut(&'static str, Option<&str>),
) {
    let injects = |p: Propagator| inject.contains(&p);
    let stale = |p: Propagator| extract.contains(&p) && !inject.contains(&p);
    if injects(Propagator::Tracecontext) {
        emit(
            TRACEPARENT,
            Some(traceparent::write(context, &mut [0; traceparent::LEN])),
        );
        // §3.3: never an empty tracestate header.
        emit(TRACESTATE, tracestate.header_value().as_deref());
    } else if stale(Propagator::Tracecontext) {
        emit(TRACEPARENT, None);
        emit(TRACESTATE, None);
    }
    if injects(Propagator::B3) {
        emit(b3::SINGLE, Some(&b3::format_single(context)));
    } else if stale(Propagator::B3) {
        emit(b3::SINGLE, None);
    }
    if injects(Propagator::B3multi) {
        for (name, value) in b3::format_multi(context) {
            emit(name, value.as_deref());
        }
    } else if stale(Propagator::B3multi) {
        for name in b3::MULTI_HEADERS {
            emit(name, None);
        }
    }
    // Baggage is the application's data, not a context: it is only rewritten (normalized) when
    // both read and written, and otherwise left as it came.
    if injects(Propagator::Baggage) && extract.contains(&Propagator::Baggage) {
        emit(BAGGAGE, baggage);
    }
}

#[cfg(test)]
mod tests;
