//! The `tracestate` header (W3C Trace Context Level 2, `spec/20-http_request_header_format.md`
//! "Tracestate Header"): vendor entries that travel with the trace. A header that cannot be
//! parsed is discarded whole, as the processing model allows ("If the `tracestate` header cannot
//! be parsed the vendor MAY discard the entire header", `spec/30-processing-model.md`) and as
//! the spec's conformance harness (`test/test.py`) and OpenTelemetry's SDKs read it; the trace
//! itself continues.

/// "list": at most 32 list-members; a list with more cannot be parsed.
pub const MAX_MEMBERS: usize = 32;
/// "tracestate Limits": vendors should propagate at least 512 characters; beyond that we
/// truncate whole entries.
pub const MAX_LEN: usize = 512;
/// "tracestate Limits": entries longer than this are the first to go when truncating.
const LONG_MEMBER: usize = 128;
/// "Key": `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`.
const MAX_KEY: usize = 256;
/// "Value": `value = 0*255(chr) nblk-chr`.
const MAX_VALUE: usize = 256;

/// Why a `tracestate` header was discarded whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStateError {
    /// A list-member that is neither empty nor a valid `key=value`.
    InvalidMember,
    /// More than [`MAX_MEMBERS`] list-members.
    TooManyMembers,
}

/// Valid list-members in header order (leftmost = most recently updated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Combines every `tracestate` value of a request in order ("tracestate Header Field
    /// Values": repeated headers are one list, RFC 9110 §5.3). Empty and whitespace-only members
    /// are allowed and skipped; any other invalid member, or more than 32 members, makes the
    /// whole header unparsable. A repeated key keeps its first occurrence (the harness's
    /// `test_tracestate_duplicated_keys` accepts either). Over 512 characters, whole entries are
    /// truncated.
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Result<TraceState, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut count = 0;
        for member in values.flat_map(|v| v.split(',')) {
            // "list": optional whitespace (spaces, tabs) around members.
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            let Some((key, value)) = member.split_once('=') else {
                return Err(TraceStateError::InvalidMember);
            };
            if !valid_key(key) || !valid_value(value) {
                return Err(TraceStateError::InvalidMember);
            }
            if !members.iter().any(|(k, _)| k == key) {
                members.push((key.to_string(), value.to_string()));
            }
        }
        let mut state = TraceState { members };
        state.enforce_limits();
        Ok(state)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// "Mutating the tracestate Field": an updated or added entry moves to the left; the rightmost
    /// entries make room. Invalid entries are refused (no change).
    pub fn upsert_front(&mut self, key: &str, value: &str) {
        if !valid_key(key) || !valid_value(value) {
            return;
        }
        self.remove(key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.enforce_limits();
    }

    pub(crate) fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The header to send; `None` when there is nothing to send (vendors "SHOULD avoid sending"
    /// an empty `tracestate`).
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

    /// "list": keep the leftmost 32 members when adding. "tracestate Limits": over 512 characters, remove members
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

/// "Key": `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`.
fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
}

/// "Key": a lowercase letter or digit first, then up to 255 `keychar`. (The older
/// `tenant@system` form with its own limits is gone from the current text.)
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() <= MAX_KEY
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|c| key_char(*c))
}

