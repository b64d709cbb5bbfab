//! The core's [`Host`] over the dynamic-module ABI, in its two places:
//!
//! - [`StreamHost`], on a worker thread, inside one stream's event hook: headers, filter state,
//!   end-of-stream attributes. Its counters go to the configuration's atomic tallies
//!   ([`crate::filter::Hub::tallies`]), never to Envoy: the request path makes no stats call.
//! - [`ConfigHost`], on the main thread (configuration, scheduler, callout answers): defines the
//!   stats, hands the tallies and its own counts to Envoy, sends export batches as
//!   configuration-level callouts (they outlive any stream).
//!
//! A failed or refused callback means "absent" (the core degrades), never a panic.

use crate::abi::{self, EnvoyBuffer, ModuleBuffer, ModuleHeader};
use crate::filter::Hub;
use crate::node::Node;
use meshtrace_core::headers::{HeaderMap, NameFilter};
use meshtrace_core::host::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// Filter state keys: the Wasm plugin's `set_property("meshtrace.trace_id")` is stored by Envoy
/// as `wasm.meshtrace.trace_id` (Envoy `source/extensions/common/wasm/context.cc`,
/// `Context::setProperty`: `WasmStateKeyPrefix`); the native adapter writes that same key, so
/// `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%` reads the same in either. Envoy stores the
/// bytes as a `Router::StringAccessorImpl` (`abi_impl.cc`,
/// `envoy_dynamic_module_callback_http_set_filter_state_bytes`), whose PLAIN serialization is
/// the string itself.
const FILTER_STATE_PREFIX: &str = "wasm.";

pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The host inside one stream's event hook.
pub struct StreamHost<'a> {
    pub filter: abi::FilterEnvoyPtr,
    pub hub: &'a Hub,
    /// The request header names read in this hook (the map's own [`NameFilter`]): a header the
    /// request does not carry is added, not set (below). `None` until the map is read.
    request_names: Cell<Option<NameFilter>>,
}

impl<'a> StreamHost<'a> {
    pub fn new(filter: abi::FilterEnvoyPtr, hub: &'a Hub) -> StreamHost<'a> {
        StreamHost {
            filter,
            hub,
            request_names: Cell::new(None),
        }
    }

    /// The first value of `name`, in Envoy's buffer: valid until the end of this hook, which
    /// this host does not outlive.
    fn header_bytes(&self, map: u32, name: &str) -> Option<&[u8]> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: `filter` is the stream's pointer, valid during this event hook; Envoy writes
        // one buffer into `value` and reads `name` only during the call.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                map,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                0,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return None;
        }
        // SAFETY: Envoy's buffer, valid until the end of this hook.
        unsafe { abi::envoy_bytes(value.ptr, value.len) }
    }

    /// Bytes that are not UTF-8 read as U+FFFD (header values may carry obs-text).
    fn header(&self, map: u32, name: &str) -> Option<String> {
        self.header_bytes(map, name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// One more value of `name`, every value already there kept (Envoy's `addCopy`).
    fn add_header(&self, map: u32, name: &str, value: &str) {
        // SAFETY: the stream's pointer; both buffers are read during the call only.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.filter,
                map,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn set_header(&self, map: u32, name: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::null(), |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the stream's pointer; both buffers are read during the call only.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.filter,
                map,
                ModuleBuffer::of(name.as_bytes()),
                value,
            );
        }
    }

    pub fn attr_string(&self, id: u32) -> Option<String> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: the stream's pointer; Envoy writes one buffer.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                id,
                &mut value,
            )
        };
        if ok == 0 {
            return None;
        }
        // SAFETY: Envoy's buffer, valid until the end of this hook.
        unsafe { abi::envoy_str(value.ptr, value.len) }.filter(|s| !s.is_empty())
    }

    pub fn attr_int(&self, id: u32) -> Option<i64> {
        let mut value = 0u64;
        // SAFETY: the stream's pointer; Envoy writes one u64.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.filter,
                id,
                &mut value,
            )
        };
        (ok != 0).then(|| i64::try_from(value).unwrap_or(i64::MAX))
    }

    fn host_metadata(&self, ns: &str, key: &str) -> Option<String> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: the stream's pointer; Envoy writes one buffer.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.filter,
                abi::metadata_source::HOST,
                ModuleBuffer::of(ns.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                &mut value,
            )
        };
        if ok == 0 {
            return None;
        }
        // SAFETY: Envoy's buffer, valid until the end of this hook.
        unsafe { abi::envoy_str(value.ptr, value.len) }
    }

    fn filter_state(&self, key: &str) -> Option<String> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: the stream's pointer; Envoy writes one buffer.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(key.as_bytes()),
                &mut value,
            )
        };
        if ok == 0 {
            return None;
        }
        // SAFETY: Envoy's buffer, valid until the end of this hook.
        unsafe { abi::envoy_str(value.ptr, value.len) }
    }
}

