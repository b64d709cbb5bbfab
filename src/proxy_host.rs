//! [`Host`] over the plugin's own ABI layer ([`crate::abi`]). A failed host call means "absent"
//! here (the core degrades), never a panic; the calls that can fail visibly return the host's
//! status in a [`HostError`].
//!
//! Header values are read as bytes: any client can send a value that is not UTF-8 (RFC 9110
//! obs-text), which is read as U+FFFD rather than refused.

use crate::abi;
use log::info;
use meshtrace_core::headers::HeaderMap;
use meshtrace_core::host::{
    Fact, FactSet, Facts, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact,
};
use std::cell::Cell;

/// Where this proxy exposes xDS attributes: under `xds.` (Envoy 1.40) or at the top level
/// (older istio-proxy builds). The node id's read tells, once per configuration, so a request
/// reads exactly one path for each (a property read is among the dearest host calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum XdsAttributes {
    #[default]
    Nested,
    TopLevel,
}

thread_local! {
    // One VM per worker thread, one value per VM.
    static XDS: Cell<XdsAttributes> = const { Cell::new(XdsAttributes::Nested) };
    // The compiled facts expressions (`expr_create`): without and with the gRPC status; none:
    // facts are read one property at a time.
    static FACTS_EXPRS: Cell<[Option<FactsExpression>; 2]> = const { Cell::new([None, None]) };
    // Failed evaluations in a row.
    static CEL_FAILURES: Cell<u32> = const { Cell::new(0) };
}

/// The stream facts asked of Envoy's CEL in one evaluation, in list order: the fact, its
/// attribute (`source/extensions/filters/common/expr/context.h`), and whether it may be absent.
/// An absent attribute fails the whole evaluation unless guarded with `has()` (then it answers
/// `''`, read as absent); the unguarded ones are there on every HTTP stream (Envoy 1.40 on the
/// e2e sidecar; the probe in BENCHMARKS.md "The floor"). The waypoint's and the capture's facts
/// stay property reads.
const CEL_FACTS: [(StreamFact, &str, bool); 12] = [
    (StreamFact::UpstreamCluster, "xds.cluster_name", true),
    (StreamFact::RouteName, "xds.route_name", true),
    (
        StreamFact::ListenerDirection,
        "xds.listener_direction",
        false,
    ),
    (StreamFact::Protocol, "request.protocol", true),
    (
        StreamFact::ResponseCodeDetails,
        "response.code_details",
        true,
    ),
    (StreamFact::ResponseFlags, "response.flags", false),
    (StreamFact::GrpcStatus, "response.grpc_status", true),
    (StreamFact::DownstreamAddress, "source.address", false),
    (StreamFact::UpstreamAddress, "upstream.address", true),
    (StreamFact::RequestSize, "request.size", false),
    (StreamFact::ResponseSize, "response.size", false),
    (StreamFact::ResponseCode, "response.code", true),
];

/// One compiled expression: the token Envoy gave it and the facts it lists, in [`CEL_FACTS`]
/// order.
#[derive(Debug, Clone, Copy)]
struct FactsExpression {
    token: u32,
    facts: FactSet,
}

/// The CEL list of the [`CEL_FACTS`] in `facts`: `[has(xds.cluster_name) ? xds.cluster_name :
/// '', response.flags, …]`.
pub fn facts_expression(facts: FactSet) -> String {
    let mut expr = String::from("[");
    for (_, attr, guarded) in CEL_FACTS.iter().filter(|(f, _, _)| facts.contains(*f)) {
        if expr.len() > 1 {
            expr.push_str(", ");
        }
        if *guarded {
            for part in ["has(", attr, ") ? ", attr, " : ''"] {
                expr.push_str(part);
            }
        } else {
            expr.push_str(attr);
        }
    }
    expr.push(']');
    expr
}

