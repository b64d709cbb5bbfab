//! The few things the core needs from the proxy, behind one small trait that names facts, not
//! any proxy's vocabulary: the proxy-wasm adapter (`src/`) answers them with property reads, the
//! native adapter (`native/`) with the dynamic-module ABI's accessors; `mock::MockHost` answers
//! them for tests.

use crate::headers::HeaderMap;
use std::time::Duration;

/// A failed host call, with the status the host answered (proxy-wasm ABI `WasmResult`: 1 not
/// found, 2 bad argument, 3 serialization failure, 10 internal failure, … or any other number a
/// host may return). The core never panics on one: it degrades (no span, no export) instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    /// `BadArgument`: what the proxy answers a call it refuses (e.g. an unknown cluster).
    pub const BAD_ARGUMENT: HostError = HostError(2);
}

/// Kinds of metric the proxy exposes (Envoy stats, Istio's Prometheus scrape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// An outgoing HTTP call to an Envoy cluster, made from the root context. OTLP/gRPC goes this way
/// too (gRPC over HTTP/2), so the exporter controls `:authority`: Envoy's own gRPC client would
/// send the Istio cluster name, which strict HTTP/2 servers reject as an authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    Http {
        cluster: &'a str,
        /// Pseudo-headers (`:method`, `:path`, `:authority`) included.
        headers: Vec<(&'a str, &'a str)>,
        body: &'a [u8],
        timeout: Duration,
    },
}

/// What the core may ask about this proxy, once per configuration. Each adapter answers from
/// what its proxy exposes: the proxy-wasm adapter from Envoy's `xds.node.*` (older istio-proxy:
/// `node.*`) properties, the native adapter from what its ABI and istio-proxy's environment give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFact<'a> {
    /// Envoy's node id: `sidecar~IP~POD.NS~NS.svc.cluster.local`, `router~…`, `waypoint~…`.
    Id,
    /// One key of Istio's node metadata (`NAMESPACE`, `WORKLOAD_NAME`, `NAME`, `CLUSTER_ID`,
    /// `MESH_ID`: `pkg/model/proxy.go` `NodeMetadata`).
    Metadata(&'a str),
    /// One pod label (node metadata `LABELS`).
    Label(&'a str),
    /// The node's locality zone.
    LocalityZone,
}

/// What the core may ask about the stream that is ending. Text facts are absent when empty or
/// not UTF-8; integer facts are Envoy's int64 values (timestamps in Unix nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamFact {
    /// The upstream cluster's name (Istio's `inbound|…`/`outbound|…`).
    UpstreamCluster,
    /// The route's name.
    RouteName,
    /// The listener's traffic direction (`envoy.config.core.v3.TrafficDirection`: 1 inbound,
    /// 2 outbound).
    ListenerDirection,
    /// The request's protocol (`HTTP/1.1`, `HTTP/2`, …).
    Protocol,
    /// Envoy's response code details (`via_upstream`, `route_not_found`, …).
    ResponseCodeDetails,
    /// Envoy's response flags, as its bit set (`StreamInfo::CoreResponseFlag`).
    ResponseFlags,
    /// The final gRPC status (trailers, trailers-only or the HTTP status mapped).
    GrpcStatus,
    /// The downstream peer's address (`IP:port`).
    DownstreamAddress,
    /// The upstream host's address (`IP:port`).
    UpstreamAddress,
    /// The request's size in bytes (headers and body as Envoy counts them).
    RequestSize,
    /// The response's size in bytes.
    ResponseSize,
    /// When the request started, Unix nanoseconds.
    RequestStartTime,
    /// The picked endpoint's Istio workload metadata (`istio.workload`:
    /// `NAME;NAMESPACE;SERVICE;REVISION;CLUSTER`), at a waypoint.
    UpstreamWorkload,
    /// The downstream peer's SPIFFE principal (`io.istio.peer_principal`).
    PeerPrincipal,
    /// Fields of Istio's downstream peer object (`downstream_peer_obj`).
    PeerWorkload,
    PeerNamespace,
    PeerService,
    PeerRevision,
    PeerCluster,
    /// The response status sent downstream (absent when none was sent): asked in a batch in
    /// place of a `:status` header read when the host answers facts at once.
    ResponseCode,
}

impl StreamFact {
    /// Every fact, in declaration order (their index in [`Facts`]).
    pub const ALL: [StreamFact; 20] = [
        StreamFact::UpstreamCluster,
        StreamFact::RouteName,
        StreamFact::ListenerDirection,
        StreamFact::Protocol,
        StreamFact::ResponseCodeDetails,
        StreamFact::ResponseFlags,
        StreamFact::GrpcStatus,
        StreamFact::DownstreamAddress,
        StreamFact::UpstreamAddress,
        StreamFact::RequestSize,
        StreamFact::ResponseSize,
        StreamFact::RequestStartTime,
        StreamFact::UpstreamWorkload,
        StreamFact::PeerPrincipal,
        StreamFact::PeerWorkload,
        StreamFact::PeerNamespace,
        StreamFact::PeerService,
        StreamFact::PeerRevision,
        StreamFact::PeerCluster,
        StreamFact::ResponseCode,
    ];