/// A fact about this proxy, from its node ([`Node`]: the bootstrap or pilot-agent's
/// environment).
fn node_fact(fact: NodeFact<'_>) -> Option<String> {
    let node = Node::get();
    let text = match fact {
        NodeFact::Id => Some(node.id.clone()),
        NodeFact::LocalityZone => Some(node.zone.clone()),
        NodeFact::Label(name) => node.label(name),
        NodeFact::Metadata(key) => node.metadata(key),
    }?;
    (!text.is_empty()).then_some(text)
}

impl Host for StreamHost<'_> {
    fn now_unix_nanos(&self) -> u64 {
        now_unix_nanos()
    }

    /// The request's header map in two callbacks (its size, its pairs) — Envoy's iteration of
    /// its map, where one `get_header` per name would be one lookup each, and the unsampled
    /// request keeps the whole map for error capture. The pairs land on the stack for any
    /// ordinary request and go straight into the core's map (no serialization in between).
    fn request_headers(&self) -> HeaderMap {
        let map = abi::header_type::REQUEST_HEADER;
        // SAFETY: the stream's pointer.
        let count =
            unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.filter, map) };
        // A request has at most Envoy's header count limit (100 by default, 8192 at most):
        // a count beyond is not believed.
        if count == 0 || count > MAX_HEADERS {
            return HeaderMap::new();
        }
        // Only the `count` entries Envoy fills are initialized (the array is 4 KiB).
        let mut on_stack = [MaybeUninit::<abi::EnvoyHeader>::uninit(); STACK_HEADERS];
        let mut on_heap;
        let pairs: &mut [abi::EnvoyHeader] = match on_stack.get_mut(..count) {
            Some(slots) => {
                for slot in slots.iter_mut() {
                    slot.write(abi::EnvoyHeader::empty());
                }
                // SAFETY: each of the `count` slots was initialized just above.
                unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast(), count) }
            }
            None => {
                on_heap = vec![abi::EnvoyHeader::empty(); count];
                &mut on_heap
            }
        };
        // SAFETY: `pairs` holds `count` entries, the size Envoy reported.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                self.filter,
                map,
                pairs.as_mut_ptr(),
            )
        };
        if ok == 0 {
            return HeaderMap::new();
        }
        let map = HeaderMap::from_byte_pairs(pairs.iter().filter_map(|h| {
            // SAFETY: Envoy's buffers, valid until the end of this hook.
            let (k, v) = unsafe {
                (
                    abi::envoy_bytes(h.key_ptr, h.key_len),
                    abi::envoy_bytes(h.value_ptr, h.value_len),
                )
            };
            Some((k?, v?))
        }));
        // A pair Envoy handed over unreadable is not in the map: any name may then be there.
        let names = if map.len() == count {
            map.name_filter()
        } else {
            NameFilter::ANY
        };
        self.request_names.set(Some(names));
        map
    }

    /// A value for a header the request does not carry (as read in this hook) is added:
    /// Envoy's `set_header` is `setCopy` (`abi_impl.cc`, `setHeaderValueImpl`), which first
    /// removes every entry of the name, a scan of the map that `add_header` (`addCopy`) skips.
    /// Otherwise, and for a removal, it is set.
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let absent = self
            .request_names
            .get()
            .is_some_and(|names| !names.may_contain(name));
        match value {
            Some(v) if absent && !v.is_empty() => {
                self.add_header(abi::header_type::REQUEST_HEADER, name, v);
                // Present from now on: a second write of the name replaces this one.
                self.request_names
                    .set(self.request_names.get().map(|n| n.with(name)));
            }
            _ => self.set_header(abi::header_type::REQUEST_HEADER, name, value),
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.header(abi::header_type::RESPONSE_HEADER, name)
    }

    /// Parsed in Envoy's buffer: no copy, no allocation (the end of every request).
    fn response_status(&self) -> Option<u16> {
        let bytes = self.header_bytes(abi::header_type::RESPONSE_HEADER, ":status")?;
        std::str::from_utf8(bytes).ok()?.trim().parse().ok()
    }

    fn set_response_header(&self, name: &str, value: &str) {
        self.set_header(abi::header_type::RESPONSE_HEADER, name, Some(value));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.add_header(abi::header_type::RESPONSE_HEADER, name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        self.header(abi::header_type::RESPONSE_TRAILER, name)
    }

    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        node_fact(fact)
    }

    /// Each fact from the attribute Envoy's dynamic-module ABI has for it (abi.h
    /// `envoy_dynamic_module_type_attribute_id`, the names of Envoy's attribute vocabulary, as the
    /// Wasm adapter's property paths), the endpoint's `istio.workload` from its metadata, the
    /// peer principal from Istio's filter state. Istio's peer object (`downstream_peer_obj`) is
    /// not readable through this ABI: those facts are unknown here (docs/native.md).
    fn stream_fact(&self, fact: StreamFact) -> Option<Fact> {
        use abi::attribute as a;
        let text = |id| self.attr_string(id).map(Fact::Text);
        let int = |id| self.attr_int(id).map(Fact::Int);
        match fact {
            StreamFact::UpstreamCluster => text(a::XDS_CLUSTER_NAME),
            StreamFact::RouteName => text(a::XDS_ROUTE_NAME),
            StreamFact::ListenerDirection => int(a::XDS_LISTENER_DIRECTION),
            StreamFact::Protocol => text(a::REQUEST_PROTOCOL),
            StreamFact::ResponseCodeDetails => text(a::RESPONSE_CODE_DETAILS),
            StreamFact::ResponseFlags => int(a::RESPONSE_FLAGS),
            StreamFact::GrpcStatus => int(a::RESPONSE_GRPC_STATUS),
            StreamFact::DownstreamAddress => text(a::SOURCE_ADDRESS),
            StreamFact::UpstreamAddress => text(a::UPSTREAM_ADDRESS),
            StreamFact::RequestSize => int(a::REQUEST_SIZE),
            StreamFact::ResponseSize => int(a::RESPONSE_SIZE),
            StreamFact::RequestStartTime => int(a::REQUEST_TIME),
            StreamFact::ResponseCode => int(a::RESPONSE_CODE),
            StreamFact::UpstreamWorkload => self.host_metadata("istio", "workload").map(Fact::Text),
            StreamFact::PeerPrincipal => {
                self.filter_state("io.istio.peer_principal").map(Fact::Text)
            }
            StreamFact::PeerWorkload
            | StreamFact::PeerNamespace
            | StreamFact::PeerService
            | StreamFact::PeerRevision
            | StreamFact::PeerCluster => None,
        }
    }

    /// Four to five per request (`propagation.publishContext`): the prefixed key is put together
    /// on the stack, not allocated, whenever it fits (every key the core writes does).
    fn set_property(&self, name: &str, value: &[u8]) {
        let mut stack = [0u8; 64];
        let heap;
        let prefix = FILTER_STATE_PREFIX.as_bytes();
        let key: &[u8] = match stack.get_mut(..prefix.len() + name.len()) {
            Some(key) => {
                let (head, tail) = key.split_at_mut(prefix.len());
                head.copy_from_slice(prefix);
                tail.copy_from_slice(name.as_bytes());
                key
            }
            None => {
                heap = [prefix, name.as_bytes()].concat();
                &heap
            }
        };
        // SAFETY: the stream's pointer; both buffers are copied by Envoy during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(key),
                ModuleBuffer::of(value),
            );
        }
    }

    /// Export leaves from the main thread ([`ConfigHost`]); a stream never sends.
    fn dispatch(&self, _call: Outgoing<'_>) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }

    fn define_metric(&self, _kind: MetricKind, _name: &str) -> Result<u32, HostError> {
        Err(HostError::BAD_ARGUMENT)
    }

    /// Counted in the configuration's atomic tally; the main thread hands it to Envoy.
    fn increment_metric(&self, id: u32, delta: i64) {
        if let Some(tally) = self.hub.tallies.get(id as usize) {
            tally.fetch_add(u64::try_from(delta).unwrap_or(0), Ordering::Relaxed);
        }
    }

    fn record_metric(&self, _id: u32, _value: u64) {}
}

