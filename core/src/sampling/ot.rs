//! The `ot` tracestate entry of OpenTelemetry probability sampling (OTel specification,
//! "TraceState: Probability Sampling"): `th:` the rejection threshold and `rv:` explicit
//! randomness, both 56-bit values in lowercase hex, among `;`-separated `key:value` pairs.

/// 2^56: thresholds and randomness are 56-bit.
const MAX_56: u64 = 1 << 56;
/// Full-precision hex digits of a 56-bit value.
const DIGITS: usize = 14;

/// The rejection threshold for a sampling percentage: T = (1 − p/100)·2^56, rounded, so that
/// "sampled iff R ≥ T" samples with probability p. `None` never samples (p = 0); `Some(0)`
/// always samples.
pub(crate) fn threshold_for_percentage(percentage: f64) -> Option<u64> {
    if percentage.is_nan() || percentage <= 0.0 {
        return None;
    }
    if percentage >= 100.0 {
        return Some(0);
    }
    // Rounded in the sampled direction; at least one value of R is sampled.
    let accepted = (percentage / 100.0 * MAX_56 as f64).round() as u64;
    Some(MAX_56 - accepted.clamp(1, MAX_56 - 1))
}

/// `th` encoding: 14 hex digits with trailing zeros removed; zero is `0`.
pub(crate) fn format_threshold(threshold: u64) -> String {
    if threshold == 0 {
        return "0".to_string();
    }
    let full = format!("{:014x}", threshold & (MAX_56 - 1));
    full.trim_end_matches('0').to_string()
}

/// `th` decoding: 1 to 14 lowercase hex digits, padded on the right with zeros.
pub(crate) fn parse_threshold(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > DIGITS {
        return None;
    }
    let v = parse_hex(s)?;
    // `len ≤ 14` keeps the shift in range.
    Some(v << (4 * (DIGITS - s.len())))
}

/// `rv` decoding: exactly 14 lowercase hex digits.
fn parse_randomness(s: &str) -> Option<u64> {
    (s.len() == DIGITS).then(|| parse_hex(s)).flatten()
}

fn parse_hex(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(d))
    })
}

/// A parsed `ot` value. Unknown sub-keys are kept in order; malformed `th`/`rv` are erased (the
/// specification treats them as absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OtValue {
    entries: Vec<(String, String)>,
}

impl OtValue {
    pub(crate) fn parse(value: &str) -> OtValue {
        let entries = value
            .split(';')
            .filter_map(|part| part.split_once(':'))
            .filter(|(k, v)| match *k {
                "th" => parse_threshold(v).is_some(),
                "rv" => parse_randomness(v).is_some(),
                _ => !k.is_empty(),
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtValue { entries }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: String) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.insert(0, (key.to_string(), value)),
        }
    }

    pub(crate) fn threshold(&self) -> Option<u64> {
        self.get("th").and_then(parse_threshold)
    }

    pub(crate) fn randomness(&self) -> Option<u64> {
        self.get("rv").and_then(parse_randomness)
    }

    pub(crate) fn set_threshold(&mut self, threshold: u64) {
        self.set("th", format_threshold(threshold));
    }

    pub(crate) fn clear_threshold(&mut self) {
        self.entries.retain(|(k, _)| k != "th");
    }

    pub(crate) fn set_randomness(&mut self, randomness: u64) {
        self.set("rv", format!("{:014x}", randomness & (MAX_56 - 1)));
    }

    /// The value to write, or `None` when nothing is left (never an empty `ot=` entry).
    pub(crate) fn to_value(&self) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        Some(parts.join(";"))
    }
}
