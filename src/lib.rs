//! meshtrace: the proxy-wasm adapter. It stays thin: it turns host calls into the core's
//! [`meshtrace_core::host::Host`] trait and hands every decision to the core.

#[cfg(target_arch = "wasm32")]
mod filter;
pub mod proxy_host;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::new())
    });
}}