/// Compiles the facts expressions once per configuration, in the root context (Envoy keeps
/// expressions per root: `foreign.cc` `ExpressionFactory::getOrCreateContext`): one for the facts
/// `wanted` (what the core may ask with this configuration) but the gRPC status, and one with
/// it, so a plain HTTP span does not pay for the gRPC status's lookup (~0.9 µs of Envoy's CEL
/// for the three attributes a default sidecar leaves out, measured with the probe). Envoy builds
/// the CEL foreign functions on every platform but Windows (`WASM_USE_CEL_PARSER` in
/// `source/extensions/common/wasm/BUILD`), istio-proxy included (it builds Envoy's `wasm_lib`);
/// a host without them, or a proxy with top-level xDS attributes (older istio-proxy), keeps the
/// reads one by one.
pub fn compile_facts_expressions(wanted: FactSet) {
    let mut compiled = [None, None];
    if XDS.with(Cell::get) == XdsAttributes::Nested {
        let grpc = wanted.with(StreamFact::GrpcStatus);
        let plain = listed(grpc)
            .filter(|f| *f != StreamFact::GrpcStatus)
            .fold(FactSet::EMPTY, FactSet::with);
        for (slot, facts) in compiled.iter_mut().zip([plain, grpc]) {
            match abi::call_foreign_function("expr_create", facts_expression(facts).as_bytes()) {
                Ok(Some(bytes)) => {
                    *slot =
                        <[u8; 4]>::try_from(bytes.as_slice())
                            .ok()
                            .map(|token| FactsExpression {
                                token: u32::from_le_bytes(token),
                                facts,
                            });
                }
                Ok(None) => {}
                Err(HostError(status)) => {
                    info!(
                        "meshtrace: the proxy has no CEL expressions (expr_create answered \
                         {status}): stream facts are read one property at a time"
                    );
                    compiled = [None, None];
                    break;
                }
            }
        }
    }
    FACTS_EXPRS.with(|e| e.set(compiled));
}

/// The facts of [`CEL_FACTS`] in `facts`, in the table's (and the expression's) order.
fn listed(facts: FactSet) -> impl Iterator<Item = StreamFact> {
    CEL_FACTS
        .iter()
        .map(|(f, _, _)| *f)
        .filter(move |f| facts.contains(*f))
}

/// The expression to evaluate for `wanted`: the one without the gRPC status unless it is asked.
fn expression_for(wanted: FactSet) -> Option<FactsExpression> {
    let [plain, grpc] = FACTS_EXPRS.with(Cell::get);
    if wanted.contains(StreamFact::GrpcStatus) {
        grpc.or(plain)
    } else {
        plain.or(grpc)
    }
}

/// Evaluations that may fail in a row before the expression is dropped for this VM: a failure
/// is that stream's facts read one by one (never half-read), but a proxy where it always fails
/// should not pay a wasted crossing on every span.
const CEL_FAILURES_TOLERATED: u32 = 8;

/// The facts of [`CEL_FACTS`] in table order, for [`Facts::read_list`].
// Evaluated at compile time: an index out of range fails the build, never a request.
#[allow(clippy::indexing_slicing)]
const CEL_ORDER: [StreamFact; CEL_FACTS.len()] = {
    let mut order = [StreamFact::UpstreamCluster; CEL_FACTS.len()];
    let mut i = 0;
    while i < CEL_FACTS.len() {
        order[i] = CEL_FACTS[i].0;
        i += 1;
    }
    order
};

/// Evaluates the facts expression: the answers to `wanted` among [`CEL_FACTS`], or `None` when
/// the evaluation failed.
fn evaluate_facts(expr: FactsExpression, wanted: FactSet, facts: &mut Facts) -> Option<()> {
    let answer = abi::call_foreign_function("expr_evaluate", &expr.token.to_le_bytes());
    let read = match &answer {
        Ok(Some(bytes)) => facts.read_list(bytes, &CEL_ORDER, expr.facts, wanted),
        _ => None,
    };
    if read.is_none() {
        let failures = CEL_FAILURES.with(|f| {
            f.set(f.get().saturating_add(1));
            f.get()
        });
        if failures >= CEL_FAILURES_TOLERATED {
            FACTS_EXPRS.with(|e| e.set([None, None]));
            let status = answer.as_ref().err().map_or(0, |e| e.0);
            info!(
                "meshtrace: the stream facts expression failed {failures} times in a row (last \
                 status {status}): facts are read one property at a time"
            );
        }
        return None;
    }
    CEL_FAILURES.with(|f| f.set(0));
    Some(())
}

