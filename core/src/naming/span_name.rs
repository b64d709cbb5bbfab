//! Span names: `{METHOD} {target}` (OTel HTTP semantic conventions, "Name"), with a target of
//! bounded cardinality — a named route, or the path with its id-like segments replaced.

use crate::config::SpanNameMode;
use crate::http::{split_authority, split_query};
use crate::istio::parse_subset_key;
use crate::span::truncate;

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

/// What a span name may be made of; every field is known without a host call beyond those the
/// span reads anyway.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NameParts<'a> {
    pub method: &'a str,
    /// `:path`, query included (it is cut off here).
    pub path: &'a str,
    pub authority: &'a str,
    /// Envoy's route name, when it was read (`spanName` `route` or `templatedPath`).
    pub route_name: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    /// The mesh's DNS domain of this proxy (`default.svc.cluster.local`), to qualify a short
    /// authority the way Istio names inbound routes.
    pub dns_domain: &'a str,
    pub grpc: bool,
    /// Envoy found no route (`NR`): the path is whatever a client or scanner sent.
    pub no_route: bool,
    /// This proxy's own service (its canonical name), named for an inbound request whose
    /// authority is an IP address rather than a host.
    pub local_service: &'a str,
}

/// Segments of a path kept by `templatedPath`; deeper paths end in `/*`.
pub(crate) const MAX_TEMPLATED_SEGMENTS: usize = 8;

/// The span name, at most `max_len` bytes:
/// - gRPC: `package.Service/Method` (OTel RPC semantic conventions, "Span name");
/// - no route (`NR`): `{METHOD}` only, whatever the mode;
/// - otherwise per `spanName` ([`SpanNameMode`]).
pub(crate) fn span_name(mode: SpanNameMode, parts: &NameParts<'_>, max_len: usize) -> String {
    let method = if parts.method.is_empty() {
        "HTTP"
    } else {
        parts.method
    };
    let path = split_query(parts.path).0;
    let name = if parts.no_route {
        method.to_string()
    } else if let Some(rpc) = parts.grpc.then(|| grpc_method(path)).flatten() {
        format!("{}/{}", rpc.0, rpc.1)
    } else {
        match mode {
            SpanNameMode::Istio => istio_operation(parts).unwrap_or_else(|| method.to_string()),
            SpanNameMode::Route => match parts.route_name.filter(|r| is_meaningful_route(r)) {
                Some(route) => format!("{method} {route}"),
                None => method.to_string(),
            },
            SpanNameMode::TemplatedPath => {
                match parts.route_name.filter(|r| is_meaningful_route(r)) {
                    Some(route) => format!("{method} {route}"),
                    None => templated_path(method, path),
                }
            }
        }
    };
    truncate(name, max_len)
}

/// `/package.Service/Method` → (`package.Service`, `Method`) (gRPC over HTTP/2: `:path` is
/// `/` Service-Name `/` method-name).
pub(crate) fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = split_query(path).0.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Istio's trace operation for a route, `host:port/*` (`pilot/pkg/networking/core/route/
/// route.go` `GetRouteOperation`, `telemetry.TraceOperation`): the host and port of the
/// destination cluster; inbound clusters carry no host, so the authority's, qualified with the
/// mesh domain the way Istio names the service (`reviews` → `reviews.default.svc.cluster.local`).
/// The route's own match is not visible to the plugin: the path part is always `/*`.
fn istio_operation(parts: &NameParts<'_>) -> Option<String> {
    let key = parts.upstream_cluster.and_then(parse_subset_key);
    let (authority_host, authority_port) = split_authority(parts.authority);
    match key {
        Some(k) if !k.host.is_empty() => Some(format!("{}:{}/*", k.host, k.port)),
        _ if authority_host.is_empty() => None,
        // An inbound request addressed to an IP (a pod IP, a gateway's rewritten upstream, a
        // probe): Istio names inbound routes after the service, never the address, and one name
        // per pod IP would be a name per pod. This proxy's service and the cluster's port.
        Some(k) if is_ip_literal(authority_host) && !parts.local_service.is_empty() => Some(
            qualified(parts.local_service, parts.dns_domain, Some(k.port)),
        ),
        key => Some(qualified(
            authority_host,
            parts.dns_domain,
            authority_port.or(key.map(|k| k.port)),
        )),
    }
}

