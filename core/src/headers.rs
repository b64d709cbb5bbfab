//! A request's headers as the proxy hands them over: lowercase names, in order, repeated names
//! kept (W3C Trace Context §3.2.2 and §3.3.1 give repeated `traceparent` and `tracestate` headers
//! meaning, so a first-value-only lookup is not enough).
//!
//! Built from proxy-wasm's serialized header map with one UTF-8 check, keeping the host's buffer,
//! so reading every header costs one host call and no allocation per header. Header values are
//! bytes on the wire (RFC 9110 §5.5 allows obs-text, 0x80–0xFF); bytes that are not UTF-8 are
//! read as U+FFFD, which no header we parse accepts, so such a value is invalid, never fatal.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    /// Each name and each value followed by a NUL, as the host serializes them.
    text: String,
    entries: Vec<Entry>,
    /// One bit per name present, by [`name_bit`]: most lookups are for headers a request does
    /// not carry (B3 on a W3C request, `baggage`, …) and end here without a scan.
    names: u64,
}

/// Which header names a map may hold, one bit per name as [`HeaderMap`] keeps them: a name it
/// says no to is certainly absent; yes may be another name sharing the bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameFilter(u64);

impl NameFilter {
    /// Nothing known: every name may be there.
    pub const ANY: NameFilter = NameFilter(u64::MAX);

    pub fn may_contain(self, name: &str) -> bool {
        self.0 & name_bit(name.as_bytes()) != 0
    }

    /// The filter once `name` is there too.
    pub fn with(self, name: &str) -> NameFilter {
        NameFilter(self.0 | name_bit(name.as_bytes()))
    }
}

/// One header: the name is `text[start..split]`, the value `text[split + 1..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: usize,
    split: usize,
    end: usize,
}

impl HeaderMap {
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    /// Parses proxy-wasm's header map serialization (ABI v0.2.1, "Header maps"): a u32 count,
    /// then a u32 name length and a u32 value length per pair, then each name and each value
    /// followed by a NUL byte; integers little-endian. Input that ends early or whose lengths do
    /// not add up yields the pairs read before the fault — never a panic.
    pub fn from_serialized(bytes: &[u8]) -> HeaderMap {
        HeaderMap::from_serialized_vec(bytes.to_vec())
    }

    /// [`HeaderMap::from_serialized`] of the buffer the host handed over, kept: the text is
    /// moved to its front and becomes the map's, so reading a map costs the host's allocation
    /// and no second one (issue 18: one allocation, copy and free less per request).
    pub fn from_serialized_vec(mut bytes: Vec<u8>) -> HeaderMap {
        let mut map = HeaderMap::new();
        let Some(count) = read_u32(&bytes, 0) else {
            return map;
        };
        let Some(data_start) = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .filter(|&start| start <= bytes.len())
        else {
            return map;
        };
        let data = bytes.get(data_start..).unwrap_or_default();
        let fields = (0..count).map_while(|i| {
            let sizes = 4 + i * 8;
            Some((read_u32(&bytes, sizes)?, read_u32(&bytes, sizes + 4)?))
        });
        // Each pair takes at least two bytes of `data` (its NULs): a hostile count reserves no more.
        map.entries.reserve(count.min(data.len() / 2));
        let mut at = 0;
        for (name_len, value_len) in fields {
            let Some(entry) = Entry::at(data, at, name_len, value_len) else {
                break;
            };
            at = entry.end + 1;
            map.names |= name_bit(data.get(entry.start..entry.split).unwrap_or_default());
            map.entries.push(entry);
        }
        // The text `data[..at]` to the front of the buffer, the rest dropped (data_start <= len,
        // and `at` never passes the end of `data`).
        bytes.truncate(data_start + at);
        bytes.drain(..data_start);
        match String::from_utf8(bytes) {
            // Nearly always: the text is used as it is (NUL is valid UTF-8), only indexed.
            Ok(all) => map.text = all,
            // Bytes that are not UTF-8: the pairs again, each value read lossily.
            Err(e) => {
                let text = e.into_bytes();
                let text = text.as_slice();
                let entries = std::mem::take(&mut map.entries);
                map.names = 0;
                for e in entries {
                    let field = |r: std::ops::Range<usize>| {
                        String::from_utf8_lossy(text.get(r).unwrap_or_default())
                    };
                    map.push(&field(e.start..e.split), &field(e.split + 1..e.end));
                }
            }
        }
        map
    }

