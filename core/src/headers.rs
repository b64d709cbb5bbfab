//! A request's headers as the proxy hands them over: lowercase names, in order, repeated names
//! kept (W3C Trace Context §3.2.2 and §3.3.1 give repeated `traceparent` and `tracestate` headers
//! meaning, so a first-value-only lookup is not enough).
//!
//! Built in one pass from proxy-wasm's serialized header map into a single string, so reading
//! every header costs one host call and no allocation per header. Header values are bytes on the
//! wire (RFC 9110 §5.5 allows obs-text, 0x80–0xFF); bytes that are not UTF-8 are read as U+FFFD,
//! which no header we parse accepts, so such a value is invalid rather than fatal.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    /// Every name immediately followed by its value.
    text: String,
    entries: Vec<Entry>,
}

/// One header: the name is `text[start..split]`, the value `text[split..end]`.
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
        let mut map = HeaderMap::new();
        let Some(count) = read_u32(bytes, 0) else {
            return map;
        };
        let Some(mut pos) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
            return map;
        };
        if pos > bytes.len() {
            return map;
        }
        map.text.reserve(bytes.len() - pos);
        map.entries.reserve(count);
        for i in 0..count {
            let sizes = 4 + i * 8;
            let (Some(name_len), Some(value_len)) =
                (read_u32(bytes, sizes), read_u32(bytes, sizes + 4))
            else {
                break;
            };
            let Some(name) = take(bytes, &mut pos, name_len) else {
                break;
            };
            let Some(value) = take(bytes, &mut pos, value_len) else {
                break;
            };
            map.push(
                &String::from_utf8_lossy(name),
                &String::from_utf8_lossy(value),
            );
        }
        map
    }

    /// Appends a header (repeats are kept, as on the wire).
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let split = self.text.len();
        self.text.push_str(value);
        self.entries.push(Entry {
            start,
            split,
            end: self.text.len(),
        });
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|(k, _)| k == name)
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|e| {
            (
                self.text.get(e.start..e.split).unwrap_or(""),
                self.text.get(e.split..e.end).unwrap_or(""),
            )
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
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

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let four = bytes.get(at..at.checked_add(4)?)?;
    let n = u32::from_le_bytes(<[u8; 4]>::try_from(four).ok()?);
    usize::try_from(n).ok()
}

/// `len` bytes at `pos` and the NUL after them; advances `pos` past both.
fn take<'a>(bytes: &'a [u8], pos: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(len)?;
    let field = bytes.get(*pos..end)?;
    if bytes.get(end) != Some(&0) {
        return None;
    }
    *pos = end + 1;
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs the way the host does.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn serialized_maps_parse_to_their_pairs() {
        let full = serialize(&[
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
                serialize(&[(b"user-agent", b"caf\xe9")]),
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
                    let mut b = serialize(&[(b"a", b"1"), (b"b", b"2")]);
                    let nul = b.len() - 5; // the NUL after the first value
                    b[nul] = b'x';
                    b
                },
                vec![],
                "a missing NUL terminator stops parsing",
            ),
            (
                {
                    let mut b = serialize(&[(b"a", b"1")]);
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