/// The highest gRPC status code Envoy knows (`Grpc::Status::WellKnownGrpcStatus::MaximumKnown`,
/// UNAUTHENTICATED).
const GRPC_MAX_KNOWN: u64 = 16;

/// What a gRPC response said about its end, kept by the stream's response callbacks for its end:
/// Envoy shows neither the response's headers nor its trailers in `proxy_on_done`
/// (`Context::encodeHeaders` / `encodeTrailers` in `source/extensions/common/wasm/context.cc`
/// forget each map once the filter continues, and `Context::getConstMap` falls back to the
/// access log's maps only inside `proxy_on_log`), and `response.grpc_status` then only maps the
/// HTTP status (`Grpc::Common::getGrpcStatus` reads the trailers, then the headers, then
/// `httpToGrpcStatus` of the response code — 200 is UNKNOWN).
#[derive(Debug, Default)]
pub struct GrpcResponse {
    status: Option<i64>,
    message: Option<String>,
}

impl GrpcResponse {
    /// Reads `grpc-status` (and `grpc-message` for a status other than OK) from the response's
    /// trailers, or its headers for a trailers-only response; a map without them changes nothing.
    pub fn read(&mut self, map: abi::MapType) {
        let Some(value) = map_value(map, "grpc-status") else {
            return;
        };
        // As Envoy reads it (`Grpc::Common::getGrpcStatus`): a value that is not a known code
        // (0..=16) is `InvalidCode`, -1 — which the core reads as no status at all.
        let status = value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|code| *code <= GRPC_MAX_KNOWN)
            .map_or(-1, |code| code as i64);
        self.status = Some(status);
        self.message = (status != 0)
            .then(|| map_value(map, "grpc-message"))
            .flatten();
    }
}

/// [`Host`] over the ABI. At a stream's end (`proxy_on_done`) it carries what the response
/// callbacks kept of a gRPC response ([`GrpcResponse`]) and answers from it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost<'a> {
    ended_grpc: Option<&'a GrpcResponse>,
}

impl<'a> ProxyHost<'a> {
    /// The host for the end of a stream whose response callbacks kept `grpc`.
    pub fn at_stream_end(grpc: &'a GrpcResponse) -> Self {
        ProxyHost {
            ended_grpc: Some(grpc),
        }
    }

    /// The gRPC status the response carried, when it was kept.
    fn kept_grpc_status(&self) -> Option<Fact> {
        self.ended_grpc?.status.map(Fact::Int)
    }

    /// A response header or trailer; at the stream's end, `grpc-message` is the one kept
    /// (trailers-only responses carry it in the headers).
    fn response_value(&self, map: abi::MapType, name: &str) -> Option<String> {
        match self.ended_grpc {
            Some(grpc) if name == "grpc-message" => grpc.message.clone(),
            _ => map_value(map, name),
        }
    }
}

