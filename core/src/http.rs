//! The parts of a request target and authority the tracer reads: one parser, shared by sampling
//! rules (host and path matching) and span attributes (`url.path`, `server.address`,
//! `server.port`), so both agree on every input.

/// Splits a `:path` at the query or fragment (RFC 3986 §3.3–3.5): `(path, "?rest")`. A byte scan
/// (both delimiters are ASCII, never inside a multi-byte character): a `char` pattern decodes
/// every character, dear in a Wasm VM on every request's path.
pub(crate) fn split_query(path: &str) -> (&str, &str) {
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => (path.get(..i).unwrap_or(path), path.get(i..).unwrap_or("")),
        None => (path, ""),
    }
}

/// `str::split_once` for a short literal separator, by a plain scan: the standard library's
/// substring search (Two-Way, forward and backward) cost ~4 KB of module for the few
/// separators of a few bytes meshtrace looks for (`.svc.`, `/ns/`).
pub(crate) fn split_once_str<'a>(s: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    let sep = separator.as_bytes();
    if sep.is_empty() {
        return Some(("", s));
    }
    let at = s.as_bytes().windows(sep.len()).position(|w| w == sep)?;
    Some((s.get(..at)?, s.get(at + sep.len()..)?))
}

/// The path without query or fragment.
pub(crate) fn path_only(path: &str) -> &str {
    split_query(path).0
}

/// Splits an `:authority` (RFC 3986 §3.2.2–3.2.3: `host[:port]`, `[IPv6]:port`) into host and
/// port. An IPv6 literal loses its brackets; a port that is not a number leaves the authority
/// whole (it is not one we can describe as `server.port`); a bare IPv6 address without brackets
/// has no port.
pub(crate) fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn authority_splits_into_host_and_port() {
        let cases = [
            ("reviews:9080",       ("reviews", Some(9080)),      "host and port"),
            ("reviews",            ("reviews", None),            "no port"),
            ("[::1]:8080",         ("::1", Some(8080)),          "IPv6 literal with port: brackets go"),
            ("[::1]",              ("::1", None),                "IPv6 literal without port"),
            ("[2001:db8::7]:443",  ("2001:db8::7", Some(443)),   "IPv6 literal, longer form"),
            ("::1",                ("::1", None),                "bare IPv6 address: no port to find"),
            ("reviews:http",       ("reviews:http", None),       "non-numeric port: left whole"),
            ("reviews:99999",      ("reviews:99999", None),      "port out of range: left whole"),
            ("",                   ("", None),                   "empty"),
        ];
        for (input, want, reason) in cases {
            assert_eq!(split_authority(input), want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn query_and_fragment_are_split_off() {
        let cases = [
            ("/a?b=1",    ("/a", "?b=1"),  "query"),
            ("/a#frag",   ("/a", "#frag"), "fragment"),
            ("/a?b#c",    ("/a", "?b#c"),  "query then fragment"),
            ("/a",        ("/a", ""),      "neither"),
            ("",          ("", ""),        "empty"),
        ];
        for (input, want, reason) in cases {
            assert_eq!(split_query(input), want, "{reason}");
        }
    }
}
