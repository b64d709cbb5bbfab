//! `x-request-id`: Envoy's and Istio's request correlation id. Forwarded when it looks like an
//! id, generated (UUIDv4, RFC 9562 §5.4) when missing or unfit.

use crate::ids::{push_hex, IdGenerator};

/// Longest incoming id forwarded; real ids (UUIDs, ULIDs, cloud trace ids) are far shorter.
pub const MAX_LEN: usize = 128;

/// An opaque id of sane length made of visible ASCII that cannot break a log line, a header
/// list or a CSV/JSON field: no spaces, controls, quotes, commas, semicolons or backslashes.
pub fn is_acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(allowed)
}

/// The bytes [`is_acceptable`] allows, one bit each: every request with an `x-request-id` checks
/// it, and one table lookup per byte costs a Wasm VM a quarter of the range and four comparisons.
const ALLOWED: [u64; 2] = [allowed_bits(0), allowed_bits(64)];

/// The allowed bytes among `base..base + 64`.
const fn allowed_bits(base: u8) -> u64 {
    let mut bits = 0;
    let mut i = 0;
    while i < 64 {
        let b = base + i;
        if b >= 0x21 && b <= 0x7e && !matches!(b, b'"' | b',' | b';' | b'\\') {
            bits |= 1 << i;
        }
        i += 1;
    }
    bits
}

fn allowed(b: u8) -> bool {
    ALLOWED
        .get(usize::from(b / 64))
        .is_some_and(|bits| bits & (1 << (b % 64)) != 0)
}

/// A random UUID, version 4 (RFC 9562 §5.4): version nibble 4, variant bits `10`.
pub(crate) fn generate(ids: &mut IdGenerator) -> String {
    let mut b = ids.bytes16();
    if let Some(v) = b.get_mut(6) {
        *v = (*v & 0x0f) | 0x40;
    }
    if let Some(v) = b.get_mut(8) {
        *v = (*v & 0x3f) | 0x80;
    }
    let mut id = String::with_capacity(36);
    for (i, group) in [0..4, 4..6, 6..8, 8..10, 10..16].into_iter().enumerate() {
        if i > 0 {
            id.push('-');
        }
        push_hex(&mut id, b.get(group).unwrap_or_default());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table says what the rule says, byte by byte.
    #[test]
    fn the_allowed_table_is_the_rule() {
        for b in 0..=255u8 {
            let rule = (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\');
            assert_eq!(allowed(b), rule, "byte {b:#04x}");
        }
    }

    #[test]
    fn acceptable_ids() {
        let long = "a".repeat(MAX_LEN + 1);
        let cases = [
            ("a0b1c2d3-req-42", true, "opaque token"),
            ("123e4567-e89b-12d3-a456-426614174000", true, "UUID"),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", true, "ULID"),
            (
                "Root=1-5759e988-bd862e3fe1be46a994272793",
                true,
                "AWS trace id",
            ),
            ("", false, "empty"),
            ("bad id", false, "space"),
            ("bad\tid", false, "control character"),
            ("a,b", false, "comma would split a header list"),
            ("caf\u{e9}", false, "non-ASCII"),
            (long.as_str(), false, "too long"),
        ];
        for (id, want, reason) in cases {
            assert_eq!(is_acceptable(id), want, "{reason}");
        }
    }

    #[test]
    fn generated_ids_are_uuid_v4() {
        let mut ids = IdGenerator::from_seed(7);
        for _ in 0..100 {
            let id = generate(&mut ids);
            let b = id.as_bytes();
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(
                (b[8], b[13], b[18], b[23]),
                (b'-', b'-', b'-', b'-'),
                "{id}"
            );
            assert_eq!(b[14], b'4', "version 4: {id}");
            assert!(
                matches!(b[19], b'8' | b'9' | b'a' | b'b'),
                "variant 10: {id}"
            );
            assert!(is_acceptable(&id));
        }
        assert_ne!(generate(&mut ids), generate(&mut ids));
    }
}