impl Host for ProxyHost<'_> {
    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }

    fn request_headers(&self) -> HeaderMap {
        map_pairs(abi::map::REQUEST_HEADERS)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = abi::set_header_map_value(abi::map::REQUEST_HEADERS, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_value(abi::map::RESPONSE_HEADERS, name)
    }

    /// Envoy's `response.code` (its stream info's response code, the `:status` it sent): the
    /// plugin reads it in `proxy_on_done`, where the response's header map is gone.
    fn response_status(&self) -> Option<u16> {
        match self.stream_fact(StreamFact::ResponseCode)? {
            Fact::Int(code) => u16::try_from(code).ok(),
            Fact::Text(_) => None,
        }
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let _ = abi::set_header_map_value(abi::map::RESPONSE_HEADERS, name, Some(value));
    }

    /// One more field line (Envoy appends an entry; every value already there is kept).
    fn add_response_header(&self, name: &str, value: &str) {
        let _ = abi::add_header_map_value(abi::map::RESPONSE_HEADERS, name, value);
    }

    fn set_property(&self, name: &str, value: &[u8]) {
        let _ = abi::set_property(name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        self.response_value(abi::map::RESPONSE_TRAILERS, name)
    }

    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        let path: &[&str] = match fact {
            NodeFact::Id => &["id"],
            NodeFact::Metadata(key) => &["metadata", key],
            NodeFact::Label(name) => &["metadata", "LABELS", name],
            NodeFact::LocalityZone => &["locality", "zone"],
        };
        let (bytes, xds) = node_property(path)?;
        if fact == NodeFact::Id {
            XDS.with(|x| x.set(xds));
        }
        String::from_utf8(bytes).ok()
    }

    fn stream_fact(&self, fact: StreamFact) -> Option<Fact> {
        if fact == StreamFact::GrpcStatus {
            if let Some(kept) = self.kept_grpc_status() {
                return Some(kept);
            }
        }
        let path = property_path(fact, XDS.with(Cell::get));
        let bytes = abi::property(path).ok().flatten()?;
        Fact::from_bytes(fact, &bytes)
    }

    fn answers_facts_at_once(&self) -> bool {
        expression_for(FactSet::EMPTY).is_some()
    }

    /// With Envoy's CEL: one `expr_evaluate` answers the facts its expression lists (one
    /// crossing and one buffer, where each property read is both); the rest, one read each.
    fn stream_facts(&self, wanted: FactSet) -> Facts {
        let mut facts = Facts::default();
        let evaluated = expression_for(wanted)
            .and_then(|expr| evaluate_facts(expr, wanted, &mut facts).map(|()| expr.facts))
            .unwrap_or(FactSet::EMPTY);
        for fact in wanted.iter() {
            if evaluated.contains(fact) {
                continue;
            }
            if let Some(value) = self.stream_fact(fact) {
                facts.set(fact, value);
            }
        }
        if let Some(kept) = self
            .kept_grpc_status()
            .filter(|_| wanted.contains(StreamFact::GrpcStatus))
        {
            facts.set(StreamFact::GrpcStatus, kept);
        }
        facts
    }

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        let Outgoing::Http {
            cluster,
            headers,
            body,
            timeout,
        } = call;
        abi::http_call(cluster, &headers, body, timeout)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => abi::metric::COUNTER,
            MetricKind::Gauge => abi::metric::GAUGE,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = abi::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = abi::record_metric(id, value);
    }
}

/// Reads `xds.node.<path>`, falling back to `node.<path>` (older istio-proxy), and which of the
/// two answered (no node data at all: assume a current Envoy).
fn node_property(path: &[&str]) -> Option<(Vec<u8>, XdsAttributes)> {
    let mut full: Vec<&str> = Vec::with_capacity(path.len() + 2);
    full.extend(["xds", "node"]);
    full.extend_from_slice(path);
    if let Some(bytes) = abi::property(&full).ok().flatten() {
        return Some((bytes, XdsAttributes::Nested));
    }
    let old = full.get(1..)?;
    let bytes = abi::property(old).ok().flatten()?;
    Some((bytes, XdsAttributes::TopLevel))
}

