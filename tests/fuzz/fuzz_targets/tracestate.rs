#![no_main]
//! Any `tracestate` headers: discarded whole, or bounded output in which every member is valid.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::propagation::{tracestate, TraceState};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut state) = TraceState::parse(s.split('\n')) else {
        return;
    };
    assert!(state.len() <= tracestate::MAX_MEMBERS);
    state.upsert_front("ot", "th:8");
    if let Some(h) = state.header_value() {
        assert!(h.len() <= tracestate::MAX_LEN);
        let again = TraceState::parse([h.as_str()].into_iter()).map(|s| s.header_value());
        assert_eq!(again, Ok(Some(h)));
    }
});
