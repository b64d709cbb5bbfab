//! The content of a finished span: its name and attributes — OpenTelemetry's semantic
//! conventions, and the tags Istio's tracer (Envoy's) sets, so that Kiali, saved queries and
//! dashboards keep working.
//!
//! Envoy sets its tags in `source/common/tracing/http_tracer_impl.cc`
//! (`HttpTracerUtility::finalizeDownstreamSpan`, `finalizeUpstreamSpan`, `setCommonTags`,
//! `addGrpcRequestTags`, `addGrpcResponseTags`) and `source/common/tracing/tracer_impl.cc`
//! (`TracerImpl::startSpan`: `node_id`, `zone`; `TracerUtility::finalizeSpan`: `peer.address`,
//! `upstream_address`, `upstream_cluster.name`), names in `source/common/tracing/
//! common_values.h`; every value is a string, as Envoy's OpenTelemetry tracer
//! (`source/extensions/tracers/opentelemetry/`) writes tags. Istio adds its service tags as
//! literal custom tags (`pilot/pkg/networking/core/tracing.go` `buildServiceTags`).

use super::outcome::{span_status, Outcome};
use super::{ActiveSpan, Tracer, REQUEST_ID};
use crate::config::{LimitsConfig, UrlQueryMode};
use crate::http::{split_authority, split_query};
use crate::istio::{parse_subset_key, peer_service, response_flags_short};
use crate::naming::{grpc_method, span_name, NameParts};
use crate::node::{NodeInfo, LABEL_CANONICAL_NAME, LABEL_CANONICAL_REVISION};
use crate::span::{AttrKey, AttrValue, Span, SpanKind};

/// The tags of Istio's tracer whose value is fixed per configuration, with Istio's defaults
/// (`buildServiceTags`: revision `latest`, service, mesh and cluster `unknown`, namespace
/// `default`) and Envoy's (`TracerImpl::startSpan`: `node_id`, `zone`; `setCommonTags`:
/// `component=proxy`).
pub(super) fn static_tags(node: &NodeInfo) -> Vec<(&'static str, String)> {
    let or =
        |value: &str, default: &str| if value.is_empty() { default } else { value }.to_string();
    vec![
        (
            "istio.canonical_revision",
            or(node.label(LABEL_CANONICAL_REVISION).unwrap_or(""), "latest"),
        ),
        (
            "istio.canonical_service",
            or(node.label(LABEL_CANONICAL_NAME).unwrap_or(""), "unknown"),
        ),
        ("istio.mesh_id", or(&node.mesh_id, "unknown")),
        ("istio.namespace", or(&node.namespace, "default")),
        ("istio.cluster_id", or(&node.cluster_id, "unknown")),
        ("node_id", node.id.clone()),
        ("zone", node.zone.clone()),
        ("component", "proxy".to_string()),
    ]
}

/// Writes attributes within the limits; keys are static (no allocation).
struct Attrs<'a> {
    span: &'a mut Span,
    limits: &'a LimitsConfig,
}

impl Attrs<'_> {
    fn set(&mut self, key: impl Into<AttrKey>, value: AttrValue) {
        self.span.set_attribute(key, value, self.limits);
    }
    fn str(&mut self, key: &'static str, value: &str) {
        self.set(key, AttrValue::Str(value.to_string()));
    }
    fn string(&mut self, key: &'static str, value: String) {
        self.set(key, AttrValue::Str(value));
    }
    fn int(&mut self, key: &'static str, value: i64) {
        self.set(key, AttrValue::Int(value));
    }
}

/// `a=1&b` → `a=REDACTED&b` (OTel semconv `url.query`: keys kept, values redacted).
fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, _)) => {
                out.push_str(key);
                out.push_str("=REDACTED");
            }
            None => out.push_str(pair),
        }
    }
    out
}

