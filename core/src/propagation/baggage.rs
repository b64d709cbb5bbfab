//! The `baggage` header (W3C Baggage): passed through, member by member, within the spec's
//! limits, so application key-values survive the proxy unchanged.

/// W3C Baggage §3.3 (limits): at least 64 list-members and 8192 bytes must be propagated; we
/// propagate exactly that much and drop members beyond it.
pub const MAX_MEMBERS: usize = 64;
pub const MAX_BYTES: usize = 8192;

/// Combines repeated headers and keeps the well-formed members within the limits. `None` when
/// nothing valid remains (no empty header is sent).
pub fn normalize<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut out = String::new();
    let mut count = 0;
    for member in values.flat_map(|v| v.split(',')) {
        // §3.2.1: optional whitespace around list-members.
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() || !valid_member(member) {
            continue;
        }
        let extra = member.len() + usize::from(!out.is_empty());
        if count == MAX_MEMBERS || out.len() + extra > MAX_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
        count += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// §3.2.1: `key OWS "=" OWS value *( OWS ";" OWS property )`; key is an RFC 9110 token, value
/// is baggage-octets (percent-encoding keeps it ASCII); properties are passed through as long
/// as they contain no control characters.
fn valid_member(member: &str) -> bool {
    let (kv, properties) = member.split_once(';').unwrap_or((member, ""));
    let Some((key, value)) = kv.split_once('=') else {
        return false;
    };
    let key = key.trim_matches([' ', '\t']);
    let value = value.trim_matches([' ', '\t']);
    !key.is_empty()
        && key.bytes().all(tchar)
        && value.bytes().all(baggage_octet)
        && properties
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// RFC 9110 §5.6.2 token characters.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// §3.2.1.1: `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E` (no space, `"`, `,`, `;`, `\`).
fn baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_pass_through_within_limits() {
        let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
            (
                vec!["userId=alice,tier=gold"],
                Some("userId=alice,tier=gold"),
                "plain",
            ),
            (
                vec!["a=1", "b=2"],
                Some("a=1,b=2"),
                "repeated headers combine",
            ),
            (
                vec![" a = 1 , b=2"],
                Some("a = 1,b=2"),
                "whitespace kept inside members",
            ),
            (vec!["a=1;ttl=60"], Some("a=1;ttl=60"), "properties pass"),
            (vec!["a=%20x"], Some("a=%20x"), "percent-encoded value"),
            (vec!["a=b c,ok=1"], Some("ok=1"), "space inside a value"),
            (vec!["=1,ok=1"], Some("ok=1"), "empty key"),
            (vec!["noequals,ok=1"], Some("ok=1"), "no '='"),
            (vec!["k\u{e9}=1,ok=1"], Some("ok=1"), "non-token key"),
            (vec![""], None, "empty header not sent on"),
        ];
        for (values, want, reason) in cases {
            assert_eq!(normalize(values.into_iter()).as_deref(), want, "{reason}");
        }
    }

    #[test]
    fn limits_drop_members_from_the_end() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let out = normalize([many.join(",").as_str()].into_iter()).unwrap();
        assert_eq!(out.split(',').count(), MAX_MEMBERS);
        assert!(out.starts_with("k0=v,"));
        let big: Vec<String> = (0..10)
            .map(|i| format!("k{i}={}", "x".repeat(1000)))
            .collect();
        let out = normalize([big.join(",").as_str()].into_iter()).unwrap();
        assert!(out.len() <= MAX_BYTES);
        assert_eq!(out.split(',').count(), 8);
    }
}
