//! meshtrace as an Envoy dynamic module: the native adapter over the same core as the Wasm
//! plugin (`src/`). Loaded by `envoy.filters.http.dynamic_modules` as `libmeshtrace.so`; the
//! filter's `filter_config` is the same JSON `pluginConfig` (docs/native.md).
//!
//! | module | concern |
//! |---|---|
//! | [`abi`] | the bindings: Envoy's callbacks this module imports, the ABI's types |
//! | [`exports`] | the event hooks Envoy calls, each a panic boundary |
//! | [`filter`] | configuration, per-worker state, the main thread's exporter, the tick |
//! | [`host`] | the core's `Host` over the ABI: [`host::StreamHost`] (a stream), [`host::ConfigHost`] (the main thread) |
//! | [`node`] | the proxy's Istio identity, from the bootstrap or pilot-agent's environment |
//! | [`logger`] | `log` into Envoy's log |

pub mod abi;
pub mod exports;
pub mod filter;
pub mod host;
pub mod logger;
pub mod node;