impl Tracer {
    /// The query as `attributes.urlQuery` lets it be recorded (without `?`); `None` when omitted
    /// or empty.
    fn recorded_query(&self, query: &str) -> Option<String> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let query = query.split('#').next().unwrap_or("");
        if query.is_empty() {
            return None;
        }
        match self.config.attributes.url_query {
            UrlQueryMode::Omit => None,
            UrlQueryMode::Redact => Some(redact_query(query)),
            UrlQueryMode::Full => Some(query.to_string()),
        }
    }

    pub(super) fn span_name(&self, active: &ActiveSpan, outcome: &Outcome) -> String {
        let headers = &active.headers;
        let parts = NameParts {
            method: headers.get(":method").unwrap_or(""),
            path: headers.get(":path").unwrap_or(""),
            authority: headers.get(":authority").unwrap_or(""),
            route_name: outcome.route_name.as_deref(),
            upstream_cluster: outcome.upstream_cluster.as_deref(),
            dns_domain: self.node.dns_domain(),
            grpc: outcome.grpc.is_some(),
            no_route: outcome.no_route(),
            local_service: self.node.label(LABEL_CANONICAL_NAME).unwrap_or(""),
        };
        span_name(
            self.config.span_name,
            &parts,
            self.config.limits.max_span_name_length,
        )
    }

    /// Every attribute of a span. `downstream` is this proxy's own span (Envoy's downstream
    /// span: the request's tags); `false` is the CLIENT child spawned for the upstream (Envoy's
    /// upstream span: the upstream's tags).
    pub(super) fn set_attributes(
        &self,
        span: &mut Span,
        active: &ActiveSpan,
        outcome: &Outcome,
        downstream: bool,
    ) {
        let compat = self.config.attributes.istio_compat;
        let kind = span.kind;
        let (status, message) = span_status(kind, outcome);
        span.status = status;
        span.status_message = message;
        let mut a = Attrs {
            span,
            limits: &self.config.limits,
        };
        let headers = &active.headers;
        let header = |name: &str| headers.get(name).unwrap_or("");
        let method = header(":method");
        let (path, query) = split_query(header(":path"));
        let query = self.recorded_query(query);
        let scheme = headers.get(":scheme").filter(|s| !s.is_empty());
        let authority = header(":authority");
        let upstream_address = outcome.upstream_address.as_deref();
        let downstream_address = outcome.downstream_address.as_deref();

        // OpenTelemetry HTTP semantic conventions (stable HTTP attributes, semconv v1.26+).
        a.str("http.request.method", method);
        a.str("url.path", path);
        if let Some(q) = &query {
            a.str("url.query", q);
        }
        if let Some(scheme) = scheme {
            a.str("url.scheme", scheme);
        }
        let (host_part, port) = split_authority(authority);
        if !host_part.is_empty() {
            a.str("server.address", host_part);
        }
        if let Some(port) = port {
            a.int("server.port", i64::from(port));
        }
        if let Some(code) = outcome.status {
            a.int("http.response.status_code", i64::from(code));
        }
        if let Some(v) = &outcome.protocol_version {
            a.str("network.protocol.version", v);
        }
        if let Some(ua) = headers.get("user-agent") {
            a.str("user_agent.original", ua);
        }
        if let Some(error_type) = outcome.error_type(kind) {
            a.string("error.type", error_type);
        }
        // The peer of the connection: the caller for a SERVER span, the server for a CLIENT one.
        let peer = match kind {
            SpanKind::Server => downstream_address,
            SpanKind::Client => upstream_address,
        };
        if let Some((ip, port)) = peer.map(split_authority) {
            a.str("network.peer.address", ip);
            if let Some(port) = port {
                a.int("network.peer.port", i64::from(port));
            }
        }
        let upstream_key = outcome
            .upstream_cluster
            .as_deref()
            .and_then(parse_subset_key);
        match kind {
            SpanKind::Server => {
                // The original client, when a proxy in front of this one said who it was.
                let forwarded = headers
                    .get("x-forwarded-for")
                    .and_then(|x| x.split(',').next())
                    .map(str::trim)
                    .filter(|x| !x.is_empty());
                if let Some(client) = forwarded.or(downstream_address.map(|d| split_authority(d).0))
                {
                    a.str("client.address", client);
                }
            }
            SpanKind::Client => {
                let mut full = String::with_capacity(authority.len() + path.len() + 16);
                full.push_str(scheme.unwrap_or("http"));
                full.push_str("://");
                full.push_str(authority);
                full.push_str(path);
                if let Some(q) = &query {
                    full.push('?');
                    full.push_str(q);
                }
                a.string("url.full", full);
                // The called service, so calls leaving the mesh are nodes of service graphs.
                let called = match upstream_key {
                    Some(k) if !k.host.is_empty() => peer_service(k.host),
                    _ => peer_service(host_part),
                };
                if let Some(service) = called {
                    a.str("peer.service", service);
                }
            }
        }
        // OpenTelemetry RPC semantic conventions (gRPC).
        if let Some(grpc) = &outcome.grpc {
            a.str("rpc.system", "grpc");
            if let Some((service, rpc_method)) = grpc_method(path) {
                a.str("rpc.service", service);
                a.str("rpc.method", rpc_method);
            }
            if let Some(code) = grpc.status {
                a.int("rpc.grpc.status_code", i64::from(code));
                if compat {
                    a.string("grpc.status_code", code.to_string());
                }
            }
            if let Some(message) = &grpc.message {
                a.str("grpc.message", message);
            }
        }

        // Istio's tracer: tags with no semantic-convention twin, always.
        for (tag, value) in &self.istio_tags {
            a.str(tag, value);
        }
        if let Some(peers) = &outcome.peers {
            for (tag, value) in super::waypoint::peer_tags(peers) {
                a.string(tag, value);
            }
        }
        a.string(
            "response_flags",
            response_flags_short(outcome.response_flags),
        );
        if let Some(cluster) = &outcome.upstream_cluster {
            a.str("upstream_cluster", cluster);
            // Envoy's observability name: the cluster's `alt_stat_name`, which Istio leaves unset.
            a.str("upstream_cluster.name", cluster);
        }
        if let Some(address) = upstream_address {
            a.str("upstream_address", address);
        }
        // On the spawned CLIENT child too (Envoy leaves it off): one request, one id to search.
        let request_id = match &active.generated_request_id {
            Some(id) => id.as_str(),
            None => header(REQUEST_ID),
        };
        a.str("guid:x-request-id", request_id);
        if downstream {
            a.str(
                "downstream_cluster",
                headers
                    .get("x-envoy-downstream-service-cluster")
                    .unwrap_or("-"),
            );
        }

        // Istio's tracer: the duplicates of semantic-convention attributes.
        if compat {
            a.string("http.status_code", outcome.status.unwrap_or(0).to_string());
            if let Some(v) = &outcome.protocol_version {
                a.string("http.protocol", format!("HTTP/{v}"));
            }
            if outcome.envoy_error_tag() {
                a.str("error", "true");
            }
            let peer_address = if downstream {
                downstream_address
            } else {
                upstream_address
            };
            if let Some(address) = peer_address {
                a.str("peer.address", address);
            }
            if downstream {
                a.str("http.method", method);
                a.string("http.url", self.http_url(active, query.as_deref()));
                a.str("user_agent", headers.get("user-agent").unwrap_or("-"));
                if let Some(size) = outcome.request_size {
                    a.string("request_size", size.to_string());
                    a.int("http.request.body.size", size);
                }
                if let Some(size) = outcome.response_size {
                    a.string("response_size", size.to_string());
                    a.int("http.response.body.size", size);
                }
                if outcome.grpc.is_some() {
                    // `addGrpcRequestTags`.
                    a.str("grpc.path", header(":path"));
                    a.str("grpc.authority", authority);
                    a.str("grpc.content_type", header("content-type"));
                    if let Some(timeout) = headers.get("grpc-timeout") {
                        a.str("grpc.timeout", timeout);
                    }
                }
            }
        }

        // Istio's custom tags (Envoy applies them to every span, `setCommonTags`).
        for (tag, value) in &self.static_tags {
            a.set(tag.clone(), AttrValue::Str(value.clone()));
        }
        for (tag, name, default) in &self.header_tags {
            if let Some(value) = headers.get(name).or(default.as_deref()) {
                a.set(tag.clone(), AttrValue::Str(value.to_string()));
            }
        }
    }

    /// Envoy's `http.url` (`Http::Utility::buildOriginalUri`): `x-forwarded-proto` `://` host,
    /// then the original path (`x-envoy-original-path`, else `:path`) cut at 256 bytes (Envoy's
    /// default `max_path_tag_length`); its query as `attributes.urlQuery` allows.
    fn http_url(&self, active: &ActiveSpan, query: Option<&str>) -> String {
        let headers = &active.headers;
        let proto = headers
            .get("x-forwarded-proto")
            .or(headers.get(":scheme"))
            .unwrap_or("http");
        let original = headers
            .get("x-envoy-original-path")
            .or(headers.get(":path"))
            .unwrap_or("");
        let mut path = split_query(original).0.to_string();
        if let Some(q) = query {
            path.push('?');
            path.push_str(q);
        }
        let path = crate::span::truncate(path, 256);
        let mut url = String::with_capacity(proto.len() + 3 + path.len() + 64);
        url.push_str(proto);
        url.push_str("://");
        url.push_str(headers.get(":authority").unwrap_or(""));
        url.push_str(&path);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn query_values_are_redacted_and_keys_kept() {
        let cases = [
            ("user=jason&token=abc", "user=REDACTED&token=REDACTED", "every value"),
            ("flag",                 "flag",                          "bare key"),
            ("a=1&&b",               "a=REDACTED&&b",                 "empty pair kept"),
        ];
        for (query, want, reason) in cases {
            assert_eq!(redact_query(query), want, "{reason}");
        }
    }

    #[test]
    fn istio_service_tags_take_istios_defaults() {
        let tags = static_tags(&NodeInfo::default());
        let get = |k: &str| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| v.as_str());
        assert_eq!(get("istio.canonical_revision"), Some("latest"));
        assert_eq!(get("istio.canonical_service"), Some("unknown"));
        assert_eq!(get("istio.mesh_id"), Some("unknown"));
        assert_eq!(get("istio.namespace"), Some("default"));
        assert_eq!(get("istio.cluster_id"), Some("unknown"));
        assert_eq!(get("component"), Some("proxy"));
    }
}
