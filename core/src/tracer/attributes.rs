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
use crate::headers::HeaderMap;
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

/// Which of Envoy's spans a span stands for, which decides the request's own tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpanRole {
    /// The request as this proxy received it (Envoy's downstream span,
    /// `finalizeDownstreamSpan`): the proxy's own span, and at a waypoint the source's CLIENT
    /// span above it.
    Downstream,
    /// The CLIENT child spawned for the upstream (Envoy's upstream span,
    /// `finalizeUpstreamSpan`).
    Upstream,
}

/// What the conventions read of the request, parsed once per span.
struct Request<'a> {
    headers: &'a HeaderMap,
    method: &'a str,
    /// `:path` without its query.
    path: &'a str,
    /// The query as `attributes.urlQuery` lets it be recorded.
    query: Option<String>,
    scheme: Option<&'a str>,
    authority: &'a str,
    /// `:authority` split into host and port.
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Request<'a> {
    fn new(headers: &'a HeaderMap, recorded_query: impl Fn(&str) -> Option<String>) -> Self {
        let header = |name: &str| headers.get(name).unwrap_or("");
        let (path, query) = split_query(header(":path"));
        let authority = header(":authority");
        let (host, port) = split_authority(authority);
        Request {
            headers,
            method: header(":method"),
            path,
            query: recorded_query(query),
            scheme: headers.get(":scheme").filter(|s| !s.is_empty()),
            authority,
            host,
            port,
        }
    }
}

/// OpenTelemetry HTTP semantic conventions (stable HTTP attributes, semconv v1.26+), both
/// kinds; the peer of the connection is the caller for a SERVER span, the server for a CLIENT
/// one.
fn http_conventions(a: &mut Attrs<'_>, request: &Request<'_>, outcome: &Outcome, kind: SpanKind) {
    a.str("http.request.method", request.method);
    a.str("url.path", request.path);
    if let Some(q) = &request.query {
        a.str("url.query", q);
    }
    if let Some(scheme) = request.scheme {
        a.str("url.scheme", scheme);
    }
    if !request.host.is_empty() {
        a.str("server.address", request.host);
    }
    if let Some(port) = request.port {
        a.int("server.port", i64::from(port));
    }
    if let Some(code) = outcome.status {
        a.int("http.response.status_code", i64::from(code));
    }
    if let Some(v) = &outcome.protocol_version {
        a.str("network.protocol.version", v);
    }
    if let Some(ua) = request.headers.get("user-agent") {
        a.str("user_agent.original", ua);
    }
    if let Some(error_type) = outcome.error_type(kind) {
        a.string("error.type", error_type);
    }
    let peer = match kind {
        SpanKind::Server => outcome.downstream_address.as_deref(),
        SpanKind::Client => outcome.upstream_address.as_deref(),
    };
    if let Some((ip, port)) = peer.map(split_authority) {
        a.str("network.peer.address", ip);
        if let Some(port) = port {
            a.int("network.peer.port", i64::from(port));
        }
    }
}

/// HTTP conventions of a SERVER span: the original client, when a proxy in front of this one
/// said who it was (`x-forwarded-for`), else the connection's peer.
fn caller(a: &mut Attrs<'_>, request: &Request<'_>, outcome: &Outcome) {
    let forwarded = request
        .headers
        .get("x-forwarded-for")
        .and_then(|x| x.split(',').next())
        .map(str::trim)
        .filter(|x| !x.is_empty());
    let downstream = outcome.downstream_address.as_deref();
    if let Some(client) = forwarded.or(downstream.map(|d| split_authority(d).0)) {
        a.str("client.address", client);
    }
}

/// HTTP conventions of a CLIENT span: the URL called, and the called service, so calls leaving
/// the mesh are nodes of service graphs.
fn callee(a: &mut Attrs<'_>, request: &Request<'_>, outcome: &Outcome) {
    let mut full = String::with_capacity(request.authority.len() + request.path.len() + 16);
    full.push_str(request.scheme.unwrap_or("http"));
    full.push_str("://");
    full.push_str(request.authority);
    full.push_str(request.path);
    if let Some(q) = &request.query {
        full.push('?');
        full.push_str(q);
    }
    a.string("url.full", full);
    let upstream_key = outcome
        .upstream_cluster
        .as_deref()
        .and_then(parse_subset_key);
    let called = match upstream_key {
        Some(k) if !k.host.is_empty() => peer_service(k.host),
        _ => peer_service(request.host),
    };
    if let Some(service) = called {
        a.str("peer.service", service);
    }
}

