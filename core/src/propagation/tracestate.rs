//! The `tracestate` header (W3C Trace Context Level 2 §3.3): vendor entries that travel with
//! the trace, validated member by member and kept within the spec's size limits.

/// §3.3.1.1: at most 32 list-members.
pub const MAX_MEMBERS: usize = 32;
/// §3.3.1.5: vendors should propagate at least 512 characters; beyond that we truncate.
pub const MAX_LEN: usize = 512;
/// §3.3.1.5: members longer than this are the first to go when truncating.
const LONG_MEMBER: usize = 128;
/// §3.3.1.3.1: simple keys are at most 256 characters; tenant ids 241, system ids 14.
const MAX_SIMPLE_KEY: usize = 256;
const MAX_TENANT_ID: usize = 241;
const MAX_SYSTEM_ID: usize = 14;
/// §3.3.1.3.2: values are at most 256 characters.
const MAX_VALUE: usize = 256;

/// Valid list-members in header order (leftmost = most recently updated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Combines every `tracestate` value of a request in order (§3.3.1: repeated headers are
    /// one list, RFC 9110 §5.3), keeping valid members and dropping invalid ones and duplicated
    /// keys (the first occurrence wins), then applies the size limits.
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> TraceState {
        let mut members: Vec<(String, String)> = Vec::new();
        for member in values.flat_map(|v| v.split(',')) {
            // §3.3.1: optional whitespace around members; empty members are allowed and ignored.
            let member = member.trim_matches([' ', '\t']);
            let Some((key, value)) = member.split_once('=') else {
                continue;
            };
            if !valid_key(key) || !valid_value(value) {
                continue;
            }
            if members.iter().any(|(k, _)| k == key) {
                continue;
            }
            members.push((key.to_string(), value.to_string()));
        }
        let mut state = TraceState { members };
        state.enforce_limits();
        state
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// §3.5 (mutating tracestate): an updated or added entry moves to the left; the rightmost
    /// entries make room. Invalid entries are refused (no change).
    pub fn upsert_front(&mut self, key: &str, value: &str) {
        if !valid_key(key) || !valid_value(value) {
            return;
        }
        self.remove(key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.enforce_limits();
    }

    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The header to send; `None` when there is nothing to send (§3.3: an empty tracestate
    /// header is not sent).
    pub fn header_value(&self) -> Option<String> {
        if self.members.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(self.encoded_len());
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        Some(out)
    }

    fn encoded_len(&self) -> usize {
        let members: usize = self
            .members
            .iter()
            .map(|(k, v)| k.len() + 1 + v.len())
            .sum();
        members + self.members.len().saturating_sub(1)
    }

    /// §3.3.1.1: keep the leftmost 32 members. §3.3.1.5: over 512 characters, remove members
    /// longer than 128 characters first, then members from the right.
    fn enforce_limits(&mut self) {
        self.members.truncate(MAX_MEMBERS);
        while self.encoded_len() > MAX_LEN {
            let long = self
                .members
                .iter()
                .rposition(|(k, v)| k.len() + 1 + v.len() > LONG_MEMBER);
            match long {
                Some(i) => {
                    self.members.remove(i);
                }
                None => {
                    self.members.pop();
                }
            }
        }
    }
}

fn lcalpha(b: u8) -> bool {
    b.is_ascii_lowercase()
}

/// §3.3.1.3.1: `lcalpha / DIGIT / "_" / "-" / "*" / "/"` after the first character.
fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// §3.3.1.3.1: `simple-key` (lcalpha first) or `tenant-id@system-id` (multi-tenant key).
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            b.len() <= MAX_SIMPLE_KEY
                && b.first().is_some_and(|c| lcalpha(*c))
                && b.iter().all(|c| key_char(*c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=MAX_TENANT_ID).contains(&t.len())
                && t.first().is_some_and(|c| lcalpha(*c) || c.is_ascii_digit())
                && t.iter().all(|c| key_char(*c))
                && (1..=MAX_SYSTEM_ID).contains(&s.len())
                && s.first().is_some_and(|c| lcalpha(*c))
                && s.iter().all(|c| key_char(*c))
        }
    }
}

