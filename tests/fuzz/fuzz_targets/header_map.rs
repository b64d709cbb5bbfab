#![no_main]
//! Any bytes as the host's serialized header map: no panic, no read past the input, and never
//! more pairs than the input could describe (each costs 8 bytes of lengths and 2 NULs).
use libfuzzer_sys::fuzz_target;
use meshtrace_core::headers::HeaderMap;

fuzz_target!(|data: &[u8]| {
    let map = HeaderMap::from_serialized(data);
    assert!(map.len() * 10 <= data.len());
    for (name, _) in map.iter() {
        assert!(map.get(name).is_some());
    }
});
