#![no_main]
//! Any plugin configuration bytes: parsed or rejected with a message, never a panic.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Config::parse(data) {
        assert!(!e.to_string().is_empty());
    }
});
