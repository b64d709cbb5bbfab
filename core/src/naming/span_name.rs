//! Span names: `{METHOD} {target}` (OTel HTTP semantic conventions, "Name"), with a target of
//! bounded cardinality — a named route, or the path with its id-like segments replaced.

use crate::http::split_query;

/// Route names Envoy and Istio give when nobody named the route: not worth a span name.
const GENERIC_ROUTES: [&str; 4] = [
    "default",
    "allow_any",
    "block_all",
    "InboundPassthroughCluster",
];

/// A route someone named (a VirtualService route name), not one Istio generated: generic names,
/// ports (`9080`), `host:port` virtual hosts and cluster-style names (`inbound|9080||`).
fn is_meaningful_route(route: &str) -> bool {
    !route.is_empty()
        && !GENERIC_ROUTES.contains(&route)
        && !route.bytes().all(|b| b.is_ascii_digit())
        && !route.contains(['|', ':'])
}

/// `{METHOD} {target}` (OTel HTTP span name): a named route if there is one, else the path with
/// id-like segments replaced by `{id}` — never the query string or raw ids (cardinality).
pub fn span_name(method: &str, route_name: Option<&str>, path: &str) -> String {
    let method = if method.is_empty() { "HTTP" } else { method };
    if let Some(route) = route_name.filter(|r| is_meaningful_route(r)) {
        return format!("{method} {route}");
    }
    let (path, _) = split_query(path);
    let mut name = String::with_capacity(method.len() + 1 + path.len());
    name.push_str(method);
    name.push(' ');
    if path.is_empty() || path == "/" {
        name.push('/');
        return name;
    }
    for segment in path.split('/').skip(1) {
        name.push('/');
        if looks_like_id(segment) {
            name.push_str("{id}");
        } else {
            name.push_str(segment);
        }
    }
    name
}

/// Numbers, UUIDs, long hex strings and long mixed tokens are ids, not route parts.
fn looks_like_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let hexish = segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    digits == segment.len()
        || (hexish && segment.len() >= 8 && digits > 0)
        || (segment.len() >= 16 && digits * 3 >= segment.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn span_names_have_bounded_cardinality() {
        let cases = [
            ("GET",  None,                                           "/productpage",                                "GET /productpage",        "static path"),
            ("GET",  None,                                           "/reviews/0",                                  "GET /reviews/{id}",       "numeric id"),
            ("GET",  None,                                           "/a/123e4567-e89b-12d3-a456-426614174000/b",   "GET /a/{id}/b",           "uuid"),
            ("POST", None,                                           "/orders/5f2b8c1d9e/items",                    "POST /orders/{id}/items", "hex id"),
            ("GET",  None,                                           "/search?q=secret",                            "GET /search",             "query string dropped"),
            ("GET",  None,                                           "/",                                           "GET /",                   "root"),
            ("GET",  None,                                           "",                                            "GET /",                   "empty path"),
            ("",     None,                                           "/x",                                          "HTTP /x",                 "missing method"),
            ("GET",  Some("reviews-route"),                          "/reviews/0",                                  "GET reviews-route",       "named route wins"),
            ("GET",  Some("default"),                                "/reviews/0",                                  "GET /reviews/{id}",       "generic route ignored"),
            ("GET",  None,                                           "/v1/users",                                   "GET /v1/users",           "version segment is not an id"),
            ("GET",  Some("9080"),                                   "/r/1",                                        "GET /r/{id}",             "Istio port route ignored"),
            ("GET",  Some("reviews.default.svc.cluster.local:9080"), "/r",                                          "GET /r",                  "host:port ignored"),
            ("GET",  Some("inbound|9080||"),                         "/r",                                          "GET /r",                  "cluster-style name ignored"),
        ];
        for (method, route, path, want, reason) in cases {
            assert_eq!(span_name(method, route, path), want, "{reason}");
        }
    }
}
