#![no_main]
//! Any B3 single or multi headers: no panic; an accepted context formats back to a valid header.
use libfuzzer_sys::fuzz_target;
use meshtrace_core::propagation::b3;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = b3::parse_single(s) {
        if let Some(ctx) = b.context {
            assert!(b3::parse_single(&b3::format_single(&ctx)).is_ok());
        }
    }
    let fields: Vec<&str> = s.splitn(4, '\n').collect();
    let lookup = |name: &str| {
        let i = b3::MULTI_HEADERS.iter().position(|h| *h == name)?;
        fields.get(i).copied()
    };
    let _ = b3::parse_multi(&lookup);
});
