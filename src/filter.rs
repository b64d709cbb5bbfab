//! The proxy-wasm contexts: a root context per VM that owns the configuration and the exporter,
//! and an HTTP context per request. Both delegate every decision to the core.

use crate::proxy_host::{self, ProxyHost};
use log::{error, info, warn};
use meshtrace_core::config::{percentage, Config, ExportProtocol};
use meshtrace_core::export::{ExportResponse, Exporter};
use meshtrace_core::host::Host;
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::{Metric, Metrics};
use meshtrace_core::node::NodeInfo;
use meshtrace_core::tracer::{ActiveSpan, Tracer};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use std::cell::RefCell;
use std::rc::Rc;

/// State shared by the root context and every request of one VM (one worker thread).
struct Shared {
    tracer: Tracer,
    metrics: Metrics,
    exporter: RefCell<Exporter>,
    ids: Rc<RefCell<IdGenerator>>,
}

pub struct Root {
    shared: Option<Rc<Shared>>,
    ids: Rc<RefCell<IdGenerator>>,
}

impl Root {
    pub fn new() -> Self {
        Root {
            shared: None,
            ids: Rc::new(RefCell::new(IdGenerator::from_seed(os_seed()))),
        }
    }
}

/// One seed per VM from the OS; ids then come from a fast PRNG. If the OS refuses (it should
/// not), the clock still gives distinct VMs distinct sequences.
fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => ProxyHost.now_unix_nanos() ^ 0x9e37_79b9_7f4a_7c15,
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        _body_size: usize,
        num_trailers: usize,
    ) {
        let Some(shared) = &self.shared else { return };
        // The collector's answer: read only what the host says is there.
        let header = |name| {
            (num_headers > 0)
                .then(|| proxy_host::map_value(MapType::HttpCallResponseHeaders, name))
                .flatten()
        };
        let trailer = |name| {
            (num_trailers > 0)
                .then(|| proxy_host::map_value(MapType::HttpCallResponseTrailers, name))
                .flatten()
        };
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let retry_after = header("retry-after");
        // gRPC: the status is in the trailers, or in the headers of a trailers-only response.
        let grpc_status = trailer("grpc-status")
            .or_else(|| header("grpc-status"))
            .and_then(|s| s.parse::<u32>().ok());
        let host = ProxyHost;
        shared.exporter.borrow_mut().on_response(
            token_id,
            &ExportResponse {
                status,
                grpc_status,
                retry_after: retry_after.as_deref(),
            },
            &host,
            &shared.metrics,
            host.now_unix_nanos(),
        );
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!(
            "meshtrace {} ({}) started",
            meshtrace_core::VERSION,
            option_env!("MESHTRACE_GIT_REV").unwrap_or("unknown revision")
        );
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                error!("{e}");
                return false;
            }
        };
        let host = ProxyHost;
        let node = NodeInfo::read(&host);
        let exporting = config.exporter.protocol != ExportProtocol::None;
        let tracer = Tracer::new(config, node, &|name| std::env::var(name).ok());
        let exporter = Exporter::new(
            &tracer.config.exporter,
            &tracer.config.limits,
            tracer.resource.clone(),
        );
        // The tick flushes the request path's counters and, when exporting, sends spans.
        if let Err(e) = hostcalls::set_tick_period(exporter.tick_period()) {
            warn!("meshtrace: could not set the tick: {e:?}");
        }
        info!(
            "meshtrace configured: service {}, sampling {}%, export {}",
            tracer.service_name,
            percentage(tracer.config.random_sampling_percentage),
            if exporting {
                tracer.config.exporter.cluster.as_str()
            } else {
                "off"
            }
        );
        self.shared = Some(Rc::new(Shared {
            metrics: Metrics::define(&host),
            tracer,
            exporter: RefCell::new(exporter),
            ids: self.ids.clone(),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        let host = ProxyHost;
        let mut exporter = shared.exporter.borrow_mut();
        exporter.on_tick(&host, &shared.metrics, host.now_unix_nanos());
        shared.metrics.flush(&host);
        shared
            .metrics
            .set(&host, Metric::QueueDepth, exporter.queue_len() as u64);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request { shared, span: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    shared: Rc<Shared>,
    span: Option<ActiveSpan>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let host = ProxyHost;
        let shared = &self.shared;
        let Ok(mut ids) = shared.ids.try_borrow_mut() else {
            return Action::Continue;
        };
        self.span = shared
            .tracer
            .on_request_headers(&host, &mut ids, &shared.metrics);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(active) = self.span.take() else {
            return;
        };
        let host = ProxyHost;
        let outcome = self.shared.tracer.read_outcome(&host, &active);
        let finished = self
            .shared
            .tracer
            .finish(active, outcome, host.now_unix_nanos());
        if let Ok(mut exporter) = self.shared.exporter.try_borrow_mut() {
            for span in finished {
                exporter.enqueue(span, &self.shared.metrics);
            }
        }
    }
}