    /// A map of the pairs a host hands over as separate name and value buffers (the native
    /// adapter's `get_headers`): the text and the entries allocated once each, at their final
    /// size, with no serialization in between. Bytes that are not UTF-8 read as U+FFFD, as in
    /// [`HeaderMap::from_serialized_vec`].
    pub fn from_byte_pairs<'a, I>(pairs: I) -> HeaderMap
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(n, b), (k, v)| {
            (n + 1, b.saturating_add(k.len()).saturating_add(v.len() + 2))
        });
        // Only what a large request needs up front: a hostile total grows as it is read.
        let mut text: Vec<u8> = Vec::with_capacity(bytes.min(MAX_RESERVED_TEXT));
        let mut map = HeaderMap {
            text: String::new(),
            entries: Vec::with_capacity(count.min(MAX_RESERVED_TEXT / 2)),
            names: 0,
        };
        for (name, value) in pairs.clone() {
            let start = text.len();
            text.extend_from_slice(name);
            let split = text.len();
            text.push(0);
            text.extend_from_slice(value);
            map.entries.push(Entry {
                start,
                split,
                end: text.len(),
            });
            text.push(0);
            map.names |= name_bit(name);
        }
        // One UTF-8 check for the whole text (nearly always valid); otherwise pair by pair.
        match String::from_utf8(text) {
            Ok(all) => map.text = all,
            Err(_) => {
                map = HeaderMap::new();
                for (name, value) in pairs {
                    map.push(
                        &String::from_utf8_lossy(name),
                        &String::from_utf8_lossy(value),
                    );
                }
            }
        }
        map
    }

    /// Appends a header (repeats are kept, as on the wire).
    pub(crate) fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let split = self.text.len();
        self.text.push('\0');
        self.text.push_str(value);
        self.entries.push(Entry {
            start,
            split,
            end: self.text.len(),
        });
        self.text.push('\0');
        self.names |= name_bit(name.as_bytes());
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        if !self.may_contain(name) {
            return None;
        }
        self.entries
            .iter()
            .find(|e| self.is_named(e, name))
            .map(|e| self.value(e))
    }

    /// Every value of `name`, in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let entries = if self.may_contain(name) {
            self.entries.as_slice()
        } else {
            &[]
        };
        entries
            .iter()
            .filter(move |e| self.is_named(e, name))
            .map(|e| self.value(e))
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.may_contain(name) && self.entries.iter().any(|e| self.is_named(e, name))
    }

    fn may_contain(&self, name: &str) -> bool {
        self.name_filter().may_contain(name)
    }

    /// The names this map may hold: kept by an adapter that hands the map to the core and
    /// writes headers afterwards (the native one adds a header the request does not carry).
    pub fn name_filter(&self) -> NameFilter {
        NameFilter(self.names)
    }

    /// Lookups run a dozen times per request: compare lengths, then bytes, and slice the value
    /// only for a match.
    fn is_named(&self, e: &Entry, name: &str) -> bool {
        e.split - e.start == name.len()
            && self
                .text
                .as_bytes()
                .get(e.start..e.split)
                .is_some_and(|n| same_name(n, name.as_bytes()))
    }

    fn name(&self, e: &Entry) -> &str {
        self.text.get(e.start..e.split).unwrap_or("")
    }

    fn value(&self, e: &Entry) -> &str {
        self.text.get(e.split + 1..e.end).unwrap_or("")
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|e| (self.name(e), self.value(e)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The host's serialization of `pairs` (see [`HeaderMap::from_serialized`]), bytes as they are:
/// what the proxy hands the plugin, for tests, benchmarks and tools.
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
    let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
    let mut out = count.to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend(len(k.as_ref()));
        out.extend(len(v.as_ref()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

impl<'a> FromIterator<(&'a str, &'a str)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.push(name, value);
        }
        map
    }
}

/// The most header text [`HeaderMap::from_byte_pairs`] reserves before reading (Envoy's
/// default request header limit is 60 KiB, `max_request_headers_kb`).
const MAX_RESERVED_TEXT: usize = 64 * 1024;

/// The little-endian `u32` at `at` of proxy-wasm's pairs layout (a count, then each pair's two
/// sizes), as a `usize`.
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let four = bytes.get(at..at.checked_add(4)?)?;
    let n = u32::from_le_bytes(<[u8; 4]>::try_from(four).ok()?);
    usize::try_from(n).ok()
}

/// `a == b` for two header names, four bytes at a time (the last word overlapping the end): a
/// slice comparison is a call to `memcmp`, a byte loop in a Wasm VM, on every header looked up.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() || n < 4 {
        return a == b;
    }
    let word = |s: &[u8], at: usize| -> Option<[u8; 4]> { s.get(at..at + 4)?.try_into().ok() };
    let last = n - 4;
    let mut next = 0;
    loop {
        let at = next.min(last);
        if word(a, at) != word(b, at) {
            return false;
        }
        if at == last {
            return true;
        }
        next += 4;
    }
}

