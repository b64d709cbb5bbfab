#![no_main]
//! Any `baggage` / `x-request-id`: bounded, printable output.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::propagation::{baggage, request_id};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(out) = baggage::normalize(s.split('\n')) {
        assert!(out.len() <= baggage::MAX_BYTES);
        assert!(out.split(',').count() <= baggage::MAX_MEMBERS);
        assert!(out.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
    }
    if request_id::is_acceptable(s) {
        assert!(s.len() <= request_id::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic()));
    }
});