/// An IPv4 or IPv6 literal (`split_authority` leaves IPv6 without brackets), not a host name.
fn is_ip_literal(host: &str) -> bool {
    host.contains(':')
        || (!host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// `host[.domain][:port]/*`: a short host qualified with the mesh domain, the way Istio names a
/// service (`reviews` → `reviews.default.svc.cluster.local`).
fn qualified(host: &str, dns_domain: &str, port: Option<u16>) -> String {
    let mut name = String::with_capacity(64);
    name.push_str(host);
    if !host.contains('.') && !dns_domain.is_empty() {
        name.push('.');
        name.push_str(dns_domain);
    }
    if let Some(port) = port {
        name.push(':');
        name.push_str(&port.to_string());
    }
    name.push_str("/*");
    name
}

/// `{METHOD} {path}` with id-like segments replaced by `{id}`, at most
/// [`MAX_TEMPLATED_SEGMENTS`] segments.
fn templated_path(method: &str, path: &str) -> String {
    let mut name = String::with_capacity(method.len() + 1 + path.len().min(128));
    name.push_str(method);
    name.push(' ');
    if path.is_empty() || path == "/" {
        name.push('/');
        return name;
    }
    for (i, segment) in path.split('/').skip(1).enumerate() {
        if i == MAX_TEMPLATED_SEGMENTS {
            name.push_str("/*");
            break;
        }
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

    fn templated(method: &str, route: Option<&str>, path: &str) -> String {
        let parts = NameParts {
            method,
            path,
            route_name: route,
            ..NameParts::default()
        };
        span_name(SpanNameMode::TemplatedPath, &parts, 128)
    }

    #[test]
    #[rustfmt::skip]
    fn templated_paths_have_bounded_cardinality() {
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
            ("GET",  None,                                           "/a/b/c/d/e/f/g/h/i/j",                        "GET /a/b/c/d/e/f/g/h/*",  "segment cap"),
        ];
        for (method, route, path, want, reason) in cases {
            assert_eq!(templated(method, route, path), want, "{reason}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn every_mode_bounds_the_name() {
        use SpanNameMode::*;
        let out = Some("outbound|9080||reviews.default.svc.cluster.local");
        let inb = Some("inbound|9080||");
        let p = |mode, cluster, authority, path, route, grpc, no_route| {
            let parts = NameParts {
                method: "GET", path, authority, route_name: route, upstream_cluster: cluster,
                dns_domain: "default.svc.cluster.local", grpc, no_route, local_service: "productpage",
            };
            span_name(mode, &parts, 128)
        };
        let cases = [
            (p(Istio, out,  "reviews:9080", "/r/1", None, false, false),             "reviews.default.svc.cluster.local:9080/*", "outbound: the cluster's host and port"),
            (p(Istio, inb,  "reviews:9080", "/r/1", None, false, false),             "reviews.default.svc.cluster.local:9080/*", "inbound: the authority, qualified"),
            (p(Istio, inb,  "reviews",      "/r/1", None, false, false),             "reviews.default.svc.cluster.local:9080/*", "inbound without port: the cluster's"),
            (p(Istio, inb,  "10.1.2.3:55097", "/r/1", None, false, false),           "productpage.default.svc.cluster.local:9080/*", "inbound to an IP: this proxy's service, the cluster's port"),
            (p(Istio, inb,  "[fd00::7]:9080", "/r/1", None, false, false),           "productpage.default.svc.cluster.local:9080/*", "inbound to an IPv6 literal too"),
            (p(Istio, out,  "10.1.2.3:9080", "/r/1", None, false, false),            "reviews.default.svc.cluster.local:9080/*", "outbound: the cluster names the service"),
            (p(Istio, None, "",             "/r/1", None, false, false),             "GET",                                      "nothing known: the method"),
            (p(Istio, out,  "x",            "/scan/9f8e7d", None, false, true),      "GET",                                      "no route: never the path"),
            (p(TemplatedPath, None, "x",    "/scan/abc-def", None, false, true),     "GET",                                      "no route in templatedPath too"),
            (p(Route, out,  "x",            "/r/1", Some("reviews-v2"), false, false), "GET reviews-v2",                         "route: a named route"),
            (p(Route, out,  "x",            "/r/1", Some("default"), false, false),  "GET",                                      "route: no template known, the method alone"),
            (p(Istio, out,  "x",            "/shop.Cart/Add", None, true, false),    "shop.Cart/Add",                            "gRPC: package.Service/Method"),
            (p(Istio, out,  "x",            "/a/b/c", None, true, false),            "reviews.default.svc.cluster.local:9080/*", "not a gRPC method path: the mode's name"),
        ];
        for (got, want, reason) in cases {
            assert_eq!(got, want, "{reason}");
        }
        let long = format!("/{}", "a".repeat(30_000));
        let parts = NameParts { method: "GET", path: &long, ..NameParts::default() };
        assert_eq!(span_name(TemplatedPath, &parts, 128).len(), 128, "limits.maxSpanNameLength");
    }
}