/// Envoy's default limit of request headers is 100 (`max_headers_count`), configurable up to
/// a few thousand; a count beyond this is taken as a broken answer.
pub const MAX_HEADERS: usize = 16 * 1024;

/// Header pairs read into a stack array: more than Envoy's default limit of 100 go to the heap.
const STACK_HEADERS: usize = 128;

/// One defined stat: its kind and Envoy's id for it.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyStat {
    pub kind: MetricKind,
    pub id: usize,
}

/// The host on the main thread, for one configuration.
pub struct ConfigHost {
    pub config: abi::ConfigEnvoyPtr,
    /// Stats by the core's metric id (the index), `None` where Envoy refused one.
    pub stats: RefCell<Vec<Option<EnvoyStat>>>,
    /// Callouts in flight: Envoy's callout id and the core's token for it.
    pub callouts: RefCell<Vec<(u64, u32)>>,
    /// Answers of gRPC exports, gathered from their stream's events (by Envoy's stream id).
    pub streams: RefCell<Vec<(u64, StreamAnswer)>>,
    next_token: std::cell::Cell<u32>,
}

/// An OTLP/gRPC answer as its stream delivers it: a one-shot callout's answer has no trailers
/// (Envoy `filter_config.cc`, `HttpCalloutCallback::onSuccess` passes the headers and body
/// only), and gRPC puts its status there ("gRPC over HTTP2": Trailers), so gRPC exports go as
/// configuration-level streams (`start_http_stream`), whose trailers arrive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamAnswer {
    pub status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl StreamAnswer {
    /// Headers or trailers: `:status`, `grpc-status` (trailers, or a trailers-only answer's
    /// headers), `retry-after`.
    pub fn add_headers(&mut self, headers: &[abi::EnvoyHeader]) {
        for h in headers {
            // SAFETY: Envoy's buffers, valid until the end of the hook.
            let (Some(k), Some(v)) = (unsafe { abi::envoy_bytes(h.key_ptr, h.key_len) }, unsafe {
                abi::envoy_str(h.value_ptr, h.value_len)
            }) else {
                continue;
            };
            match k {
                b":status" => self.status = v.parse().ok(),
                b"grpc-status" => self.grpc_status = v.parse().ok(),
                b"retry-after" => self.retry_after = Some(v),
                _ => {}
            }
        }
    }

    /// Body chunks, at most `max` bytes kept.
    pub fn add_body(&mut self, chunks: &[abi::EnvoyBuffer], max: usize) {
        for chunk in chunks {
            // SAFETY: Envoy's buffers, valid until the end of the hook.
            let Some(bytes) = (unsafe { abi::envoy_bytes(chunk.ptr, chunk.len) }) else {
                continue;
            };
            let room = max.saturating_sub(self.body.len());
            self.body
                .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        }
    }
}

