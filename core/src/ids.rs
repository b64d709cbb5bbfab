//! Trace and span identifiers (W3C Trace Context §3.2.2.3, §3.2.2.4) and their generator.

use std::fmt;

/// Bytes in a trace id (W3C Trace Context §3.2.2.3: 16 bytes, 32 hex characters).
pub(crate) const TRACE_ID_LEN: usize = 16;
/// Bytes in a span (parent) id (W3C Trace Context §3.2.2.4: 8 bytes, 16 hex characters).
pub(crate) const SPAN_ID_LEN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; TRACE_ID_LEN]);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; SPAN_ID_LEN]);

impl TraceId {
    /// An all-zero trace id is invalid (§3.2.2.3).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; TRACE_ID_LEN]
    }

    /// Lowercase hex, as every format we emit requires.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// Parses exactly 32 lowercase hex characters.
    pub fn from_hex(s: &str) -> Option<TraceId> {
        let mut out = [0u8; TRACE_ID_LEN];
        decode_hex_lower(s.as_bytes(), &mut out).then_some(TraceId(out))
    }

    /// The rightmost 56 bits, used as randomness by consistent probability sampling
    /// (OpenTelemetry Trace State §Randomness value; W3C Trace Context Level 2 §3.2.2.5.2).
    pub(crate) fn randomness56(&self) -> u64 {
        let mut v = 0u64;
        for b in self.0.iter().skip(TRACE_ID_LEN - 7) {
            v = (v << 8) | u64::from(*b);
        }
        v
    }
}

impl SpanId {
    /// An all-zero parent id is invalid (§3.2.2.4).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; SPAN_ID_LEN]
    }

    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// Parses exactly 16 lowercase hex characters.
    pub(crate) fn from_hex(s: &str) -> Option<SpanId> {
        let mut out = [0u8; SPAN_ID_LEN];
        decode_hex_lower(s.as_bytes(), &mut out).then_some(SpanId(out))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` as lowercase hex (the header formatters build whole values this way, with
/// no intermediate strings).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    let digit = |n: u8| char::from(HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0'));
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(*b));
    }
}

/// Writes `bytes` as lowercase hex into `out` (room for a trace id) and returns what was
/// written: a value to hand the host without a heap allocation.
pub fn write_hex<'a>(out: &'a mut [u8; 2 * TRACE_ID_LEN], bytes: &[u8]) -> &'a [u8] {
    let digit = |n: u8| HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0');
    let mut len = 0;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [high, low] = pair {
            *high = digit(b >> 4);
            *low = digit(*b);
            len += 2;
        }
    }
    out.get(..len).unwrap_or_default()
}

/// Value of one lowercase hex digit (W3C Trace Context §3.2.2: HEXDIGLC); uppercase is invalid.
pub(crate) fn hex_digit_lower(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes `2 * out.len()` lowercase hex characters into `out`; false on any other input. Not
/// inlined: eight callers, each unrolling a copy of its own, cost the module kilobytes.
#[inline(never)]
pub(crate) fn decode_hex_lower(input: &[u8], out: &mut [u8]) -> bool {
    if input.len() != out.len() * 2 {
        return false;
    }
    for (pair, o) in input.chunks_exact(2).zip(out.iter_mut()) {
        match (pair.first().copied(), pair.get(1).copied()) {
            (Some(h), Some(l)) => match (hex_digit_lower(h), hex_digit_lower(l)) {
                (Some(h), Some(l)) => *o = (h << 4) | l,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Fast, non-cryptographic id generator, seeded once per VM from the OS (`getrandom`). Trace ids
/// it makes are random in all 128 bits, as the W3C Level 2 random flag promises (§3.2.2.5.2).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    rng: fastrand::Rng,
}

impl IdGenerator {
    pub fn from_seed(seed: u64) -> Self {
        IdGenerator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn trace_id(&mut self) -> TraceId {
        loop {
            let id = TraceId(self.rng.u128(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    pub(crate) fn span_id(&mut self) -> SpanId {
        loop {
            let id = SpanId(self.rng.u64(..).to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    pub(crate) fn u64(&mut self) -> u64 {
        self.rng.u64(..)
    }

    /// 16 random bytes (for UUIDs).
    pub(crate) fn bytes16(&mut self) -> [u8; 16] {
        self.rng.u128(..).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn write_hex_writes_what_to_hex_does_without_allocating() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut buf = [b'x'; 2 * TRACE_ID_LEN];
        assert_eq!(write_hex(&mut buf, &trace.0), trace.to_hex().as_bytes(), "a trace id fills the buffer");
        assert_eq!(write_hex(&mut buf, &span.0), span.to_hex().as_bytes(), "a span id reuses it: only its 16 digits");
        assert_eq!(write_hex(&mut buf, &[0xff; 20]), [b'f'; 32].as_slice(), "more bytes than room: cut, never a panic");
        assert_eq!(write_hex(&mut buf, &[]), b"".as_slice(), "nothing");
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let cases = [
            (
                "4BF92F3577B34DA6A3CE929D0E0E4736",
                "uppercase is not HEXDIGLC",
            ),
            ("4bf92f3577b34da6a3ce929d0e0e473", "31 characters"),
            ("4bf92f3577b34da6a3ce929d0e0e47366", "33 characters"),
            ("4bf92f3577b34da6a3ce929d0e0e473g", "non-hex character"),
            ("4bf92f3577b34da6a3ce929d0e0e47 6", "space inside"),
        ];
        for (input, reason) in cases {
            assert_eq!(TraceId::from_hex(input), None, "{reason}");
        }
        assert_eq!(
            SpanId::from_hex("00f067aa0ba902b7").unwrap().to_hex(),
            "00f067aa0ba902b7"
        );
    }

    #[test]
    fn generated_ids_are_valid_distinct_and_reproducible_from_a_seed() {
        let mut generator = IdGenerator::from_seed(7);
        let ids: Vec<(TraceId, SpanId)> = (0..10_000)
            .map(|_| (generator.trace_id(), generator.span_id()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (trace, span) in &ids {
            assert!(trace.is_valid() && span.is_valid(), "never all-zero");
            assert!(seen.insert(*trace), "duplicate trace id {trace:?}");
        }
        let mut replay = IdGenerator::from_seed(7);
        let replayed: Vec<(TraceId, SpanId)> = (0..ids.len())
            .map(|_| (replay.trace_id(), replay.span_id()))
            .collect();
        assert_eq!(ids, replayed, "the same seed gives the same sequence");
    }

    #[test]
    fn randomness_is_the_rightmost_56_bits() {
        let id = TraceId::from_hex("ffffffffffffffffff0123456789abcd").unwrap();
        assert_eq!(id.randomness56(), 0x0123456789abcd);
    }
}
