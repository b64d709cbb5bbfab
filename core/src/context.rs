//! The span context that travels between hops (W3C Trace Context §3.2: trace-id, parent-id,
//! trace-flags), independent of the header format that carried it.

use crate::ids::{SpanId, TraceId};

/// W3C Trace Context §3.2.2.5 trace-flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceFlags(pub u8);

impl TraceFlags {
    /// §3.2.2.5.1: the caller may have recorded trace data.
    pub const SAMPLED: u8 = 0x01;
    /// Level 2 §3.2.2.5.2: the rightmost 7 bytes of the trace id are random.
    pub(crate) const RANDOM: u8 = 0x02;
    /// The flags this implementation understands and propagates; other bits are dropped
    /// (§3.2.2.5: "vendors MUST set unknown flags to zero" when they modify the header).
    pub(crate) const KNOWN: u8 = Self::SAMPLED | Self::RANDOM;

    pub(crate) fn sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }

    pub(crate) fn with_sampled(self, sampled: bool) -> TraceFlags {
        if sampled {
            TraceFlags(self.0 | Self::SAMPLED)
        } else {
            TraceFlags(self.0 & !Self::SAMPLED)
        }
    }

    /// Only the bits we understand survive into headers we write.
    pub(crate) fn known(self) -> TraceFlags {
        TraceFlags(self.0 & Self::KNOWN)
    }
}

/// The identity of one span, plus its trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}
