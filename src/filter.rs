//! The proxy-wasm contexts: a root context per plugin in each VM that owns the configuration and
//! the exporter, and an HTTP context per request. Both delegate every decision to the core.
//! [`crate::abi::exports`] calls the free functions at the end, which find the context by id.
//!
//! Retirement (a configuration push starts fresh VMs): Envoy keeps the old VM while any stream
//! still holds it — each stream's context keeps a `PluginHandle`, which keeps the `WasmHandle`
//! (Envoy `source/extensions/common/wasm/context.cc`, `Context::Context(Wasm*, uint32_t,
//! PluginHandleSharedPtr)`) — so a request in flight across the push ends in the old VM, whose
//! root keeps ticking and exporting. When the last handle goes, proxy-wasm-cpp-host's
//! `WasmHandleBase::~WasmHandleBase` calls `WasmBase::startShutdown`, which calls
//! `proxy_on_done` on each root; one answering false keeps the VM (a `ShutdownHandle`) until it
//! calls `proxy_done` (`WasmBase::done`). [`Root::on_done`] uses that to send the whole queue
//! and wait for the answers, bounded by the export timeout.

use crate::abi;
use crate::by_id::ById;
use crate::proxy_host::{self, GrpcResponse, ProxyHost};
use log::{error, info, warn};
use meshtrace_core::config::Config;
use meshtrace_core::export::{ExportResponse, Exporter, MAX_RESPONSE_BODY};
use meshtrace_core::host::{Host, HostError};
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::{Metric, Metrics};
use meshtrace_core::node::NodeInfo;
use meshtrace_core::tracer::{Pending, RequestState, Tracer};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// State shared by the root context and every request of one VM (one worker thread).
struct Shared {
    tracer: Tracer,
    metrics: Metrics,
    exporter: RefCell<Exporter>,
    ids: Rc<RefCell<IdGenerator>>,
    /// The root context is gone: a span ending now has no exporter left to leave through.
    retired: Cell<bool>,
}

pub struct Root {
    shared: Option<Rc<Shared>>,
    ids: Rc<RefCell<IdGenerator>>,
    /// `on_done` answered false: `proxy_done` is still to be called.
    done_pending: bool,
    /// The host was told it may delete this context (`proxy_done`): it is freed after the
    /// callback, as no `proxy_on_delete` comes (not exported).
    finished: bool,
}

impl Default for Root {
    fn default() -> Self {
        Self::new()
    }
}