/// §3.3.1.3.2: printable ASCII except `,` and `=`, spaces allowed inside but not at the end,
/// 1 to 256 characters.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    let nblk = |c: u8| (0x21..=0x7e).contains(&c) && c != b',' && c != b'=';
    (1..=MAX_VALUE).contains(&b.len())
        && b.last().is_some_and(|c| nblk(*c))
        && b.iter().all(|c| *c == b' ' || nblk(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Option<String> {
        TraceState::parse(values.iter().copied()).header_value()
    }

    #[test]
    fn members_are_validated_one_by_one() {
        let long_key = format!("a{}", "b".repeat(256));
        let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
            (
                vec!["congo=t61rcWkgMzE"],
                Some("congo=t61rcWkgMzE"),
                "simple member",
            ),
            (
                vec!["congo=1", "rojo=2"],
                Some("congo=1,rojo=2"),
                "repeated headers combine",
            ),
            (
                vec![" congo=1 ,\trojo=2"],
                Some("congo=1,rojo=2"),
                "optional whitespace",
            ),
            (
                vec!["congo=1,,rojo=2,"],
                Some("congo=1,rojo=2"),
                "empty members ignored",
            ),
            (
                vec!["fw529a3039@dt=x"],
                Some("fw529a3039@dt=x"),
                "tenant@system key",
            ),
            (
                vec!["1tenant@sys=x"],
                Some("1tenant@sys=x"),
                "tenant id may start with a digit",
            ),
            (
                vec!["1simple=x,ok=1"],
                Some("ok=1"),
                "simple key must start with a letter",
            ),
            (vec!["t@Sys=x,ok=1"], Some("ok=1"), "uppercase system id"),
            (
                vec!["t@abcdefghijklmno=x,ok=1"],
                Some("ok=1"),
                "system id over 14 characters",
            ),
            (
                vec!["Bad Key=1,ok=2"],
                Some("ok=2"),
                "invalid key dropped, valid kept",
            ),
            (vec!["k=,ok=2"], Some("ok=2"), "empty value"),
            (
                vec!["k=a b,ok=2"],
                Some("k=a b,ok=2"),
                "inner space allowed",
            ),
            (
                vec!["k=a ,ok=2"],
                Some("k=a,ok=2"),
                "trailing space is whitespace",
            ),
            (vec!["k=a=b,ok=2"], Some("ok=2"), "'=' in value"),
            (vec!["k=\u{e9},ok=2"], Some("ok=2"), "non-ASCII value"),
            (vec!["k=1,k=2"], Some("k=1"), "duplicate key: first wins"),
            (vec![""], None, "empty header is not sent on"),
            (vec!["garbage"], None, "no valid member: no header"),
        ];
        for (values, want, reason) in cases {
            assert_eq!(parse(&values).as_deref(), want, "{reason}");
        }
        let with_long_key = format!("{long_key}=1,ok=2");
        assert_eq!(
            parse(&[&with_long_key]).as_deref(),
            Some("ok=2"),
            "key over 256"
        );
    }

    #[test]
    fn limits_keep_the_leftmost_members() {
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v{i}")).collect();
        let state = TraceState::parse([members.join(",").as_str()].into_iter());
        assert_eq!(state.len(), MAX_MEMBERS, "33 members → 32");
        assert_eq!(state.get("k0"), Some("v0"));
        assert_eq!(state.get("k32"), None, "the rightmost member goes");

        let big: Vec<String> = (0..12)
            .map(|i| format!("key{i}={}", "x".repeat(60)))
            .collect();
        let out = parse(&[&big.join(",")]).unwrap();
        assert!(out.len() <= MAX_LEN, "{} characters", out.len());
        assert!(out.starts_with("key0="), "truncated from the right");

        let long = format!("long={}", "y".repeat(200));
        let mixed = format!("a=1,{long},{}", big.join(","));
        let out = parse(&[&mixed]).unwrap();
        assert!(
            !out.contains("long="),
            "members over 128 characters go first"
        );
        assert!(out.starts_with("a=1,key0="));
    }

    #[test]
    fn our_entry_moves_to_the_front() {
        let mut state = TraceState::parse(["congo=1,ot=th:8,rojo=2"].into_iter());
        state.upsert_front("ot", "th:c");
        assert_eq!(
            state.header_value().as_deref(),
            Some("ot=th:c,congo=1,rojo=2")
        );
        state.remove("ot");
        assert_eq!(state.header_value().as_deref(), Some("congo=1,rojo=2"));
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let mut full = TraceState::parse([members.join(",").as_str()].into_iter());
        full.upsert_front("ot", "th:0");
        assert_eq!(
            full.len(),
            MAX_MEMBERS,
            "adding to a full list drops the rightmost"
        );
        assert_eq!(full.get("k31"), None);
        full.upsert_front("ot", "bad,value");
        assert_eq!(full.get("ot"), Some("th:0"), "invalid values are refused");
    }
}