impl ConfigHost {
    pub fn new(config: abi::ConfigEnvoyPtr) -> ConfigHost {
        ConfigHost {
            config,
            stats: RefCell::new(Vec::new()),
            callouts: RefCell::new(Vec::new()),
            streams: RefCell::new(Vec::new()),
            next_token: std::cell::Cell::new(1),
        }
    }

    /// The answer gathered so far of a gRPC export stream.
    pub fn with_stream(&self, stream_id: u64, f: impl FnOnce(&mut StreamAnswer)) {
        if let Some((_, answer)) = self
            .streams
            .borrow_mut()
            .iter_mut()
            .find(|(id, _)| *id == stream_id)
        {
            f(answer);
        }
    }

    /// A gRPC export stream's answer, forgotten once taken.
    pub fn take_stream(&self, stream_id: u64) -> Option<StreamAnswer> {
        let mut streams = self.streams.borrow_mut();
        let at = streams.iter().position(|&(id, _)| id == stream_id)?;
        Some(streams.swap_remove(at).1)
    }

    /// The core's token for Envoy's callout id, forgotten once answered.
    pub fn take_token(&self, callout_id: u64) -> Option<u32> {
        let mut callouts = self.callouts.borrow_mut();
        let at = callouts.iter().position(|&(id, _)| id == callout_id)?;
        Some(callouts.swap_remove(at).1)
    }