/// "Value": printable ASCII except `,` and `=`, spaces allowed (leading ones are part of the
/// value) but not at the end, 1 to 256 characters.
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
    use TraceStateError::{InvalidMember, TooManyMembers};

    /// What is sent on for these incoming values, or why they were discarded.
    fn parse(values: &[&str]) -> Result<Option<String>, TraceStateError> {
        TraceState::parse(values.iter().copied()).map(|s| s.header_value())
    }

    /// Incoming field values, what is sent on (or why all was discarded), reason.
    type Row<'a> = (
        &'a [&'a str],
        Result<Option<&'a str>, TraceStateError>,
        &'a str,
    );

    /// Reasons quote `spec/20-http_request_header_format.md` ("Tracestate Header") or the spec's
    /// conformance harness `test/test.py` of w3c/trace-context.
    #[test]
    #[rustfmt::skip]
    fn members_follow_the_current_grammar() {
        let cases: &[Row] = &[
            (&["congo=t61rcWkgMzE"],       Ok(Some("congo=t61rcWkgMzE")),   "Examples: single tracing system"),
            (&["congo=1", "rojo=2"],       Ok(Some("congo=1,rojo=2")),      "Field Values: multiple fields combine in order (RFC 9110 §5.3)"),
            (&[" congo=1 ,\trojo=2"],      Ok(Some("congo=1,rojo=2")),      "list: spaces and tabs around list-members are ignored"),
            (&["congo=1,,rojo=2,"],        Ok(Some("congo=1,rojo=2")),      "list: empty list members are allowed"),
            (&["congo=1, \t ,rojo=2"],     Ok(Some("congo=1,rojo=2")),      "list: whitespace-only list members are allowed"),
            (&["", "foo=1"],               Ok(Some("foo=1")),               "harness test_tracestate_empty_header: empty field then a member"),
            (&[""],                        Ok(None),                        "vendors MUST accept empty headers but SHOULD avoid sending them"),
            (&["foo@=1,bar=2"],            Ok(Some("foo@=1,bar=2")),        "Key: `@` is a keychar, also last (harness illegal_vendor_format)"),
            (&["foo@@bar=1,bar=2"],        Ok(Some("foo@@bar=1,bar=2")),    "Key: several `@` in a row"),
            (&["foo@bar@baz=1,bar=2"],     Ok(Some("foo@bar@baz=1,bar=2")), "Key: several `@`, the tenant@system form is gone"),
            (&["fw529a3039@dt=x"],         Ok(Some("fw529a3039@dt=x")),     "Key: the former multi-tenant form is still a valid key"),
            (&["1simple=x,ok=1"],          Ok(Some("1simple=x,ok=1")),      "Key: MUST begin with a lowercase letter or a digit"),
            (&["a_-*/@9=x"],               Ok(Some("a_-*/@9=x")),           "Key: every keychar"),
            (&["@foo=1,bar=2"],            Err(InvalidMember),              "Key: `@` may not begin a key: the whole header goes"),
            (&["_foo=1,bar=2"],            Err(InvalidMember),              "Key: `_` may not begin a key"),
            (&["FOO=1,bar=2"],             Err(InvalidMember),              "Key: lowercase only (harness key_illegal_characters)"),
            (&["foo.bar=1,bar=2"],         Err(InvalidMember),              "Key: `.` is not a keychar"),
            (&["foo =1,bar=2"],            Err(InvalidMember),              "Key: a space inside the member is not OWS"),
            (&["bar=2", "t@Sys=x"],        Err(InvalidMember),              "Key: an invalid member in a later field discards every field"),
            (&["garbage,bar=2"],           Err(InvalidMember),              "list-member: `key \"=\" value` or OWS, nothing else"),
            (&["foo=bar=baz"],             Err(InvalidMember),              "Value: `=` excluded (harness value_illegal_characters)"),
            (&["foo=,bar=3"],              Err(InvalidMember),              "Value: at least one nblk-chr (harness: bar is discarded too)"),
            (&["k=\u{e9},ok=2"],           Err(InvalidMember),              "Value: printable ASCII only"),
            (&["k=a\u{7f},ok=2"],          Err(InvalidMember),              "Value: DEL is not printable"),
            (&["k=a b,ok=2"],              Ok(Some("k=a b,ok=2")),          "Value: chr includes inner spaces"),
            (&["k= a,ok=2"],               Ok(Some("k= a,ok=2")),           "Value: leading spaces MUST be preserved"),
            (&["k=a \t,ok=2"],             Ok(Some("k=a,ok=2")),            "Value: trailing spaces are optional whitespace"),
            (&["k=1,k=2"],                 Ok(Some("k=1")),                 "harness duplicated_keys: keeping one of them is allowed"),
            (&["k=1", "k=1"],              Ok(Some("k=1")),                 "harness duplicated_keys: across fields too"),
        ];
        for (values, want, reason) in cases {
            let want = want.map(|v| v.map(str::to_string));
            assert_eq!(parse(values), want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn key_and_value_lengths() {
        let key = |len: usize| "z".repeat(len);
        let at_key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
        let long_at_key = format!("{}@v", "t".repeat(242));
        let long_system = format!("t@{}", "v".repeat(15));
        let value = |len: usize| "v".repeat(len);
        let cases: Vec<(String, bool, &str)> = vec![
            (format!("{}=1", key(256)),   true,  "Key: up to 256 characters"),
            (format!("{}=1", key(257)),   false, "Key: 257 characters is not a key"),
            (format!("{at_key}=1"),       true,  "Key: 256 characters with `@` (harness key_length_limit)"),
            (format!("{long_at_key}=1"),  true,  "Key: no tenant limit of 241 any more"),
            (format!("{long_system}=1"),  true,  "Key: no system limit of 14 any more"),
            (format!("k={}", value(256)), true,  "Value: up to 256 characters"),
            (format!("k={}", value(257)), false, "Value: 257 characters is not a value"),
        ];
        for (member, kept, reason) in cases {
            let header = format!("foo=1,{member}");
            let got = TraceState::parse([header.as_str()].into_iter());
            assert_eq!(got.is_ok(), kept, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn member_count_limit() {
        let members = |n: usize| (1..=n).map(|i| format!("bar{i:02}={i:02}")).collect::<Vec<_>>();
        let with_empty = format!("{},,  ,", members(32).join(","));
        let cases: Vec<(String, Result<usize, TraceStateError>, &str)> = vec![
            (members(32).join(","), Ok(32),               "list: 32 list-members are kept whole"),
            (with_empty,            Ok(32),               "list: empty members do not count"),
            (members(33).join(","), Err(TooManyMembers),  "list: 33 cannot be parsed (harness member_count_limit)"),
        ];
        for (header, want, reason) in cases {
            let got = TraceState::parse([header.as_str()].into_iter()).map(|s| s.len());
            assert_eq!(got, want, "{reason}");
        }
    }

    #[test]
    fn long_headers_are_truncated_by_whole_entries() {
        let big: Vec<String> = (0..12)
            .map(|i| format!("key{i}={}", "x".repeat(60)))
            .collect();
        let out = parse(&[&big.join(",")]).ok().flatten().unwrap_or_default();
        assert!(out.len() <= MAX_LEN, "{} characters", out.len());
        assert!(out.starts_with("key0="), "truncated from the right");

        let long = format!("long={}", "y".repeat(200));
        let mixed = format!("a=1,{long},{}", big.join(","));
        let out = parse(&[&mixed]).ok().flatten().unwrap_or_default();
        assert!(
            !out.contains("long="),
            "members over 128 characters go first"
        );
        assert!(out.starts_with("a=1,key0="));
    }

    #[test]
    fn a_written_entry_moves_to_the_front() {
        let mut state = TraceState::parse(["congo=1,ot=th:8,rojo=2"].into_iter()).unwrap();
        state.upsert_front("ot", "th:c");
        assert_eq!(
            state.header_value().as_deref(),
            Some("ot=th:c,congo=1,rojo=2")
        );
        state.remove("ot");
        assert_eq!(state.header_value().as_deref(), Some("congo=1,rojo=2"));
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let mut full = TraceState::parse([members.join(",").as_str()].into_iter()).unwrap();
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