    /// Whether Envoy answers this fact with an int64 (else text).
    pub const fn is_int(self) -> bool {
        matches!(
            self,
            StreamFact::ListenerDirection
                | StreamFact::ResponseFlags
                | StreamFact::GrpcStatus
                | StreamFact::RequestSize
                | StreamFact::ResponseSize
                | StreamFact::RequestStartTime
                | StreamFact::ResponseCode
        )
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// One answer: text or an integer, as [`StreamFact::is_int`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Text(String),
    Int(i64),
}

impl Fact {
    /// One answer's bytes as `fact`'s type, as Envoy serialises a value for a plugin
    /// (`serializeValue` in `source/extensions/common/wasm/context.cc`): 8 little-endian bytes
    /// for an integer, timestamp or duration, UTF-8 text; empty is absent.
    #[inline(never)]
    pub fn from_bytes(fact: StreamFact, bytes: &[u8]) -> Option<Fact> {
        if bytes.is_empty() {
            return None;
        }
        if fact.is_int() {
            let bytes: [u8; 8] = bytes.try_into().ok()?;
            Some(Fact::Int(i64::from_le_bytes(bytes)))
        } else {
            String::from_utf8(bytes.to_vec()).ok().map(Fact::Text)
        }
    }
}

/// A set of [`StreamFact`]s, asked for together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactSet(u32);

impl FactSet {
    pub const EMPTY: FactSet = FactSet(0);

    pub const fn with(self, fact: StreamFact) -> FactSet {
        FactSet(self.0 | fact.bit())
    }

    /// `fact` added when `wanted`.
    pub const fn with_if(self, fact: StreamFact, wanted: bool) -> FactSet {
        if wanted {
            self.with(fact)
        } else {
            self
        }
    }