/// A name's bit in [`HeaderMap::names`], from its length and last two bytes (the first bytes of
/// header names repeat: `x-b3-…`, `x-forwarded-…`).
fn name_bit(name: &[u8]) -> u64 {
    let (last, before) = match name {
        [.., a, b] => (*b, *a),
        [b] => (*b, 0),
        [] => (0, 0),
    };
    let h = (name.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(u32::from(last).wrapping_mul(7))
        .wrapping_add(u32::from(before));
    1 << (h % 64)
}

impl Entry {
    /// The pair whose name starts at `at` in `data`, when both fields and their NULs are there.
    fn at(data: &[u8], at: usize, name_len: usize, value_len: usize) -> Option<Entry> {
        let split = at.checked_add(name_len)?;
        let end = split.checked_add(1)?.checked_add(value_len)?;
        (data.get(split) == Some(&0) && data.get(end) == Some(&0)).then_some(Entry {
            start: at,
            split,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        serialize(pairs)
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Word by word says what a byte comparison says: every length up to 20, a difference at
    /// every position, and different lengths.
    #[test]
    fn names_compare_word_by_word_as_byte_by_byte() {
        let name = b"x-b3-parentspanid-ab";
        for n in 0..=name.len() {
            let a = &name[..n];
            assert!(same_name(a, a), "equal, length {n}");
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same_name(a, &b), "length {n}, differs at {at}");
            }
            if n > 0 {
                assert!(
                    !same_name(a, &name[..n - 1]),
                    "length {n} against {}",
                    n - 1
                );
            }
        }
    }

    #[test]
    fn serialized_maps_parse_to_their_pairs() {
        let full = bytes(&[
            (b":path", b"/a?b=c"),
            (b"tracestate", b"a=1"),
            (b"tracestate", b"b=2"),
            (b"x-empty", b""),
        ]);
        type Row<'a> = (Vec<u8>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Row> = vec![
            (
                full.clone(),
                vec![
                    (":path", "/a?b=c"),
                    ("tracestate", "a=1"),
                    ("tracestate", "b=2"),
                    ("x-empty", ""),
                ],
                "order and repeated names kept, empty value",
            ),
            (Vec::new(), vec![], "no bytes at all"),
            (0u32.to_le_bytes().to_vec(), vec![], "zero pairs"),
            (
                bytes(&[(b"user-agent", b"caf\xe9")]),
                vec![("user-agent", "caf\u{fffd}")],
                "obs-text (Latin-1) byte becomes U+FFFD",
            ),
            (
                full.get(..full.len() - 6).unwrap().to_vec(),
                vec![
                    (":path", "/a?b=c"),
                    ("tracestate", "a=1"),
                    ("tracestate", "b=2"),
                ],
                "truncated inside the last pair: the pairs before it",
            ),
            (
                vec![255, 255, 255, 255, 1, 0, 0, 0],
                vec![],
                "a count larger than the input",
            ),
            (
                {
                    let mut b = bytes(&[(b"a", b"1"), (b"b", b"2")]);
                    let nul = b.len() - 5; // the NUL after the first value
                    b[nul] = b'x';
                    b
                },
                vec![],
                "a missing NUL terminator stops parsing",
            ),
            (
                {
                    let mut b = bytes(&[(b"a", b"1")]);
                    b[4] = 200; // name length beyond the input
                    b
                },
                vec![],
                "a length beyond the input",
            ),
        ];
        for (bytes, want, why) in cases {
            let got = HeaderMap::from_serialized(&bytes);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(pairs(&got), want, "{why}");
        }
    }

    type Pair = (&'static [u8], &'static [u8]);

    /// The native adapter's constructor gives the map the serialized form gives, for the same
    /// pairs: the same lookups, the same name filter, the same lossy reading.
    #[test]
    fn pairs_handed_over_separately_make_the_same_map_as_their_serialization() {
        #[rustfmt::skip]
        let cases: [(&[Pair], &str); 5] = [
            (&[], "no headers"),
            (&[(b":path", b"/a"), (b"tracestate", b"a=1"), (b"tracestate", b"b=2")], "order and repeats"),
            (&[(b"x-empty", b"")], "an empty value"),
            (&[(b"user-agent", b"caf\xe9"), (b"b", b"2")], "obs-text read as U+FFFD, the rest kept"),
            (&[(b"caf\xe9", b"1")], "a name that is not UTF-8"),
        ];
        for (pairs, why) in cases {
            let direct = HeaderMap::from_byte_pairs(pairs.iter().copied());
            let serialized = HeaderMap::from_serialized(&serialize(pairs));
            assert_eq!(
                direct.iter().collect::<Vec<_>>(),
                serialized.iter().collect::<Vec<_>>(),
                "{why}"
            );
            assert_eq!(direct.names, serialized.names, "{why}: name filter");
        }
    }

    #[test]
    fn lookups_see_first_and_all_values() {
        let map: HeaderMap = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(map.get("a"), Some("1"));
        assert_eq!(map.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(map.get("c"), None);
        assert!(
            map.contains("b") && !map.contains("B"),
            "names are lowercase"
        );
        assert_eq!(map.len(), 3);
    }
}
