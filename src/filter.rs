//! The proxy-wasm contexts: a root context per VM that owns the configuration, and an HTTP
//! context per request. Both delegate to the core.

use crate::proxy_host::ProxyHost;
use log::{error, info};
use meshtrace_core::config::Config;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};
use std::rc::Rc;

pub struct Root {
    config: Option<Rc<Config>>,
}

impl Root {
    pub fn new() -> Self {
        Root { config: None }
    }
}

impl Context for Root {}

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
        match Config::parse(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                let _ = ProxyHost;
                true
            }
            Err(e) => {
                error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Request { _config: config }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    _config: Rc<Config>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