/// OpenTelemetry RPC semantic conventions (gRPC); `compat` adds Istio's `grpc.status_code`.
fn rpc_conventions(a: &mut Attrs<'_>, request: &Request<'_>, outcome: &Outcome, compat: bool) {
    let Some(grpc) = &outcome.grpc else {
        return;
    };
    a.str("rpc.system", "grpc");
    if let Some((service, rpc_method)) = grpc_method(request.path) {
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

    /// Every attribute of a span, convention by convention. The order is the order of
    /// importance: under `limits.maxAttributes` the last ones are dropped first (see
    /// [`Span::set_attribute`]), so semantic conventions come before Istio's tags, its
    /// duplicates and the custom tags.
    pub(super) fn set_attributes(
        &self,
        span: &mut Span,
        active: &ActiveSpan,
        outcome: &Outcome,
        role: SpanRole,
    ) {
        let kind = span.kind;
        (span.status, span.status_message) = span_status(kind, outcome);
        let request = Request::new(&active.headers, |q| self.recorded_query(q));
        let mut a = Attrs {
            span,
            limits: &self.config.limits,
        };
        http_conventions(&mut a, &request, outcome, kind);
        match kind {
            SpanKind::Server => caller(&mut a, &request, outcome),
            SpanKind::Client => callee(&mut a, &request, outcome),
        }
        rpc_conventions(
            &mut a,
            &request,
            outcome,
            self.config.attributes.istio_compat,
        );
        self.istio_tracer_tags(&mut a, active, outcome, role);
        if self.config.attributes.istio_compat {
            self.istio_duplicates(&mut a, active, &request, outcome, role);
        }
        self.custom_tags(&mut a, &active.headers);
    }

    /// Istio's tracer: tags with no semantic-convention twin, always.
    fn istio_tracer_tags(
        &self,
        a: &mut Attrs<'_>,
        active: &ActiveSpan,
        outcome: &Outcome,
        role: SpanRole,
    ) {
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
        if let Some(address) = &outcome.upstream_address {
            a.str("upstream_address", address);
        }
        // On the spawned CLIENT child too (Envoy leaves it off): one request, one id to search.
        let request_id = match &active.generated_request_id {
            Some(id) => id.as_str(),
            None => active.headers.get(REQUEST_ID).unwrap_or(""),
        };
        a.str("guid:x-request-id", request_id);
        if role == SpanRole::Downstream {
            let cluster = active.headers.get("x-envoy-downstream-service-cluster");
            a.str("downstream_cluster", cluster.unwrap_or("-"));
        }
    }

    /// Istio's tracer: the duplicates of semantic-convention attributes, under
    /// `attributes.istioCompat`; the request's own only on Envoy's downstream span
    /// (`finalizeDownstreamSpan`, `addGrpcRequestTags`).
    fn istio_duplicates(
        &self,
        a: &mut Attrs<'_>,
        active: &ActiveSpan,
        request: &Request<'_>,
        outcome: &Outcome,
        role: SpanRole,
    ) {
        a.string("http.status_code", outcome.status.unwrap_or(0).to_string());
        if let Some(v) = &outcome.protocol_version {
            a.string("http.protocol", format!("HTTP/{v}"));
        }
        if outcome.envoy_error_tag() {
            a.str("error", "true");
        }
        let peer_address = match role {
            SpanRole::Downstream => &outcome.downstream_address,
            SpanRole::Upstream => &outcome.upstream_address,
        };
        if let Some(address) = peer_address {
            a.str("peer.address", address);
        }
        if role == SpanRole::Upstream {
            return;
        }
        let headers = &active.headers;
        a.str("http.method", request.method);
        a.string("http.url", self.http_url(active, request.query.as_deref()));
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
            a.str("grpc.path", headers.get(":path").unwrap_or(""));
            a.str("grpc.authority", request.authority);
            a.str(
                "grpc.content_type",
                headers.get("content-type").unwrap_or(""),
            );
            if let Some(timeout) = headers.get("grpc-timeout") {
                a.str("grpc.timeout", timeout);
            }
        }
    }

    /// Istio's custom tags (Envoy applies them to every span, `setCommonTags`).
    fn custom_tags(&self, a: &mut Attrs<'_>, headers: &HeaderMap) {
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