impl Root {
    pub fn new() -> Self {
        Root {
            shared: None,
            ids: Rc::new(RefCell::new(IdGenerator::from_seed(os_seed()))),
            done_pending: false,
            finished: false,
        }
    }

    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        abi::refresh_log_level();
        info!(
            "meshtrace {} ({}) started",
            meshtrace_core::VERSION,
            option_env!("MESHTRACE_GIT_REV").unwrap_or("unknown revision")
        );
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        abi::refresh_log_level();
        let bytes = match read_plugin_configuration(plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(HostError(status)) => {
                error!(
                    "meshtrace: could not read the plugin configuration ({plugin_configuration_size} \
                     bytes): the proxy answered status {status}; configuration rejected"
                );
                return false;
            }
        };
        let host = ProxyHost::default();
        let node = NodeInfo::read(&host);
        let config = match Config::parse_for(&bytes, node.is_gateway()) {
            Ok(config) => config,
            Err(e) => {
                error!("{e}");
                return false;
            }
        };
        let tracer = Tracer::new(config, node, &abi::env_var);
        // After the node's read, which says where Envoy keeps the xDS attributes.
        proxy_host::compile_facts_expressions(tracer.end_of_stream_facts());
        let exporter = tracer.new_exporter();
        // The tick flushes the request path's counters and, when exporting, sends spans.
        if let Err(HostError(status)) = abi::set_tick_period(exporter.tick_period()) {
            warn!("meshtrace: could not set the tick (status {status})");
        }
        info!("{}", tracer.configured_summary());
        self.shared = Some(Rc::new(Shared {
            metrics: Metrics::define(&host),
            tracer,
            exporter: RefCell::new(exporter),
            ids: self.ids.clone(),
            retired: Cell::new(false),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        abi::refresh_log_level();
        let host = ProxyHost::default();
        shared
            .exporter
            .borrow_mut()
            .on_tick(&host, &shared.metrics, host.now_unix_nanos());
        self.finish_if_drained();
        let Some(shared) = &self.shared else { return };
        shared.metrics.flush(&host);
        let depth = shared.exporter.borrow().queue_len() as u64;
        shared.metrics.set(&host, Metric::QueueDepth, depth);
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let Some(shared) = &self.shared else { return };
        // The collector's answer: read only what the host says is there.
        let header = |name| {
            (num_headers > 0)
                .then(|| proxy_host::map_value(abi::map::HTTP_CALL_RESPONSE_HEADERS, name))
                .flatten()
        };
        let trailer = |name| {
            (num_trailers > 0)
                .then(|| proxy_host::map_value(abi::map::HTTP_CALL_RESPONSE_TRAILERS, name))
                .flatten()
        };
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let retry_after = header("retry-after");
        // gRPC: the status is in the trailers, or in the headers of a trailers-only response.
        let grpc_status = trailer("grpc-status")
            .or_else(|| header("grpc-status"))
            .and_then(|s| s.parse::<u32>().ok());
        // The body only matters for a success (OTLP partial success); empty is full success.
        let body = if status == Some(200) && body_size > 0 {
            abi::buffer(
                abi::buffer::HTTP_CALL_RESPONSE_BODY,
                0,
                body_size.min(MAX_RESPONSE_BODY),
            )
            .ok()
            .flatten()
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let host = ProxyHost::default();
        shared.exporter.borrow_mut().on_response(
            token_id,
            &ExportResponse {
                status,
                grpc_status,
                retry_after: retry_after.as_deref(),
                body: &body,
            },
            &host,
            &shared.metrics,
            host.now_unix_nanos(),
        );
        self.finish_if_drained();
    }

    /// The VM is being retired: counters flushed, the whole queue sent; `false` (keep this
    /// context) until the answers arrive or the export timeout passes ([`Root::finish_if_drained`]).
    fn on_done(&mut self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let host = ProxyHost::default();
        shared
            .exporter
            .borrow_mut()
            .drain(&host, &shared.metrics, host.now_unix_nanos());
        shared.metrics.flush(&host);
        if shared.exporter.borrow().drained() {
            return true;
        }
        self.done_pending = true;
        false
    }

    /// After `on_done` answered false: once every answer is in (or overdue, the rest counted
    /// as lost), the last counters are flushed and the host told it may delete this context.
    fn finish_if_drained(&mut self) {
        let Some(shared) = self.shared.as_ref().filter(|_| self.done_pending) else {
            return;
        };
        let host = ProxyHost::default();
        let mut exporter = shared.exporter.borrow_mut();
        if !exporter.drained() {
            if !exporter.drain_overdue(host.now_unix_nanos()) {
                return;
            }
            exporter.abandon(&host, &shared.metrics);
        }
        shared.metrics.flush(&host);
        self.done_pending = false;
        self.finished = true;
        if let Err(HostError(status)) = abi::done() {
            warn!("meshtrace: proxy_done answered status {status}");
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Request> {
        let shared = self.shared.clone()?;
        Some(Request {
            shared,
            state: RequestState::default(),
            grpc: GrpcResponse::default(),
        })
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.retired.set(true);
        }
    }
}

/// The plugin configuration's bytes. A size of 0 is the empty configuration (valid); a host
/// that cannot hand over the bytes it announced is an error, never the default configuration.
fn read_plugin_configuration(size: usize) -> Result<Vec<u8>, HostError> {
    if size == 0 {
        return Ok(Vec::new());
    }
    abi::buffer(abi::buffer::PLUGIN_CONFIGURATION, 0, size)?
        .ok_or(HostError(abi::status::NOT_FOUND))
}

/// One seed per VM from the OS; ids then come from a fast PRNG. If the OS refuses (it should
/// not), the clock still gives distinct VMs distinct sequences.
fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => ProxyHost::default().now_unix_nanos() ^ 0x9e37_79b9_7f4a_7c15,
    }
}

struct Request {
    shared: Rc<Shared>,
    state: RequestState,
    /// A gRPC request's status and message, kept from the response's callbacks for its end.
    grpc: GrpcResponse,
}

impl Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) {
        let host = ProxyHost::default();
        let shared = &self.shared;
        let Ok(mut ids) = shared.ids.try_borrow_mut() else {
            return;
        };
        self.state = shared
            .tracer
            .on_request_headers(&host, &mut ids, &shared.metrics);
    }

    /// Writes `server-timing`/`traceresponse`/`x-request-id` when configured (nothing by
    /// default; local replies come through here too). A gRPC response that ends here (trailers-only)
    /// carries its status in these headers: kept for the stream's end.
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) {
        self.state.on_response_headers(&ProxyHost::default());
        if end_of_stream && self.is_grpc() {
            self.grpc.read(abi::map::RESPONSE_HEADERS);
        }
    }

    /// A gRPC response's status and message are in its trailers: kept for the stream's end.
    /// Envoy calls this only for a response with trailers (`Context::encodeTrailers`), so a plain
    /// HTTP stream never enters the VM for it.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) {
        if self.is_grpc() {
            self.grpc.read(abi::map::RESPONSE_TRAILERS);
        }
    }

    fn is_grpc(&self) -> bool {
        self.state.pending.as_ref().is_some_and(Pending::is_grpc)
    }

    /// The stream ended: its span is finished (or captured) here rather than in `proxy_on_log`,
    /// which the plugin does not export — one entry into the VM fewer per request. Envoy calls
    /// `proxy_on_done` for every stream whose context exists, after `proxy_on_log` would have
    /// come (`Context::onDestroy` after `Context::log` in
    /// `source/extensions/common/wasm/context.cc`; the filter manager logs, then destroys the
    /// filters); the stream's facts are still there (its stream info), its header maps are not:
    /// the status comes from `response.code` ([`ProxyHost`]), a gRPC status from what the
    /// response callbacks kept, the request's headers from the request's record.
    fn on_done(&mut self) {
        let Some(pending) = self.state.pending.take() else {
            return;
        };
        let host = ProxyHost::at_stream_end(&self.grpc);
        let shared = &self.shared;
        if shared.retired.get() {
            // Not expected (the host deletes a root only after its streams), but never silent.
            if matches!(pending, Pending::Recorded(_)) {
                shared.metrics.inc(&host, Metric::SpansRecorded);
                shared.metrics.inc(&host, Metric::SpansDroppedShutdown);
            }
            return;
        }
        let Some(finished) = shared.tracer.end(&host, pending, &shared.metrics) else {
            return;
        };
        if let Ok(mut exporter) = shared.exporter.try_borrow_mut() {
            let captured = finished.captured;
            for span in finished {
                if captured {
                    exporter.enqueue_captured(span, &host, &shared.metrics);
                } else {
                    exporter.enqueue(span, &host, &shared.metrics);
                }
            }
        }
    }
}