/// Envoy's attribute path for a stream fact (`source/extensions/filters/common/expr/context.h`;
/// the `xds` ones under `xds.` on Envoy 1.40, at the top level on older istio-proxy builds).
/// Static slices: nothing is built per read.
fn property_path(fact: StreamFact, xds: XdsAttributes) -> &'static [&'static str] {
    let nested = xds == XdsAttributes::Nested;
    match fact {
        StreamFact::UpstreamCluster if nested => &["xds", "cluster_name"],
        StreamFact::UpstreamCluster => &["cluster_name"],
        StreamFact::RouteName if nested => &["xds", "route_name"],
        StreamFact::RouteName => &["route_name"],
        StreamFact::ListenerDirection if nested => &["xds", "listener_direction"],
        StreamFact::ListenerDirection => &["listener_direction"],
        StreamFact::UpstreamWorkload if nested => &[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "istio",
            "workload",
        ],
        StreamFact::UpstreamWorkload => &[
            "upstream_host_metadata",
            "filter_metadata",
            "istio",
            "workload",
        ],
        StreamFact::Protocol => &["request", "protocol"],
        StreamFact::ResponseCodeDetails => &["response", "code_details"],
        StreamFact::ResponseFlags => &["response", "flags"],
        StreamFact::GrpcStatus => &["response", "grpc_status"],
        StreamFact::DownstreamAddress => &["source", "address"],
        StreamFact::UpstreamAddress => &["upstream", "address"],
        StreamFact::RequestSize => &["request", "size"],
        StreamFact::ResponseSize => &["response", "size"],
        StreamFact::RequestStartTime => &["request", "time"],
        StreamFact::ResponseCode => &["response", "code"],
        // Istio's peer metadata filter (`pilot/pkg/xds/filters/filters.go`).
        StreamFact::PeerPrincipal => &["filter_state", "io.istio.peer_principal"],
        StreamFact::PeerWorkload => &["filter_state", "downstream_peer_obj", "workload"],
        StreamFact::PeerNamespace => &["filter_state", "downstream_peer_obj", "namespace"],
        StreamFact::PeerService => &["filter_state", "downstream_peer_obj", "service"],
        StreamFact::PeerRevision => &["filter_state", "downstream_peer_obj", "revision"],
        StreamFact::PeerCluster => &["filter_state", "downstream_peer_obj", "cluster"],
    }
}

/// Every pair of a header map; empty when the host has none to give.
pub fn map_pairs(map: abi::MapType) -> HeaderMap {
    abi::header_map_pairs(map)
        .ok()
        .flatten()
        .map(HeaderMap::from_serialized_vec)
        .unwrap_or_default()
}