    /// Defines a stat by name (only while Envoy creates the configuration: it freezes stat
    /// creation after `on_http_filter_config_new`).
    pub fn define_stat(&self, kind: MetricKind, name: &str) -> Option<EnvoyStat> {
        let mut id = 0usize;
        // Counters and gauges are defined by twin callbacks of one signature.
        let define = match kind {
            MetricKind::Counter => {
                abi::envoy_dynamic_module_callback_http_filter_config_define_counter
            }
            MetricKind::Gauge => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge,
        };
        // SAFETY: the configuration's pointer, during `on_http_filter_config_new`; no labels.
        let result = unsafe {
            define(
                self.config,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (result == abi::metrics_result::SUCCESS).then_some(EnvoyStat { kind, id })
    }

    pub fn add_to_stat(&self, stat: EnvoyStat, delta: u64) {
        if delta == 0 || stat.kind != MetricKind::Counter {
            return;
        }
        // SAFETY: the configuration's pointer and a stat it defined; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.config,
                stat.id,
                std::ptr::null_mut(),
                0,
                delta,
            );
        }
    }

    fn stat(&self, id: u32) -> Option<EnvoyStat> {
        self.stats.borrow().get(id as usize).copied().flatten()
    }
}

impl Host for ConfigHost {
    fn now_unix_nanos(&self) -> u64 {
        now_unix_nanos()
    }

    fn request_headers(&self) -> HeaderMap {
        HeaderMap::new()
    }

    fn set_request_header(&self, _name: &str, _value: Option<&str>) {}

    fn response_header(&self, _name: &str) -> Option<String> {
        None
    }

    fn set_response_header(&self, _name: &str, _value: &str) {}

    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        node_fact(fact)
    }

    /// No stream outside a stream.
    fn stream_fact(&self, _fact: StreamFact) -> Option<Fact> {
        None
    }

    fn set_property(&self, _name: &str, _value: &[u8]) {}

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        let Outgoing::Http {
            cluster,
            headers,
            body,
            timeout,
        } = call;
        let mut module_headers: Vec<ModuleHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHeader {
                key_ptr: k.as_ptr(),
                key_len: k.len(),
                value_ptr: v.as_ptr(),
                value_len: v.len(),
            })
            .collect();
        let mut callout_id = 0u64;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let grpc = headers
            .iter()
            .any(|(k, v)| *k == "content-type" && v.starts_with("application/grpc"));
        // SAFETY: the configuration's pointer; every buffer lives across the call, which copies
        // them into the request it builds.
        let result = unsafe {
            if grpc {
                abi::envoy_dynamic_module_callback_http_filter_config_start_http_stream(
                    self.config,
                    &mut callout_id,
                    ModuleBuffer::of(cluster.as_bytes()),
                    module_headers.as_mut_ptr(),
                    module_headers.len(),
                    ModuleBuffer::of(body),
                    true,
                    timeout_ms,
                )
            } else {
                abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                    self.config,
                    &mut callout_id,
                    ModuleBuffer::of(cluster.as_bytes()),
                    module_headers.as_mut_ptr(),
                    module_headers.len(),
                    ModuleBuffer::of(body),
                    timeout_ms,
                )
            }
        };
        if result != abi::callout_init::SUCCESS {
            // Init results (ClusterNotFound 2, CannotCreateRequest 4, …) as a host error.
            return Err(HostError(100 + result));
        }
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1).max(1));
        self.callouts.borrow_mut().push((callout_id, token));
        if grpc {
            self.streams
                .borrow_mut()
                .push((callout_id, StreamAnswer::default()));
        }
        Ok(token)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let stat = self.define_stat(kind, name);
        let mut stats = self.stats.borrow_mut();
        stats.push(stat);
        u32::try_from(stats.len() - 1).map_err(|_| HostError::BAD_ARGUMENT)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        if let Some(stat) = self.stat(id) {
            self.add_to_stat(stat, u64::try_from(delta).unwrap_or(0));
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        if let Some(stat) = self.stat(id).filter(|s| s.kind == MetricKind::Gauge) {
            // SAFETY: the configuration's pointer and a gauge it defined; no labels.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.config,
                    stat.id,
                    std::ptr::null_mut(),
                    0,
                    value,
                );
            }
        }
    }
}