    pub const fn contains(self, fact: StreamFact) -> bool {
        self.0 & fact.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = StreamFact> {
        StreamFact::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

/// The answers to a [`FactSet`]: absent for a fact not asked for or unknown to the proxy. Kept
/// on the stack, indexed by fact (no allocation per request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    answers: [Option<Fact>; StreamFact::ALL.len()],
}

impl Facts {
    /// Records an answer; a text answer that is empty is no answer.
    pub fn set(&mut self, fact: StreamFact, value: Fact) {
        if matches!(&value, Fact::Text(t) if t.is_empty()) {
            return;
        }
        if let Some(slot) = self.answers.get_mut(fact as usize) {
            *slot = Some(value);
        }
    }

    pub fn text(&self, fact: StreamFact) -> Option<&str> {
        match self.answers.get(fact as usize)? {
            Some(Fact::Text(t)) => Some(t.as_str()),
            _ => None,
        }
    }

    pub fn int(&self, fact: StreamFact) -> Option<i64> {
        match self.answers.get(fact as usize)? {
            Some(Fact::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// Records the answers in a CEL list as Envoy serializes it for a plugin (`serializeValue`
    /// in `source/extensions/common/wasm/context.cc`: proxy-wasm's pairs layout, each item a key
    /// with an empty value): item `i` answers the `i`-th fact of `order` in `listed`; those in
    /// `wanted` are kept ([`Fact::from_bytes`]). `None`, and nothing recorded, when the layout
    /// does not add up or the list is not as long as `listed` says: an answer is read whole or
    /// not at all. Here rather than in the Wasm adapter because the core is built for speed and
    /// the adapter for size: there, the same reading took ~6,400 instructions for a sidecar
    /// span's eleven items.
    #[inline(never)]
    pub fn read_list(
        &mut self,
        bytes: &[u8],
        order: &[StreamFact],
        listed: FactSet,
        wanted: FactSet,
    ) -> Option<()> {
        let u32_at = |at: usize| crate::headers::read_u32(bytes, at);
        let count = u32_at(0)?;
        let start = count.checked_mul(8)?.checked_add(4)?;
        let listed = || order.iter().copied().filter(move |f| listed.contains(*f));
        // The layout first, so that a malformed answer records nothing.
        let mut at = start;
        for i in 0..count {
            // 4 + 8 * i < 4 + 8 * count, which did not overflow.
            let key = u32_at(4 + 8 * i)?;
            let value = u32_at(8 + 8 * i)?;
            // key, NUL, value, NUL
            at = at.checked_add(key)?.checked_add(value)?.checked_add(2)?;
        }
        if at > bytes.len() || listed().count() != count {
            return None;
        }
        // Then each item, every one within `bytes`.
        let mut at = start;
        for (i, fact) in listed().enumerate() {
            let key = u32_at(4 + 8 * i).unwrap_or(0);
            let value = u32_at(8 + 8 * i).unwrap_or(0);
            if wanted.contains(fact) {
                let item = bytes.get(at..at.saturating_add(key)).unwrap_or_default();
                if let Some(answer) = Fact::from_bytes(fact, item) {
                    self.set(fact, answer);
                }
            }
            at = at
                .saturating_add(key)
                .saturating_add(value)
                .saturating_add(2);
        }
        Some(())
    }

    /// Moves a text answer out (the core keeps some in the span).
    pub fn take_text(&mut self, fact: StreamFact) -> Option<String> {
        match self.answers.get_mut(fact as usize)?.take()? {
            Fact::Text(t) => Some(t),
            Fact::Int(_) => None,
        }
    }
}

pub trait Host {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> u64;
    /// All request headers, in order, repeated names kept (one host call).
    fn request_headers(&self) -> HeaderMap;
    /// Sets (replacing every existing value) or, with `None`, removes a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// One response header (e.g. `:status`).
    fn response_header(&self, name: &str) -> Option<String>;
    /// The response's final HTTP status, read when the stream has ended; `None` when no response
    /// was sent. By default its `:status` header; an adapter that ends streams where the
    /// response's headers are no longer shown answers from the proxy's own record (the Wasm
    /// adapter: Envoy's `response.code`); the native one parses it in Envoy's buffer, no copy.
    fn response_status(&self) -> Option<u16> {
        self.response_header(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
    }
    /// Sets a response header, replacing every existing value (only in response headers).
    fn set_response_header(&self, name: &str, value: &str);
    /// Adds a value to a list-valued response header (`server-timing`), keeping every value
    /// already there: one more field line means the same as the value appended after a comma
    /// (RFC 9110 §5.3). A host that cannot append falls back to [`append_by_replacing`].
    fn add_response_header(&self, name: &str, value: &str) {
        append_by_replacing(self, name, value);
    }
    /// One response trailer (e.g. `grpc-message`); hosts without trailers have none.
    fn response_trailer(&self, _name: &str) -> Option<String> {
        None
    }
    /// A fact about this proxy (asked once per configuration); absent when empty or unknown.
    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String>;
    /// One fact about the stream that is ending.
    fn stream_fact(&self, fact: StreamFact) -> Option<Fact>;
    /// Whether [`Host::stream_facts`] answers any set in one crossing: the core then asks, at
    /// the end of a stream, for every fact the span may need in one set (the response status
    /// included) instead of asking some only once an earlier answer says they matter.
    fn answers_facts_at_once(&self) -> bool {
        false
    }
    /// Several facts about the stream at once. An adapter that can answer them in one crossing
    /// overrides this; by default each is asked on its own.
    fn stream_facts(&self, wanted: FactSet) -> Facts {
        let mut facts = Facts::default();
        for fact in wanted.iter() {
            if let Some(value) = self.stream_fact(fact) {
                facts.set(fact, value);
            }
        }
        facts
    }
    /// Sets the request's property `name`, a path of ONE segment (`meshtrace.trace_id`): Envoy
    /// keeps it as filter state `wasm.<name>` for access logs and other filters. A failure is
    /// absorbed (no filter state), never a panic.
    fn set_property(&self, name: &str, value: &[u8]);
    /// Starts an outgoing call; the answer arrives later with the returned token.
    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError>;
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);
}

/// Appends by reading the header and setting the joined value: correct for one field line; a
/// host whose `response_header` answers only the first of several lines keeps only that one.
pub(crate) fn append_by_replacing<H: Host + ?Sized>(host: &H, name: &str, value: &str) {
    match host.response_header(name) {
        Some(existing) if !existing.trim().is_empty() => {
            host.set_response_header(name, &format!("{existing}, {value}"));
        }
        _ => host.set_response_header(name, value),
    }
}

impl dyn Host + '_ {
    /// A text fact of the stream, absent when empty.
    pub(crate) fn text_fact(&self, fact: StreamFact) -> Option<String> {
        match self.stream_fact(fact)? {
            Fact::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }

    /// An integer fact of the stream.
    pub(crate) fn int_fact(&self, fact: StreamFact) -> Option<i64> {
        match self.stream_fact(fact)? {
            Fact::Int(i) => Some(i),
            Fact::Text(_) => None,
        }
    }
}

#[cfg(any(test, feature = "mock"))]
pub mod mock;
