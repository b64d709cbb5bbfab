//! meshtrace's pure core: everything the plugin decides, with no host calls. The proxy-wasm
//! adapter (the `meshtrace` crate) feeds it through the [`host::Host`] trait.

pub mod config;
pub mod context;
pub mod export;
pub mod headers;
pub mod host;
pub mod ids;
pub mod metrics;
pub mod naming;
pub mod node;
pub mod otlp;
pub mod propagation;
pub mod resource;
pub mod sampling;
pub mod span;
pub mod tracer;

/// The plugin version, logged once per VM.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
