//! meshtrace: the proxy-wasm adapter. It stays thin: [`abi`] is the ABI both ways (host calls
//! that cannot trap, the exported callbacks), [`filter`] the contexts, kept by id in
//! [`by_id`]'s table, [`proxy_host`] the core's [`meshtrace_core::host::Host`] trait over host
//! calls; every decision is the core's.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
// Reached through `abi::exports`, which exist only in the wasm32 build.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod by_id;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod filter;
pub mod proxy_host;
