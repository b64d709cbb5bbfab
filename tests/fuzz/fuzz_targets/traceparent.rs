#![no_main]
//! Any `traceparent` value: no panic; an accepted one formats to a valid version-00 header that
//! parses back to the same ids.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::propagation::traceparent;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ctx) = traceparent::parse(s) {
        let out = traceparent::format(&ctx);
        assert_eq!(out.len(), 55);
        let back = traceparent::parse(&out).expect("our own header parses");
        assert_eq!((back.trace_id, back.span_id), (ctx.trace_id, ctx.span_id));
    }
    let _ = traceparent::parse_all(s.split('\n'));
});