/// Every context of this VM by id. The host never calls into the VM while a callback runs
/// (Envoy defers a re-entrant answer until after the call), but a failed borrow is still
/// only a skipped callback, not a trap.
#[derive(Default)]
struct Contexts {
    roots: ById<Root>,
    requests: ById<Request>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

fn with_contexts<T: Default>(f: impl FnOnce(&mut Contexts) -> T) -> T {
    CONTEXTS.with(|c| {
        c.try_borrow_mut()
            .map(|mut c| f(&mut c))
            .unwrap_or_default()
    })
}

/// Runs `f` on a root; a root that told the host it is finished (`proxy_done`) is freed after.
fn with_root<T: Default>(id: u32, f: impl FnOnce(&mut Root) -> T) -> T {
    with_contexts(|c| {
        let out = c.roots.get_mut(id).map(f).unwrap_or_default();
        if c.roots.get(id).is_some_and(|r| r.finished) {
            c.roots.remove(id);
        }
        out
    })
}

fn with_request(id: u32, f: impl FnOnce(&mut Request)) {
    with_contexts(|c| c.requests.get_mut(id).map(f));
}

/// A root context has no parent; an HTTP context's parent is its plugin's root.
pub fn on_context_create(context_id: u32, parent_id: u32) {
    with_contexts(|c| {
        if parent_id == 0 {
            c.roots.insert(context_id, Root::new());
        } else if let Some(request) = c
            .roots
            .get(parent_id)
            .and_then(|root| root.create_http_context(context_id))
        {
            c.requests.insert(context_id, request);
        }
    });
}

pub fn on_vm_start(root_id: u32, size: usize) -> bool {
    with_root(root_id, |r| r.on_vm_start(size))
}

pub fn on_configure(root_id: u32, size: usize) -> bool {
    with_root(root_id, |r| r.on_configure(size))
}

pub fn on_tick(root_id: u32) {
    with_root(root_id, Root::on_tick);
}

pub fn on_http_call_response(
    root_id: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    trailers: usize,
) {
    with_root(root_id, |r| {
        r.on_http_call_response(token, headers, body_size, trailers)
    });
}

pub fn on_http_request_headers(context_id: u32, headers: usize, end_of_stream: bool) {
    with_request(context_id, |r| {
        r.on_http_request_headers(headers, end_of_stream)
    });
}

pub fn on_http_response_headers(context_id: u32, headers: usize, end_of_stream: bool) {
    with_request(context_id, |r| {
        r.on_http_response_headers(headers, end_of_stream)
    });
}

pub fn on_http_response_trailers(context_id: u32, trailers: usize) {
    with_request(context_id, |r| r.on_http_response_trailers(trailers));
}

/// The context is done. A stream's span is finished and its context freed: Envoy calls
/// `proxy_on_done` right before `proxy_on_delete` (`Context::onDestroy` in
/// `source/extensions/common/wasm/context.cc`). A root may defer its deletion (draining its
/// queue); one that does not is freed now.
pub fn on_done(context_id: u32) -> bool {
    with_contexts(|c| {
        if let Some(mut request) = c.requests.remove(context_id) {
            request.on_done();
            return true;
        }
        let done = c.roots.get_mut(context_id).map(Root::on_done);
        if done == Some(true) {
            c.roots.remove(context_id);
        }
        done.unwrap_or(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::fake;

    /// A configuration the host announced but cannot hand over is rejected with one error, not
    /// replaced by the default configuration (which would trace at Istio's default percentage
    /// and export to the default cluster).
    #[test]
    fn a_failed_configuration_read_is_rejected() {
        for status in [1, 2, 10, 77] {
            fake::answer(status);
            let mut root = Root::new();
            assert!(!root.on_configure(120), "status {status}: rejected");
            assert!(root.shared.is_none(), "status {status}: nothing configured");
        }
        fake::answer(abi::status::OK);
        assert_eq!(
            read_plugin_configuration(120),
            Err(HostError(abi::status::NOT_FOUND)),
            "announced bytes, none given"
        );
        assert_eq!(read_plugin_configuration(0), Ok(Vec::new()), "empty: valid");
    }
}