/// One header's first value, bytes that are not UTF-8 read as U+FFFD.
pub fn map_value(map: abi::MapType, name: &str) -> Option<String> {
    abi::header_map_value(map, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(fact: StreamFact, xds: XdsAttributes) -> &'static [&'static str] {
        property_path(fact, xds)
    }

    /// A CEL list answer in the pairs layout: each item a key with an empty value.
    fn cel_list(items: &[&[u8]]) -> Vec<u8> {
        let mut bytes = (items.len() as u32).to_le_bytes().to_vec();
        for item in items {
            bytes.extend((item.len() as u32).to_le_bytes());
            bytes.extend(0u32.to_le_bytes());
        }
        for item in items {
            bytes.extend(*item);
            bytes.extend([0, 0]);
        }
        bytes
    }

    /// The list as Envoy 1.40 serialized it on the e2e sidecar (the probe): `[xds.cluster_name,
    /// response.flags, '']` — a text, an int64, an absent value; read in the table's order, and
    /// only the facts wanted kept.
    #[test]
    fn a_cel_list_is_read_item_by_item() {
        use StreamFact::*;
        let listed = FactSet::EMPTY
            .with(ResponseCode)
            .with(ResponseFlags)
            .with(UpstreamCluster);
        let bytes = cel_list(&[b"inbound|9080||", &[0x20, 0, 0, 0, 0, 0, 0, 0], b""]);
        let mut envoy = vec![3, 0, 0, 0];
        for (k, v) in [(14u32, 0u32), (8, 0), (0, 0)] {
            envoy.extend(k.to_le_bytes());
            envoy.extend(v.to_le_bytes());
        }
        envoy.extend(b"inbound|9080||\0\0");
        envoy.extend([0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        envoy.extend([0, 0]);
        assert_eq!(bytes, envoy, "the layout Envoy sends");
        let mut facts = Facts::default();
        assert_eq!(
            facts.read_list(&bytes, &CEL_ORDER, listed, listed),
            Some(())
        );
        assert_eq!(facts.text(UpstreamCluster), Some("inbound|9080||"));
        assert_eq!(facts.int(ResponseFlags), Some(0x20));
        assert_eq!(facts.int(ResponseCode), None, "'' is absent");
        let only_flags = FactSet::EMPTY.with(ResponseFlags);
        let mut facts = Facts::default();
        assert_eq!(
            facts.read_list(&bytes, &CEL_ORDER, listed, only_flags),
            Some(())
        );
        assert_eq!(
            facts.text(UpstreamCluster),
            None,
            "listed but not wanted: not kept"
        );
        assert_eq!(facts.int(ResponseFlags), Some(0x20));
    }

    #[test]
    #[rustfmt::skip]
    fn a_malformed_cel_answer_is_refused_not_half_read() {
        let one = FactSet::EMPTY.with(StreamFact::UpstreamCluster);
        let two = one.with(StreamFact::Protocol);
        let cases: [(&[u8], FactSet, &str); 7] = [
            (&[],                                   one, "empty"),
            (&[1, 0, 0],                            one, "count cut short"),
            (&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0], one, "an item longer than the buffer"),
            (&[0xff, 0xff, 0xff, 0xff],             one, "a count beyond the buffer"),
            (&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x'], one, "no room for the NULs"),
            (&cel_list(&[b"a"]),                    two, "fewer items than listed"),
            (&cel_list(&[b"a", b"b"]),              one, "more items than listed"),
        ];
        for (bytes, listed, why) in cases {
            let mut facts = Facts::default();
            assert_eq!(facts.read_list(bytes, &CEL_ORDER, listed, listed), None, "{why}");
            assert_eq!(facts, Facts::default(), "{why}: nothing recorded");
        }
        assert_eq!(Fact::from_bytes(StreamFact::ResponseFlags, b"abc"), None, "an int64 is 8 bytes");
        assert_eq!(Fact::from_bytes(StreamFact::Protocol, &[0xff]), None, "text is UTF-8");
    }

    /// The expression lists the asked facts in the table's order, a `has()` guard where an
    /// attribute may be absent; facts outside the table are not in it.
    #[test]
    fn the_facts_expression_lists_the_asked_facts_guarding_what_may_be_absent() {
        let all = CEL_FACTS
            .iter()
            .fold(FactSet::EMPTY, |set, (f, _, _)| set.with(*f));
        let expr = facts_expression(all);
        assert!(expr.starts_with("[has(xds.cluster_name) ? xds.cluster_name : '', "));
        assert!(
            expr.contains(", response.flags, "),
            "always there: unguarded"
        );
        assert!(expr.ends_with("has(response.code) ? response.code : '']"));
        assert_eq!(expr.matches("has(").count(), 7);
        let few = FactSet::EMPTY
            .with(StreamFact::ResponseFlags)
            .with(StreamFact::PeerWorkload)
            .with(StreamFact::UpstreamCluster);
        assert_eq!(
            facts_expression(few),
            "[has(xds.cluster_name) ? xds.cluster_name : '', response.flags]",
            "table order; a waypoint fact is no CEL item"
        );
        assert_eq!(facts_expression(FactSet::EMPTY), "[]");
    }

    #[test]
    #[rustfmt::skip]
    fn each_fact_reads_envoys_attribute_on_the_proxys_own_path() {
        use StreamFact::*;
        use XdsAttributes::*;
        let cases: [(StreamFact, XdsAttributes, &[&str], &str); 7] = [
            (UpstreamCluster,   Nested,   &["xds", "cluster_name"],  "Envoy 1.40: xds attributes nested"),
            (UpstreamCluster,   TopLevel, &["cluster_name"],         "older istio-proxy: at the top level"),
            (ListenerDirection, Nested,   &["xds", "listener_direction"], "the listener's direction is an xds attribute"),
            (UpstreamWorkload,  Nested,   &["xds", "upstream_host_metadata", "filter_metadata", "istio", "workload"], "the longest path fits"),
            (ResponseFlags,     TopLevel, &["response", "flags"],    "response attributes never move"),
            (Protocol,          Nested,   &["request", "protocol"],  "request attributes never move"),
            (PeerWorkload,      Nested,   &["filter_state", "downstream_peer_obj", "workload"], "Istio's peer object"),
        ];
        for (fact, xds, want, why) in cases {
            assert_eq!(path(fact, xds), want, "{why}");
        }
        for fact in StreamFact::ALL {
            assert!(!path(fact, Nested).is_empty(), "{fact:?} has a path");
        }
    }
}
