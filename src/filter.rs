//! The proxy-wasm contexts: a root context per VM that owns the configuration and the exporter,
//! and an HTTP context per request. Both delegate every decision to the core.

use crate::proxy_host::ProxyHost;
use log::{error, info, warn};
use meshtrace_core::config::{Config, ExportProtocol};
use meshtrace_core::export::{ExportResponse, Exporter};
use meshtrace_core::host::Host;
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::{Metric, Metrics};
use meshtrace_core::node::{ListenerDirection, NodeInfo};
use meshtrace_core::tracer::{ActiveSpan, Outcome, Tracer};
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
        // Envoy answers a read of an absent map with BadArgument, on which the SDK panics: read a
        // map only when the host says it has entries.
        let header = |name| {
            (num_headers > 0)
                .then(|| hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name))
                .and_then(|r| r.ok().flatten())
        };
        let trailer = |name| {
            (num_trailers > 0)
                .then(|| hostcalls::get_map_value(MapType::HttpCallResponseTrailers, name))
                .and_then(|r| r.ok().flatten())
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
            tracer.config.random_sampling_percentage,
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
        let role = shared.tracer.role(ListenerDirection::read(&host));
        let Ok(mut ids) = shared.ids.try_borrow_mut() else {
            return Action::Continue;
        };
        self.span = shared
            .tracer
            .on_request_headers(&host, &mut ids, &shared.metrics, role);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(active) = self.span.take() else {
            return;
        };
        let host = ProxyHost;
        let outcome = read_outcome(&host);
        let span = self
            .shared
            .tracer
            .finish(active, &outcome, host.now_unix_nanos());
        if let Ok(mut exporter) = self.shared.exporter.try_borrow_mut() {
            exporter.enqueue(span, &self.shared.metrics);
        }
    }
}

/// The stream's outcome from Envoy's attributes (read only for sampled requests).
fn read_outcome(host: &ProxyHost) -> Outcome {
    let text = |path: &[&str]| {
        host.property(path)
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    };
    let status = host
        .property(&["response", "code"])
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_le_bytes)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c != 0);
    Outcome {
        status,
        protocol_version: text(&["request", "protocol"])
            .map(|p| p.trim_start_matches("HTTP/").to_string()),
        upstream_cluster: text(&["xds", "cluster_name"]).or_else(|| text(&["cluster_name"])),
        route_name: text(&["xds", "route_name"]).or_else(|| text(&["route_name"])),
        // Only an error's status message uses the details: no host call for the rest.
        details: if status.is_none_or(|c| c >= 400) {
            text(&["response", "code_details"])
        } else {
            None
        },
    }
}
